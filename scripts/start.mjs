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
import { randomBytes } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import net from 'node:net';
import { join, resolve } from 'node:path';
import { DEFAULT_MODEL, ROOT, WEBHOOK_HEADER, freePort, launch } from './n8n-runtime.mjs';

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
  const rt = await launch({ dir, model, webhookKey, port, log });

  let stopping = false;
  const stop = async () => {
    if (stopping) {
      return;
    }
    stopping = true;
    console.log('\nstrata: stopping n8n and redis...');
    await rt.stop();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  rt.n8n.proc.on('exit', (code) => {
    if (!stopping) {
      console.error(`strata: n8n exited (${code}); last output:\n${rt.n8n.output()}`);
      rt.redis.stop().then(() => process.exit(1));
    }
  });

  const body = JSON.stringify(EXAMPLE);
  console.log(`
n8n is running with n8n-nodes-strata (model: ${model})

  Editor:  ${rt.url}/   (first visit: create the owner account)
  Redis:   127.0.0.1:${rt.redis.port} (private to this run)
  Data:    ${dir}
  Webhook header: ${WEBHOOK_HEADER}: ${webhookKey}
`);
  for (const h of rt.webhooks) {
    console.log(`  ${h.workflow}\n    ${h.method} ${h.url}`);
    console.log(
      `    curl -s -X ${h.method} '${h.url}' -H '${WEBHOOK_HEADER}: ${webhookKey}' -H 'Content-Type: application/json' \\\n      -d '${body}'\n`,
    );
  }
  console.log('Run the curl twice: the first answer is computed (X-Strata-Cache: MISS), the second comes from Redis (HIT).');
  console.log('Ctrl-C stops everything.');
}

main().catch((e) => {
  console.error(`strata: ${e.message}`);
  process.exit(1);
});
