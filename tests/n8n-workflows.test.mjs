// The bundled SkillSwap workflows in a real n8n 2.8.4 with a real Redis.
//
// One n8n for every case (the machine is small): our package packed and
// installed as a community package, a private redis-server, and a local
// SkillSwap fixture (users API, in-app notifications, push endpoint and an
// SMTP server, tests/fixtures/skillswap-api.mjs) on 127.0.0.1.
//
//  - request queue (workflows/request-queue.json + request-queue-worker.json):
//    jobs posted to the webhook get 202 + an id, the consumer (its schedule
//    shortened to 2 s here) runs them through the Strata node, GET returns
//    done + result; a failing job is retried with backoff and dead-lettered;
//    a job a crashed consumer left in the processing list is recovered.
//  - hourly matching (workflows/hourly-matching.json): a copy whose Schedule
//    Trigger is a Webhook (so the test can start it and wait for it): users
//    fetched from the API, ranked by the Strata node, cached in Redis with a
//    TTL, new high-score matches notified once through notify.json (email,
//    push, in-app); with the model missing, the rules score
//    (source "rules") and, with the SMTP server refusing, email is retried and
//    recorded in notify:failures while push and in-app still go out.
//  - notification fan-out webhook (workflows/notify.json + notify-channel.json):
//    a push endpoint failing once is retried; the three channels run
//    concurrently (their request windows at the fixture overlap); an unknown
//    channel is a recorded failure.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import {
  DEFAULT_MODEL,
  REDIS_CREDENTIAL,
  ROOT,
  SKILLSWAP_CREDENTIAL,
  SMTP_CREDENTIAL,
  WEBHOOK_CREDENTIAL,
  WEBHOOK_HEADER,
  bundledWorkflows,
  ensureBuilt,
  ensureN8n,
  launch,
  redisCommand,
  waitFor,
} from '../scripts/n8n-runtime.mjs';
import { USERS, startSkillSwapFixture } from './fixtures/skillswap-api.mjs';

const require = createRequire(import.meta.url);
const rules = require('../node/rules/match.js');

ensureBuilt({ native: false });

const MODEL = DEFAULT_MODEL;
const KEY = 'test-key-workflows-0123';
const load = (f) => JSON.parse(readFileSync(path.join(ROOT, 'workflows', f), 'utf8'));

/** The queue with a 2 s consumer schedule and a 1 s backoff base. */
function fastQueue() {
  const wf = load('request-queue.json');
  for (const n of wf.nodes) {
    if (n.type === 'n8n-nodes-base.scheduleTrigger') {
      n.parameters.rule.interval = [{ field: 'seconds', secondsInterval: 2 }];
    }
    if (n.name === 'Consumer Settings') {
      n.parameters.assignments.assignments.find((a) => a.name === 'backoffSeconds').value = 1;
    }
  }
  return wf;
}

/** The hourly workflow started by a webhook (answering when it is done). */
function hourlyByWebhook({ id, hookPath, webhookId, modelPath = '' }) {
  const wf = load('hourly-matching.json');
  wf.id = id;
  wf.name = `${wf.name} (${hookPath})`;
  for (const n of wf.nodes) {
    if (n.type === 'n8n-nodes-base.scheduleTrigger') {
      n.type = 'n8n-nodes-base.webhook';
      n.typeVersion = 2.1;
      n.webhookId = webhookId;
      n.parameters = { httpMethod: 'POST', path: hookPath, authentication: 'headerAuth', responseMode: 'lastNode', responseData: 'noData', options: {} };
      n.credentials = { httpHeaderAuth: { id: 'StrataWebhookKey', name: 'Strata Webhook Key' } };
    }
    if (n.type === 'n8n-nodes-strata.strata') {
      n.parameters.modelPath = modelPath;
    }
  }
  return wf;
}

async function call(method, url, body, headers = { [WEBHOOK_HEADER]: KEY }) {
  const r = await fetch(url, {
    method,
    headers: { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(120000),
  });
  const text = await r.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: r.status, text, json };
}

