// Batching benchmark: 100 SkillSwap-style compatibility scorings through
// strata-worker (score op: probabilities of " yes"/" no", or of " 0".." 10"
// with --scale), sent one at a time and then all at once (the scheduler
// batches them layer by layer), with the weights resident and streamed
// from a split store with a one-layer budget. Prints a markdown table:
// requests/s and weight bytes read per request.
//
//   node bench/batching.mjs [--model PATH] [--n 100] [--scale] [--threads 2]
//                           [--max-batch 32] [--modes resident,streamed]
//                           [--prefix instructions|short] [--generate N]
//                           [--shape small|qwen2_0_5b|tinyllama] [--alone K]
//                           [--step-tokens 2048] [--disk-mbps M]
//
// --shape picks the model: small (default: 8 layers, 24.6 MB, the stories
// vocabulary, which is near character level), qwen2_0_5b (Qwen2.5-0.5B's
// shape and real Qwen2 BPE vocabulary, 0.5 GB in Q8_0) or tinyllama (1.1B,
// 1.2 GB). --alone K times the one-at-a-time schedule on the first K
// requests only (its requests/s is a steady rate; for slow streamed runs),
// the batched schedule always sends all N at once.
//
// --disk-mbps M runs the worker in a cgroup whose reads from the store's
// disk are throttled to M MiB/s (cgroup v1 blkio.throttle or v2 io.max;
// needs root): the slow storage of small machines (an AWS gp3 volume's
// default is 125 MiB/s, a SATA SSD ~500, an SD card ~90) on a VM whose
// own disk reads 1.5-3 GB/s. --step-tokens: token rows per batched step
// (each step of a streamed worker is one pass over the weights), the same
// for both weights modes.
//
// Both schedules run on the same worker with the same prefix cache. Per
// request the table also shows the prompt tokens the worker really computed
// (prompt minus the reused prefix): the compute that batching cannot save.
//
// Weight bytes per request: resident, every batched step reads every weight
// once from RAM (steps x weight bytes / requests, from the worker's stats);
// streamed, the bytes the worker process really read (/proc/PID/io rchar).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { ensureModel, ROOT, SHAPES } from '../tests/helpers/models.mjs';

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
// --generate N: instead of scoring, each request generates N tokens (greedy):
// decode-heavy work, one token per sequence per step
const GEN = Number(opt('generate', 0));
const MODES = opt('modes', 'resident,streamed').split(',');
const WORKER = process.env.STRATA_WORKER_BIN || path.join(ROOT, 'native/build/strata-worker');
const SHAPE = opt('shape', 'small');
if (SHAPE !== 'small' && !SHAPES[SHAPE]) throw new Error(`--shape: small or one of ${Object.keys(SHAPES).join(', ')}`);
const MODEL = opt('model', null) ?? ensureModel(SHAPE === 'small'
  ? { arch: 'llama', type: 'Q8_0', dim: 512, layers: 8, heads: 8, kvHeads: 2, ff: 1408, vocab: 'stories' }
  : { ...SHAPES[SHAPE], type: 'Q8_0' });
const ALONE = Math.min(N, Number(opt('alone', N)));
const STEP_TOKENS = opt('step-tokens', '2048');
const DISK_MBPS = opt('disk-mbps', null);

// A cgroup that throttles reads from the block device holding `file` to
// mbps MiB/s: { procs (write a pid there to move it in), dir, dev }.
function throttleCgroup(file, mbps) {
  const st = fs.statSync(file);
  let maj = Math.floor(st.dev / 256) & 0xfff;
  let min = (st.dev & 0xff) | ((Math.floor(st.dev / 4096) & 0xfff00));
  // a partition: throttle its whole disk
  const sysdev = `/sys/dev/block/${maj}:${min}`;
  if (fs.existsSync(`${sysdev}/partition`)) {
    [maj, min] = fs.readFileSync(`${fs.realpathSync(sysdev)}/../dev`, 'utf8').trim().split(':').map(Number);
  }
  const bps = Math.round(mbps * 2 ** 20);
  const name = `strata-bench-${process.pid}`;
  if (fs.existsSync('/sys/fs/cgroup/blkio')) {
    const dir = `/sys/fs/cgroup/blkio/${name}`;
    fs.mkdirSync(dir);
    fs.writeFileSync(`${dir}/blkio.throttle.read_bps_device`, `${maj}:${min} ${bps}`);
    return { procs: `${dir}/cgroup.procs`, dir, dev: `${maj}:${min}` };
  }
  const dir = `/sys/fs/cgroup/${name}`;
  fs.mkdirSync(dir);
  fs.writeFileSync(`${dir}/io.max`, `${maj}:${min} rbps=${bps}`);
  return { procs: `${dir}/cgroup.procs`, dir, dev: `${maj}:${min}` };
}
let cgroup = null;
if (DISK_MBPS !== null) {
  try {
    cgroup = throttleCgroup(MODEL, Number(DISK_MBPS));
  } catch (err) {
    throw new Error(`--disk-mbps: cannot set up a throttled cgroup (${err.message}); it needs root and the blkio/io controller`);
  }
  process.on('exit', () => {
    try {
      fs.rmdirSync(cgroup.dir);
    } catch {
      // still busy: left for the system
    }
  });
}

