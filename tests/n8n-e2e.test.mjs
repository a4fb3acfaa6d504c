// n8n-nodes-strata end to end.
//
// Part 1 runs the compiled Strata node (dist/) with a stub of n8n's execute
// context: every operation on the stories260K model, the rule fallbacks
// (missing model, time budget), cancellation and per-item errors.
//
// Part 2 does what `npm start` does, in a temporary folder: n8n 2.8.4 from
// tests/n8n (installed there once: scripts/install-n8n.sh), our package packed
// and installed as a community package, a private redis-server, credentials
// and workflows imported and published, `n8n start`. Then it calls the
// cached-match-score webhook: a miss computed by the node and stored in Redis
// with its TTL, a hit served from Redis, wrong auth (403), a bad request
// (400), and a copy of the workflow whose model path is missing (rules).
// Everything listens on 127.0.0.1.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import {
  DEFAULT_MODEL,
  ROOT,
  WEBHOOK_HEADER,
  ensureBuilt,
  ensureN8n,
  launch,
  redisCommand,
} from '../scripts/n8n-runtime.mjs';

const require = createRequire(import.meta.url);
const rules = require('../node/rules/match.js');

// tests/run.sh builds the addon before Tap starts; never race it here
ensureBuilt({ native: false });
const { Strata } = require('../dist/node/nodes/Strata/Strata.node.js');
const engine = require('../dist/node/nodes/Strata/engine.js');
const ops = require('../dist/node/nodes/Strata/operations.js');
const { extractJson, readScore } = require('../dist/node/nodes/Strata/parse.js');

const MODEL = DEFAULT_MODEL;
const THREADS = 1; // small shared test machines

const alice = {
  id: 'alice',
  name: 'Alice',
  bio: 'Backend developer moving to Madrid',
  offered: [{ name: 'Python', level: 'advanced' }, { name: 'Guitar', level: 'beginner' }],
  wanted: [{ name: 'Spanish', level: 'intermediate' }],
  availability: ['weekends', 'evenings'],
};
const bruno = {
  id: 'bruno',
  name: 'Bruno',
  bio: '',
  offered: [{ name: 'spanish', level: 'expert' }],
  wanted: [{ name: 'PYTHON', level: 'intermediate' }, { name: 'Cooking' }],
  availability: ['Weekends'],
};

t.teardown(() => engine.closeAllModels());

// ------------------------------------------------- part 1: the node alone ---

const NODE = { id: 'n1', name: 'Strata', type: 'n8n-nodes-strata.strata', typeVersion: 1, position: [0, 0], parameters: {} };

/** A stub of IExecuteFunctions: params is an object or (itemIndex) => object. */
function context(params, { items = [{ json: {} }], continueOnFail = false, signal } = {}) {
  return {
    getInputData: () => items,
    getNodeParameter: (name, i, fallback) => {
      const p = typeof params === 'function' ? params(i) : params;
      if (name in p) {
        return p[name];
      }
      if (fallback !== undefined) {
        return fallback;
      }
      throw new Error(`test stub: no parameter ${name}`);
    },
    getNode: () => NODE,
    continueOnFail: () => continueOnFail,
    getExecutionCancelSignal: () => signal,
  };
}

async function exec(params, opts) {
  const out = await new Strata().execute.call(context(params, opts));
  return out[0];
}

const base = (operation, extra = {}) => ({
  mode: 'embedded',
  modelPath: MODEL,
  operation,
  options: { threads: THREADS, ...(extra.options ?? {}) },
  ...extra,
});

t.test('node: Match Score with the rules scorer equals the rule matcher', async (t) => {
  const [item] = await exec(base('matchScore', { profileA: alice, profileB: JSON.stringify(bruno), scorer: 'rules' }));
  const expected = rules.matchScore(alice, bruno);
  t.equal(item.json.score, expected.score);
  t.equal(item.json.score, 66);
  t.same(item.json.subscores, expected.subscores);
  t.equal(item.json.source, 'rules');
  t.notOk('fallbackReason' in item.json, 'rules by choice: no fallback reason');
  t.same(item.pairedItem, { item: 0 });
});

t.test('node: Match Score asks the model, falls back to rules on an unusable answer', async (t) => {
  const [item] = await exec(base('matchScore', { profileA: alice, profileB: bruno, scorer: 'model' }));
  const r = item.json;
  t.ok(r.score >= 0 && r.score <= 100, `score ${r.score} in 0..100`);
  t.equal(r.ruleScore, 66);
  t.ok(['model', 'rules'].includes(r.source));
  t.ok(r.model.genTokens > 0, 'the model generated');
  t.equal(r.model.path, MODEL);
  if (r.source === 'rules') {
    // stories260K writes stories, not scores
    t.equal(r.fallbackReason, 'model answer had no usable score');
    t.equal(r.score, 66);
  }
});

