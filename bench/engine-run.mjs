// One benchmark run of one engine on one model, in its own process so that
// peak RSS belongs to that engine alone. Prints one JSON line.
//   node bench/engine-run.mjs strata|peer MODEL --pp 512 --tg 64 --threads 2
import { createRequire } from 'node:module';
import { join } from 'node:path';

const [engine, modelPath, ...rest] = process.argv.slice(2);
const opt = (name, def) => {
  const i = rest.indexOf(`--${name}`);
  return i >= 0 ? Number(rest[i + 1]) : def;
};
const pp = opt('pp', 512);
const tg = opt('tg', 64);
const threads = opt('threads', 2);
const root = new URL('..', import.meta.url).pathname;

function promptTokens(nVocab, n) {
  // deterministic pseudo-random ids, skipping the special tokens at the start
  const out = new Int32Array(n);
  let x = 12345;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) % 2147483648;
    out[i] = 3 + (x % (nVocab - 3));
  }
  return out;
}

const ms = () => Number(process.hrtime.bigint()) / 1e6;

async function runStrata() {
  const require = createRequire(import.meta.url);
  const binding = require(join(root, "node/lib/binding.js")).binding();
  const { model, info } = await binding.load(modelPath, { threads, mmap: true });
  const ctx = binding.createContext(model, { contextSize: pp + tg + 16, batch: 512, threads });
  const toks = promptTokens(info.nVocab, pp);
  const t0 = ms();
  await binding.eval(ctx, toks, { logits: true });
  const ppMs = ms() - t0;
  binding.truncate(ctx, 0);
  let tok = Int32Array.of(toks[0]);
  await binding.eval(ctx, tok, { logits: true });
  const t1 = ms();
  for (let i = 0; i < tg; i++) {
    const logits = await binding.eval(ctx, tok, { logits: true });
    let best = 0;
    for (let j = 1; j < logits.length; j++) if (logits[j] > logits[best]) best = j;
    tok = Int32Array.of(best);
  }
  const tgMs = ms() - t1;
  binding.freeContext(ctx);
  binding.close(model);
  return { ppMs, tgMs };
}

async function runPeer() {
  const { getLlama } = await import('node-llama-cpp');
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error', progressLogs: false });
  const model = await llama.loadModel({ modelPath, gpuLayers: 0, useMmap: true });
  const context = await model.createContext({ contextSize: pp + tg + 16, batchSize: 512, threads, sequences: 1 });
  const seq = context.getSequence();
  const toks = Array.from(promptTokens(model.tokens.trimmedSize ?? model.fileInsights.tokens ?? 32000, pp));
  const t0 = ms();
  await seq.evaluateWithoutGeneratingNewTokens(toks);
  const ppMs = ms() - t0;
  await seq.clearHistory();
  let n = 0;
  let t1 = 0;
  for await (const _ of seq.evaluate([toks[0]], { temperature: 0 })) {
    if (n === 0) t1 = ms(); // first token includes the 1-token prompt: start the clock after it
    if (++n > tg) break;
  }
  const tgMs = ms() - t1;
  await context.dispose();
  await model.dispose();
  return { ppMs, tgMs };
}

const r = engine === 'peer' ? await runPeer() : await runStrata();
const rss = process.resourceUsage().maxRSS / 1024;
console.log(JSON.stringify({
  engine, model: modelPath, threads, pp, tg,
  ppTps: pp / (r.ppMs / 1000), tgTps: tg / (r.tgMs / 1000), peakRssMb: Math.round(rss),
}));