const SKILLS = ['guitar', 'Spanish', 'Python', 'cooking', 'photography', 'yoga', 'chess', 'drawing', 'French',
  'public speaking', 'piano', 'gardening', 'JavaScript', 'knitting', 'baking', 'running'];
const LEVELS = ['beginner', 'intermediate', 'advanced'];

function user(i) {
  const s = (k) => SKILLS[(i * 7 + k * 5) % SKILLS.length];
  const l = (k) => LEVELS[(i + k) % LEVELS.length];
  // the member number keeps all 100 pairs distinct (the skills alone repeat every 24 pairs,
  // and a batch holding a duplicate prompt would copy it whole: an unfair gain)
  return `#${1000 + i} offers ${s(0)} (${l(0)}) and ${s(1)} (${l(1)}); wants ${s(2)} (${l(2)})`;
}

// The shape of the product's Match Score prompt (node/nodes/Strata/operations.ts):
// fixed instructions, two profiles, a question. The instructions are the
// same for every request: the prefix cache computes them once (one at a
// time: from the idle context of the previous request; batched: the first
// admitted request computes them, the others wait a step and copy its KV).
const INSTRUCTIONS = 'You judge how well two people fit for a skill exchange on SkillSwap: each should be able to ' +
  'teach the other something they want to learn, at a level that helps, and their free time should overlap. ' +
  'A pair where only one side gains is not a good match. Read both profiles, then answer the question with one word.';
const PREFIX = opt('prefix', 'instructions'); // instructions | short (the old one-line prefix)

function prompt(i) {
  const question = SCALE ? 'Rate how well they match from 0 to 10. Rating:' : 'Are they a good match? Answer:';
  const head = PREFIX === 'short' ? 'SkillSwap matches people who teach each other skills.' : INSTRUCTIONS;
  return `${head}\nUser A ${user(2 * i)}.\nUser B ${user(2 * i + 1)}.\n${question}`;
}
const OPTIONS = SCALE ? Array.from({ length: 11 }, (_, k) => ` ${k}`) : [' yes', ' no'];