t.test('workflows/*.json: well formed, and everything they reference is bundled', async (t) => {
  const files = bundledWorkflows();
  const wfs = files.map((f) => JSON.parse(readFileSync(f, 'utf8')));
  const ids = new Set(wfs.map((w) => w.id));
  t.equal(ids.size, wfs.length, 'workflow ids are unique');
  for (const id of ['StrataMatchScore', 'StrataRequestQueue', 'StrataJobWorker', 'StrataHourlyMatching', 'StrataNotify', 'StrataNotifyChannel']) {
    t.ok(ids.has(id), `${id} is bundled`);
  }
  const creds = new Map([REDIS_CREDENTIAL, WEBHOOK_CREDENTIAL, SMTP_CREDENTIAL, SKILLSWAP_CREDENTIAL].map((c) => [c.id, c.name]));
  const hooks = new Set();
  for (const wf of wfs) {
    const names = new Set(wf.nodes.map((n) => n.name));
    t.equal(names.size, wf.nodes.length, `${wf.id}: node names are unique`);
    t.equal(wf.settings.executionOrder, 'v1');
    for (const [from, c] of Object.entries(wf.connections)) {
      t.ok(names.has(from), `${wf.id}: connection from ${from}`);
      for (const out of c.main) {
        for (const to of out) {
          t.ok(names.has(to.node), `${wf.id}: connection ${from} -> ${to.node}`);
        }
      }
    }
    for (const n of wf.nodes) {
      for (const c of Object.values(n.credentials ?? {})) {
        t.equal(creds.get(c.id), c.name, `${wf.id}/${n.name}: credential ${c.id} is one the runtime imports`);
      }
      if (n.type === 'n8n-nodes-base.executeWorkflow') {
        t.ok(ids.has(n.parameters.workflowId.value), `${wf.id}/${n.name} calls a bundled workflow`);
      }
      if (n.type === 'n8n-nodes-base.webhook') {
        t.equal(n.parameters.authentication, 'headerAuth', `${wf.id}/${n.name}: header auth`);
        const key = `${n.parameters.httpMethod} ${n.parameters.path}`;
        t.notOk(hooks.has(key), `${key} is unique`);
        hooks.add(key);
      }
    }
  }
  const hourly = wfs.find((w) => w.id === 'StrataHourlyMatching');
  t.same(hourly.nodes.find((n) => n.type === 'n8n-nodes-base.scheduleTrigger').parameters.rule.interval, [
    { field: 'cronExpression', expression: '0 * * * *' },
  ]);
});

