'use strict';
// Client of strata-worker (native/worker): the same operations as the
// embedded Model (node/lib/index.js), served by a long-running daemon that
// batches requests from every client layer by layer.
//
//   const { connectWorker } = require('n8n-nodes-strata/node/lib/worker');
//   const w = connectWorker('ipc:///tmp/strata.sock', { token, timeoutMs: 60000 });
//   const r = await w.generate('Once upon a time', { maxTokens: 32, onToken: (p) => ... });
//   const s = await w.score('Are these two a good match? Answer:', [' yes', ' no']);
//   await w.close();
//
// Transport: the addon's nng REQ client (native/addon/client.c); the dialer
// reconnects by itself when the worker restarts. Every request has a
// timeout, which the worker is told too (timeout_ms), so it drops the work
// when the client stops waiting; a request in flight when the connection
// drops fails with code STRATA_ERR_WORKER_LOST (and the worker cancels it).
// Streaming and cancelling (onToken, signal, onRequestId) use the protocol's
// async form: {stream:true} or {async:true} -> rid at once, then poll until
// done; cancel(rid) or the AbortSignal stops it, for every model op.
// tls+tcp:// URLs take options.tls = { ca, cert, key, serverName, insecure }.

const { binding } = require('./binding');

const PROTOCOL = 1;

// camelCase option -> protocol field
const SAMPLING = {
  maxTokens: 'max_tokens',
  temperature: 'temperature',
  topK: 'top_k',
  topP: 'top_p',
  minP: 'min_p',
  repeatPenalty: 'repeat_penalty',
  repeatLastN: 'repeat_last_n',
  presencePenalty: 'presence_penalty',
  frequencyPenalty: 'frequency_penalty',
  seed: 'seed',
  json: 'json',
};

function typeError(message) {
  const err = new TypeError(message);
  err.code = 'STRATA_ERR_ARG';
  return err;
}

function workerError(error) {
  const err = new Error(`strata worker: ${error.message}`);
  err.code = error.code;
  return err;
}

function cancelledError(what) {
  const err = new Error(`strata worker: ${what} was cancelled`);
  err.name = 'AbortError';
  err.code = 'STRATA_ERR_CANCELLED';
  return err;
}

const MODEL_OPS = new Set(['generate', 'chat', 'score', 'embed']);

function isAbortSignal(s) {
  return s !== null && typeof s === 'object' && typeof s.aborted === 'boolean' &&
    typeof s.addEventListener === 'function';
}

function generateResult(r) {
  const rate = (n, ms) => (ms > 0 ? (n * 1000) / ms : 0);
  return {
    text: r.text,
    promptTokens: r.prompt_tokens,
    genTokens: r.gen_tokens,
    stopReason: r.stop_reason,
    prefixReused: r.prefix_reused,
    timings: {
      promptMs: r.prompt_ms,
      genMs: r.gen_ms,
      promptTokensPerSec: rate(r.prompt_tokens, r.prompt_ms),
      genTokensPerSec: rate(r.gen_tokens, r.gen_ms),
    },
  };
}

class WorkerClient {
  #native;
  #url;
  #token;
  #timeoutMs;
  #closed = false;
  #seq = 0;

  /** @internal use connectWorker() */
  constructor(url, options) {
    this.#url = url;
    this.#token = options.token ?? null;
    this.#timeoutMs = options.timeoutMs ?? 120000;
    this.#native = binding().workerConnect(url, options.tls ?? null);
  }

  get url() {
    return this.#url;
  }

  get closed() {
    return this.#closed;
  }

  /** True while a connection to the worker is up. */
  get connected() {
    return !this.#closed && binding().workerConnected(this.#native);
  }

