// Layer streaming through the JS API: loadModel(path, {memoryBudget,
// compression, storePath, prefetch}) splits the GGUF once into a store beside
// it and streams; logits equal the resident model's bit for bit.
import t from 'tap';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ensureModel, ROOT } from './helpers/models.mjs';
import { strataApi } from './helpers/strata.mjs';

const SPEC = { arch: 'llama', type: 'Q8_0', dim: 128, layers: 4, heads: 4, kvHeads: 2, ff: 256 };
const TOKENS = Int32Array.from([1, 17, 300, 42, 99]);
const OPTS = { threads: 2, contextSize: 64 };

const { loadModel } = strataApi();
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-streaming-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const model = path.join(dir, 'model.gguf');
fs.copyFileSync(ensureModel(SPEC), model);

async function logitsOf(options) {
  const m = await loadModel(model, { ...OPTS, ...options });
  try {
    return { logits: await m.evaluate(TOKENS), info: m.info, text: (await m.generate('Once upon', { maxTokens: 8, temperature: 0 })).text };
  } finally {
    await m.close();
  }
}

t.test('streamed logits equal resident ones at every budget', async (t) => {
  const ref = await logitsOf({});
  const store = `${model}.strata-store`;
  for (const memoryBudget of [0, 100_000, 400_000, 1e9]) {
    const got = await logitsOf({ memoryBudget });
    t.same(Buffer.from(got.logits.buffer), Buffer.from(ref.logits.buffer), `budget ${memoryBudget}: identical logits`);
    t.equal(got.text, ref.text, `budget ${memoryBudget}: same greedy text`);
    t.equal(got.info.nLayers, SPEC.layers);
    t.equal(got.info.nParams, ref.info.nParams);
  }
  // O_DIRECT reads instead of the default buffered ones: the same bits
  const direct = await logitsOf({ memoryBudget: 0, directIo: true });
  t.same(Buffer.from(direct.logits.buffer), Buffer.from(ref.logits.buffer), 'directIo: identical logits');
  await t.rejects(loadModel(model, { directIo: 'yes' }), { code: 'STRATA_ERR_ARG' });
  t.ok(fs.existsSync(path.join(store, 'manifest.json')), 'store made beside the model');
  const manifest = JSON.parse(fs.readFileSync(path.join(store, 'manifest.json'), 'utf8'));
  t.equal(manifest.complete, true);
  t.equal(manifest.parts.length, SPEC.layers + 3);
  // the store is reused, not rewritten
  const mtime = fs.statSync(path.join(store, 'blk.0.gguf')).mtimeMs;
  await logitsOf({ streaming: true, prefetch: 0 });
  t.equal(fs.statSync(path.join(store, 'blk.0.gguf')).mtimeMs, mtime, 'second load reuses the store');
  // the store folder loads by itself
  const m = await loadModel(store, OPTS);
  t.same(Buffer.from((await m.evaluate(TOKENS)).buffer), Buffer.from(ref.logits.buffer), 'store folder loads');
  // profiling counters
  m.streamStats({ reset: true });
  await m.evaluate(TOKENS);
  const stats = m.streamStats();
  t.equal(stats.length, SPEC.layers + 2);
  t.same(stats.map((s) => s.part), [-1, 0, 1, 2, 3, 4]);
  // the reader may have read the first blocks ahead before the reset
  const blocks = stats.slice(1, -1);
  const sum = (k) => blocks.reduce((a, s) => a + s[k], 0);
  t.ok(sum('loads') >= SPEC.layers - 2 && sum('bytesRead') > 0 && sum('readMs') > 0, 'blocks read');
  t.ok(blocks.every((s) => s.computeMs > 0 && s.stallMs >= 0 && !s.resident), 'block counters');
  t.equal(stats[0].resident, true, 'the embedding is mapped');
  await m.close();
  const r = await loadModel(model, OPTS);
  t.equal(r.streamStats(), null, 'a resident model has no streaming counters');
  await r.close();
});

