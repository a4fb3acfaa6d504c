// strata-worker (native/worker) with real daemon processes, through the JS
// client (node/lib/worker.js -> the addon's nng client): protocol round
// trips, auth, limits, garbage, kill -9 and restart, 32 concurrent clients,
// and batched results identical to one-at-a-time results (greedy) on
// stories260K and a random-weight model. Ports: 127.0.0.1 only.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
import { ensureModel, ROOT, STORIES260K } from './helpers/models.mjs';
import { WORKER, freePort, startWorker as spawnWorker } from './helpers/worker.mjs';

const require = createRequire(import.meta.url);
const { connectWorker } = require('../node/lib/worker.js');
const { binding } = require('../node/lib/binding.js');

const GREEDY = { temperature: 0, repeatPenalty: 1 };
const PROMPTS = [
  'Once upon a time',
  'Once upon a time, there was a little girl named Lily.',
  'The cat sat on the mat and',
  'Tom and his dog went to the park. They',
  'One day',
  'Once upon a time, there was a little girl named Lily. She liked to play',
  'The sun was',
  'Mom said',
];

if (!fs.existsSync(WORKER)) {
  t.fail(`strata-worker is not built (${WORKER}): run make -C native`);
  process.exit(1);
}

const live = new Set();
const startWorker = (args) => spawnWorker(args, { live });

function stopWorker(p, signal = 'SIGTERM') {
  return new Promise((resolve) => {
    if (p.exitCode !== null || p.signalCode !== null) {
      resolve(p.exitCode);
      return;
    }
    p.once('exit', (code, sig) => resolve(code ?? sig));
    p.kill(signal);
  });
}

t.teardown(async () => {
  for (const p of live) {
    p.kill('SIGKILL');
  }
});

async function rejects(promise, code) {
  try {
    await promise;
  } catch (err) {
    return err.code === code ? true : `got ${err.code}: ${err.message}`;
  }
  return 'resolved';
}

