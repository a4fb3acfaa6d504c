// Compute backend selection through the addon (loadModel's backend /
// vramBudget options, info.backend / info.device, STRATA_BACKEND, the load
// log line, STRATA_LOG=0). On a machine without a usable GPU (CI) 'auto'
// falls back to the CPU with the reason and generates exactly what 'cpu'
// does, and 'cuda' is STRATA_ERR_UNSUPPORTED. Each case runs in a child
// process so its stderr (the log line) and environment are its own.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MODEL = path.resolve(root, '..', 'shared', 'models', 'stories260K.gguf');
const LIB = path.join(root, 'node', 'lib', 'index.js');

// Loads MODEL with opts in a child, generates 16 greedy tokens, prints
// {info, text} or {error, code} as JSON on stdout.
const CHILD = `
const strata = require(${JSON.stringify(LIB)});
(async () => {
  let out;
  try {
    const m = await strata.loadModel(${JSON.stringify(MODEL)}, JSON.parse(process.argv[1]));
    const r = await m.generate('Once upon a time', { maxTokens: 16, temperature: 0, repeatPenalty: 1 });
    out = { info: m.info, text: r.text };
    await m.close();
  } catch (e) {
    out = { error: e.message, code: e.code, name: e.name };
  }
  process.stdout.write(JSON.stringify(out));
})();
`;

function run(opts, env = {}) {
  const childEnv = { ...process.env, ...env };
  for (const k of ['STRATA_BACKEND', 'STRATA_LOG']) {
    if (!(k in env)) {
      delete childEnv[k];
    }
  }
  const r = spawnSync(process.execPath, ['-e', CHILD, JSON.stringify({ threads: 1, contextSize: 128, ...opts })], {
    env: childEnv,
    encoding: 'utf8',
    timeout: 60000,
  });
  if (r.status !== 0) {
    throw new Error(`child failed (${r.status}): ${r.stderr}`);
  }
  return { ...JSON.parse(r.stdout), stderr: r.stderr };
}

const cpu = run({ backend: 'cpu' });
const cuda = run({ backend: 'cuda' });
const gpu = cuda.error === undefined;

t.test('backend cpu', async (t) => {
  t.equal(cpu.error, undefined, cpu.error);
  t.equal(cpu.info.backend, 'cpu');
  t.equal(cpu.info.device, '');
  t.match(cpu.stderr, /strata: backend cpu \(requested\)/);
  t.equal(cpu.stderr.match(/strata: backend/g).length, 1, 'one log line');
  t.ok(cpu.text.length > 0);
});

t.test('backend cuda', async (t) => {
  if (gpu) {
    t.equal(cuda.info.backend, 'cuda');
    t.ok(cuda.info.device.length > 0, `device ${cuda.info.device}`);
    t.match(cuda.stderr, /strata: backend cuda on /);
  } else {
    t.equal(cuda.code, 'STRATA_ERR_UNSUPPORTED');
    t.match(cuda.error, /CUDA backend unavailable: (no CUDA driver|no CUDA device|CUDA driver too old|this build has no CUDA support|CUDA unavailable)/);
  }
});

t.test('backend auto (default)', async (t) => {
  const auto = run({});
  t.equal(auto.error, undefined, auto.error);
  if (gpu) {
    t.equal(auto.info.backend, 'cuda');
  } else {
    t.equal(auto.info.backend, 'cpu');
    t.match(auto.stderr, /strata: backend cpu \(auto: (no CUDA|CUDA driver too old|this build has no CUDA support|CUDA unavailable)/);
    t.equal(auto.text, cpu.text, 'the CPU fallback generates what backend cpu does');
  }
});

t.test('STRATA_BACKEND overrides the option', async (t) => {
  const r = run({ backend: 'cuda' }, { STRATA_BACKEND: 'cpu' });
  t.equal(r.info.backend, 'cpu');
  t.match(r.stderr, /strata: backend cpu \(STRATA_BACKEND\)/);
  t.equal(r.text, cpu.text);
  const bad = run({}, { STRATA_BACKEND: 'tpu' });
  t.equal(bad.code, 'STRATA_ERR_ARG');
  t.match(bad.error, /STRATA_BACKEND='tpu'/);
  if (!gpu) {
    const c = run({ backend: 'cpu' }, { STRATA_BACKEND: 'cuda' });
    t.equal(c.code, 'STRATA_ERR_UNSUPPORTED');
  }
});

t.test('STRATA_LOG=0 silences the line', async (t) => {
  const r = run({ backend: 'cpu' }, { STRATA_LOG: '0' });
  t.equal(r.info.backend, 'cpu');
  t.notMatch(r.stderr, /strata: backend/);
});

t.test('bad options', async (t) => {
  const r = run({ backend: 'tpu' });
  t.equal(r.code, 'STRATA_ERR_ARG');
  t.match(r.error, /'backend' must be 'auto', 'cpu' or 'cuda'/);
  const v = run({ vramBudget: -1 });
  t.equal(v.code, 'STRATA_ERR_ARG');
  const ok = run({ backend: 'auto', vramBudget: 1 << 20 });
  t.equal(ok.error, undefined, ok.error);
});

t.test('the addon needs no CUDA shared library', async (t) => {
  const { binding } = await import(path.join(root, 'node', 'lib', 'binding.js'));
  const addon = process.env.STRATA_ADDON
    ? path.resolve(process.env.STRATA_ADDON)
    : path.join(root, 'build', 'Release', 'strata.node');
  t.ok(binding, 'binding loads');
  let deps = '';
  try {
    deps = execFileSync('ldd', [addon], { encoding: 'utf8' });
  } catch (e) {
    t.skip(`ldd unavailable: ${e.message}`);
    return;
  }
  t.notMatch(deps, /libcuda|libcudart/, 'no libcuda / libcudart dependency');
});
