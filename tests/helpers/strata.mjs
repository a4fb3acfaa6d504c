// Strata driven the same way as the peer (tests/helpers/peer.mjs): next-token
// logits after a fresh context, with an F32 KV cache, and greedy decoding by
// argmax (ties to the lowest id, like llama.cpp's greedy sampler).
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { ROOT } from './models.mjs';

const require = createRequire(import.meta.url);

/** The JS API (node/lib/index.js); throws if the addon is not built. */
export function strataApi() {
  return require(join(ROOT, 'node/lib/index.js'));
}

export async function openStrataModel(path, opts = {}) {
  const { threads = 2, contextSize = 256 } = opts;
  const { loadModel } = strataApi();
  const model = await loadModel(path, { threads, contextSize, kvF32: true });

  /** Float32Array of n_vocab logits after tokens, from a fresh context. */
  async function nextLogits(tokens) {
    return model.evaluate(Int32Array.from(tokens), { kvF32: true });
  }

  async function greedy(tokens, n, { withLogits = false } = {}) {
    const seq = Array.from(tokens);
    const generated = [];
    const logits = [];
    for (let i = 0; i < n; i++) {
      const l = await nextLogits(seq);
      const t = argmax(l);
      if (withLogits) logits.push(l);
      generated.push(t);
      seq.push(t);
    }
    return withLogits ? { tokens: generated, logits } : generated;
  }

  return {
    model,
    info: model.info,
    nextLogits,
    greedy,
    tokenize: (text, o) => Array.from(model.tokenize(text, o)),
    detokenize: (tokens) => model.detokenize(Int32Array.from(tokens)),
    dispose: () => model.close(),
  };
}

export function argmax(a) {
  let best = 0;
  for (let i = 1; i < a.length; i++) {
    if (a[i] > a[best]) best = i;
  }
  return best;
}