t.test('round trips of every op, auth, limits', async (t) => {
  const port = await freePort();
  const url = `tcp://127.0.0.1:${port}`;
  const w = await startWorker(['--model', STORIES260K, '--listen', url, '--token', 's3cret',
    '--max-prompt-tokens', '64', '--max-new-tokens', '1000', '--ctx', '1100']);
  const c = connectWorker(url, { token: 's3cret', timeoutMs: 10000 });
  t.teardown(() => c.close());

  const h = await c.health();
  t.equal(h.status, 'ok');
  t.equal(h.protocol, 1);
  t.equal(h.model.arch, 'llama');
  t.equal(h.model.n_vocab, 512);

  const toks = await c.tokenize('Once upon a time');
  t.same(Array.from(toks), [1, 403, 407, 261, 378]);

  const g = await c.generate('Once upon a time', { ...GREEDY, maxTokens: 12 });
  t.equal(g.genTokens, 12);
  t.equal(g.stopReason, 'maxTokens');
  t.match(g.text, /^, there was/);

  const pieces = [];
  const gs = await c.generate('Once upon a time', { ...GREEDY, maxTokens: 12, onToken: (p) => pieces.push(p) });
  t.equal(gs.text, g.text, 'streamed generation gives the same text');
  t.equal(pieces.join(''), g.text, 'the pieces add up to the text');

  const gt = await c.generate(Int32Array.from(toks), { ...GREEDY, maxTokens: 12 });
  t.equal(gt.text, g.text, 'token prompt');

  const stop = await c.generate('Once upon a time', { ...GREEDY, maxTokens: 30, stop: ['Lily'] });
  t.equal(stop.stopReason, 'stop');
  t.notOk(stop.text.includes('Lily'));

  const chat = await c.chat([{ role: 'user', content: 'Hello' }], { ...GREEDY, maxTokens: 5 });
  t.equal(typeof chat.text, 'string');
  t.ok(chat.promptTokens > 1);

  const s = await c.score('Once upon a time, there was a', [' little', ' big', ' dog']);
  t.equal(s.options.length, 3);
  const sum = s.options.reduce((a, o) => a + o.prob, 0);
  t.ok(Math.abs(sum - 1) < 1e-9, 'probabilities are normalized');
  t.equal(s.best, ' little');
  t.ok(s.options.every((o) => o.logprob < 0));

  let e;
  try {
    e = await c.embed('Once upon a time');
  } catch (err) {
    e = err;
  }
  if (e instanceof Error) {
    // the batched pass of this build may not return hidden states yet
    t.equal(e.code, 'STRATA_ERR_UNSUPPORTED', `embed: ${e.message}`);
  } else {
    t.equal(e.dim, 64);
    const norm = Math.sqrt(e.embedding.reduce((a, x) => a + x * x, 0));
    t.ok(Math.abs(norm - 1) < 1e-4, 'embedding is normalized');
  }

  const st = await c.stats();
  t.ok(st.requests >= 8);
  t.ok(st.steps > 0);

  // cancel of an unknown request is fine
  const cancel = await c.request('cancel', { rid: 999999 });
  t.equal(cancel.found, false);

  // AbortSignal stops a streamed generation
  const ac = new AbortController();
  let n = 0;
  const aborted = await c.generate('Once upon a time', {
    maxTokens: 1000,
    onToken: () => {
      if (++n === 2) ac.abort();
    },
    signal: ac.signal,
  });
  t.equal(aborted.stopReason, 'cancelled');
  t.ok(aborted.genTokens < 1000);

  // auth
  const anon = connectWorker(url, { timeoutMs: 5000 });
  t.equal(await rejects(anon.health(), 'STRATA_ERR_AUTH'), true, 'no token: refused');
  const wrong = connectWorker(url, { token: 'guess', timeoutMs: 5000 });
  t.equal(await rejects(wrong.generate('x'), 'STRATA_ERR_AUTH'), true, 'wrong token: refused');
  await anon.close();
  await wrong.close();

  // limits
  t.equal(await rejects(c.generate('a '.repeat(200)), 'STRATA_ERR_LIMIT'), true, 'prompt over the limit');
  t.equal(await rejects(c.generate('hi', { maxTokens: 1001 }), 'STRATA_ERR_LIMIT'), true, 'max_tokens over the limit');
  t.equal(await rejects(c.request('bogus'), 'STRATA_ERR_PROTOCOL'), true, 'unknown op');
  t.equal(await rejects(c.request('generate', {}), 'STRATA_ERR_ARG'), true, 'missing prompt');
  t.equal(await rejects(c.request('poll', { rid: 12345 }), 'STRATA_ERR_NOT_FOUND'), true, 'unknown rid');
  t.equal(await rejects(c.generate(Int32Array.of(1, 100000)), 'STRATA_ERR_ARG'), true, 'token out of vocabulary');

  // still serving after all that
  t.equal((await c.health()).status, 'ok');
  t.equal(await stopWorker(w), 0, 'SIGTERM: clean exit');
});

t.test('queue limit and timeouts', async (t) => {
  const sock = path.join(os.tmpdir(), `strata-wt-${process.pid}-q.sock`);
  const url = `ipc://${sock}`;
  const w = await startWorker(['--model', STORIES260K, '--listen', url, '--max-queue', '2', '--ctx', '2048',
    '--max-new-tokens', '2000', '--timeout-ms', '1500']);
  const c = connectWorker(url, { timeoutMs: 20000 });
  t.teardown(() => c.close());
  // settled at once, so a timeout before we look is not an unhandled rejection
  const long = () => c.generate('Once upon a time', { ...GREEDY, maxTokens: 2000 })
    .then((r) => ({ r }), (err) => ({ err }));
  const a = long();
  const b = long();
  await new Promise((r) => setTimeout(r, 100));
  t.equal(await rejects(c.generate('One day', { maxTokens: 2 }), 'STRATA_ERR_BUSY'), true, 'third request: queue full');
  // the two long ones hit the worker's 1.5 s timeout (or end first)
  for (const { r, err } of await Promise.all([a, b])) {
    if (err === undefined) {
      t.ok(r.genTokens > 0, 'finished before its timeout');
    } else {
      t.equal(err.code, 'STRATA_ERR_TIMEOUT', err.message);
    }
  }
  const ok = await c.generate('One day', { ...GREEDY, maxTokens: 3 });
  t.equal(ok.genTokens, 3, 'serves again');
  await stopWorker(w);
});

