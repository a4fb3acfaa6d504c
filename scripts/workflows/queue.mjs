import { sticky, workflow, node, code, redis, ifNode, cond, switchNode, set, respond, webhook, execWf, subTrigger, save } from './lib.mjs';
const W = new URL('../../workflows', import.meta.url).pathname;

// ------------------------------------------------------------- the queue ---
const validate = `// One job per request: {"type": "rank", "user", "candidates", "topN"?},
// {"type": "match", "a", "b"} or {"type": "icebreakers", "from", "to"}.
const b = $json.body;
const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const hasId = (p) => isObj(p) && p.id !== undefined && p.id !== null && String(p.id) !== '';
let error = '';
let payload = null;
if (!isObj(b)) {
  error = 'POST a JSON object';
} else if (b.type === 'rank') {
  if (!hasId(b.user) || !Array.isArray(b.candidates) || b.candidates.length === 0 || b.candidates.length > 500 || !b.candidates.every(hasId)) {
    error = 'a rank job needs "user" (a profile with an id) and "candidates" (1 to 500 profiles with ids)';
  } else {
    payload = { user: b.user, candidates: b.candidates, topN: Number.isInteger(b.topN) && b.topN >= 0 ? b.topN : 10 };
  }
} else if (b.type === 'match') {
  if (!hasId(b.a) || !hasId(b.b)) {
    error = 'a match job needs profiles "a" and "b", each with an id';
  } else {
    payload = { a: b.a, b: b.b };
  }
} else if (b.type === 'icebreakers') {
  if (!hasId(b.from) || !hasId(b.to)) {
    error = 'an icebreakers job needs profiles "from" and "to", each with an id';
  } else {
    payload = { from: b.from, to: b.to };
  }
} else {
  error = '"type" must be "rank", "match" or "icebreakers"';
}
if (error !== '') {
  return { json: { valid: false, error } };
}
const id = 'job-' + Date.now().toString(36) + '-' + Math.random().toString(36).slice(2, 10);
const job = { id, type: b.type, status: 'queued', attempts: 0, payload, createdAt: new Date().toISOString() };
return { json: { valid: true, id, job } };`;

const splitStale = `// Ids a crashed run left in the processing list: back to the queue tail,
// so they are claimed first. (Finished jobs among them are skipped by the worker.)
const ids = $input.first().json.ids || [];
return ids.map((id) => ({ json: { id } }));`;

const pickBatch = `// The oldest ids sit at the tail of the queue (LPUSH in, RPOP out).
const s = $('Consumer Settings').first().json;
const ids = $input.first().json.ids || [];
const batch = ids.slice(-Math.max(1, s.batchSize)).reverse();
return batch.map((id) => ({
  json: { id, maxAttempts: s.maxAttempts, backoffSeconds: s.backoffSeconds, resultTtlSeconds: s.resultTtlSeconds },
}));`;

const claimed = `// Hand the claimed batch (ids now in the processing list) to the worker.
return $('Pick Batch').all().map((item) => ({ json: item.json }));`;

const statusBody = `={{ (() => { const j = JSON.parse($json.job); delete j.payload; return j; })() }}`;

