// Running n8n with n8n-nodes-strata installed, as `npm start` and the e2e
// test do: the n8n test runtime (tests/n8n, n8n 2.8.4 with the xlsx override
// it needs), our package packed and unpacked the way n8n installs community
// packages, a private redis-server, credentials and workflows imported
// through the n8n CLI, and n8n itself. Everything listens on 127.0.0.1 only.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const N8N_VERSION = '2.8.4';
export const N8N_DIR = process.env.STRATA_N8N_DIR ? resolve(process.env.STRATA_N8N_DIR) : join(ROOT, 'tests', 'n8n');
export const N8N_BIN = join(N8N_DIR, 'node_modules', 'n8n', 'bin', 'n8n');
export const DEFAULT_MODEL = resolve(ROOT, '..', 'shared', 'models', 'stories260K.gguf');
export const PACKAGE_NAME = 'n8n-nodes-strata';

// Fixed ids so the bundled workflows can reference the credentials.
export const REDIS_CREDENTIAL = { id: 'StrataRedisLocal', name: 'Strata Redis' };
export const WEBHOOK_CREDENTIAL = { id: 'StrataWebhookKey', name: 'Strata Webhook Key' };
export const WEBHOOK_HEADER = 'X-Strata-Key';
// The notification and hourly workflows: SMTP for email, and the SkillSwap
// API's key (a Header Auth credential) for its users and in-app endpoints.
export const SMTP_CREDENTIAL = { id: 'StrataSmtp', name: 'Strata SMTP' };
export const SKILLSWAP_CREDENTIAL = { id: 'SkillSwapApiKey', name: 'SkillSwap API Key' };
export const SKILLSWAP_HEADER = 'X-SkillSwap-Key';

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, ...opts });
  if (r.error) {
    throw r.error;
  }
  if (r.status !== 0) {
    const out = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n').slice(-30).join('\n');
    throw new Error(`${cmd} ${args.join(' ')} exited with ${r.status ?? r.signal}:\n${out}`);
  }
  return r.stdout ?? '';
}

/** The installed n8n's version, or null when tests/n8n has none. */
export function installedN8nVersion() {
  const pkg = join(N8N_DIR, 'node_modules', 'n8n', 'package.json');
  // an install that skipped install scripts has no SQLite addon: not usable
  const sqlite = join(N8N_DIR, 'node_modules', 'sqlite3', 'build', 'Release', 'node_sqlite3.node');
  if (!existsSync(pkg) || !existsSync(N8N_BIN) || !existsSync(sqlite)) {
    return null;
  }
  return JSON.parse(readFileSync(pkg, 'utf8')).version;
}

/**
 * n8n in tests/n8n/node_modules, installed on first use (npm ci from its
 * lockfile: ~2 GB, a few minutes). Returns the n8n binary's path.
 */
export function ensureN8n({ log = () => {} } = {}) {
  if (installedN8nVersion() === N8N_VERSION) {
    return N8N_BIN;
  }
  log(`installing n8n ${N8N_VERSION} into ${N8N_DIR} (once; a few minutes)...`);
  const ci = existsSync(join(N8N_DIR, 'package-lock.json'));
  // n8n needs its install scripts (sqlite3 builds its addon): drop the
  // npm_config_* that `npm test` / `npm start` pass down (our .npmrc sets
  // ignore-scripts) and build against the local Node headers.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_config_/i.test(k)));
  env.npm_config_nodedir = '/usr';
  env.npm_config_ignore_scripts = 'false';
  run('npm', [ci ? 'ci' : 'install', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: N8N_DIR, stdio: 'inherit', env });
  if (installedN8nVersion() !== N8N_VERSION) {
    throw new Error(`n8n ${N8N_VERSION} is not in ${N8N_DIR}/node_modules after npm install`);
  }
  return N8N_BIN;
}

function newestMtime(dir) {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}

/**
 * dist/ (rebuilt when a node or credential source is newer) and the native
 * addon (built when missing). n8n installs community packages without
 * running their install scripts, so the tarball must carry strata.node.
 */
