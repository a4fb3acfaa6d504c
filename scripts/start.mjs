#!/usr/bin/env node
// `npm start`: n8n 2.8.4 with n8n-nodes-strata installed and the bundled
// workflows live, on 127.0.0.1. Each start is fresh: the run folder
// (./.strata-run, or STRATA_RUN_DIR) is wiped, our package is packed and
// installed into a new n8n user folder, a private redis-server starts, and
// the Redis and webhook Header Auth credentials and workflows/*.json are
// imported and published. Ctrl-C stops n8n and redis.
//
// Environment: STRATA_MODEL (GGUF file; default ../shared/models/
// stories260K.gguf, a tiny test model), STRATA_N8N_PORT (default 5678, or a
// free port when taken), STRATA_WEBHOOK_KEY (default: a random key, printed),
// STRATA_RUN_DIR.
//
// SkillSwap (the hourly matching and notification workflows):
// SKILLSWAP_API_URL (users and in-app notifications; unset: a local demo
// SkillSwap, tests/fixtures/skillswap-api.mjs, with an SMTP sink and a push
// endpoint, is started), SKILLSWAP_API_KEY (sent as X-SkillSwap-Key),
// SKILLSWAP_PUSH_URL (default $SKILLSWAP_API_URL/push), SKILLSWAP_MAIL_FROM,
// SKILLSWAP_SMTP_HOST / SKILLSWAP_SMTP_PORT (default 127.0.0.1:1025, no TLS,
// no auth; SKILLSWAP_SMTP_USER / SKILLSWAP_SMTP_PASSWORD when needed).
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { join, resolve } from 'node:path';
import { DEFAULT_MODEL, ROOT, WEBHOOK_HEADER, bundledWorkflows, freePort, launch } from './n8n-runtime.mjs';

function portFree(port) {
  return new Promise((done) => {
    const srv = net.createServer();
    srv.once('error', () => done(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => done(true)));
  });
}

const EXAMPLE = {
  a: {
    id: 'alice',
    name: 'Alice',
    bio: 'Backend developer, learning Spanish for a move to Madrid',
    offered: [{ name: 'Python', level: 'advanced' }],
    wanted: [{ name: 'Spanish', level: 'intermediate' }],
    availability: ['weekends', 'evenings'],
  },
  b: {
    id: 'bruno',
    name: 'Bruno',
    bio: 'Spanish teacher who wants to automate his grading',
    offered: [{ name: 'Spanish', level: 'expert' }],
    wanted: [{ name: 'Python', level: 'beginner' }],
    availability: ['weekends'],
  },
};