t.test('compression and custom store path', async (t) => {
  const ref = await logitsOf({});
  const storePath = path.join(dir, 'custom-4bit');
  const q4 = await logitsOf({ compression: '4bit', storePath, memoryBudget: 0 });
  t.equal(q4.info.weightType.toLowerCase(), 'q4_0');
  t.ok(fs.existsSync(path.join(storePath, 'manifest.json')));
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.logits.length; i++) {
    num += (q4.logits[i] - ref.logits[i]) ** 2;
    den += ref.logits[i] ** 2;
  }
  t.ok(Math.sqrt(num / den) < 0.5, `4bit relative RMS error ${Math.sqrt(num / den).toFixed(3)} on random weights`);
  const q8 = await logitsOf({ compression: '8bit' }); // Q8_0 already: kept as is
  t.same(Buffer.from(q8.logits.buffer), Buffer.from(ref.logits.buffer));
  t.ok(fs.existsSync(`${model}.strata-store-8bit`));
  await t.rejects(loadModel(model, { compression: '2bit' }), { code: 'STRATA_ERR_ARG' });
  await t.rejects(loadModel(model, { memoryBudget: -1 }), { code: 'STRATA_ERR_ARG' });
});

t.test('in place: the GGUF streams without a store', async (t) => {
  const ref = await logitsOf({});
  for (const memoryBudget of [0, 1e9]) {
    const got = await logitsOf({ inPlace: true, memoryBudget });
    t.same(Buffer.from(got.logits.buffer), Buffer.from(ref.logits.buffer), `budget ${memoryBudget}: identical logits`);
  }
  const tied = path.join(dir, 'tied.gguf');
  fs.copyFileSync(ensureModel({ ...SPEC, tied: true }), tied);
  await t.rejects(loadModel(tied, { inPlace: true }), { code: 'STRATA_ERR_UNSUPPORTED', message: /ties its output/ });
});

t.test('broken stores give clear errors', async (t) => {
  const storePath = path.join(dir, 'broken');
  (await loadModel(model, { storePath, memoryBudget: 0 })).close();
  const part = path.join(storePath, 'blk.1.gguf');
  const buf = fs.readFileSync(part);
  buf[buf.length - 3] ^= 1;
  fs.writeFileSync(part, buf);
  const m = await loadModel(storePath, { ...OPTS, memoryBudget: 0 });
  await t.rejects(m.evaluate(TOKENS), { message: /blk\.1\.gguf.*checksum/ }, 'corrupt part named at use');
  await m.close();
  await t.rejects(loadModel(storePath, { ...OPTS, memoryBudget: 1e9 }), { message: /blk\.1\.gguf.*checksum/ },
    'corrupt part named at load when resident');
  fs.unlinkSync(part);
  await t.rejects(loadModel(storePath, OPTS), { message: /blk\.1\.gguf.*missing/ });
  fs.writeFileSync(path.join(storePath, 'manifest.json'), '{"format": "strata-store", ');
  await t.rejects(loadModel(storePath, OPTS), { code: 'STRATA_ERR_FORMAT', message: /manifest\.json/ });
});

// Two processes load (and so split) the same GGUF into the same store at the
// same moment: they take turns on the store's split lock, both get the same
// logits as the resident model, and the store is whole.
const RACER = `
const { loadModel } = require(${JSON.stringify(path.join(ROOT, 'node/lib/index.js'))});
const [model, storePath, compression] = process.argv.slice(1);
process.stdout.write('ready\\n');
process.stdin.once('data', async () => {
  const t0 = performance.now();
  const m = await loadModel(model, { threads: 1, contextSize: 64, memoryBudget: 0, storePath, compression });
  const loadMs = performance.now() - t0;
  const logits = await m.evaluate(Int32Array.from(${JSON.stringify(Array.from(TOKENS))}));
  await m.close();
  process.stdout.write(JSON.stringify({ loadMs, logits: Buffer.from(logits.buffer).toString('base64') }) + '\\n');
  process.exit(0);
});
`;

function racer(model, storePath, compression) {
  const child = spawn(process.execPath, ['-e', RACER, model, storePath, compression],
    { stdio: ['pipe', 'pipe', 'pipe'], env: process.env });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { err += d; });
  const ready = new Promise((resolve) => {
    const check = () => (out.includes('ready\n') ? resolve() : setTimeout(check, 5));
    check();
  });
  const done = new Promise((resolve, reject) => {
    child.on('exit', (code) => (code === 0
      ? resolve(JSON.parse(out.trim().split('\n').pop()))
      : reject(new Error(`racer exited ${code}: ${err}`))));
  });
  return { child, ready, done };
}

