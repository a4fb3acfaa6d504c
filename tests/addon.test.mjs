// The Node-API addon and its JS wrapper (node/lib/index.js) on the
// stories260K model, checked against node-llama-cpp (llama.cpp) where the
// output is deterministic.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { getLlama } from 'node-llama-cpp';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MODEL = path.resolve(root, '..', 'shared', 'models', 'stories260K.gguf');
const PROMPT = 'Once upon a time';
const THREADS = 1; // the test machines are small and shared
const GREEDY = { temperature: 0, repeatPenalty: 1 };

const strata = require('../node/lib/index.js');
const native = strata.native;

// --------------------------------------------------------- reference ---

let refState = null;
async function reference() {
  if (refState === null) {
    const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' });
    const model = await llama.loadModel({ modelPath: MODEL });
    refState = { llama, model };
  }
  return refState;
}

// node-llama-cpp's greedy continuation of BOS + prompt: the tokens and their
// text (detokenized after the prompt, so SPM's leading space is kept).
async function referenceGreedy(prompt, maxTokens) {
  const { model } = await reference();
  const ctx = await model.createContext({ contextSize: 512, threads: THREADS });
  try {
    const input = [model.tokens.bos, ...model.tokenize(prompt)];
    const out = [];
    let eog = false;
    for await (const tok of ctx.getSequence().evaluate(input, { temperature: 0 })) {
      if (model.isEogToken(tok)) {
        eog = true;
        break;
      }
      out.push(tok);
      if (out.length >= maxTokens) {
        break;
      }
    }
    return { tokens: out, text: model.detokenize(out, false, input), eog };
  } finally {
    await ctx.dispose();
  }
}

t.teardown(async () => {
  if (refState !== null) {
    await refState.model.dispose();
    await refState.llama.dispose();
  }
});

const model = await strata.loadModel(MODEL, { threads: THREADS });
t.teardown(() => model.close());

// ------------------------------------------------------------- basics ---

t.test('model info', async (t) => {
  const info = model.info;
  t.equal(info.arch, 'llama');
  t.equal(info.tokenizer, 'spm');
  t.equal(info.nVocab, 512);
  t.equal(info.bos, 1);
  t.equal(info.eos, 2);
  t.ok(info.nLayers > 0 && info.nEmbd > 0 && info.nCtxTrain > 0);
  t.equal(info.fileBytes, fs.statSync(MODEL).size);
  t.equal(model.addBos, true);
  const raw = await native.load(MODEL, { threads: THREADS });
  t.same(raw.info, native.modelInfo(raw.model));
  t.same({ ...info, contextSize: undefined }, { ...raw.info, contextSize: undefined }, 'the wrapper reports what the addon does');
  t.equal(info.contextSize, 2048, 'default context: min(trained, 4096)');
  native.close(raw.model);
});

t.test('tokenize and detokenize', async (t) => {
  const toks = model.tokenize(PROMPT, { addBos: false });
  t.ok(toks instanceof Int32Array);
  t.same(Array.from(toks), [403, 407, 261, 378]);
  t.same(Array.from(model.tokenize(PROMPT)), [1, 403, 407, 261, 378], 'BOS by default (SPM)');
  const { model: ref } = await reference();
  t.same(Array.from(toks), Array.from(ref.tokenize(PROMPT)), 'same ids as llama.cpp');
  const text = 'Lily and Tom went to the park. They saw a dog!';
  t.same(Array.from(model.tokenize(text, { addBos: false })), Array.from(ref.tokenize(text)));
  t.equal(model.detokenize(model.tokenize(text, { addBos: false })), ref.detokenize(ref.tokenize(text)));
  t.equal(model.detokenize([1, 403, 407]), ref.detokenize([1, 403, 407]));
  t.equal(model.tokenToPiece(407), ref.detokenize([407], false, [403]), 'piece keeps its leading space');
  t.equal(model.tokenToPiece(1), '', 'control tokens render as "" by default');
  t.same(Array.from(model.tokenize('', { addBos: false })), []);
});