export function ensureBuilt({ log = () => {}, native = true } = {}) {
  const built = join(ROOT, 'dist', 'node', 'nodes', 'Strata', 'Strata.node.js');
  const sources = Math.max(newestMtime(join(ROOT, 'node', 'nodes')), newestMtime(join(ROOT, 'credentials')));
  if (!existsSync(built) || statSync(built).mtimeMs < sources) {
    log('building dist/ (npm run build)...');
    run(process.execPath, [join(ROOT, 'scripts', 'build.mjs')], { cwd: ROOT });
  }
  if (!existsSync(join(ROOT, 'build', 'Release', 'strata.node'))) {
    if (!native) {
      throw new Error('build/Release/strata.node is missing: build the addon first (npm_config_nodedir=/usr npm run build:native)');
    }
    log('building the native addon (npm run build:native)...');
    run('npm', ['run', 'build:native'], { cwd: ROOT, env: { npm_config_nodedir: '/usr', ...process.env } });
  }
}

/** npm pack of the package into destDir; returns the tarball's path. */
export function packPackage(destDir) {
  mkdirSync(destDir, { recursive: true });
  const out = run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', destDir], { cwd: ROOT });
  const info = JSON.parse(out.slice(out.indexOf('[')));
  return join(destDir, info[0].filename);
}

/**
 * Unpack the tarball where n8n keeps community packages:
 * <userFolder>/.n8n/nodes/node_modules/n8n-nodes-strata.
 */
export function installPackage(tarball, userFolder) {
  const nodesDir = join(userFolder, '.n8n', 'nodes');
  const dest = join(nodesDir, 'node_modules', PACKAGE_NAME);
  mkdirSync(dest, { recursive: true });
  run('tar', ['-xzf', tarball, '-C', dest, '--strip-components=1']);
  const version = JSON.parse(readFileSync(join(dest, 'package.json'), 'utf8')).version;
  writeFileSync(
    join(nodesDir, 'package.json'),
    JSON.stringify({ name: 'installed-nodes', private: true, dependencies: { [PACKAGE_NAME]: version } }, null, 2),
  );
  return dest;
}

/** A TCP port free on 127.0.0.1 right now. */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolvePort(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls fn every intervalMs until it returns something truthy (that value), or throws after timeoutMs. */
export async function waitFor(what, fn, timeoutMs = 60000, intervalMs = 500) {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v) {
      return v;
    }
    if (Date.now() - t0 > timeoutMs) {
      throw new Error(`timed out waiting for ${what}`);
    }
    await sleep(intervalMs);
  }
}

// ---------------------------------------------------------------- redis ---

function encodeCommand(args) {
  let s = `*${args.length}\r\n`;
  for (const a of args) {
    const b = Buffer.from(String(a));
    s += `$${b.length}\r\n${b.toString()}\r\n`;
  }
  return s;
}

// One RESP reply from buf at offset: [value, nextOffset], or null if incomplete.
function parseReply(buf, off = 0) {
  const eol = buf.indexOf('\r\n', off);
  if (eol < 0) {
    return null;
  }
  const type = String.fromCharCode(buf[off]);
  const line = buf.toString('utf8', off + 1, eol);
  const next = eol + 2;
  if (type === '+') {
    return [line, next];
  }
  if (type === '-') {
    return [new Error(line), next];
  }
  if (type === ':') {
    return [Number(line), next];
  }
  if (type === '$') {
    const n = Number(line);
    if (n < 0) {
      return [null, next];
    }
    if (buf.length < next + n + 2) {
      return null;
    }
    return [buf.toString('utf8', next, next + n), next + n + 2];
  }
  if (type === '*') {
    const n = Number(line);
    if (n < 0) {
      return [null, next];
    }
    const arr = [];
    let o = next;
    for (let i = 0; i < n; i++) {
      const r = parseReply(buf, o);
      if (r === null) {
        return null;
      }
      arr.push(r[0]);
      o = r[1];
    }
    return [arr, o];
  }
  throw new Error(`redis: unexpected reply type ${type}`);
}

