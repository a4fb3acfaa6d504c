// Numerical parity with node-llama-cpp 3.22.1 (llama.cpp's CPU backend).
//
// Both engines get the same token ids (llama.cpp's tokenization, so this
// tests the forward pass, not the tokenizer), start from an empty F32 KV
// cache, and return raw next-token logits; probabilities are a float64
// softmax of those. Compared: the largest probability difference over the
// whole vocabulary, and the top-5 lists.
//
// 1. stories260K (a real trained model): greedy continuation of "Once upon a
//    time" for 64 tokens is identical, and over 6 prompts the top-5
//    probabilities agree within 1e-4.
// 2. Random-weight models from native/build/tools/mkmodel for llama (SPM
//    vocabulary of stories260K), qwen2 (q/k/v biases) and qwen3 (q/k norms,
//    head_dim != dim/heads) with Qwen2's real 151936-token vocabulary, in F32,
//    F16, Q8_0 and Q4_K, plus llama in BF16, Q4_0, Q5_K, Q6_K and the Q4_K_M
//    mix. Shapes cover GQA, MQA, tied and untied output, rows that are not a
//    multiple of 32 (F32/F16 only) and prompts of 1 to 131 tokens.
//
// Set PARITY_VERBOSE=1 to print every comparison.
import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openPeerModel, disposePeer } from './helpers/peer.mjs';
import { ensureModel, ROOT, runMkmodel, STORIES260K } from './helpers/models.mjs';
import { openStrataModel } from './helpers/strata.mjs';
import { compareLogits, describe, randomTokens, topKProblems } from './helpers/compare.mjs';

const VERBOSE = process.env.PARITY_VERBOSE === '1';
const CONTEXT = 256;

// Why each tolerance (max |p_strata - p_peer| over the vocabulary):
// Both engines read the same stored weights, so weight quantization error
// cancels; what is left is how activations are rounded before each dot
// product and the order of float additions.
// - F32: only summation order differs (llama.cpp's tiled SIMD sgemm vs
//   Strata's kernels): relative logit error ~1e-6, far below 1e-4.
// - F16 / BF16: activations are rounded to F16/BF16 on both sides (ggml's
//   vec_dot_type); a last-bit difference upstream can flip one rounding, a
//   ~1e-3 relative step on that element, diluted over the dot product.
// - Q8_0 / Q4_0 / K-quants: activations are quantized to Q8_0 / Q8_K blocks
//   (the same reference rounding on both sides); a flip moves one element by
//   one int8 step (1/127 of its block's max). Measured, not guessed: see the
//   summary comments this test prints, and tighten when they allow.
const TOL = {
  F32: 1e-4,
  F16: 1e-3,
  BF16: 1e-3,
  Q8_0: 2e-3,
  Q4_0: 2e-3,
  Q4_K: 2e-3,
  Q5_K: 2e-3,
  Q6_K: 2e-3,
  Q4_K_M: 2e-3,
};

const QWEN_VOCAB_TEXT_TOKENS = 151643; // ids below this are ordinary BPE tokens

// Small shapes; K-quants need rows that are multiples of 256.
const FLOAT_SHAPES = {
  llama: { dim: 64, layers: 2, heads: 4, kvHeads: 2, ff: 172 }, // ff not a multiple of 32
  qwen2: { dim: 128, layers: 2, heads: 4, kvHeads: 2, ff: 256, tied: true },
  qwen3: { dim: 128, layers: 2, heads: 4, kvHeads: 2, headDim: 64, ff: 256 },
};
const Q8_SHAPES = {
  llama: { dim: 128, layers: 3, heads: 4, kvHeads: 1, ff: 256 }, // MQA
  qwen2: { dim: 128, layers: 2, heads: 4, kvHeads: 2, ff: 256, tied: true },
  qwen3: { dim: 128, layers: 2, heads: 4, kvHeads: 2, headDim: 64, ff: 256, tied: true },
};
const K_SHAPES = {
  llama: { dim: 256, layers: 2, heads: 8, kvHeads: 2, ff: 512 },
  qwen2: { dim: 256, layers: 2, heads: 4, kvHeads: 2, ff: 512, tied: true },
  qwen3: { dim: 256, layers: 2, heads: 4, kvHeads: 2, headDim: 128, ff: 512 },
};