const fmtBytes = (b) => (Number.isNaN(b) ? 'n/a' : b >= 1e6 ? `${(b / 1e6).toFixed(2)} MB` : `${(b / 1e3).toFixed(1)} kB`);

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
    const argv = ['--model', MODEL, '--listen', url, '--threads', THREADS, '--max-batch', MAX_BATCH,
      '--max-queue', String(Math.max(N, 64)), '--ctx', '512', '--step-tokens', STEP_TOKENS, '--timeout-ms', '3600000',
      // one at a time keeps as many finished KV caches for prefix reuse as a batch has running
      '--prefix-slots', MAX_BATCH, ...extra];
    // throttled: the shell moves itself into the cgroup, then becomes the worker
    const p = cgroup !== null
      ? spawn('/bin/sh', ['-c', 'echo $$ > "$0" && exec "$@"', cgroup.procs, WORKER, ...argv],
        { stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn(WORKER, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
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
  const one = (i) => (GEN > 0
    ? c.generate(prompt(i), { maxTokens: GEN, temperature: 0, repeatPenalty: 1 }).then((r) => ({ ...r, best: null }))
    : c.score(prompt(i), OPTIONS));
  await one(0); // warm up (and split/open the store)
  const rows = [];
  for (const schedule of ['one at a time', 'batched']) {
    const n = schedule === 'one at a time' ? ALONE : N;
    const s0 = await c.stats();
    const io0 = procRead(w.p.pid);
    const t0 = performance.now();
    const results = [];
    if (schedule === 'one at a time') {
      for (let i = 0; i < n; i++) results.push(await one(i));
    } else {
      results.push(...(await Promise.all(Array.from({ length: N }, (_, i) => one(i)))));
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
      n,
      promptTokens: results.reduce((a, r) => a + r.promptTokens, 0) / n,
      genTokens: results.reduce((a, r) => a + (r.genTokens ?? 0), 0) / n,
      computedPerReq: (s1.tokens - s0.tokens) / n,
      reusedPerReq: (s1.prefix_tokens - s0.prefix_tokens) / n,
      rps: (n * 1000) / ms,
      ms,
      steps,
      seqsPerStep: (s1.seq_steps - s0.seq_steps) / Math.max(steps, 1),
      bytesPerReq: bytes / n,
      diskPerReq: io0 !== null && io1 !== null ? (io1.readBytes - io0.readBytes) / n : NaN,
      yes: results.filter((r) => r.best === OPTIONS[0]).length,
    });
    const last = rows[rows.length - 1];
    console.error(`[${new Date().toISOString()}] ${mode} ${schedule}: ${last.rps.toFixed(3)} req/s, ` +
      `${last.computedPerReq.toFixed(1)} tokens computed/req, ${fmtBytes(last.bytesPerReq)} weights/req, ` +
      `${fmtBytes(last.diskPerReq)} disk/req`);
  }
  await c.close();
  await new Promise((resolve) => {
    w.p.once('exit', resolve);
    w.p.kill('SIGTERM');
  });
  return rows;
}


const info = { model: path.basename(MODEL), bytes: fs.statSync(MODEL).size };
const all = [];
for (const m of MODES) all.push(...(await run(m)));
const what = GEN > 0 ? `generations of up to ${GEN} tokens (mean ${all.find((r) => !r.error)?.genTokens.toFixed(1)})`
  : `compatibility scorings (${SCALE ? '0-10 scale, 11 options' : '" yes"/" no"'})`;
console.log(`\n${N} SkillSwap ${what}, ` +
  `model ${info.model} (${fmtBytes(info.bytes)}), ${THREADS} threads, max batch ${MAX_BATCH}, step tokens ${STEP_TOKENS}` +
  `${cgroup !== null ? `, store reads throttled to ${DISK_MBPS} MiB/s (cgroup, device ${cgroup.dev})` : ''}, ${os.cpus()[0].model}\n`);
console.log('| weights | schedule | requests | requests/s | total s | steps | seqs/step | prompt tokens / req | computed / req | ' +
  'weight bytes read / request | disk bytes / request |');
console.log('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
for (const r of all) {
  if (r.error) {
    console.log(`| ${r.mode} | - | | n/a: ${r.error} | | | | | | | |`);
    continue;
  }
  console.log(`| ${r.mode} | ${r.schedule} | ${r.n} | ${r.rps.toFixed(2)} | ${(r.ms / 1000).toFixed(2)} | ${r.steps} | ` +
    `${r.seqsPerStep.toFixed(1)} | ${r.promptTokens.toFixed(1)} | ${r.computedPerReq.toFixed(1)} | ` +
    `${fmtBytes(r.bytesPerReq)} | ${fmtBytes(r.diskPerReq)} |`);
}
for (const m of MODES) {
  const one = all.find((r) => r.mode === m && r.schedule === 'one at a time');
  const bat = all.find((r) => r.mode === m && r.schedule === 'batched');
  if (one && bat && !one.error) {
    console.log(`\n${m}: batching speed-up ${(bat.rps / one.rps).toFixed(1)}x, weight bytes per request ` +
      `${(one.bytesPerReq / bat.bytesPerReq).toFixed(1)}x fewer`);
  }
}

// The bound: the tokens computed per request are the same in both schedules
// (same prefix cache), so batching saves weight reads only. With weights
// resident and batched, a request costs its compute alone; no schedule of
// the streamed run can beat that rate.
const resBat = all.find((r) => r.mode === 'resident' && r.schedule === 'batched' && !r.error);
for (const m of MODES) {
  const one = all.find((r) => r.mode === m && r.schedule === 'one at a time' && !r.error);
  if (one && resBat) {
    const tOne = 1000 / one.rps;
    const tCompute = 1000 / resBat.rps;
    console.log(`${m}: one at a time ${tOne.toFixed(1)} ms/request, of which compute >= ${tCompute.toFixed(1)} ms ` +
      `(resident batched rate): batching can gain at most ${(tOne / tCompute).toFixed(1)}x here`);
  }
}
