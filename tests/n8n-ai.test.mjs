// The Strata Chat Model sub-node (LangChain chat model for n8n's AI nodes)
// and token streaming of the Strata node.
//
// Part 1, without n8n running: the sub-node's model on the LangChain of the
// n8n test runtime (tests/n8n): invoke equals the Strata node's Chat answer
// with greedy sampling, streaming gives the same text piece by piece, an
// aborted call stops, tools are refused, and outside n8n it says why it
// cannot work.
//
// Part 2, real n8n 2.8.4 (our package installed as a community package):
//  - `n8n execute` of Manual Trigger -> Basic LLM Chain
//    (@n8n/n8n-nodes-langchain.chainLlm) and AI Agent (3.1, no tools), both
//    on the Strata Chat Model with the tiny model, beside a Strata node
//    (Chat) on the same prompt: the chain's and the agent's text equal the
//    node's, and the node's in-process greedy answer;
//  - a Webhook with Response Mode "Streaming" -> Strata (Generate): the
//    response is n8n's JSON-lines stream, begin / item... / end, and the
//    items put together are the greedy text.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import {
  DEFAULT_MODEL,
  N8N_BIN,
  N8N_DIR,
  WEBHOOK_HEADER,
  ensureBuilt,
  ensureN8n,
  freePort,
  installPackage,
  launch,
  n8nCli,
  n8nEnv,
  packPackage,
} from '../scripts/n8n-runtime.mjs';

const require = createRequire(import.meta.url);
ensureBuilt({ native: false });
const { Strata } = require('../dist/node/nodes/Strata/Strata.node.js');
const { LmChatStrata } = require('../dist/node/nodes/LmChatStrata/LmChatStrata.node.js');
const engine = require('../dist/node/nodes/Strata/engine.js');

const MODEL = DEFAULT_MODEL;
const PROMPT = 'Once upon a time, a little dog';
const OPTIONS = { threads: 1, temperature: 0, maxTokens: 24, seed: 1 };
const KEY = 'test-key-ai-0123456789';

t.teardown(() => engine.closeAllModels());

let n8nReady = true;
try {
  ensureN8n({ log: (m) => t.comment(m) });
} catch (e) {
  n8nReady = false;
  t.comment(`n8n 2.8.4 is not installed in tests/n8n (${e.message.split('\n')[0]}): run scripts/install-n8n.sh`);
}
// the LangChain n8n's AI nodes use, as the sub-node finds it inside n8n
process.env.STRATA_LANGCHAIN_FROM = N8N_BIN;

const NODE = { id: 'n1', name: 'Strata', type: 'n8n-nodes-strata.strata', typeVersion: 1, position: [0, 0], parameters: {} };

async function strataNode(params) {
  const ctx = {
    getInputData: () => [{ json: {} }],
    getNodeParameter: (name, _i, fallback) => (name in params ? params[name] : fallback),
    getNode: () => NODE,
    continueOnFail: () => false,
    getExecutionCancelSignal: () => undefined,
  };
  const out = await new Strata().execute.call(ctx);
  return out[0][0].json;
}

async function chatModel(params, { signal } = {}) {
  const logged = [];
  const ctx = {
    getNodeParameter: (name, _i, fallback) => (name in params ? params[name] : fallback),
    getNode: () => ({ ...NODE, name: 'Strata Chat Model', type: 'n8n-nodes-strata.lmChatStrata' }),
    getExecutionCancelSignal: () => signal,
    addInputData: (type, data) => {
      logged.push({ dir: 'in', type, data });
      return { index: logged.length };
    },
    addOutputData: (type, index, data) => logged.push({ dir: 'out', type, index, data }),
  };
  const { response } = await new LmChatStrata().supplyData.call(ctx, 0);
  return { model: response, logged };
}

const greedyChat = () =>
  strataNode({ mode: 'embedded', modelPath: MODEL, operation: 'chat', messagesInput: 'fields', systemMessage: '', userMessage: PROMPT, options: OPTIONS });
const greedyGenerate = () => strataNode({ mode: 'embedded', modelPath: MODEL, operation: 'generate', prompt: PROMPT, options: OPTIONS });