function modelCases() {
  const cases = [];
  for (const arch of ['llama', 'qwen2', 'qwen3']) {
    const vocab = arch === 'llama' ? 'stories' : 'qwen2';
    const base = { arch, vocab, seed: 7 };
    cases.push({ ...base, type: 'F32', ...FLOAT_SHAPES[arch] });
    cases.push({ ...base, type: 'F16', ...FLOAT_SHAPES[arch] });
    cases.push({ ...base, type: 'Q8_0', ...Q8_SHAPES[arch] });
    cases.push({ ...base, type: 'Q4_K', ...K_SHAPES[arch] });
  }
  // more formats on the cheap 512-token vocabulary
  const llamaK = { arch: 'llama', vocab: 'stories', seed: 11, ...K_SHAPES.llama };
  cases.push({ ...llamaK, type: 'BF16' });
  cases.push({ ...llamaK, type: 'Q4_0' });
  cases.push({ ...llamaK, type: 'Q5_K' });
  cases.push({ ...llamaK, type: 'Q6_K', tied: true });
  cases.push({ ...llamaK, type: 'Q4_K_M', layers: 8 }); // 8 layers: attn_v/ffn_down Q6_K on layers 0, 3, 6, 7
  return cases;
}

function sequencesFor(spec, bos) {
  const hi = spec.vocab === 'qwen2' ? QWEN_VOCAB_TEXT_TOKENS : 512;
  const lo = spec.vocab === 'qwen2' ? 0 : 3; // skip <unk> <s> </s>
  const start = spec.arch === 'llama' ? [bos] : [];
  return [
    [...start, ...randomTokens(start.length ? 0 : 1, lo, hi, 1)],
    [...start, ...randomTokens(6, lo, hi, 2)],
    [...start, ...randomTokens(40, lo, hi, 3)],
    [...start, ...randomTokens(130, lo, hi, 4)],
  ];
}

function strataMissing() {
  const addon = join(ROOT, 'build/Release/strata.node');
  if (!existsSync(addon)) return `the Strata addon is not built (${addon})`;
  return null;
}

t.teardown(disposePeer);

