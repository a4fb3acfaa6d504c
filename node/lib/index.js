'use strict';
// JS API over the native addon:
//
//   const { loadModel } = require('n8n-nodes-strata');
//   const model = await loadModel('model.gguf', { threads: 4, contextSize: 2048 });
//   const r = await model.generate('Once upon a time', { maxTokens: 64, onToken: (p) => ... });
//   await model.close();
//
// A Model owns one context (KV cache), created on first use and reused
// across calls: the engine keeps the longest common prefix of consecutive
// prompts. Every async call on a Model goes through one promise queue, so
// the native context never sees two operations at once.

const fs = require('node:fs');
const path = require('node:path');
const { binding } = require('./binding');

const STOP_REASONS = ['eog', 'maxTokens', 'stop', 'context', 'json', 'cancelled', 'callback'];

// Sampling/generation options forwarded to the addon as is (it validates them).
const GENERATE_KEYS = [
  'maxTokens',
  'temperature',
  'topK',
  'topP',
  'minP',
  'repeatPenalty',
  'repeatLastN',
  'presencePenalty',
  'frequencyPenalty',
  'seed',
  'json',
];

function typeError(message) {
  const err = new TypeError(message);
  err.code = 'STRATA_ERR_ARG';
  return err;
}

function closedError() {
  const err = new Error('strata: the model is closed');
  err.code = 'STRATA_ERR_CLOSED';
  return err;
}

function checkOptions(opts, fn) {
  if (opts === undefined || opts === null) {
    return {};
  }
  if (typeof opts !== 'object' || Array.isArray(opts)) {
    throw typeError(`${fn}: options must be an object`);
  }
  return opts;
}

function checkType(opts, key, type, fn) {
  const v = opts[key];
  if (v !== undefined && v !== null && typeof v !== type) {
    throw typeError(`${fn}: option '${key}' must be a ${type}`);
  }
}

function checkMessages(messages, fn) {
  if (!Array.isArray(messages)) {
    throw typeError(`${fn}: messages must be an array of {role, content}`);
  }
  messages.forEach((m, i) => {
    if (m === null || typeof m !== 'object') {
      throw typeError(`${fn}: messages[${i}] must be an object {role, content}`);
    }
    if (typeof m.role !== 'string' || typeof m.content !== 'string') {
      throw typeError(`${fn}: messages[${i}] needs string 'role' and 'content'`);
    }
  });
}

function isAbortSignal(s) {
  return s !== null && typeof s === 'object' && typeof s.aborted === 'boolean' &&
    typeof s.addEventListener === 'function' && typeof s.removeEventListener === 'function';
}

function timings(r) {
  const rate = (n, ms) => (ms > 0 ? (n * 1000) / ms : 0);
  return {
    promptMs: r.promptMs,
    genMs: r.genMs,
    promptTokensPerSec: rate(r.promptTokens, r.promptMs),
    genTokensPerSec: rate(r.genTokens, r.genMs),
  };
}

class Model {
  #native;
  #info;
  #ctx = null;
  #ctxOptions;
  #queue = Promise.resolve();
  #closing = false;
  #addBos;

  /** @internal use loadModel() */
  constructor(native, info, ctxOptions) {
    this.#native = native;
    // contextSize: the KV cache length this Model's context gets (the
    // engine's default when not asked for: min(trained length, 4096)).
    const contextSize = ctxOptions.contextSize || Math.min(info.nCtxTrain, 4096);
    this.#info = Object.freeze({ ...info, contextSize });
    this.#ctxOptions = ctxOptions;
    // The model's own preference when the engine reports it; otherwise
    // llama.cpp's defaults: SPM vocabularies add BOS, Qwen's BPE does not.
    this.#addBos = info.addBos;
  }

  /** Architecture, sizes, vocabulary and special tokens (plain object). */
  get info() {
    return this.#info;
  }

  /** Whether tokenize() adds BOS by default for this model. */
  get addBos() {
    return this.#addBos;
  }

  get closed() {
    return this.#closing;
  }