t.test('node: Generate and Chat send their tokens as chunks when the execution streams', async (t) => {
  const expected = await greedyGenerate();
  const run = async (params, { fail = false, cof = false } = {}) => {
    const chunks = [];
    const ctx = {
      getInputData: () => [{ json: {} }],
      getNodeParameter: (name, _i, fallback) => (name in params ? params[name] : fallback),
      getNode: () => NODE,
      continueOnFail: () => cof,
      getExecutionCancelSignal: () => undefined,
      isStreaming: () => true,
      sendChunk: async (type, itemIndex, content) => {
        await new Promise((r) => setTimeout(r, 1)); // the real one is async too: order must hold
        chunks.push({ type, itemIndex, content });
      },
    };
    const out = fail ? await new Strata().execute.call(ctx).catch((e) => e) : await new Strata().execute.call(ctx);
    return { out, chunks };
  };
  const { out, chunks } = await run({ mode: 'embedded', modelPath: MODEL, operation: 'generate', prompt: PROMPT, options: OPTIONS });
  t.equal(out[0][0].json.text, expected.text, 'the item is unchanged');
  t.equal(chunks[0].type, 'begin');
  t.equal(chunks.at(-1).type, 'end');
  const items = chunks.filter((c) => c.type === 'item');
  t.equal(items.length, chunks.length - 2);
  t.ok(items.length > 1);
  t.equal(items.map((c) => c.content).join(''), expected.text, 'the chunks make the text, in order');

  const chat = await run({ mode: 'embedded', modelPath: MODEL, operation: 'chat', messagesInput: 'fields', systemMessage: '', userMessage: PROMPT, options: OPTIONS });
  t.equal(chat.chunks.filter((c) => c.type === 'item').map((c) => c.content).join(''), chat.out[0][0].json.text);

  const bad = await run({ mode: 'embedded', modelPath: '/nonexistent/strata.gguf', operation: 'generate', prompt: PROMPT, options: OPTIONS }, { fail: true });
  t.match(bad.out.message, /model file not found/);
  // the node fails: n8n sends the "error" chunk itself, the node must not add a second one
  t.same(bad.chunks.map((c) => c.type), ['begin']);
  // under Continue On Fail the node does not fail: it closes the stream with the error
  const badCof = await run({ mode: 'embedded', modelPath: '/nonexistent/strata.gguf', operation: 'generate', prompt: PROMPT, options: OPTIONS }, { cof: true });
  t.match(badCof.out[0][0].json.error, /model file not found/);
  t.same(badCof.chunks.map((c) => c.type), ['begin', 'error']);
  t.match(badCof.chunks[1].content, /model file not found/);

  // other operations never stream
  const rules = await run({ mode: 'embedded', modelPath: MODEL, operation: 'moderate', message: 'hi', scorer: 'rules', options: OPTIONS });
  t.same(rules.chunks, []);
});

t.test('chat model: outside n8n it says where it looked', async (t) => {
  // node -e: no main module and no script path to search from
  const r = spawnSync(process.execPath, ['-e', 'require(process.env.LC_JS).langChainCore()'], {
    cwd: os.tmpdir(),
    encoding: 'utf8',
    env: { ...process.env, STRATA_LANGCHAIN_FROM: '', LC_JS: path.resolve('dist/node/nodes/LmChatStrata/langchain.js') },
  });
  t.not(r.status, 0);
  t.match(r.stderr, /Strata Chat Model: cannot find @langchain\/core .* It works inside n8n only/);
});

t.test('chat model: a LangChain chat model that answers like the Strata node', { skip: !n8nReady && 'no n8n runtime' }, async (t) => {
  const expected = await greedyChat();
  t.ok(expected.genTokens > 0);
  const { model, logged } = await chatModel({ mode: 'embedded', modelPath: MODEL, options: OPTIONS });
  t.ok(model.lc_namespace.includes('chat_models'), 'n8n sees a chat model (isChatInstance)');
  t.equal(model._llmType(), 'strata');
  const lcReq = createRequire(path.join(N8N_DIR, 'node_modules', '@n8n', 'n8n-nodes-langchain', 'package.json'));
  const { HumanMessage, SystemMessage, AIMessage } = lcReq('@langchain/core/messages');
  const { BaseChatModel } = lcReq('@langchain/core/language_models/chat_models');
  t.ok(model instanceof BaseChatModel, "a subclass of n8n's own BaseChatModel");

  const answer = await model.invoke([new HumanMessage(PROMPT)]);
  t.ok(answer instanceof AIMessage, 'invoke returns an AIMessage');
  t.equal(answer.content, expected.text, 'greedy: the same text as the Strata node');
  t.same(logged.map((l) => l.dir), ['in', 'out'], 'the call is logged for the editor');
  t.same(logged[0].data[0][0].json.messages, [{ role: 'user', content: PROMPT }]);
  t.equal(logged[1].data[0][0].json.response, expected.text);

  const pieces = [];
  for await (const chunk of await model.stream([new HumanMessage(PROMPT)])) {
    pieces.push(chunk.content);
  }
  t.ok(pieces.length > 1, `streamed in ${pieces.length} pieces`);
  t.equal(pieces.join(''), expected.text, 'the pieces make the same text');

  // messages of every role reach the engine
  const withSystem = await model.invoke([new SystemMessage('Be brief.'), new HumanMessage(PROMPT)]);
  const expectedSystem = await strataNode({
    mode: 'embedded', modelPath: MODEL, operation: 'chat', messagesInput: 'fields', systemMessage: 'Be brief.', userMessage: PROMPT, options: OPTIONS,
  });
  t.equal(withSystem.content, expectedSystem.text);

  // the AI Agent binds tools: none is fine, tools are refused clearly
  t.equal(model.bindTools([]), model);
  t.throws(() => model.bindTools([{ name: 'calculator' }]), /does not support tool calling .*calculator/);
});

