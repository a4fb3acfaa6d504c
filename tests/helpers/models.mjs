// Random-weight GGUF fixtures for parity tests and benchmarks, made by the
// native tool native/build/tools/mkmodel and cached in tests/fixtures/models/
// (gitignored).
//
// A fixture's file name holds its shape and a hash of the generator's sources
// (mkmodel.c, gguf_write.c, quant.c) plus its arguments (not the thread
// count: the output does not depend on it), so a changed generator or
// quantizer makes new files instead of reusing stale ones.
// mkmodel writes atomically, so an interrupted run never leaves a half file.
//
//   import { ensureModel } from './helpers/models.mjs';
//   const path = ensureModel({ arch: 'qwen2', type: 'Q8_0', dim: 128, layers: 2,
//                              heads: 4, kvHeads: 2, ff: 256, vocab: 'qwen2', tied: true });
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const ROOT = new URL('../..', import.meta.url).pathname.replace(/\/$/, '');
export const MODEL_DIR = join(ROOT, 'tests/fixtures/models');
// STRATA_MKMODEL overrides the generator binary (e.g. a build elsewhere)
export const MKMODEL = process.env.STRATA_MKMODEL || join(ROOT, 'native/build/tools/mkmodel');
export const STORIES260K = join(ROOT, '../shared/models/stories260K.gguf');

const VOCABS = {
  // llama.cpp's SPM test model: 512 tokens, BOS 1, EOS 2
  stories: () => STORIES260K,
  // Qwen2's real BPE vocabulary (151936 tokens), from llama.cpp's models/
  qwen2: () => vocabFile('qwen2'),
  // a made-up byte-level SPM vocabulary (see mkmodel.c)
  none: () => null,
};

/**
 * Benchmark shapes (pass to ensureModel with a type), e.g.
 * ensureModel({ ...SHAPES.tinyllama, type: 'Q8_0' }): a 1.1B model, ~1.2 GB
 * in Q8_0, made in under 10 s on 2 cores.
 */
export const SHAPES = {
  // TinyLlama-1.1B: dim 2048, 22 layers, 32 heads / 4 KV heads, ff 5632, 32000 tokens
  tinyllama: { arch: 'llama', dim: 2048, layers: 22, heads: 32, kvHeads: 4, ff: 5632, vocab: 'none', vocabSize: 32000 },
  // Qwen2.5-0.5B: dim 896, 24 layers, 14 / 2 heads, ff 4864, tied, Qwen2 vocabulary
  qwen2_0_5b: { arch: 'qwen2', dim: 896, layers: 24, heads: 14, kvHeads: 2, ff: 4864, vocab: 'qwen2', tied: true },
  // Qwen3-0.6B: dim 1024, 28 layers, 16 / 8 heads of 128, ff 3072, tied
  qwen3_0_6b: { arch: 'qwen3', dim: 1024, layers: 28, heads: 16, kvHeads: 8, headDim: 128, ff: 3072, vocab: 'qwen2', tied: true },
};

