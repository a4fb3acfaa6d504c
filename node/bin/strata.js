#!/usr/bin/env node
'use strict';
// strata: command line front end to the engine.
//
//   strata generate --model PATH --prompt TEXT [--max-tokens N] [--temperature T]
//                   [--seed S] [--json] [--threads N] [--stream]
//   strata chat     --model PATH --message TEXT [--system TEXT] [...generate options]
//   strata info     --model PATH
//   strata tokenize --model PATH --text TEXT [--no-bos] [--special]
//
// Exit codes: 0 ok, 1 runtime error (model, engine), 2 usage error.

const { parseArgs } = require('node:util');

const USAGE = `Usage: strata <command> [options]

Commands:
  generate  --model PATH --prompt TEXT   Continue a prompt (BOS added per the model)
  chat      --model PATH --message TEXT  Answer one user message through the chat template
  info      --model PATH                 Print the model's metadata as JSON
  tokenize  --model PATH --text TEXT     Print token ids as a JSON array

Generation options (generate, chat):
  --max-tokens N        tokens to generate (default 256)
  --temperature T       0 for greedy (default 0.8)
  --top-k N  --top-p P  --min-p P  --repeat-penalty R
  --seed S              sampling seed (default random)
  --json                constrain the output to one JSON value
  --stop TEXT           stop string (repeatable)
  --stream              print pieces as they are generated
  --system TEXT         system message (chat)
  --template NAME       chat template: chatml, llama3, llama2, mistral, plain (chat)
  --verbose             print token counts and speed to stderr

Model options:
  --threads N           CPU threads (default: all cores)
  --context-size N      KV cache size in tokens
  --no-mmap             read the file instead of mapping it

Tokenize options:
  --no-bos              do not add BOS
  --special             parse special tokens written in the text
`;

const OPTIONS = {
  model: { type: 'string', short: 'm' },
  prompt: { type: 'string', short: 'p' },
  message: { type: 'string' },
  system: { type: 'string' },
  template: { type: 'string' },
  text: { type: 'string' },
  'max-tokens': { type: 'string', short: 'n' },
  temperature: { type: 'string', short: 't' },
  'top-k': { type: 'string' },
  'top-p': { type: 'string' },
  'min-p': { type: 'string' },
  'repeat-penalty': { type: 'string' },
  seed: { type: 'string' },
  json: { type: 'boolean' },
  stop: { type: 'string', multiple: true },
  stream: { type: 'boolean' },
  verbose: { type: 'boolean', short: 'v' },
  threads: { type: 'string' },
  'context-size': { type: 'string' },
  'no-mmap': { type: 'boolean' },
  'no-bos': { type: 'boolean' },
  special: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
};

// Which options each command accepts (beyond --help).
const GEN = ['max-tokens', 'temperature', 'top-k', 'top-p', 'min-p', 'repeat-penalty', 'seed', 'json',
  'stop', 'stream', 'verbose'];
const MODEL = ['model', 'threads', 'context-size', 'no-mmap'];
const COMMANDS = {
  generate: { required: ['model', 'prompt'], allowed: [...MODEL, ...GEN, 'prompt'] },
  chat: { required: ['model', 'message'], allowed: [...MODEL, ...GEN, 'message', 'system', 'template'] },
  info: { required: ['model'], allowed: MODEL },
  tokenize: { required: ['model', 'text'], allowed: [...MODEL, 'text', 'no-bos', 'special'] },
};

class UsageError extends Error {}

function intOption(values, name, min) {
  const v = values[name];
  if (v === undefined) {
    return undefined;
  }
  if (!/^-?\d+$/.test(v) || Number(v) < min || !Number.isSafeInteger(Number(v))) {
    throw new UsageError(`--${name} must be an integer >= ${min} (got '${v}')`);
  }
  return Number(v);
}

function numberOption(values, name, min, max) {
  const v = values[name];
  if (v === undefined) {
    return undefined;
  }
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n < min || n > max) {
    throw new UsageError(`--${name} must be a number in [${min}, ${max}] (got '${v}')`);
  }
  return n;
}