  /**
   * Layer-streaming counters, one entry per weight part in order (part -1:
   * embeddings, 0..nLayers-1: blocks, nLayers: head): {part, resident,
   * loads, bytesRead, readMs, stallMs, computeMs}; null when the model is
   * not streamed. reset: zero them after reading.
   */
  streamStats(options) {
    this.#checkOpen();
    const o = checkOptions(options, 'streamStats');
    checkType(o, 'reset', 'boolean', 'streamStats');
    return binding().streamStats(this.#native, { reset: o.reset ?? false });
  }

  #checkOpen() {
    if (this.#closing) {
      throw closedError();
    }
  }

  #enqueue(fn) {
    const run = this.#queue.then(fn);
    this.#queue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  #context() {
    if (this.#ctx === null) {
      this.#ctx = binding().createContext(this.#native, this.#ctxOptions);
    }
    return this.#ctx;
  }

  /** Text -> Int32Array of token ids. */
  tokenize(text, options) {
    this.#checkOpen();
    const o = checkOptions(options, 'tokenize');
    if (typeof text !== 'string') {
      throw typeError('tokenize: text must be a string');
    }
    checkType(o, 'addBos', 'boolean', 'tokenize');
    checkType(o, 'special', 'boolean', 'tokenize');
    return binding().tokenize(this.#native, text, {
      addBos: o.addBos ?? this.#addBos,
      special: o.special ?? false,
    });
  }

  /** Token ids -> text. special: render control tokens like <|im_end|>. */
  detokenize(tokens, options) {
    this.#checkOpen();
    const o = checkOptions(options, 'detokenize');
    return binding().detokenize(this.#native, tokens, { special: o.special ?? false });
  }

  tokenToPiece(token, options) {
    this.#checkOpen();
    const o = checkOptions(options, 'tokenToPiece');
    return binding().tokenToPiece(this.#native, token, { special: o.special ?? false });
  }

  /** Messages -> prompt text in the model's (or the named) chat template. */
  applyChatTemplate(messages, options) {
    this.#checkOpen();
    const o = checkOptions(options, 'applyChatTemplate');
    checkMessages(messages, 'applyChatTemplate');
    checkType(o, 'template', 'string', 'applyChatTemplate');
    checkType(o, 'addGenerationPrompt', 'boolean', 'applyChatTemplate');
    return binding().applyChatTemplate(this.#native, messages, {
      template: o.template,
      addGenerationPrompt: o.addGenerationPrompt ?? true,
    });
  }

  // Prompt (string, messages or tokens) -> Int32Array.
  #promptTokens(prompt, o) {
    if (typeof prompt === 'string') {
      return this.tokenize(prompt, { addBos: o.addBos, special: o.special });
    }
    if (prompt instanceof Int32Array) {
      return prompt;
    }
    if (Array.isArray(prompt)) {
      checkMessages(prompt, 'generate');
      let messages = prompt;
      if (typeof o.system === 'string' && (messages.length === 0 || messages[0].role !== 'system')) {
        messages = [{ role: 'system', content: o.system }, ...messages];
      }
      const text = this.applyChatTemplate(messages, {
        template: o.template,
        addGenerationPrompt: true,
      });
      const toks = this.tokenize(text, { addBos: o.addBos, special: true });
      // Templates that write BOS themselves would otherwise get it twice.
      const bos = this.#info.bos;
      if (toks.length >= 2 && toks[0] === bos && toks[1] === bos) {
        return toks.subarray(1);
      }
      return toks;
    }
    throw typeError('generate: prompt must be a string, an array of {role, content} or an Int32Array');
  }

  /**
   * Generate text. prompt: a string (used as is, BOS per the model), an
   * array of chat messages (through the chat template), or an Int32Array of
   * tokens. Options: maxTokens, temperature, topK, topP, minP,
   * repeatPenalty, repeatLastN, presencePenalty, frequencyPenalty, seed,
   * json, stop (string[]), onToken(piece) (return false to stop), signal
   * (AbortSignal: resolves early with stopReason 'cancelled'), template,
   * system, addBos, special.
   */
  generate(prompt, options) {
    let o;
    let tokens;
    let native;
    try {
      this.#checkOpen();
      o = checkOptions(options, 'generate');
      checkType(o, 'system', 'string', 'generate');
      checkType(o, 'onToken', 'function', 'generate');
      if (o.signal !== undefined && o.signal !== null && !isAbortSignal(o.signal)) {
        throw typeError('generate: option \'signal\' must be an AbortSignal');
      }
      tokens = this.#promptTokens(prompt, o);
      if (tokens.length === 0) {
        const err = new RangeError('generate: the prompt is empty (no tokens)');
        err.code = 'STRATA_ERR_ARG';
        throw err;
      }
      native = {};
      for (const k of GENERATE_KEYS) {
        if (o[k] !== undefined && o[k] !== null) {
          native[k] = o[k];
        }
      }
      if (o.stop !== undefined && o.stop !== null) {
        native.stop = typeof o.stop === 'string' ? [o.stop] : o.stop;
      }
    } catch (err) {
      return Promise.reject(err);
    }
    const signal = o.signal ?? null;
    const onToken = o.onToken ?? null;
    return this.#enqueue(async () => {
      if (signal !== null && signal.aborted) {
        return {
          text: '',
          promptTokens: tokens.length,
          genTokens: 0,
          stopReason: 'cancelled',
          timings: timings({ promptTokens: 0, genTokens: 0, promptMs: 0, genMs: 0 }),
        };
      }
      const b = binding();
      const ctx = this.#context();
      const token = b.createCancelToken();
      const onAbort = () => b.cancel(token);
      if (signal !== null) {
        signal.addEventListener('abort', onAbort, { once: true });
      }
      try {
        const r = await b.generate(ctx, tokens, { ...native, cancelToken: token }, onToken ?? undefined);
        return {
          text: r.text,
          promptTokens: r.promptTokens,
          genTokens: r.genTokens,
          stopReason: r.stopReason,
          timings: timings(r),
        };
      } finally {
        if (signal !== null) {
          signal.removeEventListener('abort', onAbort);
        }
      }
    });
  }

  /**
   * Next-token logits (Float32Array of nVocab) after running tokens through
   * a fresh context. kvF32 other than the model's setting uses a temporary
   * context.
   */
  evaluate(tokens, options) {
    let o;
    try {
      this.#checkOpen();
      o = checkOptions(options, 'evaluate');
      checkType(o, 'kvF32', 'boolean', 'evaluate');
      if (!(tokens instanceof Int32Array) && !Array.isArray(tokens)) {
        throw typeError('evaluate: tokens must be an Int32Array or an array of numbers');
      }
      if (tokens.length === 0) {
        const err = new RangeError('evaluate: tokens must not be empty');
        err.code = 'STRATA_ERR_ARG';
        throw err;
      }
    } catch (err) {
      return Promise.reject(err);
    }
    const copy = Int32Array.from(tokens);
    return this.#enqueue(async () => {
      const b = binding();
      const kvF32 = o.kvF32 ?? this.#ctxOptions.kvF32 ?? false;
      if (kvF32 !== (this.#ctxOptions.kvF32 ?? false)) {
        const tmp = b.createContext(this.#native, { ...this.#ctxOptions, kvF32 });
        try {
          return await b.eval(tmp, copy, { logits: true });
        } finally {
          b.freeContext(tmp);
        }
      }
      const ctx = this.#context();
      b.truncate(ctx, 0);
      return b.eval(ctx, copy, { logits: true });
    });
  }

  /** Free the context and the model once queued work is done. Safe twice. */
  close() {
    if (this.#closing) {
      return this.#queue.then(() => undefined);
    }
    this.#closing = true;
    return this.#enqueue(() => {
      const b = binding();
      if (this.#ctx !== null) {
        b.freeContext(this.#ctx);
        this.#ctx = null;
      }
      b.close(this.#native);
    });
  }
}