/** One Redis command on a fresh connection: redisCommand(port, 'GET', 'k'). */
export function redisCommand(port, ...args) {
  return new Promise((resolveReply, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`redis ${args[0]}: no reply within 5 s`));
    }, 5000);
    sock.on('connect', () => sock.write(encodeCommand(args)));
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      const r = parseReply(buf);
      if (r !== null) {
        clearTimeout(timer);
        sock.end();
        if (r[0] instanceof Error) {
          reject(r[0]);
        } else {
          resolveReply(r[0]);
        }
      }
    });
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** A private redis-server on 127.0.0.1:port, no persistence. */
export async function startRedis({ port, dir }) {
  mkdirSync(dir, { recursive: true });
  const proc = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--logfile', join(dir, 'redis.log')],
    { stdio: 'ignore' },
  );
  let exited = null;
  proc.on('exit', (code, signal) => {
    exited = code ?? signal;
  });
  proc.on('error', (e) => {
    exited = e.message;
  });
  for (let i = 0; i < 100; i++) {
    if (exited !== null) {
      throw new Error(`redis-server exited (${exited}); see ${join(dir, 'redis.log')}`);
    }
    try {
      if ((await redisCommand(port, 'PING')) === 'PONG') {
        return { port, proc, stop: () => stopProcess(proc) };
      }
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  stopProcess(proc);
  throw new Error('redis-server did not answer PING within 10 s');
}

/** SIGTERM, then SIGKILL after graceMs; resolves when the process is gone. */
export function stopProcess(proc, graceMs = 10000) {
  return new Promise((done) => {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      done();
      return;
    }
    const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
    proc.once('exit', () => {
      clearTimeout(timer);
      done();
    });
    proc.kill('SIGTERM');
  });
}

// ------------------------------------------------------------------ n8n ---

/**
 * The environment for every n8n command on one user folder: SQLite in the
 * folder, loopback only, no telemetry, no calls home.
 */
export function n8nEnv({ userFolder, port, brokerPort, model, extra = {} }) {
  const env = { ...process.env };
  // settings of an n8n the caller may run would leak in: drop them
  for (const k of Object.keys(env)) {
    if (k.startsWith('N8N_') || k.startsWith('DB_') || k.startsWith('EXECUTIONS_') || k === 'WEBHOOK_URL') {
      delete env[k];
    }
  }
  return {
    ...env,
    N8N_USER_FOLDER: userFolder,
    DB_TYPE: 'sqlite',
    N8N_PORT: String(port),
    N8N_LISTEN_ADDRESS: '127.0.0.1',
    N8N_HOST: '127.0.0.1',
    N8N_PROTOCOL: 'http',
    WEBHOOK_URL: `http://127.0.0.1:${port}/`,
    N8N_EDITOR_BASE_URL: `http://127.0.0.1:${port}/`,
    N8N_RUNNERS_BROKER_PORT: String(brokerPort),
    N8N_RUNNERS_BROKER_LISTEN_ADDRESS: '127.0.0.1',
    N8N_DIAGNOSTICS_ENABLED: 'false',
    N8N_VERSION_NOTIFICATIONS_ENABLED: 'false',
    N8N_PERSONALIZATION_ENABLED: 'false',
    N8N_TEMPLATES_ENABLED: 'false',
    N8N_HIRING_BANNER_ENABLED: 'false',
    N8N_COMMUNITY_PACKAGES_ENABLED: 'true',
    N8N_SECURE_COOKIE: 'false',
    N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS: 'false',
    N8N_LOG_LEVEL: 'info', // startN8n reads the workflow activation lines
    N8N_NO_BROWSER: 'true',
    EXTERNAL_FRONTEND_HOOKS_URLS: '',
    N8N_DYNAMIC_BANNERS_ENABLED: 'false',
    // the SkillSwap workflows read SKILLSWAP_API_URL / SKILLSWAP_PUSH_URL /
    // SKILLSWAP_MAIL_FROM with $env, which n8n blocks by default
    N8N_BLOCK_ENV_ACCESS_IN_NODE: 'false',
    STRATA_MODEL: model,
    ...extra,
  };
}