t.test('chat template', async (t) => {
  const msgs = [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Tell a story.' },
  ];
  const text = model.applyChatTemplate(msgs);
  t.type(text, 'string');
  t.match(text, /Be brief\./);
  t.match(text, /Tell a story\./);
  const chatml = model.applyChatTemplate(msgs, { template: 'chatml' });
  t.match(chatml, /<\|im_start\|>user\nTell a story\.<\|im_end\|>/);
  t.match(chatml, /<\|im_start\|>assistant\n$/, 'generation prompt added');
  const noGen = model.applyChatTemplate(msgs, { template: 'chatml', addGenerationPrompt: false });
  t.notMatch(noGen, /assistant/);
  t.throws(() => model.applyChatTemplate(msgs, { template: 'no-such-template' }), { code: /^STRATA_ERR_/ });
  const r = await model.generate([{ role: 'user', content: 'Hi' }], { maxTokens: 8, ...GREEDY, system: 'S' });
  t.type(r.text, 'string');
  t.ok(r.promptTokens > 0);
});

// --------------------------------------------------------- generation ---

t.test('greedy generation matches node-llama-cpp', async (t) => {
  const ref = await referenceGreedy(PROMPT, 64);
  const r = await model.generate(PROMPT, { maxTokens: 64, ...GREEDY });
  t.equal(r.text, ref.text);
  t.equal(r.genTokens, ref.tokens.length);
  t.equal(r.stopReason, ref.eog ? 'eog' : 'maxTokens');
  t.equal(r.promptTokens, 5);
  t.ok(r.timings.promptMs >= 0 && r.timings.genMs > 0);
  t.ok(r.timings.genTokensPerSec > 0);

  // The same prompt again reuses the cached prefix and must not change the answer.
  const again = await model.generate(PROMPT, { maxTokens: 64, ...GREEDY });
  t.equal(again.text, ref.text);

  // A raw token prompt gives the same continuation.
  const viaTokens = await model.generate(model.tokenize(PROMPT), { maxTokens: 64, ...GREEDY });
  t.equal(viaTokens.text, ref.text);
});

t.test('next-token logits agree with greedy generation', async (t) => {
  const ref = await referenceGreedy(PROMPT, 1);
  const logits = await model.evaluate(model.tokenize(PROMPT));
  t.ok(logits instanceof Float32Array);
  t.equal(logits.length, model.info.nVocab);
  let best = 0;
  for (let i = 1; i < logits.length; i++) {
    if (logits[i] > logits[best]) {
      best = i;
    }
  }
  t.equal(best, ref.tokens[0]);
  const f32 = await model.evaluate(model.tokenize(PROMPT), { kvF32: true });
  let maxDiff = 0;
  for (let i = 0; i < logits.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(f32[i] - logits[i]));
  }
  t.ok(maxDiff < 0.05, `F16 vs F32 KV cache logits differ by ${maxDiff}`);
});

t.test('streaming pieces concatenate to the final text', async (t) => {
  const pieces = [];
  const r = await model.generate(PROMPT, { maxTokens: 48, ...GREEDY, onToken: (p) => pieces.push(p) });
  t.ok(pieces.length > 1);
  t.ok(pieces.every((p) => typeof p === 'string' && p.length > 0));
  t.equal(pieces.join(''), r.text);
  const seeded = { maxTokens: 48, temperature: 0.9, seed: 1234 };
  const a = await model.generate(PROMPT, seeded);
  const b = await model.generate(PROMPT, seeded);
  t.equal(a.text, b.text, 'same seed, same text');
});

t.test('stop strings', async (t) => {
  const ref = await referenceGreedy(PROMPT, 64);
  const word = ref.text.split(' ').filter((w) => /^[a-z]{4,}$/.test(w))[1];
  t.ok(word, 'the reference text has a word to stop at');
  const pieces = [];
  const r = await model.generate(PROMPT, { maxTokens: 64, ...GREEDY, stop: [word], onToken: (p) => pieces.push(p) });
  t.equal(r.stopReason, 'stop');
  t.equal(r.text, ref.text.slice(0, ref.text.indexOf(word)));
  t.equal(pieces.join(''), r.text, 'the stop string is never streamed');
});

