// The Strata node in worker mode, against a real strata-worker daemon
// (native/build/strata-worker) on a free 127.0.0.1 port with stories260K and
// a token: operations through the worker, a wrong token as a per-item error,
// Match Score falling back to rules when the worker is down, and the
// credential test (methods.credentialTest.strataWorkerApiTest).
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { createRequire } from 'node:module';
import { ROOT, STORIES260K } from './helpers/models.mjs';
import { WORKER, freePort, startWorker } from './helpers/worker.mjs';

const require = createRequire(import.meta.url);
const rules = require('../node/rules/match.js');

const DIST = path.join(ROOT, 'dist/node/nodes/Strata/Strata.node.js');
if (!fs.existsSync(WORKER) || !fs.existsSync(DIST)) {
  t.fail(`needs ${WORKER} (make -C native) and ${DIST} (npm run build)`);
  process.exit(1);
}
const { Strata } = require(DIST);
const engine = require('../dist/node/nodes/Strata/engine.js');

const TOKEN = 'n0de-s3cret';

const url = `tcp://127.0.0.1:${await freePort()}`;
const worker = await startWorker(['--model', STORIES260K, '--listen', url, '--token', TOKEN, '--ctx', '1024']);
t.teardown(async () => {
  await engine.closeAllWorkers();
  worker.kill('SIGKILL');
});

const alice = {
  id: 'alice',
  name: 'Alice',
  offered: [{ name: 'Python', level: 'advanced' }],
  wanted: [{ name: 'Spanish', level: 'intermediate' }],
  availability: ['weekends'],
};
const bruno = {
  id: 'bruno',
  name: 'Bruno',
  offered: [{ name: 'spanish', level: 'expert' }],
  wanted: [{ name: 'PYTHON', level: 'intermediate' }],
  availability: ['Weekends'],
};

const NODE = { id: 'n1', name: 'Strata', type: 'n8n-nodes-strata.strata', typeVersion: 1, position: [0, 0], parameters: {} };

/** A stub of IExecuteFunctions with a strataWorkerApi credential. */
function context(params, creds, { items = [{ json: {} }], continueOnFail = false } = {}) {
  return {
    getInputData: () => items,
    getNodeParameter: (name, _i, fallback) => {
      if (name in params) {
        return params[name];
      }
      if (fallback !== undefined) {
        return fallback;
      }
      throw new Error(`test stub: no parameter ${name}`);
    },
    getCredentials: async (type) => {
      if (type !== 'strataWorkerApi') {
        throw new Error(`test stub: no credential ${type}`);
      }
      return creds;
    },
    getNode: () => NODE,
    continueOnFail: () => continueOnFail,
    getExecutionCancelSignal: () => undefined,
  };
}

async function exec(params, creds = { baseUrl: url, token: TOKEN }, opts) {
  const out = await new Strata().execute.call(context({ mode: 'worker', ...params }, creds, opts));
  return out[0];
}

t.test('the node declares the worker credential and its test', async (t) => {
  const node = new Strata();
  const cred = node.description.credentials.find((c) => c.name === 'strataWorkerApi');
  t.equal(cred.testedBy, 'strataWorkerApiTest');
  t.type(node.methods.credentialTest.strataWorkerApiTest, 'function');
});

t.test('Generate, Chat and Improve Skill run through the worker', async (t) => {
  const [g] = await exec({ operation: 'generate', prompt: 'Once upon a time', options: { maxTokens: 8, temperature: 0 } });
  t.equal(g.json.genTokens, 8);
  t.equal(g.json.stopReason, 'maxTokens');
  t.ok(g.json.text.length > 0);

  // the same text as the worker's own client gives (greedy)
  const direct = await engine.getWorkerClient(url, TOKEN).generate('Once upon a time', { maxTokens: 8, temperature: 0 });
  t.equal(g.json.text, direct.text);

  const [c] = await exec({ operation: 'chat', messagesInput: 'fields', systemMessage: 'Be brief.', userMessage: 'Hi', options: { maxTokens: 4 } });
  t.equal(c.json.genTokens, 4);

  const [imp] = await exec({ operation: 'improveSkill', skillName: 'Python', skillLevel: '', skillDescription: 'i know python', options: { maxTokens: 6 } });
  t.equal(imp.json.model.path, url);
  t.ok(imp.json.model.genTokens > 0);

  const [m] = await exec({ operation: 'matchScore', profileA: alice, profileB: bruno, scorer: 'model' });
  t.ok(m.json.model.genTokens > 0, 'Match Score asked the worker');
  t.equal(m.json.ruleScore, rules.matchScore(alice, bruno).score);
});