/** Run one n8n CLI command (import:..., publish:...) to completion. */
export function n8nCli(env, args) {
  return run(process.execPath, [N8N_BIN, ...args], { env, cwd: env.N8N_USER_FOLDER });
}

/**
 * The credentials the bundled workflows use, imported with their data (n8n
 * encrypts it): Redis, the webhooks' Header Auth, SMTP (no TLS, no auth by
 * default: a local relay) and the SkillSwap API key.
 */
export function importCredentials(env, { redisPort, webhookKey, dir, smtp = {}, skillswapApiKey = '' }) {
  const file = join(dir, 'credentials.json');
  const creds = [
    {
      ...REDIS_CREDENTIAL,
      type: 'redis',
      data: { host: '127.0.0.1', port: redisPort, database: 0, password: '', user: '', ssl: false },
    },
    {
      ...WEBHOOK_CREDENTIAL,
      type: 'httpHeaderAuth',
      data: { name: WEBHOOK_HEADER, value: webhookKey },
    },
    {
      ...SMTP_CREDENTIAL,
      type: 'smtp',
      data: {
        host: smtp.host ?? '127.0.0.1',
        port: smtp.port ?? 1025,
        secure: smtp.secure ?? false,
        disableStartTls: smtp.disableStartTls ?? true,
        user: smtp.user ?? '',
        password: smtp.password ?? '',
        hostName: '',
      },
    },
    {
      ...SKILLSWAP_CREDENTIAL,
      type: 'httpHeaderAuth',
      data: { name: SKILLSWAP_HEADER, value: skillswapApiKey },
    },
  ];
  writeFileSync(file, JSON.stringify(creds, null, 2), { mode: 0o600 });
  n8nCli(env, ['import:credentials', `--input=${file}`]);
}

/** Import workflow files (one n8n command for all of them) and publish each. */
export function importWorkflows(env, files, { dir }) {
  const wfDir = join(dir, 'workflows');
  mkdirSync(wfDir, { recursive: true });
  const ids = [];
  for (const f of files) {
    const wf = typeof f === 'string' ? JSON.parse(readFileSync(f, 'utf8')) : f;
    writeFileSync(join(wfDir, `${wf.id}.json`), JSON.stringify(wf, null, 2));
    ids.push(wf.id);
  }
  n8nCli(env, ['import:workflow', '--separate', `--input=${wfDir}`]);
  for (const id of ids) {
    n8nCli(env, ['publish:workflow', `--id=${id}`]);
  }
  return ids;
}

/** Every workflows/*.json bundled with the package. */
export function bundledWorkflows() {
  const dir = join(ROOT, 'workflows');
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => join(dir, f));
}

/** Webhook paths of a workflow's Webhook nodes: [{ method, path, name }]. */
export function webhooksOf(workflow) {
  return workflow.nodes
    .filter((n) => n.type === 'n8n-nodes-base.webhook')
    .map((n) => ({ method: n.parameters.httpMethod ?? 'GET', path: n.parameters.path, name: n.name }));
}

/**
 * Start `n8n start` and wait until /healthz/readiness answers and every
 * workflow in workflowIds is activated. (n8n is ready before it activates
 * published workflows, and a webhook probe cannot tell "not yet" from "not
 * registered": the info log lines of the activation can.) Returns
 * { proc, url, stop(), output() } (output: the last 200 lines it printed).
 */