t.test('node: Match Score with a missing model uses the rules', async (t) => {
  const [item] = await exec({ ...base('matchScore', { profileA: alice, profileB: bruno, scorer: 'model' }), modelPath: '/nonexistent/model.gguf' });
  t.equal(item.json.source, 'rules');
  t.equal(item.json.score, 66);
  t.match(item.json.fallbackReason, /^model unavailable: model file not found: \/nonexistent\/model\.gguf/);
});

t.test('node: the time budget falls back to rules (slow fake model)', async (t) => {
  const slowModel = new Promise((resolve) => setTimeout(() => resolve({}), 300));
  const budget = new engine.Budget(30);
  const ctx = { loadModel: () => slowModel, modelPath: 'fake', budget, sampling: {} };
  const t0 = Date.now();
  const r = await ops.matchScore(ctx, alice, bruno, 'model');
  budget.dispose();
  t.ok(Date.now() - t0 < 250, 'did not wait for the model');
  t.equal(r.source, 'rules');
  t.match(r.fallbackReason, /^timeout: /);

  // a generation cut by the budget
  const model = {
    applyChatTemplate: () => 'x',
    generate: (_p, o) =>
      new Promise((resolve) => {
        o.signal.addEventListener('abort', () =>
          resolve({ text: '{"sco', promptTokens: 1, genTokens: 1, stopReason: 'cancelled', timings: { genTokensPerSec: 0 } }),
        );
      }),
  };
  const b2 = new engine.Budget(30);
  const r2 = await ops.matchScore({ loadModel: async () => model, modelPath: 'fake', budget: b2, sampling: {} }, alice, bruno, 'model');
  b2.dispose();
  t.equal(r2.source, 'rules');
  t.match(r2.fallbackReason, /^timeout: .*during generation/);
});

t.test('node: a cancelled execution stops even with continueOnFail', async (t) => {
  const ac = new AbortController();
  ac.abort();
  await t.rejects(
    exec(base('matchScore', { profileA: alice, profileB: bruno, scorer: 'model' }), { signal: ac.signal, continueOnFail: true }),
    { name: 'NodeOperationError', message: /cancelled/ },
  );
});

t.test('node: Rank Matches', async (t) => {
  const twin = { id: 'twin', name: 'Twin', bio: 'b', offered: ['Spanish'], wanted: ['Python'], availability: ['weekends'] };
  const [item] = await exec(base('rankMatches', { userProfile: alice, candidates: [{ id: 'x', name: 'X' }, bruno, twin], topN: 2, scorer: 'rules' }));
  t.same(item.json.matches.map((m) => m.id), ['twin', 'bruno']);
  t.same(item.json.matches.map((m) => m.rank), [1, 2]);
  t.equal(item.json.source, 'rules');
  t.equal(item.json.userId, 'alice');

  const [viaModel] = await exec(base('rankMatches', { userProfile: alice, candidates: [bruno, twin], topN: 0, scorer: 'model' }));
  t.equal(viaModel.json.matches.length, 2);
  for (const m of viaModel.json.matches) {
    t.ok(m.score >= 0 && m.score <= 100);
  }
  const [missing] = await exec({ ...base('rankMatches', { userProfile: alice, candidates: [bruno, twin], topN: 0, scorer: 'model' }), modelPath: '/nope.gguf' });
  t.equal(missing.json.source, 'rules');
  t.match(missing.json.fallbackReason, /^model unavailable/);
  t.same(missing.json.matches.map((m) => m.id), ['twin', 'bruno']);
});

t.test('node: Generate and Chat run the model', async (t) => {
  const [g] = await exec(base('generate', { prompt: 'Once upon a time', options: { threads: THREADS, maxTokens: 8, temperature: 0 } }));
  t.equal(g.json.genTokens, 8);
  t.equal(g.json.stopReason, 'maxTokens');
  t.ok(g.json.text.length > 0);
  t.notOk('json' in g.json);

  const [c] = await exec(
    base('chat', {
      messagesInput: 'json',
      messages: '[{"role": "user", "content": "Tell me a story"}]',
      options: { threads: THREADS, maxTokens: 16, temperature: 0, json: true },
    }),
  );
  t.ok(c.json.genTokens > 0);
  t.ok('json' in c.json, 'JSON output adds the parsed field');

  const [c2] = await exec(base('chat', { messagesInput: 'fields', systemMessage: 'Be brief.', userMessage: 'Hi', options: { threads: THREADS, maxTokens: 4 } }));
  t.equal(c2.json.genTokens, 4);
});