  /** One protocol round trip: resolves with the reply object, rejects with its error. */
  async request(op, fields = {}, options = {}) {
    if (this.#closed) {
      const err = new Error('strata worker: the client is closed');
      err.code = 'STRATA_ERR_CLOSED';
      throw err;
    }
    const msg = { v: PROTOCOL, op, id: ++this.#seq, ...fields };
    if (this.#token !== null) {
      msg.token = this.#token;
    }
    const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
    if (MODEL_OPS.has(op) && msg.timeout_ms === undefined) {
      // the worker gives up when we do: its batch slot frees
      msg.timeout_ms = Math.max(1, Math.min(Math.round(timeoutMs), 2147483647));
    }
    const text = await binding().workerRequest(this.#native, JSON.stringify(msg), timeoutMs);
    let reply;
    try {
      reply = JSON.parse(text);
    } catch (cause) {
      const err = new Error(`strata worker: malformed reply (${cause.message})`);
      err.code = 'STRATA_ERR_PROTOCOL';
      throw err;
    }
    if (reply.ok !== true) {
      throw workerError(reply.error ?? { code: 'STRATA_ERR_PROTOCOL', message: 'reply without ok' });
    }
    return reply;
  }

  #samplingFields(o) {
    const f = {};
    for (const [k, wire] of Object.entries(SAMPLING)) {
      if (o[k] !== undefined && o[k] !== null) {
        f[wire] = o[k];
      }
    }
    if (o.stop !== undefined && o.stop !== null) {
      f.stop = typeof o.stop === 'string' ? [o.stop] : o.stop;
    }
    if (typeof o.addBos === 'boolean') {
      f.add_bos = o.addBos;
    }
    if (typeof o.special === 'boolean') {
      f.special = o.special;
    }
    if (o.timeoutMs !== undefined) {
      f.timeout_ms = o.timeoutMs;
    }
    return f;
  }

  /**
   * Generate text. prompt: a string, an array of chat messages (through the
   * model's chat template, like the embedded Model) or an Int32Array of
   * tokens. Options as Model.generate: maxTokens, temperature, topK, topP,
   * minP, repeatPenalty, repeatLastN, presencePenalty, frequencyPenalty,
   * seed, json, stop, onToken(piece) (return false to stop), signal
   * (AbortSignal: ends the generation with stopReason 'cancelled'),
   * onRequestId(rid) (the worker's id, for cancel(rid)), template, system,
   * addBos, special, timeoutMs.
   */
  async generate(prompt, options = {}) {
    const o = options ?? {};
    if (typeof o !== 'object') {
      throw typeError('generate: options must be an object');
    }
    if (o.onToken !== undefined && o.onToken !== null && typeof o.onToken !== 'function') {
      throw typeError("generate: option 'onToken' must be a function");
    }
    if (o.signal !== undefined && o.signal !== null && !isAbortSignal(o.signal)) {
      throw typeError("generate: option 'signal' must be an AbortSignal");
    }
    if (o.onRequestId !== undefined && o.onRequestId !== null && typeof o.onRequestId !== 'function') {
      throw typeError("generate: option 'onRequestId' must be a function");
    }
    let op = 'generate';
    const fields = this.#samplingFields(o);
    if (typeof prompt === 'string') {
      fields.prompt = prompt;
    } else if (prompt instanceof Int32Array || (Array.isArray(prompt) && prompt.every((x) => Number.isInteger(x)) &&
      prompt.length > 0)) {
      fields.tokens = Array.from(prompt);
    } else if (Array.isArray(prompt)) {
      op = 'chat';
      fields.messages = prompt;
      if (typeof o.template === 'string') {
        fields.template = o.template;
      }
      if (typeof o.system === 'string') {
        fields.system = o.system;
      }
    } else {
      throw typeError('generate: prompt must be a string, an array of {role, content} or an Int32Array');
    }
    const onToken = o.onToken ?? null;
    const signal = o.signal ?? null;
    const onRequestId = o.onRequestId ?? null;
    if (onToken === null && signal === null && onRequestId === null) {
      return generateResult(await this.request(op, fields));
    }
    if (signal !== null && signal.aborted) {
      return generateResult({ text: '', prompt_tokens: 0, gen_tokens: 0, stop_reason: 'cancelled', prompt_ms: 0,
        gen_ms: 0, prefix_reused: 0 });
    }
    const form = onToken !== null ? { stream: true } : { async: true };
    return generateResult(await this.#submitAndPoll(op, { ...fields, ...form }, o.timeoutMs, signal, onToken,
      onRequestId));
  }