const queue = workflow('StrataRequestQueue', 'Strata: SkillSwap AI request queue', [
  sticky('About', [-620, -160], `## SkillSwap AI request queue
**POST** /webhook/skillswap/jobs (header auth: *Strata Webhook Key*) with
\`{"type": "rank", "user", "candidates", "topN"}\`, \`{"type": "match", "a", "b"}\` or \`{"type": "icebreakers", "from", "to"}\`
-> **202** \`{"jobId", "status": "queued"}\`; the job is stored as Redis key \`job:<id>\` and its id LPUSHed onto \`jobs:queue\`.

**GET** /webhook/skillswap/jobs?id=<jobId> -> \`{"status": "queued" | "retrying" | "done" | "dead", "attempts", "result", "error"}\`.

**Consumer** (every 10 s, one run at a time: \`INCR jobs:consumer-lock\`, the winner leases it with a TTL): puts ids a crashed run left in \`jobs:processing\` back on the queue, claims up to *batchSize* of the oldest ids (LPUSH to \`jobs:processing\` before the RPOP, so a crash loses no job), runs each in *Strata: SkillSwap AI request queue (worker)*, then clears the processing list and the lock. Failures are retried after *backoffSeconds* x 2^(attempt-1) and dead-lettered to \`jobs:dead\` after *maxAttempts*. Delivery is at least once: if a run breaks (n8n stops, Redis fails), its claimed ids stay in \`jobs:processing\` and run again once the lock lease (*lockTtlSeconds*) ends.`, 560, 600),
  webhook('Job Request', [0, 0], 'POST', 'skillswap/jobs'),
  code('Validate Job', [220, 0], validate, 'runOnceForEachItem'),
  ifNode('Valid Job?', [440, 0], cond('={{ $json.valid }}', 'true')),
  redis('Store Job', [660, -100], { operation: 'set', key: '=job:{{ $json.id }}', value: '={{ JSON.stringify($json.job) }}', keyType: 'string', expire: true, ttl: 604800 }),
  redis('Enqueue', [880, -100], { operation: 'push', list: 'jobs:queue', messageData: "={{ $('Validate Job').item.json.id }}", tail: false }),
  respond('Respond Accepted', [1100, -100], "={{ { jobId: $('Validate Job').item.json.id, status: 'queued', statusUrl: '/webhook/skillswap/jobs?id=' + $('Validate Job').item.json.id } }}", 202),
  respond('Respond Invalid', [660, 120], '={{ { error: $json.error } }}', 400),

  webhook('Job Status Request', [0, 400], 'GET', 'skillswap/jobs'),
  ifNode('Has Job Id?', [220, 400], cond("={{ /^[A-Za-z0-9_.:-]{1,80}$/.test(String($json.query.id ?? '')) }}", 'true')),
  redis('Load Job', [440, 320], { operation: 'get', propertyName: 'job', key: '=job:{{ $json.query.id }}', keyType: 'string', options: {} }),
  ifNode('Job Found?', [660, 320], cond("={{ $json.job ?? '' }}", 'notEmpty')),
  respond('Respond Status', [880, 240], statusBody, 200),
  respond('Respond Unknown Job', [880, 420], "={{ { error: 'no job ' + $('Job Status Request').item.json.query.id } }}", 404),
  respond('Respond Missing Id', [440, 520], "={{ { error: 'GET /webhook/skillswap/jobs?id=<job id>' } }}", 400),

  node('Every 10 Seconds', 'scheduleTrigger', 1.2, [0, 800], { rule: { interval: [{ field: 'seconds', secondsInterval: 10 }] } }),
  set('Consumer Settings', [220, 800], [
    ['batchSize', 5, 'number'],
    ['maxAttempts', 3, 'number'],
    ['backoffSeconds', 5, 'number'],
    ['resultTtlSeconds', 604800, 'number'],
    ['lockTtlSeconds', 300, 'number'],
  ]),
  // INCR is atomic: the run that gets 1 owns the lock and gives it a lease
  // (a TTL, so a crashed run's lock expires); the others only count up,
  // which keeps the TTL as it is.
  redis('Take Lock', [440, 800], { operation: 'incr', key: 'jobs:consumer-lock', expire: false }),
  ifNode('Lock Acquired?', [660, 800], cond("={{ Number($json['jobs:consumer-lock']) === 1 }}", 'true')),
  redis('Lease Lock', [880, 800], { operation: 'set', key: 'jobs:consumer-lock', value: '1', keyType: 'string', expire: true, ttl: "={{ $('Consumer Settings').first().json.lockTtlSeconds }}" }),
  redis('Read Processing', [1100, 700], { operation: 'get', propertyName: 'ids', key: 'jobs:processing', keyType: 'list', options: {} }),
  code('Split Stale', [1320, 700], splitStale),
  redis('Requeue Stale', [1540, 700], { operation: 'push', list: 'jobs:queue', messageData: '={{ $json.id }}', tail: true }),
  redis('Clear Processing', [1760, 700], { operation: 'delete', key: 'jobs:processing' }, { executeOnce: true }),
  redis('Read Queue', [1100, 900], { operation: 'get', propertyName: 'ids', key: 'jobs:queue', keyType: 'list', options: {} }),
  code('Pick Batch', [1320, 900], pickBatch),
  redis('Mark Processing', [1540, 900], { operation: 'push', list: 'jobs:processing', messageData: '={{ $json.id }}', tail: false }),
  redis('Claim', [1760, 900], { operation: 'pop', list: 'jobs:queue', tail: true, propertyName: 'claimed', options: {} }),
  code('Claimed Jobs', [1980, 900], claimed),
  execWf('Process Jobs', [2200, 900], 'StrataJobWorker', 'each'),
  redis('Release Processing', [1100, 1100], { operation: 'delete', key: 'jobs:processing' }),
  redis('Release Lock', [1320, 1100], { operation: 'delete', key: 'jobs:consumer-lock' }),
], [
  ['Job Request', 'Validate Job'], ['Validate Job', 'Valid Job?'], ['Valid Job?', 'Store Job', 0], ['Valid Job?', 'Respond Invalid', 1],
  ['Store Job', 'Enqueue'], ['Enqueue', 'Respond Accepted'],
  ['Job Status Request', 'Has Job Id?'], ['Has Job Id?', 'Load Job', 0], ['Has Job Id?', 'Respond Missing Id', 1], ['Load Job', 'Job Found?'],
  ['Job Found?', 'Respond Status', 0], ['Job Found?', 'Respond Unknown Job', 1],
  ['Every 10 Seconds', 'Consumer Settings'], ['Consumer Settings', 'Take Lock'], ['Take Lock', 'Lock Acquired?'],
  ['Lock Acquired?', 'Lease Lock', 0], ['Lease Lock', 'Read Processing'], ['Lease Lock', 'Read Queue'], ['Lease Lock', 'Release Processing'],
  ['Read Processing', 'Split Stale'], ['Split Stale', 'Requeue Stale'], ['Requeue Stale', 'Clear Processing'],
  ['Read Queue', 'Pick Batch'], ['Pick Batch', 'Mark Processing'], ['Mark Processing', 'Claim'], ['Claim', 'Claimed Jobs'], ['Claimed Jobs', 'Process Jobs'],
  ['Release Processing', 'Release Lock'],
]);
save(`${W}/request-queue.json`, queue);