t.test('node: Icebreakers, Improve Skill Description, Moderate Message', async (t) => {
  const [ice] = await exec(base('icebreakers', { fromProfile: alice, toProfile: bruno }));
  t.equal(ice.json.icebreakers.length, 3);
  t.ok(ice.json.icebreakers.every((s) => typeof s === 'string' && s.length > 0));
  t.ok(['model', 'rules', 'mixed'].includes(ice.json.source));
  t.same(ops.templateIcebreakers(alice, bruno), [
    "Hi Bruno! I saw you want to learn Python - I'd be glad to help.",
    'Would you be up for teaching me spanish in exchange?',
    "We're both free weekends - want to set up a first session then?",
  ]);

  const [imp] = await exec(base('improveSkill', { skillName: 'Python', skillLevel: 'advanced', skillDescription: 'i know python', options: { threads: THREADS, maxTokens: 12 } }));
  t.equal(imp.json.skill, 'Python');
  t.equal(imp.json.original, 'i know python');
  t.ok(imp.json.improved.length > 0);
  t.ok(imp.json.model.genTokens > 0);

  const [mod] = await exec(base('moderate', { message: 'Pay me upfront with a gift card', scorer: 'rules' }));
  t.equal(mod.json.label, 'scam');
  t.equal(mod.json.source, 'rules');
  const [mod2] = await exec(base('moderate', { message: 'Happy to swap lessons on Saturday!', scorer: 'model' }));
  t.ok(['ok', 'inappropriate', 'scam'].includes(mod2.json.label));
  t.equal(mod2.json.ruleLabel, 'ok');
});

t.test('node: per-item errors', async (t) => {
  const items = [{ json: {} }, { json: {} }, { json: {} }];
  const params = (i) => base('matchScore', { profileA: i === 1 ? '{not json' : alice, profileB: bruno, scorer: 'rules' });
  const out = await exec(params, { items, continueOnFail: true });
  t.equal(out.length, 3);
  t.equal(out[0].json.score, 66);
  t.same(out[1].json, { error: 'Profile A is not valid JSON' });
  t.same(out[1].pairedItem, { item: 1 });
  t.equal(out[2].json.score, 66);

  const err = await exec(params, { items }).catch((e) => e);
  t.equal(err.name, 'NodeOperationError');
  t.equal(err.context.itemIndex, 1);

  // worker mode: tests/node-worker.test.mjs
  await t.rejects(exec({ ...base('matchScore', { profileA: alice, profileB: bruno }), mode: 'remote' }), { message: /Unknown mode "remote"/ });
  await t.rejects(exec(base('matchScore', { profileA: [1], profileB: bruno, scorer: 'rules' })), { message: /Profile A must be a JSON object/ });
});

t.test('node: the model cache loads a model once per path and options', async (t) => {
  const a = await engine.getModel(MODEL, { threads: THREADS });
  const b = await engine.getModel(MODEL, { threads: THREADS });
  t.equal(a, b);
  const c = await engine.getModel(MODEL, { threads: THREADS, contextSize: 256 });
  t.not(a, c);
  await t.rejects(engine.getModel('/nope.gguf', {}), { code: 'STRATA_ERR_MODEL_MISSING' });
});

t.test('parse: robust JSON reading', async (t) => {
  t.same(extractJson('{"score": 80}'), { score: 80 });
  t.same(extractJson('Sure! {"score": 80, "reasons": ["a"]} hope it helps'), { score: 80, reasons: ['a'] });
  t.same(extractJson('{"score": 72, "reasons": ["mutual", "sha'), { score: 72, reasons: ['mutual', 'sha'] });
  t.same(extractJson('{"score": 72, "reas'), { score: 72 });
  t.equal(extractJson('   '), undefined);
  t.equal(extractJson('no json here'), undefined);
  t.equal(readScore(85), 85);
  t.equal(readScore('85%'), 85);
  t.equal(readScore(0.85), 85);
  t.equal(readScore('8/10'), 80);
  t.equal(readScore(250), undefined);
  t.equal(readScore('none'), undefined);
});

// ----------------------------------------------------- part 2: real n8n ---

function badModelVariant(wf) {
  const copy = JSON.parse(JSON.stringify(wf));
  copy.id = 'StrataMatchBadModel';
  copy.name = `${wf.name} (missing model)`;
  for (const n of copy.nodes) {
    if (n.type === 'n8n-nodes-base.webhook') {
      n.parameters.path = 'strata/match-score-missing-model';
      n.webhookId = '0d5e2c1a-9b8f-4e7d-a6c5-b4a3f2e1d0c9';
    }
    if (n.type === 'n8n-nodes-strata.strata') {
      n.parameters.modelPath = '/nonexistent/strata-missing.gguf';
    }
    if (n.name === 'Pair Key') {
      const key = n.parameters.assignments.assignments.find((a) => a.name === 'key');
      key.value = key.value.replace("'strata:match:'", "'strata:match-missing:'");
    }
  }
  return copy;
}