/** Path of tests/fixtures/vocab/ggml-vocab-NAME.gguf, extracted on first use. */
export function vocabFile(name) {
  const path = join(ROOT, `tests/fixtures/vocab/ggml-vocab-${name}.gguf`);
  if (!existsSync(path)) {
    const script = join(ROOT, 'tests/fixtures/get-vocab.sh');
    if (existsSync(script)) {
      execFileSync('sh', [script], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
    } else {
      extractFromBundle(`models/ggml-vocab-${name}.gguf`, path);
    }
  }
  if (!existsSync(path)) throw new Error(`vocabulary ${name} not found at ${path}`);
  return path;
}

// Fallback when get-vocab.sh is absent: read one file out of node-llama-cpp's
// bundled llama.cpp git history.
function extractFromBundle(inRepo, dest) {
  const bundle = join(ROOT, 'node_modules/node-llama-cpp/llama/gitRelease.bundle');
  const tmp = join(MODEL_DIR, `.bundle-${process.pid}`);
  mkdirSync(join(dest, '..'), { recursive: true });
  try {
    execFileSync('git', ['clone', '--quiet', '--bare', bundle, tmp], { stdio: 'ignore' });
    const data = execFileSync('git', ['--git-dir', tmp, 'show', `HEAD:${inRepo}`], { maxBuffer: 1 << 30 });
    const part = `${dest}.${process.pid}.part`;
    writeFileSync(part, data);
    renameSync(part, dest);
  } finally {
    spawnSync('rm', ['-rf', tmp]);
  }
}

/** Build mkmodel if it is missing (the engine's static library comes with it). */
export function ensureMkmodel() {
  if (!existsSync(MKMODEL)) {
    const r = spawnSync('make', ['-s', '-C', join(ROOT, 'native'), '-j2', 'build/tools/mkmodel'], {
      encoding: 'utf8',
    });
    if (r.status !== 0 || !existsSync(MKMODEL)) {
      throw new Error(`cannot build mkmodel:\n${(r.stdout ?? '') + (r.stderr ?? '')}`);
    }
  }
  return MKMODEL;
}

let generatorHash = null;

function hashGenerator() {
  if (generatorHash === null) {
    const h = createHash('sha256');
    for (const f of ['native/tools/mkmodel.c', 'native/src/gguf_write.c', 'native/src/quant.c']) {
      const p = join(ROOT, f);
      h.update(existsSync(p) ? readFileSync(p) : f);
    }
    generatorHash = h.digest('hex');
  }
  return generatorHash;
}

/** mkmodel's arguments for a spec (output path excluded). */
export function mkmodelArgs(spec) {
  const s = { ctx: 2048, seed: 1, kvHeads: spec.heads, vocab: 'stories', tied: false, ...spec };
  const vocabPath = (VOCABS[s.vocab] ?? (() => s.vocab))();
  const args = ['--arch', s.arch, '--type', s.type, '--dim', s.dim, '--layers', s.layers, '--heads', s.heads,
    '--kv-heads', s.kvHeads, '--ff', s.ff, '--ctx', s.ctx, '--seed', s.seed];
  if (s.headDim) args.push('--head-dim', s.headDim);
  if (vocabPath) args.push('--vocab-from', vocabPath);
  if (s.vocabSize) args.push('--vocab-size', s.vocabSize);
  if (s.tied) args.push('--tied');
  if (s.ropeBase) args.push('--rope-base', s.ropeBase);
  if (s.eps) args.push('--eps', s.eps);
  return { args: args.map(String), s };
}

/** A short name for a spec: arch-type-shape. */
export function modelName(spec) {
  const { s } = mkmodelArgs(spec);
  const hd = s.headDim ? `-hd${s.headDim}` : '';
  return `${s.arch}-${s.type}-d${s.dim}-l${s.layers}-h${s.heads}-kv${s.kvHeads}${hd}-ff${s.ff}` +
    `-${s.vocab === 'stories' || s.vocab === 'qwen2' || s.vocab === 'none' ? s.vocab : 'custom'}` +
    `${s.vocabSize ? `${s.vocabSize}` : ''}${s.tied ? '-tied' : ''}-s${s.seed}`;
}

/**
 * Path of the fixture for spec, generated if missing.
 * spec: {arch, type, dim, layers, heads, kvHeads?, ff, headDim?, ctx?, seed?,
 *        vocab?: 'stories'|'qwen2'|'none'|path, vocabSize?, tied?, ropeBase?, eps?}
 */
export function ensureModel(spec) {
  const { args } = mkmodelArgs(spec);
  const name = modelName(spec);
  const hash = createHash('sha256').update(hashGenerator()).update(args.join(' ')).digest('hex').slice(0, 10);
  const path = join(MODEL_DIR, `${name}-${hash}.gguf`);
  if (existsSync(path)) return path;
  mkdirSync(MODEL_DIR, { recursive: true });
  // drop stale versions of the same fixture
  for (const f of readdirSync(MODEL_DIR)) {
    if (f.startsWith(`${name}-`) && f.endsWith('.gguf') && f !== `${name}-${hash}.gguf` &&
        /^[0-9a-f]{10}\.gguf$/.test(f.slice(name.length + 1))) {
      try {
        unlinkSync(join(MODEL_DIR, f));
      } catch {
        // another process got there first
      }
    }
  }
  runMkmodel(spec, path);
  return path;
}

/** Run mkmodel for spec into out (no caching). spec.threads: default 2. */
export function runMkmodel(spec, out) {
  const { args } = mkmodelArgs(spec);
  args.push('--threads', String(spec.threads ?? 2), '-o', out);
  const r = spawnSync(ensureMkmodel(), args, { encoding: 'utf8' });
  if (r.status !== 0) {
    throw new Error(`mkmodel failed (${args.join(' ')}):\n${r.stderr}`);
  }
  return out;
}