// ------------------------------------------------------------ the worker ---
const planJob = `// One claimed job: skip finished ones, defer those still backing off.
const claim = $('Job Claimed').first().json;
let job = null;
try {
  job = JSON.parse($json.job);
} catch (e) {
  job = null;
}
if (job === null || typeof job !== 'object') {
  return { json: { action: 'skip', id: claim.id, reason: 'no job record (expired?)' } };
}
if (job.status === 'done' || job.status === 'dead') {
  return { json: { action: 'skip', id: claim.id, reason: 'already ' + job.status } };
}
if (job.nextAttemptAt && Date.parse(job.nextAttemptAt) > Date.now()) {
  return { json: { action: 'defer', id: claim.id } };
}
return { json: { action: String(job.type), id: claim.id, job, payload: job.payload || {} } };`;

const outcome = `// Success: done + result. Failure: retry with exponential backoff, or
// dead-letter after maxAttempts.
const claim = $('Job Claimed').first().json;
const job = $('Plan Job').first().json.job;
const now = new Date();
const attempts = (Number(job.attempts) || 0) + 1;
const error = $json.error ? String($json.error) : null;
const maxAttempts = Number(claim.maxAttempts) || 3;
const backoff = Number(claim.backoffSeconds) || 5;
let record;
if (error === null) {
  record = { ...job, status: 'done', attempts, result: $json, error: null, finishedAt: now.toISOString() };
  delete record.nextAttemptAt;
} else if (attempts >= maxAttempts) {
  record = { ...job, status: 'dead', attempts, error, deadAt: now.toISOString() };
  delete record.nextAttemptAt;
} else {
  const delay = backoff * Math.pow(2, attempts - 1);
  record = { ...job, status: 'retrying', attempts, error, nextAttemptAt: new Date(now.getTime() + delay * 1000).toISOString() };
}
return [{ json: { id: job.id, status: record.status, record } }];`;