t.test('two processes splitting the same model at once', async (t) => {
  // big enough that a split takes a while (F16 -> 4bit quantizes every matrix)
  const big = path.join(dir, 'race.gguf');
  fs.copyFileSync(ensureModel({ arch: 'llama', type: 'F16', dim: 512, layers: 6, heads: 8, kvHeads: 4, ff: 1536 }), big);
  for (const compression of ['none', '4bit']) {
    const storePath = path.join(dir, `race-${compression}.store`);
    const racers = [racer(big, storePath, compression), racer(big, storePath, compression)];
    await Promise.all(racers.map((r) => r.ready));
    for (const r of racers) r.child.stdin.end('go\n'); // both start splitting now
    const [a, b] = await Promise.all(racers.map((r) => r.done));
    t.equal(a.logits, b.logits, `${compression}: both processes compute the same logits`);
    const manifest = JSON.parse(fs.readFileSync(path.join(storePath, 'manifest.json'), 'utf8'));
    t.equal(manifest.complete, true, `${compression}: store complete`);
    t.equal(manifest.parts.length, 6 + 3);
    t.same(fs.readdirSync(storePath).filter((f) => f.includes('.tmp')), [], 'no temp files left');
    // every part checks out (resident: all checksums verified at load), same logits again
    const m = await loadModel(storePath, { ...OPTS, memoryBudget: 1e9 });
    t.equal(Buffer.from((await m.evaluate(TOKENS)).buffer).toString('base64'), a.logits, `${compression}: store valid`);
    await m.close();
    if (compression === 'none') {
      const r = await loadModel(big, OPTS);
      t.equal(Buffer.from((await r.evaluate(TOKENS)).buffer).toString('base64'), a.logits, 'equal to resident');
      await r.close();
    }
    t.comment(`${compression}: loads took ${a.loadMs.toFixed(0)} and ${b.loadMs.toFixed(0)} ms`);
  }
});

// The benchmark tools run on a real store and report sane figures (smoke
// test: bench/streaming.mjs depends on them; the speeds are not checked).
t.test('stream_bench and strata_split --read-speed', async (t) => {
  const store = `${model}.strata-store`;
  (await loadModel(model, { streaming: true })).close();
  const tool = (name, ...a) => JSON.parse(execFileSync(path.join(ROOT, 'native/build/tools', name), a,
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim().split('\n').pop());
  const manifest = JSON.parse(fs.readFileSync(path.join(store, 'manifest.json'), 'utf8'));
  const bytes = manifest.parts.filter((p) => p.name !== 'meta').reduce((a, p) => a + p.bytes, 0);
  const rs = tool('strata_split', '--read-speed', store);
  t.equal(rs.bytes, bytes, 'read-speed reads every part once');
  for (const k of ['buffered_mbps', 'buffered_parallel_mbps', 'direct_mbps', 'direct_parallel_mbps']) {
    t.ok(rs[k] > 0, `${k} ${rs[k]}`);
  }
  for (const extra of [[], ['--direct-io']]) {
    const r = tool('stream_bench', store, '--budget', '0', '--pairs', '3', '--threads', '1', '--pp', '4', ...extra);
    t.equal(r.pairs, 3);
    t.ok(r.tg_tps > 0 && r.token_ms > 0 && r.read_only_ms > 0 && r.pct_of_bound > 0, JSON.stringify(r));
    t.ok(r.pct_min <= r.pct_of_bound && r.pct_of_bound <= r.pct_max);
    // blocks + head per pass (the embedding is mapped, not streamed); the
    // reader may have read a part or two ahead of the last pass
    const embed = manifest.parts.find((p) => p.name === 'embed').bytes;
    const perPass = r.mib_per_pass * 2 ** 20;
    t.ok(perPass >= 0.95 * (bytes - embed) && perPass <= 1.2 * (bytes - embed), `${r.mib_per_pass} MiB per pass`);
    t.equal(r.direct_io, extra.length > 0);
  }
  t.throws(() => tool('stream_bench', store, '--pairs', '0'), 'bad arguments: usage, exit 2');
});