t.test('chat model: an aborted call stops; a missing model is a clear error', { skip: !n8nReady && 'no n8n runtime' }, async (t) => {
  const ac = new AbortController();
  ac.abort();
  const { model } = await chatModel({ mode: 'embedded', modelPath: MODEL, options: OPTIONS }, { signal: ac.signal });
  const lcReq = createRequire(path.join(N8N_DIR, 'node_modules', '@n8n', 'n8n-nodes-langchain', 'package.json'));
  const { HumanMessage } = lcReq('@langchain/core/messages');
  await t.rejects(model.invoke([new HumanMessage(PROMPT)]), /cancelled/);

  const call = new AbortController();
  const { model: m2 } = await chatModel({ mode: 'embedded', modelPath: MODEL, options: { ...OPTIONS, maxTokens: 200 } });
  call.abort();
  await t.rejects(m2.invoke([new HumanMessage(PROMPT)], { signal: call.signal }), /abort|cancel/i);

  const { model: missing, logged } = await chatModel({ mode: 'embedded', modelPath: '/nonexistent/strata.gguf', options: OPTIONS });
  await t.rejects(missing.invoke([new HumanMessage(PROMPT)]), /model file not found: \/nonexistent\/strata\.gguf/);
  t.ok(logged.at(-1).data instanceof Error, 'the failure is logged for the editor');
});

t.test('chat model: worker mode answers like the Strata node in worker mode', { skip: !n8nReady && 'no n8n runtime' }, async (t) => {
  const { WORKER, startWorker } = await import('./helpers/worker.mjs');
  const { existsSync } = await import('node:fs');
  if (!existsSync(WORKER)) {
    t.skip(`no ${WORKER} (make -C native)`);
    return;
  }
  const token = 'ai-w0rker-token';
  const url = `tcp://127.0.0.1:${await freePort()}`;
  const worker = await startWorker(['--model', MODEL, '--listen', url, '--token', token, '--ctx', '1024']);
  t.teardown(async () => {
    await engine.closeAllWorkers();
    worker.kill('SIGKILL');
  });
  const creds = async () => ({ baseUrl: url, token });
  const nodeCtx = {
    getInputData: () => [{ json: {} }],
    getNodeParameter: (name, _i, fallback) =>
      ({ mode: 'worker', operation: 'chat', messagesInput: 'fields', systemMessage: '', userMessage: PROMPT, options: OPTIONS })[name] ?? fallback,
    getNode: () => NODE,
    getCredentials: creds,
    continueOnFail: () => false,
    getExecutionCancelSignal: () => undefined,
  };
  const expected = (await new Strata().execute.call(nodeCtx))[0][0].json;
  t.ok(expected.genTokens > 0);
  const ctx = {
    getNodeParameter: (name, _i, fallback) => ({ mode: 'worker', options: OPTIONS })[name] ?? fallback,
    getNode: () => ({ ...NODE, name: 'Strata Chat Model' }),
    getCredentials: creds,
    getExecutionCancelSignal: () => undefined,
    addInputData: () => ({ index: 0 }),
    addOutputData: () => undefined,
  };
  const { response: model } = await new LmChatStrata().supplyData.call(ctx, 0);
  const lcReq = createRequire(path.join(N8N_DIR, 'node_modules', '@n8n', 'n8n-nodes-langchain', 'package.json'));
  const { HumanMessage } = lcReq('@langchain/core/messages');
  const answer = await model.invoke([new HumanMessage(PROMPT)]);
  t.equal(answer.content, expected.text, 'the same text through the worker');
  const pieces = [];
  for await (const chunk of await model.stream([new HumanMessage(PROMPT)])) {
    pieces.push(chunk.content);
  }
  t.equal(pieces.join(''), expected.text, 'streamed through the worker');

  const wrong = { ...ctx, getCredentials: async () => ({ baseUrl: url, token: 'wrong' }) };
  const { response: refused } = await new LmChatStrata().supplyData.call(wrong, 0);
  await t.rejects(refused.invoke([new HumanMessage(PROMPT)]), /refused the token/);
});