const strata = (name, pos, operation, params) => node(name, 'n8n-nodes-strata.strata', 1, pos, {
  mode: 'embedded', modelPath: '', operation, ...params, options: { timeoutMs: 20000 },
}, { onError: 'continueRegularOutput' });

const worker = workflow('StrataJobWorker', 'Strata: SkillSwap AI request queue (worker)', [
  subTrigger('Job Claimed', [0, 300]),
  redis('Load Job', [220, 300], { operation: 'get', propertyName: 'job', key: '=job:{{ $json.id }}', keyType: 'string', options: {} }),
  code('Plan Job', [440, 300], planJob),
  switchNode('Route Job', [660, 300], '={{ $json.action }}', ['rank', 'match', 'icebreakers', 'defer', 'skip'], 'unknown'),
  strata('Rank Matches', [900, 0], 'rankMatches', { userProfile: '={{ $json.payload.user }}', candidates: '={{ $json.payload.candidates }}', topN: '={{ $json.payload.topN }}', scorer: 'model' }),
  strata('Match Score', [900, 160], 'matchScore', { profileA: '={{ $json.payload.a }}', profileB: '={{ $json.payload.b }}', scorer: 'model' }),
  strata('Icebreakers', [900, 320], 'icebreakers', { fromProfile: '={{ $json.payload.from }}', toProfile: '={{ $json.payload.to }}' }),
  redis('Requeue Deferred', [900, 480], { operation: 'push', list: 'jobs:queue', messageData: '={{ $json.id }}', tail: false }),
  node('Skip', 'noOp', 1, [900, 620], {}),
  code('Unknown Type', [900, 760], "return [{ json: { error: 'unknown job type ' + JSON.stringify($json.action) } }];"),
  code('Record Outcome', [1140, 300], outcome),
  redis('Save Job', [1360, 300], { operation: 'set', key: '=job:{{ $json.id }}', value: '={{ JSON.stringify($json.record) }}', keyType: 'string', expire: true, ttl: "={{ Number($('Job Claimed').first().json.resultTtlSeconds) || 604800 }}" }),
  switchNode('Route Outcome', [1580, 300], '={{ $json.status }}', ['retrying', 'dead']),
  redis('Requeue For Retry', [1800, 200], { operation: 'push', list: 'jobs:queue', messageData: '={{ $json.id }}', tail: false }),
  redis('Dead Letter', [1800, 400], { operation: 'push', list: 'jobs:dead', messageData: '={{ $json.id }}', tail: false }),
], [
  ['Job Claimed', 'Load Job'], ['Load Job', 'Plan Job'], ['Plan Job', 'Route Job'],
  ['Route Job', 'Rank Matches', 0], ['Route Job', 'Match Score', 1], ['Route Job', 'Icebreakers', 2], ['Route Job', 'Requeue Deferred', 3], ['Route Job', 'Skip', 4], ['Route Job', 'Unknown Type', 5],
  ['Rank Matches', 'Record Outcome'], ['Match Score', 'Record Outcome'], ['Icebreakers', 'Record Outcome'], ['Unknown Type', 'Record Outcome'],
  ['Record Outcome', 'Save Job'], ['Save Job', 'Route Outcome'], ['Route Outcome', 'Requeue For Retry', 0], ['Route Outcome', 'Dead Letter', 1],
]);
save(`${W}/request-queue-worker.json`, worker);