t.test('mkmodel: deterministic, whatever the thread count', async (t) => {
  const spec = { arch: 'qwen3', type: 'Q4_K_M', dim: 256, layers: 2, heads: 4, kvHeads: 2, headDim: 64, ff: 256,
    vocab: 'none', vocabSize: 300, seed: 3 };
  const dir = mkdtempSync(join(tmpdir(), 'strata-mkmodel-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const a = readFileSync(runMkmodel({ ...spec, threads: 1 }, join(dir, 'a.gguf')));
  const b = readFileSync(runMkmodel({ ...spec, threads: 3 }, join(dir, 'b.gguf')));
  t.ok(a.length > 0 && a.equals(b), 'same bytes with 1 and 3 threads');
  const c = readFileSync(runMkmodel({ ...spec, seed: 4 }, join(dir, 'c.gguf')));
  t.notOk(a.equals(c), 'another seed gives other weights');
  const peer = await openPeerModel(join(dir, 'a.gguf'));
  t.equal((await peer.nextLogits([1, 2, 3])).length, 300, 'llama.cpp loads it (made-up 300-token vocabulary)');
  await peer.dispose();
});

const missing = strataMissing();
if (missing) {
  t.fail(`${missing}: run \`npx node-gyp rebuild\` (npm test does it)`);
} else {
  t.test('stories260K: greedy continuation and top-5 probabilities', async (t) => {
    if (!existsSync(STORIES260K)) {
      t.fail(`missing ${STORIES260K}`);
      return;
    }
    const peer = await openPeerModel(STORIES260K, { contextSize: CONTEXT });
    const strata = await openStrataModel(STORIES260K, { contextSize: CONTEXT });
    t.teardown(async () => {
      await strata.dispose();
      await peer.dispose();
    });
    t.equal(strata.info.nVocab, 512, 'vocabulary size');

    const prompt = [peer.bos, ...peer.tokenize('Once upon a time')];
    const want = await peer.greedy(prompt, 64, { withLogits: true });
    const got = await strata.greedy(prompt, 64);
    const first = got.findIndex((tok, i) => tok !== want.tokens[i]);
    if (first >= 0) {
      const cmp = compareLogits(await strata.nextLogits([...prompt, ...want.tokens.slice(0, first)]),
        want.logits[first]);
      t.fail(`greedy continuation diverges at token ${first}: strata ${got[first]}, peer ${want.tokens[first]}`, {
        strata: peer.detokenize(got),
        peer: peer.detokenize(want.tokens),
        atDivergence: describe(cmp),
      });
    } else {
      t.pass(`64 greedy tokens identical: ${JSON.stringify(peer.detokenize(want.tokens))}`);
    }

    // generate() (the engine's own loop, temperature 0) follows the same path
    const eog = want.tokens.findIndex((tok) => tok === peer.eos);
    const expectText = strata.detokenize(eog >= 0 ? want.tokens.slice(0, eog) : want.tokens);
    const r = await strata.model.generate(Int32Array.from(prompt), { maxTokens: 64, temperature: 0 });
    t.equal(r.text, expectText, 'generate() at temperature 0 gives the greedy text');

    const prompts = ['Once upon a time', 'The little dog', 'Lily and Tom went to the park.',
      'One day, a girl named', 'He was very happy because', ''];
    let worst = 0;
    for (const text of prompts) {
      const toks = [peer.bos, ...(text ? peer.tokenize(text) : [])];
      const cmp = compareLogits(await strata.nextLogits(toks), await peer.nextLogits(toks));
      worst = Math.max(worst, cmp.maxAbsProb);
      const problems = topKProblems(cmp, 1e-4);
      t.same(problems, [], `top-5 within 1e-4 after ${JSON.stringify(text)}`, { detail: describe(cmp) });
      t.ok(cmp.maxAbsProb <= 1e-4, `all probabilities within 1e-4 after ${JSON.stringify(text)}`,
        { detail: describe(cmp) });
      if (VERBOSE) t.comment(`stories260K ${JSON.stringify(text)}: ${describe(cmp)}`);
      // Strata's own tokenizer should agree with llama.cpp's on these
      t.same(strata.tokenize(text, { addBos: true }), toks, `tokenization of ${JSON.stringify(text)}`);
    }
    t.comment(`stories260K: worst max |dp| ${worst.toExponential(2)}`);
  });

  for (const spec of modelCases()) {
    const tol = TOL[spec.type];
    const label = `${spec.arch} ${spec.type} (dim ${spec.dim}, ${spec.layers} layers, ${spec.heads}/${spec.kvHeads} heads` +
      `${spec.headDim ? `, head_dim ${spec.headDim}` : ''}, ff ${spec.ff}${spec.tied ? ', tied' : ''})`;
    t.test(label, async (t) => {
      const path = ensureModel(spec);
      const peer = await openPeerModel(path, { contextSize: CONTEXT });
      const strata = await openStrataModel(path, { contextSize: CONTEXT });
      t.teardown(async () => {
        await strata.dispose();
        await peer.dispose();
      });
      let worst = 0;
      let worstDetail = '';
      for (const toks of sequencesFor(spec, peer.bos)) {
        const cmp = compareLogits(await strata.nextLogits(toks), await peer.nextLogits(toks));
        if (cmp.maxAbsProb > worst || worstDetail === '') {
          worst = cmp.maxAbsProb;
          worstDetail = describe(cmp);
        }
        const what = `${toks.length}-token prompt`;
        t.ok(cmp.maxAbsProb <= tol, `${what}: max |dp| ${cmp.maxAbsProb.toExponential(2)} <= ${tol}`,
          { detail: describe(cmp) });
        t.same(topKProblems(cmp, tol), [], `${what}: same top-5`, { detail: describe(cmp) });
        if (VERBOSE) t.comment(`${label} ${what}: ${describe(cmp)}`);
      }
      t.comment(`${spec.arch} ${spec.type}: worst max |dp| ${worst.toExponential(2)} (tolerance ${tol}); ${worstDetail}`);
    });
  }
}