export async function startN8n(env, { timeoutMs = 180000, onLine, workflowIds = [] } = {}) {
  const proc = spawn(process.execPath, [N8N_BIN, 'start'], { env, cwd: env.N8N_USER_FOLDER, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines = [];
  const pending = new Set(workflowIds);
  let activationError = null;
  const keep = (chunk) => {
    for (const l of chunk.toString().split('\n')) {
      if (l.trim() === '') {
        continue;
      }
      for (const id of pending) {
        if (l.includes(`(ID: ${id})`)) {
          if (l.includes('Activated workflow')) {
            pending.delete(id);
          } else if (l.includes('Issue on initial workflow activation')) {
            activationError = l;
          }
        }
      }
      lines.push(l);
      if (lines.length > 200) {
        lines.shift();
      }
      onLine?.(l);
    }
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  let exited = null;
  proc.on('exit', (code, signal) => {
    exited = code ?? signal;
  });
  const url = `http://127.0.0.1:${env.N8N_PORT}`;
  const handle = { proc, url, stop: () => stopProcess(proc), output: () => lines.join('\n') };
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    if (exited !== null) {
      throw new Error(`n8n start exited (${exited}):\n${handle.output()}`);
    }
    if (activationError !== null) {
      await handle.stop();
      throw new Error(`n8n could not activate a workflow: ${activationError}\n${handle.output()}`);
    }
    if (pending.size === 0) {
      try {
        const r = await fetch(`${url}/healthz/readiness`, { signal: AbortSignal.timeout(2000) });
        if (r.ok) {
          return handle;
        }
      } catch {
        // not up yet
      }
    }
    await sleep(500);
  }
  await handle.stop();
  const waiting = pending.size > 0 ? ` (workflows not activated: ${[...pending].join(', ')})` : '';
  throw new Error(`n8n did not become ready within ${timeoutMs / 1000} s${waiting}:\n${handle.output()}`);
}

/**
 * The whole setup in one folder: n8n installed, package built, packed and
 * installed, redis started, credentials and workflows imported and
 * published, n8n started. Returns what is needed to use and stop it.
 */
export async function launch({
  dir,
  buildNative = true,
  model = process.env.STRATA_MODEL || DEFAULT_MODEL,
  workflows = bundledWorkflows(),
  webhookKey,
  port,
  smtp = {},
  skillswapApiKey = '',
  extraEnv = {},
  log = () => {},
  onLine,
} = {}) {
  ensureN8n({ log });
  ensureBuilt({ log, native: buildNative });
  mkdirSync(dir, { recursive: true });
  const userFolder = join(dir, 'n8n-user');
  log('packing and installing n8n-nodes-strata...');
  const tarball = packPackage(join(dir, 'pack'));
  installPackage(tarball, userFolder);

  const redisPort = await freePort();
  log(`starting redis-server on 127.0.0.1:${redisPort}...`);
  const redis = await startRedis({ port: redisPort, dir: join(dir, 'redis') });
  let n8n = null;
  try {
    const env = n8nEnv({
      userFolder,
      port: port ?? (await freePort()),
      brokerPort: await freePort(),
      model: resolve(model),
      extra: extraEnv,
    });
    log('importing credentials and workflows...');
    importCredentials(env, { redisPort, webhookKey, dir, smtp, skillswapApiKey });
    const wfs = workflows.map((w) => (typeof w === 'string' ? JSON.parse(readFileSync(w, 'utf8')) : w));
    importWorkflows(env, wfs, { dir });
    log('starting n8n...');
    n8n = await startN8n(env, { onLine, workflowIds: wfs.filter((wf) => webhooksOf(wf).length > 0).map((wf) => wf.id) });
    const webhooks = wfs.flatMap((wf) => webhooksOf(wf).map((h) => ({ ...h, workflow: wf.name, url: `${n8n.url}/webhook/${h.path}` })));
    return {
      url: n8n.url,
      env,
      redis,
      n8n,
      webhooks,
      userFolder,
      async stop() {
        await n8n.stop();
        await redis.stop();
      },
    };
  } catch (e) {
    if (n8n !== null) {
      await n8n.stop();
    }
    await redis.stop();
    throw e;
  }
}