async function main() {
  const dir = resolve(process.env.STRATA_RUN_DIR || join(ROOT, '.strata-run'));
  const model = resolve(process.env.STRATA_MODEL || DEFAULT_MODEL);
  if (!existsSync(model)) {
    console.error(`strata: model file not found: ${model}\nSet STRATA_MODEL to a GGUF file.`);
    process.exit(1);
  }
  const wanted = Number(process.env.STRATA_N8N_PORT || 5678);
  const port = (await portFree(wanted)) ? wanted : await freePort();
  const webhookKey = process.env.STRATA_WEBHOOK_KEY || randomBytes(18).toString('base64url');

  rmSync(dir, { recursive: true, force: true });
  const log = (m) => console.log(`strata: ${m}`);

  let demo = null;
  const skillswap = {
    apiUrl: process.env.SKILLSWAP_API_URL,
    apiKey: process.env.SKILLSWAP_API_KEY || '',
    smtp: {
      host: process.env.SKILLSWAP_SMTP_HOST || '127.0.0.1',
      port: Number(process.env.SKILLSWAP_SMTP_PORT || 1025),
      user: process.env.SKILLSWAP_SMTP_USER || '',
      password: process.env.SKILLSWAP_SMTP_PASSWORD || '',
    },
  };
  if (!skillswap.apiUrl) {
    const { startSkillSwapFixture } = await import('../tests/fixtures/skillswap-api.mjs');
    demo = await startSkillSwapFixture({ apiKey: skillswap.apiKey || randomBytes(12).toString('base64url') });
    skillswap.apiUrl = demo.apiUrl;
    skillswap.apiKey = demo.apiKey;
    skillswap.smtp = { host: '127.0.0.1', port: demo.smtpPort };
    log(`SKILLSWAP_API_URL is not set: a demo SkillSwap (3 users, SMTP sink, push endpoint) runs at ${demo.apiUrl}`);
  }
  const extraEnv = { SKILLSWAP_API_URL: skillswap.apiUrl };
  for (const k of ['SKILLSWAP_PUSH_URL', 'SKILLSWAP_MAIL_FROM']) {
    if (process.env[k]) {
      extraEnv[k] = process.env[k];
    }
  }
  let rt;
  try {
    rt = await launch({ dir, model, webhookKey, port, log, smtp: skillswap.smtp, skillswapApiKey: skillswap.apiKey, extraEnv });
  } catch (e) {
    await demo?.stop();
    throw e;
  }

  let stopping = false;
  const stop = async () => {
    if (stopping) {
      return;
    }
    stopping = true;
    console.log('\nstrata: stopping n8n and redis...');
    await rt.stop();
    await demo?.stop();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  rt.n8n.proc.on('exit', (code) => {
    if (!stopping) {
      console.error(`strata: n8n exited (${code}); last output:\n${rt.n8n.output()}`);
      Promise.all([rt.redis.stop(), demo?.stop()]).then(() => process.exit(1));
    }
  });

  const examples = {
    'strata/match-score': EXAMPLE,
    'skillswap/jobs': { type: 'match', a: EXAMPLE.a, b: EXAMPLE.b },
    'skillswap/notify': {
      user: { id: 'alice', email: 'alice@example.com', pushToken: 'push-alice' },
      title: 'Hello from SkillSwap',
      message: 'A test notification',
    },
  };
  console.log(`
n8n is running with n8n-nodes-strata (model: ${model})

  Editor:  ${rt.url}/   (first visit: create the owner account)
  Redis:   127.0.0.1:${rt.redis.port} (private to this run)
  Data:    ${dir}
  SkillSwap API: ${skillswap.apiUrl}${demo ? ` (demo; SMTP sink 127.0.0.1:${demo.smtpPort}; received: GET ${demo.apiUrl}/_state)` : ''}
  Webhook header: ${WEBHOOK_HEADER}: ${webhookKey}

Workflows:`);
  for (const f of bundledWorkflows()) {
    const wf = JSON.parse(readFileSync(f, 'utf8'));
    const triggers = wf.nodes
      .map((n) => {
        if (n.type === 'n8n-nodes-base.scheduleTrigger') {
          const r = n.parameters.rule.interval[0];
          return r.field === 'cronExpression' ? `schedule (cron ${r.expression})` : `schedule (every ${r[`${r.field}Interval`] ?? 1} ${r.field})`;
        }
        if (n.type === 'n8n-nodes-base.executeWorkflowTrigger') {
          return 'called by other workflows';
        }
        return null;
      })
      .filter((x) => x !== null);
    console.log(`  ${wf.name}  [${wf.id}]${triggers.length > 0 ? `: ${triggers.join(', ')}` : ''}`);
  }
  console.log('\nWebhooks:');
  for (const h of rt.webhooks) {
    console.log(`  ${h.workflow}\n    ${h.method} ${h.url}`);
    if (h.method === 'GET') {
      console.log(`    curl -s '${h.url}?id=<jobId from the POST>' -H '${WEBHOOK_HEADER}: ${webhookKey}'\n`);
      continue;
    }
    const body = JSON.stringify(examples[h.path] ?? {});
    console.log(
      `    curl -s -X ${h.method} '${h.url}' -H '${WEBHOOK_HEADER}: ${webhookKey}' -H 'Content-Type: application/json' \\\n      -d '${body}'\n`,
    );
  }
  console.log('Match score: run the curl twice: the first answer is computed (X-Strata-Cache: MISS), the second comes from Redis (HIT).');
  console.log('Jobs: the POST answers 202 with a jobId; the consumer runs every 10 s; then GET the job.');
  console.log('Ctrl-C stops everything.');
}

main().catch((e) => {
  console.error(`strata: ${e.message}`);
  process.exit(1);
});