t.test('n8n: the bundled SkillSwap workflows, end to end', async (t) => {
  try {
    ensureN8n({ log: (m) => t.comment(m) });
  } catch (e) {
    t.skip(`n8n 2.8.4 cannot be installed into tests/n8n (${e.message.split('\n')[0]}); run scripts/install-n8n.sh`);
    return;
  }
  if (spawnSync('redis-server', ['--version']).status !== 0) {
    t.skip('redis-server is not installed (apt-get install redis-server)');
    return;
  }
  const fixture = await startSkillSwapFixture();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'strata-n8n-workflows-'));
  let rt;
  try {
    rt = await launch({
      dir,
      buildNative: false,
      model: MODEL,
      webhookKey: KEY,
      smtp: { host: '127.0.0.1', port: fixture.smtpPort },
      skillswapApiKey: fixture.apiKey,
      extraEnv: { SKILLSWAP_API_URL: fixture.apiUrl },
      workflows: [
        fastQueue(),
        load('request-queue-worker.json'),
        load('notify.json'),
        load('notify-channel.json'),
        hourlyByWebhook({ id: 'StrataHourlyTest', hookPath: 'skillswap/test/hourly', webhookId: '1b2c3d4e-0000-4000-a000-00000000a001' }),
        hourlyByWebhook({
          id: 'StrataHourlyNoModel',
          hookPath: 'skillswap/test/hourly-missing-model',
          webhookId: '1b2c3d4e-0000-4000-a000-00000000a002',
          modelPath: '/nonexistent/strata-missing.gguf',
        }),
      ],
    });
  } catch (e) {
    await fixture.stop();
    throw e;
  }
  t.teardown(async () => {
    await rt.stop();
    await fixture.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const redis = (...args) => redisCommand(rt.redis.port, ...args);
  const hook = (p) => `${rt.url}/webhook/${p}`;
  const jobs = hook('skillswap/jobs');
  const getJob = (id) => call('GET', `${jobs}?id=${encodeURIComponent(id)}`);
  const [alice, bruno, chen] = USERS;

  await t.test('request queue: enqueue, consume, read back', async (t) => {
    const posted = {
      match: await call('POST', jobs, { type: 'match', a: alice, b: bruno }),
      rank: await call('POST', jobs, { type: 'rank', user: alice, candidates: [bruno, chen], topN: 2 }),
      icebreakers: await call('POST', jobs, { type: 'icebreakers', from: alice, to: bruno }),
    };
    for (const [type, r] of Object.entries(posted)) {
      t.equal(r.status, 202, `${type}: ${r.text}`);
      t.match(r.json, { jobId: /^job-/, status: 'queued' });
      t.equal(r.json.statusUrl, `/webhook/skillswap/jobs?id=${r.json.jobId}`);
    }
    const stored = JSON.parse(await redis('GET', `job:${posted.match.json.jobId}`));
    t.equal(stored.type, 'match');
    t.same(stored.payload.a.id, alice.id);
    const ttl = await redis('TTL', `job:${posted.match.json.jobId}`);
    t.ok(ttl > 600000, `job record TTL ${ttl}`);

    // validation and auth
    const bad = await call('POST', jobs, { type: 'match', a: alice });
    t.equal(bad.status, 400);
    t.match(bad.json.error, /profiles "a" and "b"/);
    t.equal((await call('POST', jobs, { type: 'translate' })).status, 400);
    t.equal((await call('POST', jobs, { type: 'match', a: alice, b: bruno }, { [WEBHOOK_HEADER]: 'wrong' })).status, 403);
    t.equal((await call('GET', `${jobs}?id=x`, undefined, {})).status, 403);
    t.equal((await getJob('job-nope')).status, 404);
    t.equal((await call('GET', jobs)).status, 400);

    const done = {};
    for (const [type, r] of Object.entries(posted)) {
      done[type] = await waitFor(`${type} job done`, async () => {
        const g = await getJob(r.json.jobId);
        return g.status === 200 && g.json.status === 'done' ? g.json : null;
      });
      t.equal(done[type].attempts, 1);
      t.equal(done[type].id, r.json.jobId);
      t.notOk('payload' in done[type], 'the status answer leaves the payload out');
    }
    const m = done.match.result;
    t.ok(m.score >= 0 && m.score <= 100, `match score ${m.score}`);
    t.ok(['model', 'rules'].includes(m.source));
    t.equal(m.ruleScore, rules.matchScore(alice, bruno).score);
    t.equal(m.model?.path, MODEL, 'the model ran in n8n');
    t.equal(done.rank.result.userId, alice.id);
    t.same(
      done.rank.result.matches.map((x) => x.id).sort(),
      [bruno.id, chen.id].sort(),
    );
    t.equal(done.icebreakers.result.icebreakers.length, 3);
    t.ok(done.icebreakers.result.icebreakers.every((s) => typeof s === 'string' && s.length > 0));
    t.equal(await redis('LLEN', 'jobs:queue'), 0, 'the queue is drained');
  });

  await t.test('request queue: a failing job is retried with backoff, then dead-lettered', async (t) => {
    const id = 'job-bad-profile';
    const job = { id, type: 'match', status: 'queued', attempts: 0, payload: { a: [1, 2], b: bruno }, createdAt: new Date().toISOString() };
    await redis('SET', `job:${id}`, JSON.stringify(job));
    await redis('LPUSH', 'jobs:queue', id);
    const seen = new Map();
    const dead = await waitFor(
      'the job dead-lettered',
      async () => {
        const g = await getJob(id);
        if (g.status === 200) {
          seen.set(g.json.status, g.json);
        }
        return g.status === 200 && g.json.status === 'dead' ? g.json : null;
      },
      90000,
    );
    t.equal(dead.attempts, 3);
    t.match(dead.error, /Profile A must be a JSON object/);
    t.ok(seen.has('retrying'), 'it was retrying in between');
    const retry = seen.get('retrying');
    t.ok(Date.parse(retry.nextAttemptAt) > Date.now() - 60000, 'a retry has its next attempt time');
    // the worker saves the record, then pushes the id to the dead letters
    t.ok(await waitFor('the dead-letter list', async () => (await redis('LRANGE', 'jobs:dead', 0, -1)).includes(id), 10000), 'the dead-letter list has it');
  });

  await t.test('request queue: a job left in the processing list by a crash is recovered', async (t) => {
    const id = 'job-after-crash';
    await redis('SET', `job:${id}`, JSON.stringify({ id, type: 'match', status: 'queued', attempts: 0, payload: { a: alice, b: chen }, createdAt: new Date().toISOString() }));
    // a consumer "crashed" holding the lock with the job claimed
    await waitFor('the consumer lock to be free', async () => (await redis('SET', 'jobs:consumer-lock', '1', 'EX', '3', 'NX')) === 'OK');
    await redis('LPUSH', 'jobs:processing', id);
    const done = await waitFor('the recovered job done', async () => {
      const g = await getJob(id);
      return g.status === 200 && g.json.status === 'done' ? g.json : null;
    });
    t.equal(done.result.ruleScore, rules.matchScore(alice, chen).score);
    // the consumer clears the processing list after its worker runs
    t.ok(await waitFor('the processing list cleared', async () => (await redis('EXISTS', 'jobs:processing')) === 0, 10000), 'the processing list is cleared');
  });

  const runHourly = async (p) => {
    const r = await call('POST', hook(p), {});
    t.equal(r.status, 200, `hourly run: ${r.text.slice(0, 300)}`);
  };
  const cached = async () => {
    const out = {};
    for (const u of USERS) {
      out[u.id] = JSON.parse(await redis('GET', `matches:${u.id}`));
    }
    return out;
  };
  const highPairs = (c) =>
    Object.values(c)
      .flatMap((r) => r.matches.filter((m) => m.score >= 70).map((m) => `${r.userId}:${m.id}`))
      .sort();

  await t.test('hourly matching: rank, cache with TTL, notify new high-score matches once', async (t) => {
    fixture.reset();
    await runHourly('skillswap/test/hourly');
    t.equal(fixture.state.hits['GET /users'], 1, 'users fetched from the SkillSwap API');
    const c = await cached();
    for (const u of USERS) {
      const r = c[u.id];
      t.equal(r.userId, u.id);
      t.equal(r.matches.length, USERS.length - 1);
      t.ok(['model', 'rules', 'mixed'].includes(r.source), `source ${r.source}`);
      const ttl = await redis('TTL', `matches:${u.id}`);
      t.ok(ttl > 7000 && ttl <= 7200, `cache TTL ${ttl}`);
    }
    const pairs = highPairs(c);
    t.same((await redis('SMEMBERS', 'matches:notified')).sort(), pairs, 'notified pairs remembered');
    t.equal(fixture.state.emails.length, pairs.length, 'one email per new match');
    t.equal(fixture.state.pushes.length, pairs.length, 'one push per new match');
    t.equal(fixture.state.notifications.length, pairs.length, 'one in-app notification per new match');
    const byUser = new Map(USERS.map((u) => [u.id, u]));
    for (const e of fixture.state.emails) {
      t.equal(e.to.length, 1);
      t.ok(USERS.some((u) => u.email === e.to[0]), `email to ${e.to[0]}`);
      t.match(e.data, /Subject: New SkillSwap match: /);
    }
    for (const p of fixture.state.pushes) {
      t.ok(USERS.some((u) => u.pushToken === p.to));
      t.equal(p.data.type, 'match');
    }
    for (const n of fixture.state.notifications) {
      t.ok(byUser.has(n.userId));
      t.ok(byUser.has(n.data.matchId));
    }

    // the next hour: nothing new to notify
    fixture.reset();
    await runHourly('skillswap/test/hourly');
    const again = highPairs(await cached()).filter((p) => !pairs.includes(p));
    t.equal(fixture.state.emails.length, again.length, 'no repeated emails');
    t.equal(fixture.state.pushes.length, again.length, 'no repeated pushes');
  });

  await t.test('hourly matching: model missing -> rules; SMTP refusing -> retried, recorded, push and in-app still sent', async (t) => {
    fixture.reset();
    await redis('DEL', 'matches:notified', 'notify:failures');
    fixture.smtpMode('reject');
    await runHourly('skillswap/test/hourly-missing-model');
    const c = await cached();
    for (const u of USERS) {
      t.equal(c[u.id].source, 'rules');
      t.match(c[u.id].fallbackReason, /^model unavailable: model file not found/);
      const expected = rules.rankMatches(u, USERS.filter((x) => x.id !== u.id));
      t.same(
        c[u.id].matches.map((m) => [m.id, m.score]),
        expected.map((m) => [m.id, m.score]),
        `${u.id}: the rule ranking`,
      );
    }
    const pairs = highPairs(c);
    t.same(pairs, ['u-alice:u-bruno', 'u-bruno:u-alice'], 'Alice and Bruno are a mutual match under the rules');
    t.equal(fixture.state.emails.length, 0, 'no email got through');
    t.equal(fixture.state.smtpConnections, pairs.length * 3, 'each email was tried 3 times');
    t.equal(fixture.state.pushes.length, 2, 'pushes still sent');
    t.equal(fixture.state.notifications.length, 2, 'in-app notifications still sent');
    const failures = (await redis('LRANGE', 'notify:failures', 0, -1)).map((s) => JSON.parse(s));
    t.equal(failures.length, 2);
    for (const f of failures) {
      t.equal(f.channel, 'email');
      t.equal(f.ok, false);
      t.ok(f.error.length > 0, `recorded error: ${f.error}`);
    }
    t.same(failures.map((f) => f.userId).sort(), ['u-alice', 'u-bruno']);
  });

  await t.test('notification webhook: a failing push is retried', async (t) => {
    fixture.reset();
    fixture.failNext('push', 1);
    const r = await call('POST', hook('skillswap/notify'), {
      user: { id: 'u-chen', email: 'chen@skillswap.test', pushToken: 'push-chen' },
      title: 'Hello',
      message: 'A test notification',
      data: { type: 'test' },
    });
    t.equal(r.status, 200, r.text);
    t.same(r.json.sent, { email: 1, push: 1, inApp: 1 });
    t.same(r.json.failures, []);
    t.equal(fixture.state.hits['POST /push'], 2, 'push tried twice');
    t.equal(fixture.state.emails.length, 1);
    t.equal(fixture.state.emails[0].to[0], 'chen@skillswap.test');
    t.equal(fixture.state.notifications[0].userId, 'u-chen');
    t.equal((await call('POST', hook('skillswap/notify'), {}, {})).status, 403, 'header auth');
  });

  await t.test('notification webhook: the channels are delivered concurrently', async (t) => {
    fixture.reset();
    fixture.delay(1500);
    const r = await call('POST', hook('skillswap/notify'), {
      user: { id: 'u-alice', email: 'alice@skillswap.test', pushToken: 'push-alice' },
      title: 'At once',
      message: 'Three channels in parallel',
    });
    t.equal(r.status, 200, r.text);
    t.same(r.json.sent, { email: 1, push: 1, inApp: 1 });
    const w = fixture.state.windows;
    t.same(w.map((x) => x.channel).sort(), ['email', 'inApp', 'push'], 'one request per channel');
    // each channel's request was open for 1.5 s; one after the other they
    // could not overlap. They all were in progress at the same moment:
    const lastStart = Math.max(...w.map((x) => x.start));
    const firstEnd = Math.min(...w.map((x) => x.end));
    t.ok(lastStart < firstEnd, `the three request windows overlap (${firstEnd - lastStart} ms in common)`);
    t.equal(await redis('KEYS', 'notify:outcomes:*').then((k) => k.length), 0, 'the outcome list is cleared');
  });

  await t.test('notification webhook: an unknown channel is a recorded failure', async (t) => {
    fixture.reset();
    await redis('DEL', 'notify:failures');
    const r = await call('POST', hook('skillswap/notify'), {
      user: { id: 'u-chen', email: 'chen@skillswap.test' },
      title: 'Odd',
      message: 'x',
      channels: ['email', 'fax'],
    });
    t.equal(r.status, 200, r.text);
    t.same(r.json.sent, { email: 1, push: 0, inApp: 0 });
    t.equal(r.json.failures.length, 1);
    t.match(r.json.failures[0], { channel: 'fax', ok: false, error: 'unknown channel fax', userId: 'u-chen' });
    const failures = (await redis('LRANGE', 'notify:failures', 0, -1)).map((x) => JSON.parse(x));
    t.equal(failures.length, 1);
    t.equal(failures[0].channel, 'fax');
  });
});