const LOAD_OPTIONS = {
  threads: 'number',
  mmap: 'boolean',
  mlock: 'boolean',
  contextSize: 'number',
  batch: 'number',
  kvF32: 'boolean',
  // layer streaming (a split store beside the model, made on first use)
  streaming: 'boolean',
  memoryBudget: 'number',
  prefetch: 'number',
  compression: 'string',
  storePath: 'string',
  deleteOriginal: 'boolean',
  inPlace: 'boolean',
  directIo: 'boolean',
  // compute backend: 'auto' (CUDA when built with it and a GPU is there),
  // 'cpu', 'cuda'; vramBudget: bytes of weights kept on the GPU (0: all that fit)
  backend: 'string',
  vramBudget: 'number',
};

/**
 * Load a GGUF model. Options: threads (0: all cores), mmap, mlock,
 * contextSize (KV cache tokens; 0: min(trained, 4096)), batch, kvF32.
 * Layer streaming, for models larger than memory: memoryBudget (bytes of
 * weights kept in memory; the layers that fit stay resident, the others are
 * read from disk each step; 0: one layer at a time), compression ('none',
 * '8bit', '4bit'), storePath (default `<model>.strata-store[-8bit|-4bit]`
 * beside the file, or in $STRATA_STORE_DIR), prefetch (parts read ahead;
 * default: as many as the budget allows), deleteOriginal, streaming: true
 * (stream with the defaults), inPlace: true (stream the GGUF itself, no
 * store; needs per-layer contiguous tensors and an untied output),
 * directIo: true (read streamed layers with O_DIRECT; default: buffered
 * reads, each layer's pages dropped from the page cache once read).
 * The path
 * may also be a store folder.
 * Compute backend: backend 'auto' (default: CUDA when the addon was built
 * with it and a GPU + driver are present, else the CPU), 'cpu' or 'cuda'
 * (STRATA_ERR_UNSUPPORTED without one); vramBudget: bytes of weights kept on
 * the GPU, the rest streamed each step (0: all that fit). The environment
 * variable STRATA_BACKEND overrides backend; info.backend / info.device say
 * what runs.
 */