function parse(argv) {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError(err.message);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    return { help: true, command: positionals[0] };
  }
  if (positionals.length === 0) {
    throw new UsageError('missing command');
  }
  const [command, ...rest] = positionals;
  const spec = COMMANDS[command];
  if (spec === undefined) {
    throw new UsageError(`unknown command '${command}'`);
  }
  if (rest.length > 0) {
    throw new UsageError(`unexpected argument '${rest[0]}'`);
  }
  for (const name of Object.keys(values)) {
    if (!spec.allowed.includes(name)) {
      throw new UsageError(`--${name} is not an option of '${command}'`);
    }
  }
  for (const name of spec.required) {
    if (values[name] === undefined || values[name] === '') {
      throw new UsageError(`'${command}' needs --${name}`);
    }
  }
  const seed = values.seed === undefined ? undefined : intOption(values, 'seed', 0);
  return {
    command,
    values,
    load: {
      threads: intOption(values, 'threads', 0),
      contextSize: intOption(values, 'context-size', 0),
      mmap: values['no-mmap'] ? false : undefined,
    },
    gen: {
      maxTokens: intOption(values, 'max-tokens', 1),
      temperature: numberOption(values, 'temperature', 0, 100),
      topK: intOption(values, 'top-k', 0),
      topP: numberOption(values, 'top-p', 0, 1),
      minP: numberOption(values, 'min-p', 0, 1),
      repeatPenalty: numberOption(values, 'repeat-penalty', 0.01, 100),
      seed,
      json: values.json ? true : undefined,
      stop: values.stop,
    },
  };
}

function clean(o) {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}

async function run(opts) {
  const { loadModel } = require('../lib/index.js');
  const { command, values } = opts;
  const model = await loadModel(values.model, clean(opts.load));
  try {
    if (command === 'info') {
      process.stdout.write(`${JSON.stringify(model.info, null, 2)}\n`);
      return;
    }
    if (command === 'tokenize') {
      const toks = model.tokenize(values.text, {
        addBos: values['no-bos'] ? false : undefined,
        special: values.special ? true : undefined,
      });
      process.stdout.write(`${JSON.stringify(Array.from(toks))}\n`);
      return;
    }
    const prompt = command === 'chat' ? [{ role: 'user', content: values.message }] : values.prompt;
    const genOpts = clean({ ...opts.gen, system: values.system, template: values.template });
    const ac = new AbortController();
    const onSigint = () => ac.abort();
    process.once('SIGINT', onSigint);
    genOpts.signal = ac.signal;
    if (values.stream) {
      genOpts.onToken = (piece) => {
        process.stdout.write(piece);
      };
    }
    let r;
    try {
      r = await model.generate(prompt, genOpts);
    } finally {
      process.removeListener('SIGINT', onSigint);
    }
    process.stdout.write(values.stream ? '\n' : `${r.text}\n`);
    if (values.verbose) {
      const t = r.timings;
      process.stderr.write(
        `[strata] stop=${r.stopReason} prompt=${r.promptTokens} tok ${t.promptMs.toFixed(1)} ms ` +
          `(${t.promptTokensPerSec.toFixed(1)} tok/s), generated=${r.genTokens} tok ` +
          `${t.genMs.toFixed(1)} ms (${t.genTokensPerSec.toFixed(1)} tok/s)\n`,
      );
    }
  } finally {
    await model.close();
  }
}

async function main(argv) {
  let opts;
  try {
    opts = parse(argv);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`strata: ${err.message}\nRun 'strata --help' for usage.\n`);
      return 2;
    }
    throw err;
  }
  if (opts.help) {
    process.stdout.write(USAGE);
    return opts.command === undefined || COMMANDS[opts.command] !== undefined ? 0 : 2;
  }
  try {
    await run(opts);
    return 0;
  } catch (err) {
    const code = err && err.code ? ` [${err.code}]` : '';
    process.stderr.write(`strata: ${err && err.message ? err.message : err}${code}\n`);
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`strata: internal error: ${err && err.stack ? err.stack : err}\n`);
    process.exitCode = 1;
  },
);
