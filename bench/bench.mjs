// Strata vs node-llama-cpp 3.22.1 (llama.cpp prebuilt) on the same GGUF files,
// same thread count, in one run. Models: a 1.1B TinyLlama-shaped random-weight
// llama, generated here in Q8_0 and Q4_K (tests/helpers/models.mjs caches them).
//   node bench/bench.mjs [--threads 2] [--pp 512] [--tg 64] [--reps 2] [--types Q8_0,Q4_K]
// Each engine runs in its own process; the best of --reps runs is kept, the
// engines alternate so drift on a shared machine hits both.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensureModel, SHAPES } from '../tests/helpers/models.mjs';

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
const threads = Number(opt('threads', 2));
const pp = Number(opt('pp', 512));
const tg = Number(opt('tg', 64));
const reps = Number(opt('reps', 2));
const types = opt('types', 'Q8_0,Q4_K').split(',');
const here = new URL('.', import.meta.url).pathname;

function run(engine, model) {
  const r = spawnSync(process.execPath, [join(here, 'engine-run.mjs'), engine, model,
    '--pp', String(pp), '--tg', String(tg), '--threads', String(threads)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${engine} run failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

const rows = [];
for (const type of types) {
  const model = ensureModel({ ...SHAPES.tinyllama, type });
  const best = { strata: null, peer: null };
  for (let i = 0; i < reps; i++) {
    for (const engine of i % 2 === 0 ? ['peer', 'strata'] : ['strata', 'peer']) {
      const r = run(engine, model);
      const b = best[engine];
      best[engine] = b === null ? r : {
        ...r, ppTps: Math.max(b.ppTps, r.ppTps), tgTps: Math.max(b.tgTps, r.tgTps),
        peakRssMb: Math.max(b.peakRssMb, r.peakRssMb),
      };
      process.stderr.write(`${type} ${engine}: pp ${r.ppTps.toFixed(1)} tg ${r.tgTps.toFixed(2)} tok/s, rss ${r.peakRssMb} MB\n`);
    }
  }
  rows.push({ type, strata: best.strata, peer: best.peer });
}

const f = (x, d = 1) => x.toFixed(d);
const lines = [
  `| model (1.1B llama, random) | engine | pp${pp} tok/s | tg${tg} tok/s | peak RSS MB |`,
  '|---|---|---:|---:|---:|',
];
for (const { type, strata, peer } of rows) {
  lines.push(`| ${type} | node-llama-cpp 3.22.1 | ${f(peer.ppTps)} | ${f(peer.tgTps, 2)} | ${peer.peakRssMb} |`);
  lines.push(`| ${type} | Strata | ${f(strata.ppTps)} | ${f(strata.tgTps, 2)} | ${strata.peakRssMb} |`);
  lines.push(`| ${type} | **ratio Strata/peer** | **${f(strata.ppTps / peer.ppTps, 2)}x** | **${f(strata.tgTps / peer.tgTps, 2)}x** | ${f(strata.peakRssMb / peer.peakRssMb, 2)}x |`);
}
console.log(`threads=${threads}, ${new Date().toISOString()}\n`);
console.log(lines.join('\n'));
writeFileSync(join(here, 'results.json'), JSON.stringify({ threads, pp, tg, rows }, null, 2));