t.test('n8n: cached match score webhook, end to end', async (t) => {
  try {
    ensureN8n({ log: (m) => t.comment(m) });
  } catch (e) {
    t.skip(`n8n 2.8.4 cannot be installed into tests/n8n (${e.message.split('\n')[0]}); run scripts/install-n8n.sh`);
    return;
  }
  if (spawnSync('redis-server', ['--version']).status !== 0) {
    t.skip('redis-server is not installed (apt-get install redis-server)');
    return;
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'strata-n8n-e2e-'));
  const key = 'test-key-0123456789';
  const bundled = JSON.parse(readFileSync(path.join(ROOT, 'workflows', 'cached-match-score.json'), 'utf8'));
  const rt = await launch({ dir, buildNative: false, model: MODEL, webhookKey: key, workflows: [bundled, badModelVariant(bundled)] });
  t.teardown(async () => {
    await rt.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const hook = (p) => rt.webhooks.find((h) => h.path === p).url;
  const post = async (url, body, headers = { [WEBHOOK_HEADER]: key }) => {
    const r = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: typeof body === 'string' ? body : JSON.stringify(body),
      signal: AbortSignal.timeout(60000),
    });
    const text = await r.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {
      // not JSON
    }
    return { status: r.status, cache: r.headers.get('x-strata-cache'), text, json };
  };
  const url = hook('strata/match-score');
  const body = { a: alice, b: bruno, ttlSeconds: 120 };
  const expectedRules = rules.matchScore(alice, bruno);

  // miss: computed by the Strata node, stored in Redis
  const miss = await post(url, body);
  t.equal(miss.status, 200, miss.text);
  t.equal(miss.cache, 'MISS');
  const r = miss.json;
  t.equal(r.cached, false);
  t.equal(r.cacheKey, 'strata:match:alice:bruno');
  t.ok(Number.isInteger(r.score) && r.score >= 0 && r.score <= 100, `score ${r.score}`);
  t.ok(Array.isArray(r.reasons) && r.reasons.length > 0);
  t.same(r.subscores, expectedRules.subscores);
  t.equal(r.ruleScore, expectedRules.score);
  t.ok(['model', 'rules'].includes(r.source));
  t.ok(r.model && r.model.genTokens > 0, 'the model ran inside n8n');
  t.equal(r.model.path, MODEL);

  const stored = await redisCommand(rt.redis.port, 'GET', 'strata:match:alice:bruno');
  const { cached: _c, cacheKey: _k, ...scored } = r;
  t.same(JSON.parse(stored), scored, 'Redis holds the node output');
  const ttl = await redisCommand(rt.redis.port, 'TTL', 'strata:match:alice:bruno');
  t.ok(ttl > 60 && ttl <= 120, `TTL ${ttl} from ttlSeconds 120`);

  // hit: the same pair in either order comes from Redis
  const hit = await post(url, body);
  t.equal(hit.status, 200, hit.text);
  t.equal(hit.cache, 'HIT');
  t.same(hit.json, { ...r, cached: true });
  const swapped = await post(url, { a: bruno, b: alice });
  t.equal(swapped.cache, 'HIT');
  t.equal(swapped.json.score, r.score);

  // default TTL
  const other = await post(url, { a: alice, b: { ...bruno, id: 'bruno2' } });
  t.equal(other.cache, 'MISS');
  const ttl2 = await redisCommand(rt.redis.port, 'TTL', 'strata:match:alice:bruno2');
  t.ok(ttl2 > 3500 && ttl2 <= 3600, `default TTL ${ttl2}`);

  // auth and validation
  const wrong = await post(url, body, { [WEBHOOK_HEADER]: 'wrong' });
  t.equal(wrong.status, 403);
  const none = await post(url, body, {});
  t.equal(none.status, 403);
  const bad = await post(url, { a: alice });
  t.equal(bad.status, 400);
  t.match(bad.json.error, /each profile needs its own "id"/);

  // the node's rules fallback in n8n: the model file is missing
  const fb = await post(hook('strata/match-score-missing-model'), body);
  t.equal(fb.status, 200, fb.text);
  t.equal(fb.cache, 'MISS');
  t.equal(fb.json.source, 'rules');
  t.equal(fb.json.score, expectedRules.score);
  t.same(fb.json.reasons, expectedRules.reasons);
  t.match(fb.json.fallbackReason, /^model unavailable: model file not found: \/nonexistent\/strata-missing\.gguf/);
  t.equal(await redisCommand(rt.redis.port, 'EXISTS', 'strata:match-missing:alice:bruno'), 1);
});
