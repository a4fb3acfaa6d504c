#!/usr/bin/env node
// docs/strata-node.png: the n8n editor with a bundled workflow open and the
// Strata node's parameter panel showing. Starts the local n8n the way
// `npm start` does (scripts/n8n-runtime.mjs, in a temporary folder), sets up
// the owner through the REST API, logs in, and drives headless Chromium over
// the DevTools protocol (the `ws` package the n8n runtime already installs).
//
//   node scripts/screenshot.mjs [--workflow StrataMatchScore] [--node "Match Score"] [--out docs/strata-node.png]
//
// Needs chromium (apt-get install chromium) and redis-server. Not part of npm test.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { N8N_DIR, ROOT, bundledWorkflows, launch, stopProcess, waitFor } from './n8n-runtime.mjs';

const { values: args } = parseArgs({
  options: {
    workflow: { type: 'string', default: 'StrataMatchScore' },
    node: { type: 'string', default: '' },
    out: { type: 'string', default: join(ROOT, 'docs', 'strata-node.png') },
    width: { type: 'string', default: '1600' },
    height: { type: 'string', default: '1000' },
    chromium: { type: 'string', default: process.env.CHROMIUM || '' },
  },
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (m) => console.log(`screenshot: ${m}`);

function findChromium() {
  const candidates = [args.chromium, '/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'].filter(Boolean);
  const found = candidates.find((c) => existsSync(c));
  if (found === undefined) {
    throw new Error('no Chromium found: apt-get install -y chromium (or pass --chromium /path)');
  }
  return found;
}

function loadWs() {
  const req = createRequire(join(N8N_DIR, 'node_modules', 'n8n', 'package.json'));
  try {
    return req('ws');
  } catch {
    throw new Error(`the ws package is not in ${N8N_DIR}/node_modules: run scripts/install-n8n.sh`);
  }
}

/** A minimal DevTools protocol client over one page's WebSocket. */
async function cdp(wsUrl) {
  const WebSocket = loadWs();
  const sock = new WebSocket(wsUrl, { perMessageDeflate: false });
  await new Promise((res, rej) => {
    sock.once('open', res);
    sock.once('error', rej);
  });
  let nextId = 1;
  const pending = new Map();
  const listeners = [];
  // a socket error or close fails whatever still waits for an answer
  const failAll = (why) => {
    for (const { rej, method, timer } of pending.values()) {
      clearTimeout(timer);
      rej(new Error(`${method}: ${why}`));
    }
    pending.clear();
  };
  sock.on('error', (e) => failAll(`DevTools socket error: ${e.message}`));
  sock.on('close', () => failAll('DevTools socket closed'));
  sock.on('message', (data) => {
    const msg = JSON.parse(data.toString());
    if (msg.id !== undefined && pending.has(msg.id)) {
      const { res, rej, method, timer } = pending.get(msg.id);
      clearTimeout(timer);
      pending.delete(msg.id);
      if (msg.error) {
        rej(new Error(`${method}: ${msg.error.message}`));
      } else {
        res(msg.result);
      }
    } else if (msg.method) {
      for (const l of listeners) {
        l(msg);
      }
    }
  });
  return {
    send(method, params = {}) {
      const id = nextId++;
      sock.send(JSON.stringify({ id, method, params }));
      return new Promise((res, rej) => {
        const timer = setTimeout(() => {
          if (pending.has(id)) {
            pending.delete(id);
            rej(new Error(`${method}: no answer within 30 s`));
          }
        }, 30000);
        pending.set(id, { res, rej, method, timer });
      });
    },
    on(fn) {
      listeners.push(fn);
    },
    close() {
      sock.close();
    },
  };
}

async function evaluate(client, expression) {
  const r = await client.send('Runtime.evaluate', { expression, returnByValue: true, awaitPromise: true });
  if (r.exceptionDetails) {
    throw new Error(`page script failed: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
  }
  return r.result.value;
}

/** Owner set-up (a fresh n8n) and login: the n8n-auth cookie's value. */
async function ownerCookie(url, owner) {
  const setup = await fetch(`${url}/rest/owner/setup`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(owner),
  });
  if (!setup.ok) {
    throw new Error(`POST /rest/owner/setup: ${setup.status} ${(await setup.text()).slice(0, 300)}`);
  }
  const login = await fetch(`${url}/rest/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ emailOrLdapLoginId: owner.email, password: owner.password }),
  });
  if (!login.ok) {
    throw new Error(`POST /rest/login: ${login.status} ${(await login.text()).slice(0, 300)}`);
  }
  const cookies = login.headers.getSetCookie?.() ?? [login.headers.get('set-cookie') ?? ''];
  for (const c of cookies) {
    const m = /^n8n-auth=([^;]+)/.exec(c);
    if (m) {
      return m[1];
    }
  }
  throw new Error('the login answer has no n8n-auth cookie');
}

