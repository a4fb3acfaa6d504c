// Runs each C module test (native/tests/*_test.c) as a Tap subtest, then the
// parser tests again under AddressSanitizer + UBSan, then a short libFuzzer
// run of the GGUF reader.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { readdirSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const run = (cmd, args, opts = {}) =>
  spawnSync(cmd, args, { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20, ...opts });

function runTests(dir, label, only) {
  const names = readdirSync(join(root, dir)).filter((n) => n.endsWith('_test') && (!only || only.includes(n)));
  t.ok(names.length > 0, `${label}: found tests in ${dir}`);
  for (const name of names) {
    t.test(`${label} ${name}`, async (tt) => {
      const r = run(join(root, dir, name), [], { timeout: 300_000 });
      tt.equal(r.status, 0, `${name} exits 0`, { output: (r.stdout + r.stderr).slice(-4000) });
    });
  }
}

const build = run('make', ['-s', '-C', 'native', '-j2', 'all']);
t.equal(build.status, 0, 'native build', { output: build.stderr.slice(-4000) });
runTests('native/build/tests', 'native');

const parserTests = ['gguf_test', 'gguf_write_test', 'tokenizer_test', 'unicode_test', 'json_constraint_test', 'chat_test', 'store_test', 'safetensors_test'];
t.test('ASan+UBSan parser tests', async (tt) => {
  const b = run('make', ['-s', '-C', 'native', '-j2', 'asan-build']);
  tt.equal(b.status, 0, 'asan build', { output: b.stderr.slice(-4000) });
  const names = readdirSync(join(root, 'native/build-asan/tests')).filter((n) => parserTests.includes(n));
  tt.ok(names.length >= 3, 'parser tests built under ASan');
  for (const name of names) {
    const r = run(join(root, 'native/build-asan/tests', name), [], {
      timeout: 300_000,
      env: { ...process.env, ASAN_OPTIONS: 'detect_leaks=1', UBSAN_OPTIONS: 'print_stacktrace=1' },
    });
    tt.equal(r.status, 0, `${name} clean under ASan/UBSan`, { output: (r.stdout + r.stderr).slice(-4000) });
  }
});

t.test('libFuzzer: GGUF reader survives 20 s of mutated files', async (tt) => {
  const b = run('make', ['-s', '-C', 'native', 'fuzz']);
  tt.equal(b.status, 0, 'fuzz build', { output: b.stderr.slice(-4000) });
  const corpus = join(root, 'native/build/fuzz/corpus');
  mkdirSync(corpus, { recursive: true });
  const seeds = join(root, 'native/fuzz/seeds');
  const args = ['-max_total_time=20', '-max_len=65536', '-rss_limit_mb=1024', corpus];
  if (existsSync(seeds)) args.push(seeds);
  const r = run(join(root, 'native/build/fuzz/gguf_fuzz'), args, { timeout: 120_000 });
  tt.equal(r.status, 0, 'no crash found', { output: r.stderr.slice(-4000) });
});

// The CUDA kernels without a GPU: their dequant math compiled for the host
// (bit-exact with quant.c), and the whole GPU kernel test run by the CPU
// emulator in native/cuda/tests/emu (index math, shared memory, barriers,
// shuffles). Where nvcc exists (CI), also the real GPU test binary is built
// and must skip cleanly (exit 77) when no device is usable.
t.test('CUDA kernels on the CPU (host dequant + emulator)', async (tt) => {
  const nvcc = run('sh', ['-c', 'command -v nvcc || test -x /usr/local/cuda/bin/nvcc']).status === 0;
  const makeArgs = nvcc
    ? ['-s', '-C', 'native', 'cuda-test-host', 'cuda-test-emu']
    : ['-s', '-C', 'native', '-f', 'Makefile', '-f', 'cuda/Makefile.cuda', 'STRATA_CUDA=0', 'cuda-test-host', 'cuda-test-emu'];
  const r = run('make', makeArgs, { timeout: 600_000 });
  tt.equal(r.status, 0, 'host dequant test and emulated GPU kernel test pass', {
    output: (r.stdout + r.stderr).slice(-4000),
  });
  if (!nvcc) {
    tt.comment('nvcc not found: the GPU kernel binary is not compiled here');
    return;
  }
  const g = run('bash', ['tests/gpu/kernels.sh'], { timeout: 600_000 });
  const out = g.stdout + g.stderr;
  if (g.status === 77) {
    tt.match(out, /SKIP: no CUDA device/, 'GPU kernel test compiled and skips without a device');
  } else {
    tt.equal(g.status, 0, 'GPU kernel test passes on this device', { output: out.slice(-4000) });
  }
});