  /**
   * The async form of a model op: submit (the reply carries the rid), then
   * long-poll until done. signal/cancel(rid) cancel it on the worker; so does
   * a failed poll (the client stops waiting). onText gets streamed text (and
   * may return false to stop). Resolves with the op's result object.
   */
  async #submitAndPoll(op, fields, timeoutMs, signal, onText, onRequestId) {
    const start = await this.request(op, fields);
    if (start.rid === undefined) {
      // a worker that does not know async/stream ran it at once: the reply is the result
      return start;
    }
    const rid = start.rid;
    let cancelled = false;
    const cancel = () => {
      if (!cancelled) {
        cancelled = true;
        this.cancel(rid).catch(() => {});
      }
    };
    if (onRequestId !== null) {
      try {
        onRequestId(rid);
      } catch (err) {
        cancel();
        throw err;
      }
    }
    if (signal !== null) {
      signal.addEventListener('abort', cancel, { once: true });
      if (signal.aborted) {
        cancel();
      }
    }
    const deadline = Date.now() + (timeoutMs ?? this.#timeoutMs);
    try {
      let offset = 0;
      for (;;) {
        // the worker holds a poll up to 1 s; a poll unanswered for 10 s more
        // means the worker is gone (a poll sent after it died would
        // otherwise wait for the whole request timeout)
        let r;
        try {
          r = await this.request('poll', { rid, offset, wait_ms: 1000 }, {
            timeoutMs: Math.max(Math.min(this.#timeoutMs, deadline - Date.now() + 5000, 11000), 5000),
          });
        } catch (err) {
          cancel(); // we stop waiting: the worker should stop working
          throw err;
        }
        offset = r.offset;
        if (r.text.length > 0 && onText !== null && !cancelled) {
          let keep;
          try {
            keep = onText(r.text);
          } catch (err) {
            cancel();
            throw err;
          }
          if (keep === false) {
            cancel();
          }
        }
        if (r.done) {
          return r.result;
        }
      }
    } finally {
      if (signal !== null) {
        signal.removeEventListener('abort', cancel);
      }
    }
  }

  /** Cancel a request by the rid the worker gave it (onRequestId); resolves with whether it was found. */
  async cancel(rid) {
    if (!Number.isSafeInteger(rid) || rid < 1) {
      throw typeError('cancel: rid must be a positive integer');
    }
    const r = await this.request('cancel', { rid });
    return r.found;
  }

  /** Run a score/embed op, through the async form when it can be cancelled. */
  async #modelOp(op, fields, opts) {
    const signal = opts.signal ?? null;
    const onRequestId = opts.onRequestId ?? null;
    if (signal !== null && !isAbortSignal(signal)) {
      throw typeError(`${op}: option 'signal' must be an AbortSignal`);
    }
    if (onRequestId !== null && typeof onRequestId !== 'function') {
      throw typeError(`${op}: option 'onRequestId' must be a function`);
    }
    if (signal === null && onRequestId === null) {
      return this.request(op, fields);
    }
    if (signal !== null && signal.aborted) {
      throw cancelledError(op);
    }
    try {
      return await this.#submitAndPoll(op, { ...fields, async: true }, opts.timeoutMs, signal, null, onRequestId);
    } catch (err) {
      if (err.code === 'STRATA_ERR_CANCELLED') {
        throw cancelledError(op);
      }
      throw err;
    }
  }

  /** Chat: generate() with messages. */
  chat(messages, options) {
    if (!Array.isArray(messages)) {
      return Promise.reject(typeError('chat: messages must be an array of {role, content}'));
    }
    return this.generate(messages, options);
  }

  /**
   * Probabilities of answer options after a prompt (one prefill, no
   * sampling). Returns { options: [{option, logprob, prob, tokens}], best,
   * promptTokens, prefixReused, promptMs }: prob is normalized over the
   * options; logprob sums over each option's tokens. opts: addBos,
   * timeoutMs, signal (abort: rejects with code STRATA_ERR_CANCELLED),
   * onRequestId(rid).
   */
  async score(prompt, options, opts = {}) {
    if (typeof prompt !== 'string') {
      throw typeError('score: prompt must be a string');
    }
    if (!Array.isArray(options) || options.length === 0 || !options.every((x) => typeof x === 'string')) {
      throw typeError('score: options must be a non-empty array of strings');
    }
    const f = { prompt, options };
    if (typeof opts.addBos === 'boolean') {
      f.add_bos = opts.addBos;
    }
    if (opts.timeoutMs !== undefined) {
      f.timeout_ms = opts.timeoutMs;
    }
    const r = await this.#modelOp('score', f, opts ?? {});
    let best = 0;
    r.options.forEach((x, i) => {
      if (x.prob > r.options[best].prob) {
        best = i;
      }
    });
    return {
      options: r.options,
      best: r.options[best].option,
      promptTokens: r.prompt_tokens,
      prefixReused: r.prefix_reused,
      promptMs: r.prompt_ms,
    };
  }

  /** Mean-pooled, L2-normalized final hidden state: { embedding: Float32Array, dim, promptTokens }. */
  async embed(input, opts = {}) {
    if (typeof input !== 'string') {
      throw typeError('embed: input must be a string');
    }
    const f = { input };
    if (typeof opts.addBos === 'boolean') {
      f.add_bos = opts.addBos;
    }
    if (opts.timeoutMs !== undefined) {
      f.timeout_ms = opts.timeoutMs;
    }
    const r = await this.#modelOp('embed', f, opts ?? {});
    return { embedding: Float32Array.from(r.embedding), dim: r.dim, promptTokens: r.prompt_tokens };
  }

  /** Text -> Int32Array of token ids (options: addBos, special). */
  async tokenize(text, opts = {}) {
    if (typeof text !== 'string') {
      throw typeError('tokenize: text must be a string');
    }
    const f = { text };
    if (typeof opts.addBos === 'boolean') {
      f.add_bos = opts.addBos;
    }
    if (typeof opts.special === 'boolean') {
      f.special = opts.special;
    }
    const r = await this.request('tokenize', f);
    return Int32Array.from(r.tokens);
  }

  /** { status, version, protocol, model: {...} } */
  async health(opts = {}) {
    const r = await this.request('health', {}, opts);
    return { status: r.status, version: r.version, protocol: r.protocol, model: r.model };
  }

  /** Worker counters: requests, errors, steps, tokens, seq_steps, prefix_tokens, weight_bytes_read, ... */
  async stats(opts = {}) {
    const r = await this.request('stats', {}, opts);
    delete r.v;
    delete r.id;
    delete r.ok;
    return r;
  }

  /** Close the connection; requests in flight fail with STRATA_ERR_CLOSED. */
  async close() {
    if (!this.#closed) {
      this.#closed = true;
      binding().workerClose(this.#native);
    }
  }
}

/**
 * Connect to a strata-worker at url (ipc:///path or tcp://host:port).
 * Returns at once: the connection is made (and remade after a worker
 * restart) in the background; requests wait for it up to their timeout.
 * Options: token (shared secret), timeoutMs (per request; default 120000),
 * tls (tls+tcp:// only): { ca: PEM string of the CA that signed the worker's
 * certificate, cert + key: PEM of a client certificate, serverName, insecure }.
 */
function connectWorker(url, options = {}) {
  if (typeof url !== 'string' || !/^(ipc|tcp|tls\+tcp|ws|inproc):\/\//.test(url)) {
    throw typeError('connectWorker: url must be like ipc:///tmp/strata.sock or tcp://127.0.0.1:7777');
  }
  const o = options ?? {};
  if (o.token !== undefined && o.token !== null && typeof o.token !== 'string') {
    throw typeError("connectWorker: option 'token' must be a string");
  }
  if (o.timeoutMs !== undefined && !(Number.isFinite(o.timeoutMs) && o.timeoutMs >= 1)) {
    throw typeError("connectWorker: option 'timeoutMs' must be a positive number of milliseconds");
  }
  if (o.tls !== undefined && o.tls !== null && typeof o.tls !== 'object') {
    throw typeError("connectWorker: option 'tls' must be an object { ca, cert, key, serverName, insecure }");
  }
  return new WorkerClient(url, o);
}

module.exports = { connectWorker, WorkerClient, PROTOCOL };
