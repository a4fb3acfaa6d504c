// node/bin/strata.js, spawned as a user would run it.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(root, 'node', 'bin', 'strata.js');
const MODEL = path.resolve(root, '..', 'shared', 'models', 'stories260K.gguf');
const PROMPT = 'Once upon a time';

function cli(args, { timeout = 60000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const chunks = [];
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (d) => {
      stdout += d;
      chunks.push(d);
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeout);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, chunks });
    });
  });
}

const { loadModel } = require('../node/lib/index.js');
const model = await loadModel(MODEL, { threads: 1 });
t.teardown(() => model.close());

t.test('generate prints the same text as the API', async (t) => {
  const api = await model.generate(PROMPT, { maxTokens: 24, temperature: 0 });
  const r = await cli(['generate', '--model', MODEL, '--prompt', PROMPT, '--max-tokens', '24', '--temperature', '0', '--threads', '1']);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, `${api.text}\n`);
  t.equal(r.stderr, '');

  const s = await cli(['generate', '-m', MODEL, '-p', PROMPT, '-n', '24', '-t', '0', '--threads', '1', '--stream', '--verbose']);
  t.equal(s.code, 0, s.stderr);
  t.equal(s.stdout, `${api.text}\n`, 'streamed output is the same text');
  t.match(s.stderr, /stop=maxTokens .*generated=24 tok/);
});

t.test('seeded sampling is reproducible from the CLI', async (t) => {
  const args = ['generate', '--model', MODEL, '--prompt', PROMPT, '--max-tokens', '16', '--temperature', '0.9', '--seed', '99', '--threads', '1'];
  const a = await cli(args);
  const b = await cli(args);
  t.equal(a.code, 0, a.stderr);
  t.equal(a.stdout, b.stdout);
  const api = await model.generate(PROMPT, { maxTokens: 16, temperature: 0.9, seed: 99 });
  t.equal(a.stdout, `${api.text}\n`);
});

t.test('stop strings and JSON mode', async (t) => {
  const api = await model.generate(PROMPT, { maxTokens: 24, temperature: 0, stop: ['Lily'] });
  const r = await cli(['generate', '--model', MODEL, '--prompt', PROMPT, '--max-tokens', '24', '--temperature', '0', '--stop', 'Lily', '--stop', 'zzz', '--threads', '1', '-v']);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, `${api.text}\n`);
  t.match(r.stderr, new RegExp(`stop=${api.stopReason} `));
  const j = await cli(['generate', '--model', MODEL, '--prompt', 'JSON:', '--max-tokens', '8', '--json', '--seed', '3', '--threads', '1', '-v']);
  t.equal(j.code, 0, j.stderr);
  t.match(j.stderr, /stop=(json|maxTokens) /);
});

t.test('chat', async (t) => {
  const r = await cli(['chat', '--model', MODEL, '--message', 'Hello', '--system', 'Be nice', '--max-tokens', '8', '--temperature', '0', '--threads', '1']);
  t.equal(r.code, 0, r.stderr);
  const api = await model.generate([{ role: 'user', content: 'Hello' }], { system: 'Be nice', maxTokens: 8, temperature: 0 });
  t.equal(r.stdout, `${api.text}\n`);
});

t.test('info prints JSON', async (t) => {
  const r = await cli(['info', '--model', MODEL]);
  t.equal(r.code, 0, r.stderr);
  const info = JSON.parse(r.stdout);
  t.equal(info.arch, 'llama');
  t.equal(info.nVocab, 512);
  t.same(info, model.info);
});

t.test('tokenize prints ids', async (t) => {
  const r = await cli(['tokenize', '--model', MODEL, '--text', PROMPT]);
  t.equal(r.code, 0, r.stderr);
  t.same(JSON.parse(r.stdout), [1, 403, 407, 261, 378]);
  const nb = await cli(['tokenize', '--model', MODEL, '--text', PROMPT, '--no-bos']);
  t.same(JSON.parse(nb.stdout), [403, 407, 261, 378]);
});

t.test('usage errors exit 2 with a message', async (t) => {
  const cases = [
    [[], /missing command/],
    [['frobnicate'], /unknown command 'frobnicate'/],
    [['generate', '--model', MODEL], /'generate' needs --prompt/],
    [['generate', '--prompt', 'x'], /'generate' needs --model/],
    [['generate', '--model', MODEL, '--prompt', 'x', '--max-tokens', 'lots'], /--max-tokens must be an integer/],
    [['generate', '--model', MODEL, '--prompt', 'x', '--temperature=-1'], /--temperature must be a number/],
    [['generate', '--model', MODEL, '--prompt', 'x', '--bogus'], /Unknown option '--bogus'/],
    [['info', '--model', MODEL, '--prompt', 'x'], /--prompt is not an option of 'info'/],
    [['tokenize', '--model', MODEL, 'extra', '--text', 'x'], /unexpected argument 'extra'/],
  ];
  for (const [args, re] of cases) {
    const r = await cli(args);
    t.equal(r.code, 2, `exit code for ${args.join(' ')}`);
    t.match(r.stderr, re);
    t.match(r.stderr, /strata --help/);
    t.equal(r.stdout, '');
  }
  const h = await cli(['--help']);
  t.equal(h.code, 0);
  t.match(h.stdout, /Usage: strata <command>/);
});

t.test('runtime errors exit 1 with the engine message', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-cli-test-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const missing = path.join(dir, 'nope.gguf');
  const r = await cli(['info', '--model', missing]);
  t.equal(r.code, 1);
  t.match(r.stderr, /nope\.gguf/);
  t.match(r.stderr, /STRATA_ERR_IO/);
  const bad = path.join(dir, 'bad.gguf');
  fs.writeFileSync(bad, 'GGUF but not really');
  const b = await cli(['generate', '--model', bad, '--prompt', 'x']);
  t.equal(b.code, 1);
  t.match(b.stderr, /STRATA_ERR_FORMAT/);
});