t.test('garbage: 10k random messages, oversized messages, then a normal request', async (t) => {
  const port = await freePort();
  const url = `tcp://127.0.0.1:${port}`;
  // --max-new-tokens 4: a mutated request that turns into a valid generation stays short
  const w = await startWorker(['--model', STORIES260K, '--listen', url, '--max-message-bytes', '65536',
    '--max-new-tokens', '4']);
  const b = binding();
  const h = b.workerConnect(url);
  let seed = 12345;
  const rnd = () => {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    return seed;
  };
  const templates = ['{"v":1,"op":"generate","prompt":"hi","max_tokens":1}', '{"v":1,"op":"score","prompt":"a","options":[" b"]}',
    '{"v":1,"op":"tokenize","text":"x"}', '{"v":1,"op":"poll","rid":1}', '{"v":1,"op":"chat","messages":[]}'];
  const garbage = () => {
    const kind = rnd() % 3;
    if (kind === 0) {
      const n = rnd() % 300;
      let s = '';
      for (let i = 0; i < n; i++) s += String.fromCharCode(rnd() % 0x800);
      return s;
    }
    const base = templates[rnd() % templates.length].split('');
    for (let k = 0; k < 1 + (rnd() % 4); k++) base[rnd() % base.length] = String.fromCharCode(32 + (rnd() % 95));
    return kind === 1 ? base.join('') : base.slice(0, rnd() % base.length).join('');
  };
  let replies = 0;
  let errors = 0;
  const N = 10000;
  let next = 0;
  async function lane() {
    while (next < N) {
      next++;
      const text = await b.workerRequest(h, garbage(), 30000);
      const r = JSON.parse(text);
      replies++;
      if (r.ok === false) errors++;
    }
  }
  await Promise.all(Array.from({ length: 16 }, lane));
  t.equal(replies, N, 'every message got a reply');
  t.ok(errors > N * 0.9, `most were refused (${errors})`);
  // oversized: nng drops it (no reply: the request times out or the pipe drops)
  const big = JSON.stringify({ v: 1, op: 'tokenize', text: 'x'.repeat(200000) });
  const bigErr = await b.workerRequest(h, big, 1500).then(() => 'replied', (e) => e.code);
  t.ok(['STRATA_ERR_TIMEOUT', 'STRATA_ERR_WORKER_LOST'].includes(bigErr), `oversized message: ${bigErr}`);
  b.workerClose(h);
  const c = connectWorker(url, { timeoutMs: 10000 });
  const g = await c.generate('Once upon a time', { ...GREEDY, maxTokens: 4 });
  t.equal(g.genTokens, 4, 'still serves');
  await c.close();
  t.equal(w.exitCode, null, 'the worker is alive');
  await stopWorker(w);
});

