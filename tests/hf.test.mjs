// Hugging Face folders through the JS API: loadModel(dir) converts the
// folder once to <dir>/strata-model.gguf (in C, inside strata_model_load),
// reuses it while the sources are unchanged, and answers exactly as the
// original GGUF does. The folder is made from stories260K by gguf2hf.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MODEL = path.resolve(root, '..', 'shared', 'models', 'stories260K.gguf');
const GGUF2HF = path.join(root, 'native', 'build', 'tools', 'gguf2hf');
const PROMPT = 'Once upon a time';
const GREEDY = { temperature: 0, repeatPenalty: 1 };

const { loadModel } = require('../node/lib/index.js');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-hf-js-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

function exportHf(dir, extra = []) {
  execFileSync(GGUF2HF, [MODEL, dir, ...extra], { stdio: 'pipe' });
}

t.test('a Hugging Face folder loads and answers as its GGUF', async (t) => {
  const dir = path.join(tmp, 'stories-hf');
  exportHf(dir, ['--shards', '2']);
  t.ok(fs.existsSync(path.join(dir, 'model.safetensors.index.json')));

  const ref = await loadModel(MODEL, { threads: 1 });
  const hf = await loadModel(dir, { threads: 1 });
  t.teardown(() => Promise.all([ref.close(), hf.close()]));

  const store = path.join(dir, 'strata-model.gguf');
  t.ok(fs.existsSync(store), 'the import is kept next to the sources');
  for (const k of ['arch', 'nLayers', 'nEmbd', 'nVocab', 'bos', 'eos', 'addBos', 'tokenizer']) {
    t.same(hf.info[k], ref.info[k], `info.${k}`);
  }
  t.same(Array.from(hf.tokenize(PROMPT)), Array.from(ref.tokenize(PROMPT)));
  t.same(Array.from(hf.tokenize('Hello, world! 123 ünïcödé')), Array.from(ref.tokenize('Hello, world! 123 ünïcödé')));
  const a = await ref.generate(PROMPT, { maxTokens: 24, ...GREEDY });
  const b = await hf.generate(PROMPT, { maxTokens: 24, ...GREEDY });
  t.equal(b.text, a.text);
  t.equal(b.genTokens, a.genTokens);

  // loading again reuses the converted file (same inode: not rewritten)
  const ino = fs.statSync(store).ino;
  const again = await loadModel(dir, { threads: 1 });
  await again.close();
  t.equal(fs.statSync(store).ino, ino);

  // a changed source makes it convert again
  const cfg = path.join(dir, 'config.json');
  const later = new Date(Date.now() + 5000);
  fs.utimesSync(cfg, later, later);
  const third = await loadModel(dir, { threads: 1 });
  await third.close();
  t.not(fs.statSync(store).ino, ino);
});

t.test('a broken folder rejects with a clear error', async (t) => {
  const dir = path.join(tmp, 'broken-hf');
  exportHf(dir);
  fs.writeFileSync(path.join(dir, 'config.json'), '{"architectures": ["GPT2LMHeadModel"]}');
  await t.rejects(loadModel(dir), /GPT2LMHeadModel/);
  fs.writeFileSync(path.join(dir, 'config.json'), '{"architectures": ');
  await t.rejects(loadModel(dir), /config\.json/);
  fs.rmSync(path.join(dir, 'config.json'));
  await t.rejects(loadModel(dir), /config\.json/);
  t.notOk(fs.existsSync(path.join(dir, 'strata-model.gguf')));
});

// llama.cpp itself (node-llama-cpp) reads the converted GGUF: its metadata
// keys and tensor names are the converter's, and it continues the prompt
// exactly as from the original file.
t.test('llama.cpp loads the converted file and agrees with the original', async (t) => {
  const { getLlama } = await import('node-llama-cpp');
  const dir = path.join(tmp, 'stories-peer');
  exportHf(dir, ['--dtype', 'F16']);
  const conv = path.join(tmp, 'stories-peer.gguf');
  execFileSync(path.join(root, 'native', 'build', 'tools', 'strata_convert'), [dir, conv, '--type', 'F32'], {
    stdio: 'pipe',
  });
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' });
  t.teardown(() => llama.dispose());
  async function greedy(file) {
    const model = await llama.loadModel({ modelPath: file });
    const ctx = await model.createContext({ contextSize: 256, threads: 1 });
    const out = [];
    try {
      const input = [model.tokens.bos, ...model.tokenize(PROMPT)];
      for await (const tok of ctx.getSequence().evaluate(input, { temperature: 0 })) {
        if (model.isEogToken(tok) || out.length >= 16) {
          break;
        }
        out.push(tok);
      }
      return { input, out };
    } finally {
      await ctx.dispose();
      await model.dispose();
    }
  }
  // F16 safetensors of an F32 model: the weights are rounded, so compare
  // the converted file against strata on the same file, and the prompt ids
  // against the original.
  const a = await greedy(MODEL);
  const b = await greedy(conv);
  t.same(b.input, a.input, 'same prompt tokens as the original vocabulary');
  const s = await loadModel(conv, { threads: 1, kvF32: true });
  t.teardown(() => s.close());
  const r = await s.generate(PROMPT, { maxTokens: 16, ...GREEDY });
  t.equal(r.genTokens, b.out.length);
  t.equal(r.text, s.detokenize(Int32Array.from(b.out)));
});