t.test('a wrong token is a clear per-item error', async (t) => {
  const items = [{ json: {} }, { json: {} }];
  const out = await exec({ operation: 'generate', prompt: 'Once', options: { maxTokens: 2 } }, { baseUrl: url, token: 'wrong' }, { items, continueOnFail: true });
  t.equal(out.length, 2);
  for (const [i, item] of out.entries()) {
    t.match(item.json.error, /^Strata worker at tcp:\/\/127\.0\.0\.1:\d+ refused the token/);
    t.same(item.pairedItem, { item: i });
  }
  await t.rejects(exec({ operation: 'generate', prompt: 'Once' }, { baseUrl: url, token: 'wrong' }), {
    name: 'NodeOperationError',
    message: /refused the token/,
  });
});

t.test('the credential test: OK, wrong token, worker down', async (t) => {
  const test = new Strata().methods.credentialTest.strataWorkerApiTest;
  const ok = await test.call({}, { id: '1', name: 'w', type: 'strataWorkerApi', data: { baseUrl: url, token: TOKEN } });
  t.equal(ok.status, 'OK', ok.message);
  const bad = await test.call({}, { id: '1', name: 'w', type: 'strataWorkerApi', data: { baseUrl: url, token: 'wrong' } });
  t.equal(bad.status, 'Error');
  t.match(bad.message, /refused the token/);
  const down = await test.call({}, { id: '1', name: 'w', type: 'strataWorkerApi', data: { baseUrl: `tcp://127.0.0.1:${await freePort()}`, token: TOKEN } });
  t.equal(down.status, 'Error');
  t.match(down.message, /did not answer/);
  const http = await test.call({}, { id: '1', name: 'w', type: 'strataWorkerApi', data: { baseUrl: 'http://127.0.0.1:1', token: '' } });
  t.equal(http.status, 'Error');
  t.match(http.message, /url must be like/);
});

t.test('a tls+tcp:// worker: the credential carries the CA (test + Generate); without it, a clear error', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-node-tls-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const ssl = (...a) => execFileSync('openssl', a, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key',
    '-out', 'ca.pem', '-days', '2', '-subj', '/CN=ca');
  ssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'server.key',
    '-out', 'server.csr', '-subj', '/CN=server');
  fs.writeFileSync(path.join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  ssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem',
    '-days', '2', '-extfile', 'server.ext');
  const tlsUrl = `tls+tcp://127.0.0.1:${await freePort()}`;
  const w = await startWorker(['--model', STORIES260K, '--listen', tlsUrl, '--token', TOKEN, '--ctx', '1024',
    '--tls-cert', path.join(dir, 'server.pem'), '--tls-key', path.join(dir, 'server.key')]);
  t.teardown(async () => {
    await engine.closeAllWorkers();
    w.kill('SIGTERM');
  });
  const creds = { baseUrl: tlsUrl, token: TOKEN, tlsCa: fs.readFileSync(path.join(dir, 'ca.pem'), 'utf8') };
  const test = new Strata().methods.credentialTest.strataWorkerApiTest;
  const ok = await test.call({}, { id: '1', name: 'w', type: 'strataWorkerApi', data: creds });
  t.equal(ok.status, 'OK', ok.message);
  const [g] = await exec({ operation: 'generate', prompt: 'Once upon a time', options: { temperature: 0, maxTokens: 6 } }, creds);
  t.ok(g.json.text.length > 0, 'Generate over TLS');
  const noCa = await test.call({}, { id: '1', name: 'w', type: 'strataWorkerApi', data: { baseUrl: tlsUrl, token: TOKEN } });
  t.equal(noCa.status, 'Error');
  t.match(noCa.message, /TLS option 'ca'/, 'names the missing CA');
});

t.test('worker down: Match Score falls back to rules, Generate fails per item', async (t) => {
  const down = { baseUrl: `tcp://127.0.0.1:${await freePort()}`, token: TOKEN };
  const [m] = await exec({ operation: 'matchScore', profileA: alice, profileB: bruno, scorer: 'model' }, down);
  t.equal(m.json.source, 'rules');
  t.equal(m.json.score, rules.matchScore(alice, bruno).score);
  t.match(m.json.fallbackReason, /^model unavailable: Strata worker at .* did not answer/);

  // a time budget shorter than the health wait: a timeout fallback
  const [m2] = await exec({ operation: 'matchScore', profileA: alice, profileB: bruno, scorer: 'model', options: { timeoutMs: 300 } }, down);
  t.equal(m2.json.source, 'rules');
  t.match(m2.json.fallbackReason, /^timeout: /);

  const [g] = await exec({ operation: 'generate', prompt: 'Once' }, down, { continueOnFail: true });
  t.match(g.json.error, /did not answer/);
});