// ----------------------------------------------------- part 2: real n8n ---

function chainWorkflow() {
  const options = { ...OPTIONS };
  return {
    id: 'StrataLlmChainTest',
    name: 'Strata: Basic LLM Chain test',
    nodes: [
      { id: 'a1000000-0000-4000-a000-000000000001', name: 'Start', type: 'n8n-nodes-base.manualTrigger', typeVersion: 1, position: [0, 200], parameters: {} },
      {
        id: 'a1000000-0000-4000-a000-000000000002',
        name: 'Basic LLM Chain',
        type: '@n8n/n8n-nodes-langchain.chainLlm',
        typeVersion: 1.7,
        position: [260, 100],
        parameters: { promptType: 'define', text: PROMPT },
      },
      {
        id: 'a1000000-0000-4000-a000-000000000003',
        name: 'Strata Chat Model',
        type: 'n8n-nodes-strata.lmChatStrata',
        typeVersion: 1,
        position: [260, 320],
        parameters: { mode: 'embedded', modelPath: '', options },
      },
      {
        id: 'a1000000-0000-4000-a000-000000000005',
        name: 'AI Agent',
        type: '@n8n/n8n-nodes-langchain.agent',
        typeVersion: 3.1,
        position: [260, -100],
        parameters: { promptType: 'define', text: PROMPT, options: {} },
      },
      {
        id: 'a1000000-0000-4000-a000-000000000004',
        name: 'Strata',
        type: 'n8n-nodes-strata.strata',
        typeVersion: 1,
        position: [520, 300],
        parameters: { mode: 'embedded', modelPath: '', operation: 'chat', messagesInput: 'fields', systemMessage: '', userMessage: PROMPT, options },
      },
    ],
    connections: {
      Start: {
        main: [[{ node: 'Basic LLM Chain', type: 'main', index: 0 }, { node: 'AI Agent', type: 'main', index: 0 }, { node: 'Strata', type: 'main', index: 0 }]],
      },
      'Strata Chat Model': {
        ai_languageModel: [[{ node: 'Basic LLM Chain', type: 'ai_languageModel', index: 0 }, { node: 'AI Agent', type: 'ai_languageModel', index: 0 }]],
      },
    },
    settings: { executionOrder: 'v1' },
    pinData: {},
    active: false,
    tags: [],
  };
}

function streamWorkflow() {
  return {
    id: 'StrataStreamTest',
    name: 'Strata: streaming webhook test',
    nodes: [
      {
        id: 'b1000000-0000-4000-a000-000000000001',
        name: 'Stream Webhook',
        type: 'n8n-nodes-base.webhook',
        typeVersion: 2.1,
        position: [0, 200],
        webhookId: 'b1000000-0000-4000-a000-0000000000aa',
        parameters: { httpMethod: 'POST', path: 'strata/test/stream', authentication: 'headerAuth', responseMode: 'streaming', options: {} },
        credentials: { httpHeaderAuth: { id: 'StrataWebhookKey', name: 'Strata Webhook Key' } },
      },
      {
        id: 'b1000000-0000-4000-a000-000000000002',
        name: 'Strata',
        type: 'n8n-nodes-strata.strata',
        typeVersion: 1,
        position: [260, 200],
        parameters: { mode: 'embedded', modelPath: '', operation: 'generate', prompt: '={{ $json.body.prompt }}', options: OPTIONS },
      },
    ],
    connections: { 'Stream Webhook': { main: [[{ node: 'Strata', type: 'main', index: 0 }]] } },
    settings: { executionOrder: 'v1' },
    pinData: {},
    active: false,
    tags: [],
  };
}