t.test('onToken returning false stops; throwing rejects', async (t) => {
  const r = await model.generate(PROMPT, { maxTokens: 200, ...GREEDY, onToken: () => false });
  t.equal(r.stopReason, 'callback');
  t.ok(r.genTokens < 200);
  await t.rejects(
    model.generate(PROMPT, {
      maxTokens: 20,
      onToken: () => {
        throw new Error('boom from onToken');
      },
    }),
    { message: 'boom from onToken' },
  );
  // The model is still usable afterwards.
  const ok = await model.generate(PROMPT, { maxTokens: 4, ...GREEDY });
  t.equal(ok.genTokens, 4);
});

// A generation long enough to observe: until the context is full.
const LONG = { maxTokens: 0, temperature: 0, repeatPenalty: 1 };

t.test('AbortSignal cancels mid-generation', async (t) => {
  const full = await model.generate(PROMPT, LONG);
  t.ok(full.genTokens > 100, `uncancelled run generates ${full.genTokens} tokens`);

  const ac = new AbortController();
  let pieces = 0;
  const r = await model.generate(PROMPT, {
    ...LONG,
    signal: ac.signal,
    onToken: () => {
      if (++pieces === 3) {
        ac.abort();
      }
    },
  });
  t.equal(r.stopReason, 'cancelled');
  t.ok(r.genTokens >= 3 && r.genTokens < full.genTokens, `stopped after ${r.genTokens} tokens`);
  t.ok(full.text.startsWith(r.text), 'partial text is a prefix of the full text');

  const pre = new AbortController();
  pre.abort();
  const r2 = await model.generate(PROMPT, { ...LONG, signal: pre.signal });
  t.equal(r2.stopReason, 'cancelled');
  t.equal(r2.text, '');

  // Abort while queued behind another call.
  const queued = new AbortController();
  const first = model.generate(PROMPT, { maxTokens: 32, ...GREEDY });
  const second = model.generate(PROMPT, { ...LONG, signal: queued.signal });
  queued.abort();
  t.equal((await first).genTokens, 32);
  t.equal((await second).stopReason, 'cancelled');
});

t.test('the event loop keeps ticking during generation', async (t) => {
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const t0 = performance.now();
  const p = model.generate(PROMPT, LONG);
  const callMs = performance.now() - t0;
  const r = await p;
  const totalMs = performance.now() - t0;
  clearInterval(timer);
  t.ok(callMs < 20, `generate() returned in ${callMs.toFixed(2)} ms`);
  // Timers fire about once per ms while the event loop is free; demand a
  // fraction of that to stay robust on a loaded machine.
  const expected = Math.floor(totalMs / 10);
  t.ok(ticks >= Math.max(2, expected), `${ticks} ticks in ${totalMs.toFixed(0)} ms (${r.genTokens} tokens)`);
});

t.test('8 concurrent generate calls are queued and all correct', async (t) => {
  const prompts = [
    'Once upon a time',
    'Lily wanted a',
    'The dog',
    'Tom and Sue',
    'One day, a bird',
    'The sun was',
    'She saw a big',
    'Once upon a time, there',
  ];
  const expected = [];
  for (const p of prompts) {
    expected.push((await referenceGreedy(p, 24)).text);
  }
  const streams = prompts.map(() => []);
  const results = await Promise.all(
    prompts.map((p, i) => model.generate(p, { maxTokens: 24, ...GREEDY, onToken: (s) => streams[i].push(s) })),
  );
  results.forEach((r, i) => {
    t.equal(r.text, expected[i], `prompt ${i}: ${JSON.stringify(prompts[i])}`);
    t.equal(streams[i].join(''), r.text, `prompt ${i} streamed its own pieces`);
  });
});