t.test('kill -9 mid-request: the client errors, a restarted worker serves', async (t) => {
  const port = await freePort();
  const url = `tcp://127.0.0.1:${port}`;
  const args = ['--model', STORIES260K, '--listen', url, '--ctx', '2048', '--max-new-tokens', '2000'];
  let w = await startWorker(args);
  const c = connectWorker(url, { timeoutMs: 30000 });
  t.teardown(() => c.close());
  t.equal((await c.health()).status, 'ok');
  const started = Date.now();
  const outcome = (p) => p.then(() => 'resolved', (e) => e.code);
  const plain = outcome(c.generate('Once upon a time', { ...GREEDY, maxTokens: 2000 }));
  const streamed = outcome(c.generate('One day', { ...GREEDY, maxTokens: 2000, onToken: () => {} }));
  await new Promise((r) => setTimeout(r, 300));
  w.kill('SIGKILL');
  t.equal(await plain, 'STRATA_ERR_WORKER_LOST', 'plain request: worker lost');
  const se = await streamed;
  t.ok(['STRATA_ERR_WORKER_LOST', 'STRATA_ERR_NOT_FOUND', 'STRATA_ERR_TIMEOUT'].includes(se), `streamed: ${se}`);
  t.ok(Date.now() - started < 20000, 'no hang');
  w = await startWorker(args);
  // the same client reconnects by itself
  let h = null;
  for (let i = 0; i < 50 && h === null; i++) {
    h = await c.health({ timeoutMs: 1000 }).catch(() => null);
  }
  t.ok(h !== null && h.status === 'ok', 'the restarted worker serves the old client');
  const g = await c.generate('Once upon a time', { ...GREEDY, maxTokens: 4 });
  t.equal(g.genTokens, 4);
  await stopWorker(w);
});

t.test('SIGTERM drains requests in flight, then exits 0', async (t) => {
  const sock = path.join(os.tmpdir(), `strata-wt-${process.pid}-drain.sock`);
  const url = `ipc://${sock}`;
  const w = await startWorker(['--model', STORIES260K, '--listen', url, '--ctx', '1100', '--max-new-tokens', '1000']);
  const c = connectWorker(url, { timeoutMs: 30000 });
  t.teardown(() => c.close());
  const long = c.generate('Once upon a time', { ...GREEDY, maxTokens: 1000 }).then((r) => ({ r }), (err) => ({ err }));
  await new Promise((r) => setTimeout(r, 150));
  const exited = stopWorker(w, 'SIGTERM');
  const { r, err } = await long;
  t.equal(err, undefined, 'the request in flight was served');
  t.equal(r?.genTokens, 1000);
  t.equal(await exited, 0, 'clean exit');
});

async function greedyAll(c, prompts, maxTokens) {
  return Promise.all(prompts.map((p) => c.generate(p, { ...GREEDY, maxTokens })));
}

for (const [name, model] of [
  ['stories260K', () => STORIES260K],
  ['random llama Q8_0', () => ensureModel({ arch: 'llama', type: 'Q8_0', dim: 128, layers: 3, heads: 4, kvHeads: 1,
    ff: 256, vocab: 'stories' })],
]) {
  t.test(`batched == one at a time (${name}), 32 concurrent clients`, async (t) => {
    const sock = path.join(os.tmpdir(), `strata-wt-${process.pid}-${name.length}.sock`);
    const url = `ipc://${sock}`;
    const w = await startWorker(['--model', model(), '--listen', url, '--max-batch', '32', '--ctx', '512']);
    const one = connectWorker(url, { timeoutMs: 60000 });
    t.teardown(() => one.close());
    const alone = [];
    for (const p of PROMPTS) {
      alone.push(await one.generate(p, { ...GREEDY, maxTokens: 24 }));
    }
    const before = await one.stats();
    const batched = await greedyAll(one, PROMPTS, 24);
    const after = await one.stats();
    t.ok(after.max_seqs_in_step >= 2, `requests shared steps (max ${after.max_seqs_in_step} sequences per step)`);
    t.ok(after.steps - before.steps < 8 * 25, 'fewer steps than one at a time');
    for (let i = 0; i < PROMPTS.length; i++) {
      t.equal(batched[i].text, alone[i].text, `prompt ${i}: same text`);
      t.equal(batched[i].genTokens, alone[i].genTokens);
    }
    // scores too
    const opts = [' yes', ' no', ' maybe so'];
    const sAlone = [];
    for (const p of PROMPTS) {
      sAlone.push(await one.score(`${p} Is it good?`, opts));
    }
    const sBatched = await Promise.all(PROMPTS.map((p) => one.score(`${p} Is it good?`, opts)));
    // bit for bit: the batched kernels give a row the same result whatever
    // rows run beside it, and a reused prefix holds the same KV rows
    for (let i = 0; i < PROMPTS.length; i++) {
      t.same(sBatched[i].options.map((o) => o.logprob), sAlone[i].options.map((o) => o.logprob), `score ${i}`);
    }
    // 32 clients at once, each with its own connection
    const clients = Array.from({ length: 32 }, () => connectWorker(url, { timeoutMs: 60000 }));
    const results = await Promise.all(clients.map((c, i) => c.generate(PROMPTS[i % PROMPTS.length],
      { ...GREEDY, maxTokens: 24, onToken: i % 2 === 0 ? () => {} : undefined })));
    for (let i = 0; i < 32; i++) {
      t.equal(results[i].text, alone[i % PROMPTS.length].text, `client ${i}`);
    }
    await Promise.all(clients.map((c) => c.close()));
    t.equal(await stopWorker(w), 0);
  });
}