/** The run data JSON that `n8n execute --rawOutput` prints after its log lines. */
function runData(stdout) {
  const start = stdout.search(/^\{$/m);
  if (start < 0) {
    throw new Error(`no JSON in the n8n execute output:\n${stdout.slice(-2000)}`);
  }
  return JSON.parse(stdout.slice(start)).data.resultData.runData;
}

t.test('n8n: Basic LLM Chain with the Strata Chat Model (n8n execute)', { skip: !n8nReady && 'no n8n runtime' }, async (t) => {
  const expected = await greedyChat();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'strata-n8n-ai-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const userFolder = path.join(dir, 'n8n-user');
  installPackage(packPackage(path.join(dir, 'pack')), userFolder);
  mkdirSync(userFolder, { recursive: true });
  const env = n8nEnv({ userFolder, port: await freePort(), brokerPort: await freePort(), model: MODEL, extra: { N8N_LOG_LEVEL: 'info' } }); // execute prints its result as an info log line
  delete env.STRATA_LANGCHAIN_FROM; // inside n8n the sub-node finds it by itself
  const wf = chainWorkflow();
  mkdirSync(path.join(dir, 'wf'), { recursive: true });
  writeFileSync(path.join(dir, 'wf', `${wf.id}.json`), JSON.stringify(wf));
  n8nCli(env, ['import:workflow', '--separate', `--input=${path.join(dir, 'wf')}`]);
  const r = spawnSync(process.execPath, [N8N_BIN, 'execute', `--id=${wf.id}`, '--rawOutput'], {
    env,
    cwd: userFolder,
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
    timeout: 240000,
  });
  t.equal(r.status, 0, `n8n execute: ${r.stdout.slice(-1500)}${r.stderr.slice(-1500)}`);
  const run = runData(r.stdout);
  const chain = run['Basic LLM Chain'][0].data.main[0][0].json;
  const node = run.Strata[0].data.main[0][0].json;
  t.equal(node.text, expected.text, 'the Strata node in n8n answers as in process');
  t.equal(chain.text, expected.text.trim(), 'the chain answers with the Strata node\'s text (the chain trims it)');
  t.ok(chain.text.length > 0);
  // the AI Agent (3.1, no tools) on the same sub-node answers the same
  const agent = run['AI Agent'][0].data.main[0][0].json;
  t.equal(agent.output, expected.text, 'the AI Agent answers with the Strata node\'s text');
  const sub = run['Strata Chat Model'];
  t.equal(sub.length, 2, 'one model call each for the chain and the agent, in the run data');
  for (const call of sub) {
    t.equal(call.data.ai_languageModel[0][0].json.response, expected.text);
    t.same(call.inputOverride.ai_languageModel[0][0].json.messages, [{ role: 'user', content: PROMPT }]);
  }
});

t.test('n8n: a streaming webhook streams the Strata node\'s tokens', { skip: !n8nReady && 'no n8n runtime' }, async (t) => {
  if (spawnSync('redis-server', ['--version']).status !== 0) {
    t.skip('redis-server is not installed (apt-get install redis-server)');
    return;
  }
  const expected = await greedyGenerate();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'strata-n8n-stream-'));
  const rt = await launch({ dir, buildNative: false, model: MODEL, webhookKey: KEY, workflows: [streamWorkflow()] });
  t.teardown(async () => {
    await rt.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const res = await fetch(`${rt.url}/webhook/strata/test/stream`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', [WEBHOOK_HEADER]: KEY },
    body: JSON.stringify({ prompt: PROMPT }),
    signal: AbortSignal.timeout(120000),
  });
  t.equal(res.status, 200);
  const reads = [];
  const decoder = new TextDecoder();
  for await (const part of res.body) {
    reads.push(decoder.decode(part, { stream: true }));
  }
  const lines = reads.join('').split('\n').filter((l) => l.trim() !== '');
  const chunks = lines.map((l) => JSON.parse(l)).filter((c) => c.metadata?.nodeName === 'Strata');
  t.ok(chunks.length >= 3, `${chunks.length} chunks from the Strata node`);
  t.equal(chunks[0].type, 'begin');
  t.equal(chunks.at(-1).type, 'end');
  const items = chunks.filter((c) => c.type === 'item');
  t.equal(items.length, chunks.length - 2, 'only items between begin and end');
  t.ok(items.length > 1, `${items.length} token pieces`);
  t.equal(items.map((c) => c.content).join(''), expected.text, 'the pieces make the greedy text');
  t.ok(items.every((c) => c.metadata.itemIndex === 0));

  // no auth: refused before anything runs
  const denied = await fetch(`${rt.url}/webhook/strata/test/stream`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
  t.equal(denied.status, 403);
});