t.test('JSON mode produces JSON', async (t) => {
  const r = await model.generate('Here is some JSON:', { maxTokens: 64, temperature: 0.7, seed: 7, json: true });
  t.ok(['json', 'maxTokens'].includes(r.stopReason), `stopReason ${r.stopReason}`);
  if (r.stopReason === 'json') {
    t.doesNotThrow(() => JSON.parse(r.text), r.text);
  }
});

// ------------------------------------------------------------- errors ---

t.test('wrong argument types throw TypeError', async (t) => {
  const bad = [
    () => model.tokenize(5),
    () => model.tokenize('x', 'opts'),
    () => model.tokenize('x', { addBos: 'yes' }),
    () => model.detokenize('abc'),
    () => model.detokenize([1, 'a']),
    () => model.detokenize(new Float32Array(2)),
    () => model.tokenToPiece('1'),
    () => model.applyChatTemplate('hello'),
    () => model.applyChatTemplate([{ role: 'user' }]),
    () => model.applyChatTemplate([{ role: 'user', content: 'x' }], { template: 5 }),
    () => native.tokenize({}, 'x'),
    () => native.tokenize(native.createCancelToken(), 'x'),
    () => native.generate(null, [1]),
    () => native.cancel('token'),
    () => native.load(42),
    () => native.createContext(model, {}),
  ];
  for (const f of bad) {
    t.throws(f, TypeError, f.toString());
  }
  const badAsync = [
    () => strata.loadModel(42),
    () => strata.loadModel(MODEL, { threads: 'four' }),
    () => model.generate(42),
    () => model.generate(PROMPT, { maxTokens: 'ten' }),
    () => model.generate(PROMPT, { temperature: '0' }),
    () => model.generate(PROMPT, { json: 1 }),
    () => model.generate(PROMPT, { stop: [1] }),
    () => model.generate(PROMPT, { stop: 'x', onToken: 'f' }),
    () => model.generate(PROMPT, { signal: {} }),
    () => model.generate(PROMPT, { seed: 'abc' }),
    () => model.generate([{ role: 'user', content: 7 }]),
    () => model.evaluate('tokens'),
  ];
  for (const f of badAsync) {
    await t.rejects(f(), TypeError, f.toString());
  }
  t.throws(() => model.detokenize([100000]), RangeError, 'out-of-vocabulary token');
  await t.rejects(model.generate(PROMPT, { maxTokens: 1.5 }), TypeError);
  await t.rejects(model.generate(PROMPT, { topP: 2 }), RangeError);
  await t.rejects(model.generate('', { addBos: false }), RangeError, 'empty prompt');
  // The model still works after all of that.
  t.equal((await model.generate(PROMPT, { maxTokens: 2, ...GREEDY })).genTokens, 2);
});

t.test('missing and corrupt model files reject with a clear message', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-addon-test-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

  const missing = path.join(dir, 'missing.gguf');
  await t.rejects(strata.loadModel(missing), { code: 'STRATA_ERR_IO', message: /missing\.gguf/ });

  const bytes = fs.readFileSync(MODEL);
  const truncated = path.join(dir, 'truncated.gguf');
  fs.writeFileSync(truncated, bytes.subarray(0, Math.floor(bytes.length / 2)));
  await t.rejects(strata.loadModel(truncated), { code: 'STRATA_ERR_FORMAT', message: /truncated\.gguf/ });

  const header = path.join(dir, 'header.gguf');
  fs.writeFileSync(header, bytes.subarray(0, 100));
  await t.rejects(strata.loadModel(header), { code: 'STRATA_ERR_FORMAT' });

  const text = path.join(dir, 'text.gguf');
  fs.writeFileSync(text, 'this is not a model file at all, just some text.\n'.repeat(10));
  await t.rejects(strata.loadModel(text), { code: 'STRATA_ERR_FORMAT', message: /GGUF/ });

  await t.rejects(strata.loadModel(dir), { code: /^STRATA_ERR_(IO|FORMAT)$/ }, 'a directory');
});

