// Batching benchmark: 100 SkillSwap-style compatibility scorings through
// strata-worker (score op: probabilities of " yes"/" no", or of " 0".." 10"
// with --scale), sent one at a time and then all at once (the scheduler
// batches them layer by layer), with the weights resident and streamed
// from a split store with a one-layer budget. Prints a markdown table:
// requests/s and weight bytes read per request.
//
//   node bench/batching.mjs [--model PATH] [--n 100] [--scale] [--threads 2]
//                           [--max-batch 32] [--modes resident,streamed]
//
// Weight bytes per request: resident, every batched step reads every weight
// once from RAM (steps x weight bytes / requests, from the worker's stats);
// streamed, the bytes the worker process really read (/proc/PID/io rchar).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { ensureModel, ROOT } from '../tests/helpers/models.mjs';

const require = createRequire(import.meta.url);
const { connectWorker } = require('../node/lib/worker.js');

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
const N = Number(opt('n', 100));
const THREADS = opt('threads', '2');
const MAX_BATCH = opt('max-batch', '32');
const SCALE = args.includes('--scale');
const MODES = opt('modes', 'resident,streamed').split(',');
const WORKER = process.env.STRATA_WORKER_BIN || path.join(ROOT, 'native/build/strata-worker');
const MODEL = opt('model', null) ?? ensureModel({ arch: 'llama', type: 'Q8_0', dim: 512, layers: 8, heads: 8,
  kvHeads: 2, ff: 1408, vocab: 'stories' });

const SKILLS = ['guitar', 'Spanish', 'Python', 'cooking', 'photography', 'yoga', 'chess', 'drawing', 'French',
  'public speaking', 'piano', 'gardening', 'JavaScript', 'knitting', 'baking', 'running'];
const LEVELS = ['beginner', 'intermediate', 'advanced'];

function user(i) {
  const s = (k) => SKILLS[(i * 7 + k * 5) % SKILLS.length];
  const l = (k) => LEVELS[(i + k) % LEVELS.length];
  return `offers ${s(0)} (${l(0)}) and ${s(1)} (${l(1)}); wants ${s(2)} (${l(2)})`;
}

function prompt(i) {
  const question = SCALE ? 'Rate how well they match from 0 to 10. Rating:' : 'Are they a good match? Answer:';
  return `SkillSwap matches people who teach each other skills.\nUser A ${user(2 * i)}.\nUser B ${user(2 * i + 1)}.\n` +
    question;
}
const OPTIONS = SCALE ? Array.from({ length: 11 }, (_, k) => ` ${k}`) : [' yes', ' no'];

function procRead(pid) {
  try {
    const io = fs.readFileSync(`/proc/${pid}/io`, 'utf8');
    const get = (k) => Number(io.match(new RegExp(`${k}: (\\d+)`))[1]);
    return { rchar: get('rchar'), readBytes: get('read_bytes') };
  } catch {
    return null;
  }
}

function start(mode, extra) {
  const sock = path.join(os.tmpdir(), `strata-bench-${process.pid}-${mode}.sock`);
  const url = `ipc://${sock}`;
  return new Promise((resolve, reject) => {
    const p = spawn(WORKER, ['--model', MODEL, '--listen', url, '--threads', THREADS, '--max-batch', MAX_BATCH,
      '--max-queue', String(Math.max(N, 64)), '--ctx', '512', '--step-tokens', '512', ...extra],
    { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => {
      err += d;
    });
    p.stdout.on('data', (d) => {
      if (String(d).includes('READY')) resolve({ p, url });
    });
    p.once('exit', (code) => reject(new Error(`worker exited (${code}): ${err.trim()}`)));
  });
}

async function run(mode) {
  const extra = mode === 'streamed' ? ['--stream', 'on', '--stream-budget', '0'] : [];
  let w;
  try {
    w = await start(mode, extra);
  } catch (err) {
    return [{ mode, schedule: '-', error: err.message.split('\n').pop() }];
  }
  const c = connectWorker(w.url, { timeoutMs: 3600000 });
  const info = (await c.health()).model;
  await c.score(prompt(0), OPTIONS); // warm up (and split/open the store)
  const rows = [];
  for (const schedule of ['one at a time', 'batched']) {
    const s0 = await c.stats();
    const io0 = procRead(w.p.pid);
    const t0 = performance.now();
    const results = [];
    if (schedule === 'one at a time') {
      for (let i = 0; i < N; i++) results.push(await c.score(prompt(i), OPTIONS));
    } else {
      results.push(...(await Promise.all(Array.from({ length: N }, (_, i) => c.score(prompt(i), OPTIONS)))));
    }
    const ms = performance.now() - t0;
    const s1 = await c.stats();
    const io1 = procRead(w.p.pid);
    const steps = s1.steps - s0.steps;
    const bytes = mode === 'streamed' && io0 !== null && io1 !== null
      ? io1.rchar - io0.rchar
      : steps * info.file_bytes;
    rows.push({
      mode,
      schedule,
      rps: (N * 1000) / ms,
      ms,
      steps,
      seqsPerStep: (s1.seq_steps - s0.seq_steps) / Math.max(steps, 1),
      bytesPerReq: bytes / N,
      diskPerReq: io0 !== null && io1 !== null ? (io1.readBytes - io0.readBytes) / N : NaN,
      yes: results.filter((r) => r.best === OPTIONS[0]).length,
    });
  }
  await c.close();
  await new Promise((resolve) => {
    w.p.once('exit', resolve);
    w.p.kill('SIGTERM');
  });
  return rows;
}

const fmtBytes = (b) => (Number.isNaN(b) ? 'n/a' : b >= 1e6 ? `${(b / 1e6).toFixed(2)} MB` : `${(b / 1e3).toFixed(1)} kB`);

const info = { model: path.basename(MODEL), bytes: fs.statSync(MODEL).size };
const all = [];
for (const m of MODES) all.push(...(await run(m)));
console.log(`\n${N} SkillSwap compatibility scorings (${SCALE ? '0-10 scale, 11 options' : '" yes"/" no"'}), ` +
  `model ${info.model} (${fmtBytes(info.bytes)}), ${THREADS} threads, max batch ${MAX_BATCH}, ${os.cpus()[0].model}\n`);
console.log('| weights | schedule | requests/s | total s | steps | seqs/step | weight bytes read / request | disk bytes / request |');
console.log('|---|---|---:|---:|---:|---:|---:|---:|');
for (const r of all) {
  if (r.error) {
    console.log(`| ${r.mode} | - | n/a: ${r.error} | | | | | |`);
    continue;
  }
  console.log(`| ${r.mode} | ${r.schedule} | ${r.rps.toFixed(2)} | ${(r.ms / 1000).toFixed(2)} | ${r.steps} | ` +
    `${r.seqsPerStep.toFixed(1)} | ${fmtBytes(r.bytesPerReq)} | ${fmtBytes(r.diskPerReq)} |`);
}
for (const m of MODES) {
  const one = all.find((r) => r.mode === m && r.schedule === 'one at a time');
  const bat = all.find((r) => r.mode === m && r.schedule === 'batched');
  if (one && bat && !one.error) {
    console.log(`\n${m}: batching speed-up ${(bat.rps / one.rps).toFixed(1)}x, weight bytes per request ` +
      `${(one.bytesPerReq / bat.bytesPerReq).toFixed(1)}x fewer`);
  }
}