t.test('every model request can be cancelled: AbortSignal, cancel(rid), disconnect, client timeout', async (t) => {
  const port = await freePort();
  const url = `tcp://127.0.0.1:${port}`;
  // one request runs at a time, two may be in flight: a request the worker
  // did not drop would block the next one with STRATA_ERR_BUSY
  const w = await startWorker(['--model', STORIES260K, '--listen', url, '--ctx', '2048', '--max-new-tokens', '2000',
    '--max-batch', '1', '--max-queue', '2']);
  const c = connectWorker(url, { timeoutMs: 30000 });
  t.teardown(() => c.close());
  const LONG = { ...GREEDY, maxTokens: 2000 };
  const idle = async (what) => {
    let s;
    for (let i = 0; i < 100; i++) {
      s = await c.stats();
      if (s.in_flight === 0) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    t.equal(s.in_flight, 0, `${what}: the worker dropped the work`);
    return s;
  };

  // plain generate (no onToken) with an AbortSignal
  let ac = new AbortController();
  setTimeout(() => ac.abort(), 150);
  let t0 = Date.now();
  const g = await c.generate('Once upon a time', { ...LONG, signal: ac.signal });
  t.equal(g.stopReason, 'cancelled', 'plain generate: cancelled');
  t.ok(g.genTokens < 2000 && g.text.length > 0, `partial text kept (${g.genTokens} tokens)`);
  t.ok(Date.now() - t0 < 1500, 'stopped soon after the abort');
  await idle('AbortSignal');

  // chat: cancel by the rid the worker gave at submit, from another client
  const other = connectWorker(url, { timeoutMs: 5000 });
  t.teardown(() => other.close());
  let rid = null;
  const chat = c.chat([{ role: 'user', content: 'Tell me a story' }], { ...LONG, onRequestId: (r) => { rid = r; } });
  while (rid === null) await new Promise((r) => setTimeout(r, 10));
  t.ok(Number.isInteger(rid) && rid > 0, `rid at submit: ${rid}`);
  await new Promise((r) => setTimeout(r, 100));
  t.equal(await other.cancel(rid), true, 'cancel by rid: found');
  t.equal((await chat).stopReason, 'cancelled', 'chat: cancelled by rid');
  await idle('cancel(rid)');

  // score and embed queued behind a long generation: aborting them rejects
  const running = c.generate('Once upon a time', { ...LONG, signal: (ac = new AbortController()).signal });
  await new Promise((r) => setTimeout(r, 50));
  const sc = new AbortController();
  const scored = c.score('Once upon a time, there was a', [' little', ' big'], { signal: sc.signal })
    .then(() => 'resolved', (e) => e.code);
  await new Promise((r) => setTimeout(r, 50));
  sc.abort();
  t.equal(await scored, 'STRATA_ERR_CANCELLED', 'queued score: cancelled');
  ac.abort();
  t.equal((await running).stopReason, 'cancelled');
  t.equal(await rejects(c.score('x', [' y'], { signal: AbortSignal.abort() }), 'STRATA_ERR_CANCELLED'), true,
    'score with an aborted signal: not even sent');
  const s1 = await c.score('Once upon a time, there was a', [' little', ' big'], { signal: new AbortController().signal });
  t.equal(s1.best, ' little', 'the async form gives the plain result');
  await idle('score');

  // a client that disconnects mid-request: the worker cancels its work
  const before = await c.stats();
  const b = binding();
  const h = b.workerConnect(url);
  const lost = b.workerRequest(h, JSON.stringify({ v: 1, op: 'generate', prompt: 'Once upon a time', max_tokens: 2000,
    temperature: 0 }), 30000).then(() => 'resolved', (e) => e.code);
  await new Promise((r) => setTimeout(r, 200));
  t.equal((await c.stats()).in_flight, 1, 'the raw request runs');
  t0 = Date.now();
  b.workerClose(h);
  t.ok(['STRATA_ERR_CLOSED', 'STRATA_ERR_WORKER_LOST'].includes(await lost), 'the closed client failed its request');
  const after = await idle('disconnect');
  t.ok(Date.now() - t0 < 1500, 'the slot freed at once');
  t.equal(after.cancelled_disconnected - before.cancelled_disconnected, 1, 'counted as cancelled by a disconnect');

  // a client whose timeout passes: the worker drops the request at the same time
  const impatient = connectWorker(url, { timeoutMs: 300 });
  t0 = Date.now();
  const late = await impatient.generate('Once upon a time', LONG).then(() => 'resolved', (e) => e.code);
  t.ok(['STRATA_ERR_TIMEOUT'].includes(late), `client timeout: ${late}`);
  await idle('client timeout');
  t.ok(Date.now() - t0 < 2000, 'dropped by the worker within its deadline');
  await impatient.close();

  // both slots are free: two requests in flight are accepted
  const two = await Promise.all([c.generate('One day', { ...GREEDY, maxTokens: 3 }),
    c.generate('Mom said', { ...GREEDY, maxTokens: 3 })]);
  t.same(two.map((x) => x.genTokens), [3, 3], 'no stale request holds a slot');
  t.equal(await stopWorker(w), 0);
});

t.test('tls+tcp:// with a self-signed CA, server and client certificates (openssl at test time)', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-tls-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const f = (n) => path.join(dir, n);
  const ssl = (...a) => execFileSync('openssl', a, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const ca = (name) => ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '2', '-subj', `/CN=${name}`);
  const leaf = (name, issuer, ext) => {
    ssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`,
      '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    fs.writeFileSync(f(`${name}.ext`), ext);
    ssl('x509', '-req', '-in', `${name}.csr`, '-CA', `${issuer}.pem`, '-CAkey', `${issuer}.key`, '-CAcreateserial',
      '-out', `${name}.pem`, '-days', '2', '-extfile', `${name}.ext`);
  };
  ca('ca');
  ca('other-ca');
  leaf('server', 'ca', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  leaf('client', 'ca', 'extendedKeyUsage=clientAuth\n');
  const pem = (n) => fs.readFileSync(f(n), 'utf8');

  const port = await freePort();
  const url = `tls+tcp://127.0.0.1:${port}`;
  const w = await startWorker(['--model', STORIES260K, '--listen', url, '--tls-cert', f('server.pem'),
    '--tls-key', f('server.key')]);
  const c = connectWorker(url, { timeoutMs: 10000, tls: { ca: pem('ca.pem') } });
  t.teardown(() => c.close());
  t.equal((await c.health()).status, 'ok', 'health over TLS (by address: the CA signature is checked)');
  const named = connectWorker(url, { timeoutMs: 10000, tls: { ca: pem('ca.pem'), serverName: 'localhost' } });
  t.equal((await named.health()).status, 'ok', 'with serverName: the DNS name in the certificate is checked too');
  await named.close();
  const g = await c.generate('Once upon a time', { ...GREEDY, maxTokens: 8 });
  t.equal(g.genTokens, 8, 'generate over TLS');

  t.throws(() => connectWorker(url, { tls: {} }), { code: 'STRATA_ERR_ARG', message: /needs the TLS option 'ca'/ },
    'no CA: refused before dialing');
  t.throws(() => connectWorker(`tcp://127.0.0.1:${port}`, { tls: { ca: pem('ca.pem') } }), /need a tls\+tcp/);
  t.throws(() => connectWorker(url, { tls: { ca: 'not a pem' } }), { code: 'STRATA_ERR_ARG' }, 'a bad CA PEM');
  const wrong = connectWorker(url, { timeoutMs: 1500, tls: { ca: pem('other-ca.pem') } });
  t.equal(await rejects(wrong.health(), 'STRATA_ERR_TIMEOUT'), true, 'a worker certificate from another CA: no connection');
  await wrong.close();
  const byName = connectWorker(url, { timeoutMs: 1500, tls: { ca: pem('ca.pem'), serverName: 'elsewhere.example' } });
  t.equal(await rejects(byName.health(), 'STRATA_ERR_TIMEOUT'), true, 'a name the certificate does not carry: refused');
  await byName.close();
  const plain = connectWorker(`tcp://127.0.0.1:${port}`, { timeoutMs: 1500 });
  t.equal(await rejects(plain.health(), 'STRATA_ERR_TIMEOUT'), true, 'plain tcp to the TLS port: no answer');
  await plain.close();
  t.equal(await stopWorker(w), 0);

  // client certificates required (--tls-ca)
  const port2 = await freePort();
  const url2 = `tls+tcp://127.0.0.1:${port2}`;
  const w2 = await startWorker(['--model', STORIES260K, '--listen', url2, '--tls-cert', f('server.pem'),
    '--tls-key', f('server.key'), '--tls-ca', f('ca.pem')]);
  const anon = connectWorker(url2, { timeoutMs: 1500, tls: { ca: pem('ca.pem') } });
  t.equal(await rejects(anon.health(), 'STRATA_ERR_TIMEOUT'), true, 'no client certificate: refused');
  await anon.close();
  const mutual = connectWorker(url2, { timeoutMs: 10000,
    tls: { ca: pem('ca.pem'), cert: pem('client.pem'), key: pem('client.key') } });
  t.equal((await mutual.health()).status, 'ok', 'client certificate from the CA: served');
  await mutual.close();
  t.equal(await stopWorker(w2), 0);

  // option errors of the worker are clear
  const fails = (args) => new Promise((resolve) => {
    spawnWorker(args).then((p) => { p.kill('SIGKILL'); resolve('started'); }, (e) => resolve(e.message));
  });
  const p3 = await freePort();
  t.match(await fails(['--model', STORIES260K, '--listen', `tls+tcp://127.0.0.1:${p3}`]),
    /tls\+tcp:\/\/127\.0\.0\.1:\d+ is a TLS URL: give --tls-cert FILE and --tls-key FILE/);
  t.match(await fails(['--model', STORIES260K, '--listen', `tcp://127.0.0.1:${p3}`, '--tls-cert', f('server.pem')]),
    /need a tls\+tcp:\/\/ URL/);
  t.match(await fails(['--model', STORIES260K, '--listen', `tls+tcp://127.0.0.1:${p3}`, '--tls-cert',
    f('server.key'), '--tls-key', f('server.key')]), /TLS certificate .* key .*:/);
});