async function main() {
  const chromium = findChromium();
  const wfFile = bundledWorkflows().find((f) => JSON.parse(readFileSync(f, 'utf8')).id === args.workflow);
  if (wfFile === undefined) {
    throw new Error(`no bundled workflow with id ${args.workflow}`);
  }
  const wf = JSON.parse(readFileSync(wfFile, 'utf8'));
  const strataNode = wf.nodes.find((n) => (args.node !== '' ? n.name === args.node : n.type === 'n8n-nodes-strata.strata'));
  if (strataNode === undefined) {
    throw new Error(`workflow ${args.workflow} has no ${args.node !== '' ? `node "${args.node}"` : 'Strata node'}`);
  }
  const dir = mkdtempSync(join(os.tmpdir(), 'strata-screenshot-'));
  let rt = null;
  let browser = null;
  let client = null;
  try {
    rt = await launch({ dir, buildNative: false, webhookKey: 'screenshot-key', workflows: [wfFile], log });
    const owner = { email: 'owner@skillswap.test', firstName: 'Strata', lastName: 'Demo', password: 'Strata-Demo-2026' };
    const cookie = await ownerCookie(rt.url, owner);
    log('owner set up and logged in');

    const profile = join(dir, 'chromium');
    mkdirSync(profile, { recursive: true });
    browser = spawn(
      chromium,
      [
        '--headless=new',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-dev-shm-usage',
        '--no-first-run',
        '--hide-scrollbars',
        '--remote-debugging-port=0',
        `--user-data-dir=${profile}`,
        `--window-size=${args.width},${args.height}`,
        'about:blank',
      ],
      { stdio: 'ignore' },
    );
    const portFile = join(profile, 'DevToolsActivePort');
    await waitFor('Chromium to start', async () => existsSync(portFile) && readFileSync(portFile, 'utf8').includes('\n'), 30000);
    const port = readFileSync(portFile, 'utf8').split('\n')[0].trim();
    const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
    const page = targets.find((x) => x.type === 'page');
    client = await cdp(page.webSocketDebuggerUrl);
    await client.send('Page.enable');
    await client.send('Runtime.enable');
    await client.send('Network.enable');
    await client.send('Emulation.setDeviceMetricsOverride', { width: Number(args.width), height: Number(args.height), deviceScaleFactor: 1, mobile: false });
    await client.send('Network.setCookie', { name: 'n8n-auth', value: cookie, domain: '127.0.0.1', path: '/', httpOnly: true });

    // the editor's route /workflow/<id>/<nodeId> opens that node's panel
    const target = `${rt.url}/workflow/${wf.id}/${strataNode.id}`;
    log(`opening ${target}`);
    await client.send('Page.navigate', { url: target });
    await waitFor(
      'the node panel',
      () => evaluate(client, `!!document.querySelector('[data-test-id="ndv"], [data-test-id="node-parameters"], .ndv-wrapper')`),
      90000,
    );
    // let fonts, icons and the parameter inputs settle
    await sleep(4000);
    const shot = await client.send('Page.captureScreenshot', { format: 'png', captureBeyondViewport: false });
    const out = resolve(args.out);
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, Buffer.from(shot.data, 'base64'));
    log(`saved ${out} (${strataNode.name} in ${wf.name})`);
  } finally {
    client?.close();
    if (browser !== null) {
      await stopProcess(browser, 5000);
    }
    if (rt !== null) {
      await rt.stop();
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`screenshot: ${e.message}`);
  process.exit(1);
});