t.test('errors from the engine carry a code', async (t) => {
  const small = await strata.loadModel(MODEL, { threads: THREADS, contextSize: 16 });
  t.teardown(() => small.close());
  const long = 'Once upon a time, there was a little girl named Lily who loved to play.';
  await t.rejects(small.generate(long, { maxTokens: 4 }), { code: 'STRATA_ERR_LIMIT' });
  const r = await small.generate(PROMPT, { maxTokens: 100, ...GREEDY });
  t.equal(r.stopReason, 'context');
});

// ----------------------------------------------------------- lifetime ---

t.test('close is queued, idempotent and final', async (t) => {
  const m = await strata.loadModel(MODEL, { threads: THREADS });
  const p = m.generate(PROMPT, { maxTokens: 16, ...GREEDY });
  const c1 = m.close();
  const c2 = m.close();
  t.equal((await p).genTokens, 16, 'work queued before close finishes');
  await c1;
  await c2;
  t.equal(m.closed, true);
  t.throws(() => m.tokenize('x'), { code: 'STRATA_ERR_CLOSED' });
  await t.rejects(m.generate(PROMPT), { code: 'STRATA_ERR_CLOSED' });
  await t.rejects(m.evaluate([1]), { code: 'STRATA_ERR_CLOSED' });
});

t.test('raw addon: busy contexts, freeing during work, handles', async (t) => {
  const { model: h, info } = await native.load(MODEL, { threads: THREADS });
  t.equal(info.nVocab, 512);
  const ctx = native.createContext(h, { contextSize: 512, threads: THREADS });
  t.equal(native.nCtx(ctx), 512);
  t.equal(native.nPast(ctx), 0);
  const logits = await native.eval(ctx, [1, 403, 407], { logits: true });
  t.equal(logits.length, 512);
  t.equal(native.nPast(ctx), 3);
  t.equal(await native.eval(ctx, new Int32Array([261]), { logits: false }), undefined);
  t.equal(native.nPast(ctx), 4);
  native.truncate(ctx, 1);
  t.equal(native.nPast(ctx), 1);

  const token = native.createCancelToken();
  const running = native.generate(ctx, new Int32Array([1, 403]), { maxTokens: 0, temperature: 0, cancelToken: token });
  t.throws(() => native.generate(ctx, [1], {}), { code: 'STRATA_ERR_BUSY' });
  t.throws(() => native.eval(ctx, [1], {}), { code: 'STRATA_ERR_BUSY' });
  t.throws(() => native.truncate(ctx, 0), { code: 'STRATA_ERR_BUSY' });
  // Freeing a busy context cancels it; the free happens when the work ends.
  native.freeContext(ctx);
  native.freeContext(ctx);
  native.close(h);
  native.close(h);
  t.equal(native.isClosed(h), true);
  const r = await running;
  t.equal(r.stopReason, 'cancelled');
  t.throws(() => native.nPast(ctx), { code: 'STRATA_ERR_CLOSED' });
  t.throws(() => native.tokenize(h, 'x'), { code: 'STRATA_ERR_CLOSED' });
  t.throws(() => native.createContext(h, {}), { code: 'STRATA_ERR_CLOSED' });
  native.cancel(token);
  t.equal(native.isCancelled(token), true);

  // A context outlives an explicitly closed model's JS handle being dropped.
  const { model: h2 } = await native.load(MODEL, { threads: THREADS });
  const ctx2 = native.createContext(h2, { contextSize: 64, threads: THREADS });
  const gen = native.generate(ctx2, [1, 403], { maxTokens: 8, temperature: 0 });
  native.close(h2); // engine model freed only after ctx2 and the work are gone
  t.equal((await gen).genTokens, 8);
  t.throws(() => native.generate(ctx2, [1], {}), { code: 'STRATA_ERR_CLOSED' });
  native.freeContext(ctx2);

  // Handles left to the garbage collector are finalized without crashing.
  for (let i = 0; i < 3; i++) {
    const { model: g } = await native.load(MODEL, { threads: THREADS });
    native.createContext(g, { contextSize: 32 });
  }
  if (global.gc) {
    global.gc();
  }
});
