// The peer engine: node-llama-cpp (llama.cpp's CPU backend) driven so that its
// next-token logits can be compared with Strata's.
//
// - getLlama({gpu: false, build: 'never'}): the prebuilt CPU binaries, never a
//   local build.
// - F32 KV cache (experimentalKvCache*Type: 'F32') so KV rounding is not part
//   of the comparison; Strata is asked for the same ({kvF32: true}).
// - flashAttention: false. llama.cpp's default ("auto") turns flash attention
//   on for the CPU, and its CPU kernel rounds through F16 even with an F32
//   cache: logits move by ~3e-3 (measured on a random llama: F32 KV without
//   FA matches Strata to 4e-6, with FA it is 2.8e-3 off at one token).
// - Logits come from controlledEvaluate(..., {generateNext: {logits: true}}):
//   the raw logits of llama_get_logits_ith, passed through the default sampler
//   chain, which with no options is only the greedy sampler (it picks an index
//   and changes no logit), so no temperature or penalty touches them.
//   (node-llama-cpp's `probabilities` is a softmax of those same logits.)
// - Every evaluation starts from a cleared sequence, like Strata's evaluate()
//   on a fresh context.
import { getLlama } from 'node-llama-cpp';

let llamaPromise = null;

/** The shared node-llama-cpp instance (CPU only, prebuilt binaries). */
export function getPeerLlama() {
  if (llamaPromise === null) {
    llamaPromise = getLlama({ gpu: false, build: 'never', logLevel: 'error', progressLogs: false });
  }
  return llamaPromise;
}

/**
 * Open a model in node-llama-cpp with one context and one sequence.
 * @param {string} path GGUF file
 * @param {{contextSize?: number, threads?: number, batchSize?: number}} [opts]
 */
export async function openPeerModel(path, opts = {}) {
  const { contextSize = 256, threads = 2 } = opts;
  const llama = await getPeerLlama();
  const model = await llama.loadModel({ modelPath: path, gpuLayers: 0, useMmap: true });
  const context = await model.createContext({
    contextSize,
    batchSize: opts.batchSize ?? contextSize,
    threads,
    sequences: 1,
    experimentalKvCacheKeyType: 'F32',
    experimentalKvCacheValueType: 'F32',
    flashAttention: false,
  });
  const sequence = context.getSequence();
  let nVocab = null; // known after the first logits (llama.cpp returns every id)

  /** Logits (Float32Array, one per vocabulary entry) after `tokens`, from a cleared sequence. */
  async function nextLogits(tokens) {
    if (tokens.length === 0) throw new Error('nextLogits: no tokens');
    await sequence.clearHistory();
    const input = tokens.slice(0, -1);
    input.push([tokens[tokens.length - 1], { generateNext: { logits: true } }]);
    const out = await sequence.controlledEvaluate(input);
    const map = out[tokens.length - 1]?.next?.logits;
    if (!map) throw new Error('node-llama-cpp returned no logits');
    const arr = mapToArray(map);
    nVocab = arr.length;
    return arr;
  }

  /**
   * The k largest logits after `tokens` (Map id -> logit), from a cleared
   * sequence. Much cheaper than nextLogits on a 152k vocabulary: only k
   * values cross into JS.
   */
  async function topLogits(tokens, k) {
    await sequence.clearHistory();
    const input = tokens.slice(0, -1);
    input.push([tokens[tokens.length - 1], { generateNext: { logits: { filter: { tokens: [], includeTop: k } } } }]);
    const out = await sequence.controlledEvaluate(input);
    const map = out[tokens.length - 1]?.next?.logits;
    if (!map || map.size === 0) throw new Error('node-llama-cpp returned no logits');
    return map;
  }

  /**
   * Greedy continuation of `tokens` for n tokens (argmax; ties go to the lowest
   * id, like llama.cpp's greedy sampler). With {logits: true} also returns the
   * logits before each generated token.
   */
  async function greedy(tokens, n, { withLogits = false } = {}) {
    await sequence.clearHistory();
    const generated = [];
    const logits = [];
    let input = tokens.slice(0, -1);
    let last = tokens[tokens.length - 1];
    for (let i = 0; i < n; i++) {
      input.push([last, { generateNext: { token: true, logits: withLogits } }]);
      const out = await sequence.controlledEvaluate(input);
      const next = out[input.length - 1]?.next;
      if (next == null || next.token == null) throw new Error('node-llama-cpp generated no token');
      if (withLogits) logits.push(mapToArray(next.logits));
      generated.push(next.token);
      last = next.token;
      input = [];
    }
    return withLogits ? { tokens: generated, logits } : generated;
  }

  return {
    model,
    context,
    sequence,
    /** Vocabulary size (null before the first nextLogits). */
    get nVocab() {
      return nVocab;
    },
    bos: model.tokens.bos,
    eos: model.tokens.eos,
    /** Token ids of text as llama.cpp tokenizes it (no BOS added). */
    tokenize: (text) => model.tokenize(text, false),
    detokenize: (tokens) => model.detokenize(tokens),
    nextLogits,
    topLogits,
    greedy,
    async dispose() {
      await context.dispose();
      await model.dispose();
    },
  };
}

function mapToArray(map) {
  let n = map.size;
  for (const id of map.keys()) n = Math.max(n, id + 1);
  const arr = new Float32Array(n).fill(Number.NEGATIVE_INFINITY);
  for (const [id, v] of map) arr[id] = v;
  return arr;
}

/** Dispose the shared instance (end of a test file). */
export async function disposePeer() {
  if (llamaPromise !== null) {
    const llama = await llamaPromise;
    llamaPromise = null;
    await llama.dispose();
  }
}