async function loadModel(modelPath, options) {
  if (typeof modelPath !== 'string' || modelPath.length === 0) {
    throw typeError('loadModel: path must be a non-empty string');
  }
  const o = checkOptions(options, 'loadModel');
  for (const [k, type] of Object.entries(LOAD_OPTIONS)) {
    checkType(o, k, type, 'loadModel');
    const v = o[k];
    if (type === 'number' && v !== undefined && v !== null && !(Number.isInteger(v) && v >= 0)) {
      const err = new RangeError(`loadModel: option '${k}' must be a non-negative integer (got ${v})`);
      err.code = 'STRATA_ERR_ARG';
      throw err;
    }
  }
  const b = binding();
  if (o.backend !== undefined && o.backend !== null && !['auto', 'cpu', 'cuda'].includes(o.backend)) {
    throw typeError(`loadModel: option 'backend' must be 'auto', 'cpu' or 'cuda' (got ${o.backend})`);
  }
  if (o.compression !== undefined && o.compression !== null && !['none', '8bit', '4bit'].includes(o.compression)) {
    throw typeError(`loadModel: option 'compression' must be 'none', '8bit' or '4bit' (got ${o.compression})`);
  }
  const loadOptions = {
    threads: o.threads,
    mmap: o.mmap,
    mlock: o.mlock,
    backend: o.backend,
    vramBudget: o.vramBudget,
  };
  for (const k of ['streaming', 'memoryBudget', 'prefetch', 'compression', 'storePath', 'deleteOriginal', 'inPlace', 'directIo']) {
    if (o[k] !== undefined && o[k] !== null) {
      loadOptions[k] = k === 'storePath' ? path.resolve(o[k]) : o[k];
    }
  }
  if (fs.existsSync(path.join(modelPath, 'manifest.json'))) {
    loadOptions.streaming = true; // a split store folder
  }
  const { model, info } = await b.load(path.resolve(modelPath), loadOptions);
  const ctxOptions = {
    contextSize: o.contextSize,
    batch: o.batch,
    threads: o.threads,
    kvF32: o.kvF32,
  };
  for (const k of Object.keys(ctxOptions)) {
    if (ctxOptions[k] === undefined || ctxOptions[k] === null) {
      delete ctxOptions[k];
    }
  }
  return new Model(model, info, ctxOptions);
}

module.exports = {
  loadModel,
  Model,
  // the same operations through a strata-worker daemon (nng): see worker.js
  connectWorker: (...args) => require('./worker').connectWorker(...args),
  STOP_REASONS,
  get version() {
    return binding().version;
  },
  get native() {
    return binding();
  },
};
