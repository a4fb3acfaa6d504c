import { sticky, workflow, node, code, redis, ifNode, cond, conditions, switchNode, set, respond, webhook, execWf, execWfAsync, subTrigger, save, APIAUTH, SMTP } from './lib.mjs';
const W = new URL('../../workflows', import.meta.url).pathname;
const retry = { retryOnFail: true, maxTries: 3, waitBetweenTries: 1000, onError: 'continueRegularOutput' };

// ------------------------------------------------------ one channel send ---
// The send nodes retry (retryOnFail: n8n runs a node again while its first
// item is an error) and then continue with the error as data, so a failed
// channel is an outcome, not a failed run.
const ERR = "($json.error ? (typeof $json.error === 'string' ? $json.error : ($json.error.message || JSON.stringify($json.error))) : '')";
const sent = (name, pos, channel, extra) => set(name, pos, [
  ['channel', channel],
  ['ok', '={{ !$json.error }}', 'boolean'],
  ['error', `={{ ${ERR} }}`],
  ['notificationId', "={{ $('Channel Request').first().json.id }}"],
  ['userId', "={{ $('Channel Request').first().json.user.id }}"],
  ...extra,
]);
const channel = workflow('StrataNotifyChannel', 'Strata: SkillSwap notification (one channel)', [
  subTrigger('Channel Request', [0, 300]),
  switchNode('Which Channel', [220, 300], '={{ $json.channel }}', ['email', 'push', 'inApp'], 'unknown'),
  node('Send Email', 'emailSend', 2.1, [460, 100], {
    resource: 'email', operation: 'send',
    fromEmail: '={{ $json.mailFrom }}', toEmail: '={{ $json.user.email }}', subject: '={{ $json.title }}',
    emailFormat: 'text', text: '={{ $json.message }}', options: { appendAttribution: false },
  }, { credentials: SMTP, ...retry }),
  node('Send Push', 'httpRequest', 4.2, [460, 300], {
    method: 'POST', url: '={{ $json.pushUrl }}', sendBody: true, specifyBody: 'json',
    jsonBody: '={{ JSON.stringify({ to: $json.user.pushToken, title: $json.title, body: $json.message, data: $json.data }) }}',
    options: { timeout: 10000 },
  }, retry),
  node('Create In-App Notification', 'httpRequest', 4.2, [460, 500], {
    method: 'POST', url: '={{ $json.apiUrl }}/notifications', authentication: 'genericCredentialType', genericAuthType: 'httpHeaderAuth',
    sendBody: true, specifyBody: 'json',
    jsonBody: '={{ JSON.stringify({ userId: String($json.user.id), title: $json.title, message: $json.message, data: $json.data }) }}',
    options: { timeout: 10000 },
  }, { credentials: APIAUTH, ...retry }),
  set('Unknown Channel', [460, 700], [
    ['channel', '={{ $json.channel }}'],
    ['ok', '={{ false }}', 'boolean'],
    ['error', "={{ 'unknown channel ' + $json.channel }}"],
    ['notificationId', "={{ $('Channel Request').first().json.id }}"],
    ['userId', "={{ $('Channel Request').first().json.user.id }}"],
  ]),
  // the fan-out does not wait for this execution: it reads the outcome from Redis
  redis('Report Outcome', [940, 300], {
    operation: 'push', list: "=notify:outcomes:{{ $('Channel Request').first().json.batch }}",
    messageData: "={{ JSON.stringify({ deliveryId: $('Channel Request').first().json.deliveryId, channel: $json.channel, ok: $json.ok, error: $json.error || null }) }}",
    tail: true,
  }),
  sent('Email Sent', [700, 100], 'email', [['messageId', "={{ $json.messageId ?? '' }}"]]),
  sent('Push Sent', [700, 300], 'push', [['response', '={{ $json }}', 'object']]),
  sent('In-App Created', [700, 500], 'inApp', [['response', '={{ $json }}', 'object']]),
], [
  ['Channel Request', 'Which Channel'], ['Which Channel', 'Send Email', 0], ['Which Channel', 'Send Push', 1], ['Which Channel', 'Create In-App Notification', 2], ['Which Channel', 'Unknown Channel', 3],
  ['Send Email', 'Email Sent'], ['Send Push', 'Push Sent'], ['Create In-App Notification', 'In-App Created'],
  ['Email Sent', 'Report Outcome'], ['Push Sent', 'Report Outcome'], ['In-App Created', 'Report Outcome'], ['Unknown Channel', 'Report Outcome'],
]);
save(`${W}/notify-channel.json`, channel);

// --------------------------------------------------------------- fan-out ---
const fanOut = `// Each notification {user: {id, email, pushToken}, title, message, data}
// becomes one delivery per channel it can use. The webhook takes one
// notification, an array, or {"notifications": [...]}.
const out = [];
// the channel executions report to the Redis list notify:outcomes:<batch>
const batch = 'b-' + Date.now().toString(36) + '-' + Math.random().toString(36).slice(2, 10);
for (const item of $input.all()) {
  const s = item.json;
  const src = s.body !== undefined && s.headers !== undefined ? s.body : s;
  const list = Array.isArray(src) ? src : Array.isArray(src && src.notifications) ? src.notifications : [src];
  for (const n of list) {
    if (!n || typeof n !== 'object' || !n.user || n.user.id === undefined || n.user.id === null) {
      continue;
    }
    const id = n.id ? String(n.id) : 'ntf-' + Date.now().toString(36) + '-' + Math.random().toString(36).slice(2, 8);
    const base = {
      id, user: n.user, title: String(n.title || 'SkillSwap'), message: String(n.message || ''), data: n.data || {},
      apiUrl: s.apiUrl, pushUrl: s.pushUrl, mailFrom: s.mailFrom,
    };
    const channels = Array.isArray(n.channels) ? n.channels : ['email', 'push', 'inApp'];
    for (const channel of channels) {
      if (channel === 'email' && !n.user.email) continue;
      if (channel === 'push' && !n.user.pushToken) continue;
      out.push({ json: { ...base, channel, batch, deliveryId: batch + ':' + out.length } });
    }
  }
}
return out;`;

const waitState = `// Deliveries run concurrently, one execution each (Deliver does not wait):
// how many outcomes are expected, and until when.
const deliveries = $('Fan Out').all();
const s = $('Channel Settings').first().json;
return [{ json: { batch: deliveries[0].json.batch, expected: deliveries.length, deadline: Date.now() + (s.deliveryTimeoutSeconds || 60) * 1000 } }];`;

const outcomes = `// One outcome per delivery, matched by delivery id; a channel execution
// that reported nothing in time counts as failed.
const reported = new Map();
for (const s of $('Read Outcomes').first().json.outcomes || []) {
  try {
    const o = JSON.parse(s);
    reported.set(o.deliveryId, o);
  } catch (e) {
    // not an outcome
  }
}
const at = new Date().toISOString();
return $('Fan Out').all().map(({ json: d }) => {
  const o = reported.get(d.deliveryId);
  const ok = o !== undefined && o.ok === true && o.channel === d.channel;
  const error = ok ? null : o === undefined ? 'no outcome from the channel workflow in time' : String(o.error || 'delivery failed');
  return { json: { notificationId: d.id, channel: d.channel, userId: d.user ? d.user.id : null, ok, error, at } };
});`;

const summary = `const all = $('Delivery Outcomes').all().map((i) => i.json);
const sent = { email: 0, push: 0, inApp: 0 };
for (const o of all) {
  if (o.ok) sent[o.channel] = (sent[o.channel] || 0) + 1;
}
return [{ json: { deliveries: all.length, sent, failures: all.filter((o) => !o.ok) } }];`;

const notify = workflow('StrataNotify', 'Strata: SkillSwap notification fan-out', [
  sticky('About', [-620, 100], `## SkillSwap notification fan-out
Called by other workflows (Execute Workflow) with items, or **POST** /webhook/skillswap/notify (header auth: *Strata Webhook Key*) with one notification, an array, or \`{"notifications": [...]}\`:
\`{"user": {"id", "email", "pushToken"}, "title", "message", "data", "channels"?: ["email", "push", "inApp"]}\`

Each delivery (email over the *Strata SMTP* credential, push: POST $SKILLSWAP_PUSH_URL, in-app: POST $SKILLSWAP_API_URL/notifications with the *SkillSwap API Key* credential) runs in its own execution of *Strata: SkillSwap notification (one channel)*, all at once (*Deliver* does not wait; each channel reports its outcome to the Redis list \`notify:outcomes:<batch>\`, read here until all are in or *deliveryTimeoutSeconds* pass), retried 3 times; a channel that still fails is pushed to the Redis list \`notify:failures\` and listed in the answer, the others go out anyway.

The URLs come from n8n's environment (SKILLSWAP_API_URL, SKILLSWAP_PUSH_URL, SKILLSWAP_MAIL_FROM), which needs N8N_BLOCK_ENV_ACCESS_IN_NODE=false; or edit *Channel Settings*.`, 560, 420),
  subTrigger('Notification Request', [0, 200]),
  webhook('Notify Webhook', [0, 420], 'POST', 'skillswap/notify', 'lastNode'),
  set('Channel Settings', [240, 300], [
    ['apiUrl', "={{ $env.SKILLSWAP_API_URL || 'http://127.0.0.1:3000' }}"],
    ['pushUrl', "={{ $env.SKILLSWAP_PUSH_URL || (($env.SKILLSWAP_API_URL || 'http://127.0.0.1:3000') + '/push') }}"],
    ['mailFrom', "={{ $env.SKILLSWAP_MAIL_FROM || 'SkillSwap <matches@skillswap.test>' }}"],
    ['deliveryTimeoutSeconds', 60, 'number'],
  ], true),
  code('Fan Out', [480, 300], fanOut),
  execWfAsync('Deliver', [720, 300], 'StrataNotifyChannel', { onError: 'continueRegularOutput' }),
  code('Wait State', [960, 300], waitState),
  redis('Read Outcomes', [1200, 300], { operation: 'get', propertyName: 'outcomes', key: "=notify:outcomes:{{ $('Wait State').first().json.batch }}", keyType: 'list', options: {} }),
  ifNode('All Reported?', [1440, 300],
    cond("={{ ($json.outcomes || []).length >= $('Wait State').first().json.expected || Date.now() > $('Wait State').first().json.deadline }}", 'true')),
  node('Wait a Moment', 'wait', 1.1, [1440, 520], { resume: 'timeInterval', amount: 0.25, unit: 'seconds' }),
  code('Delivery Outcomes', [1680, 300], outcomes),
  node('Failed Deliveries', 'filter', 2.2, [1920, 200], { conditions: conditions(cond('={{ $json.ok }}', 'false')), looseTypeValidation: true, options: {} }),
  redis('Record Failure', [2160, 200], { operation: 'push', list: 'notify:failures', messageData: '={{ JSON.stringify($json) }}', tail: false }),
  redis('Clear Outcomes', [1920, 380], { operation: 'delete', key: "=notify:outcomes:{{ $('Wait State').first().json.batch }}" }, { executeOnce: true }),
  code('Summary', [1920, 560], summary),
], [
  ['Notification Request', 'Channel Settings'], ['Notify Webhook', 'Channel Settings'], ['Channel Settings', 'Fan Out'], ['Fan Out', 'Deliver'],
  ['Deliver', 'Wait State'], ['Wait State', 'Read Outcomes'], ['Read Outcomes', 'All Reported?'], ['All Reported?', 'Delivery Outcomes', 0], ['All Reported?', 'Wait a Moment', 1],
  ['Wait a Moment', 'Read Outcomes'],
  ['Delivery Outcomes', 'Failed Deliveries'], ['Delivery Outcomes', 'Clear Outcomes'], ['Delivery Outcomes', 'Summary'], ['Failed Deliveries', 'Record Failure'],
]);
save(`${W}/notify.json`, notify);

// ---------------------------------------------------------------- hourly ---
const pairUsers = `const users = ($('Fetch Users').first().json.users || []).filter((u) => u && u.id !== undefined && u.id !== null);
return users.map((u) => ({ json: { user: u, candidates: users.filter((c) => String(c.id) !== String(u.id)) } }));`;

const newMatches = `// Matches at or above the threshold that this user was not told about yet
// (the Redis set matches:notified holds "userId:matchId").
const s = $('Matching Settings').first().json;
const notified = new Set($('Read Notified').first().json.notified || []);
const users = new Map(($('Fetch Users').first().json.users || []).map((u) => [String(u.id), u]));
const out = [];
for (const { json: r } of $input.all()) {
  if (!r || !Array.isArray(r.matches)) continue;
  const user = users.get(String(r.userId));
  if (!user) continue;
  for (const m of r.matches) {
    if (!(m.score >= s.threshold)) continue;
    const pair = String(r.userId) + ':' + String(m.id);
    if (notified.has(pair)) continue;
    out.push({
      json: {
        pair,
        user: { id: user.id, name: user.name, email: user.email, pushToken: user.pushToken },
        title: 'New SkillSwap match: ' + m.name,
        message: m.name + ' looks like a great skill swap for you (score ' + m.score + '). ' + (m.reasons || []).slice(0, 2).join(' '),
        data: { type: 'match', matchId: m.id, score: m.score, source: m.source, rank: m.rank },
      },
    });
  }
}
return out;`;

const strataRank = node('Rank Matches', 'n8n-nodes-strata.strata', 1, [1320, 200], {
  mode: 'embedded', modelPath: '', operation: 'rankMatches', userProfile: '={{ $json.user }}', candidates: '={{ $json.candidates }}',
  topN: "={{ $('Matching Settings').first().json.topN }}", scorer: 'model', options: { timeoutMs: 20000 },
}, { onError: 'continueRegularOutput' });

const hourly = workflow('StrataHourlyMatching', 'Strata: SkillSwap hourly precomputed matching', [
  sticky('About', [-620, 100], `## SkillSwap hourly precomputed matching
At minute 0 of every hour: fetch the users (GET $SKILLSWAP_API_URL/users, *SkillSwap API Key* credential), rank every user against the others with the Strata node (model, rules as fallback: \`source: "rules"\`) in batches, cache each ranking as \`matches:<userId>\` with a TTL (*cacheTtlSeconds*), and notify matches scoring at least *threshold* that the user was not told about yet (Redis set \`matches:notified\`) through *Strata: SkillSwap notification fan-out* (a pair is remembered after that workflow ran, so a run that breaks before notifies it again next hour).

The API URL comes from n8n's environment (SKILLSWAP_API_URL), which needs N8N_BLOCK_ENV_ACCESS_IN_NODE=false; or edit *Matching Settings*.`, 560, 360),
  node('Every Hour', 'scheduleTrigger', 1.2, [0, 300], { rule: { interval: [{ field: 'cronExpression', expression: '0 * * * *' }] } }),
  set('Matching Settings', [220, 300], [
    ['apiUrl', "={{ $env.SKILLSWAP_API_URL || 'http://127.0.0.1:3000' }}"],
    ['batchSize', 10, 'number'],
    ['topN', 5, 'number'],
    ['threshold', 70, 'number'],
    ['cacheTtlSeconds', 7200, 'number'],
  ]),
  node('Fetch Users', 'httpRequest', 4.2, [440, 300], {
    method: 'GET', url: '={{ $json.apiUrl }}/users', authentication: 'genericCredentialType', genericAuthType: 'httpHeaderAuth', options: { timeout: 30000 },
  }, { credentials: APIAUTH, retryOnFail: true, maxTries: 3, waitBetweenTries: 2000 }),
  redis('Read Notified', [660, 300], { operation: 'get', propertyName: 'notified', key: 'matches:notified', keyType: 'sets', options: {} }, { executeOnce: true }),
  code('Pair Users', [880, 300], pairUsers),
  node('Loop Users', 'splitInBatches', 3, [1100, 300], { batchSize: "={{ $('Matching Settings').first().json.batchSize }}", options: {} }),
  strataRank,
  redis('Cache Matches', [1540, 200], {
    operation: 'set', key: "=matches:{{ $('Loop Users').item.json.user.id }}",
    value: "={{ JSON.stringify({ userId: $('Loop Users').item.json.user.id, matches: $json.matches ?? [], source: $json.source ?? null, fallbackReason: $json.fallbackReason ?? null, error: $json.error ?? null, computedAt: $now.toISO() }) }}",
    keyType: 'string', expire: true, ttl: "={{ $('Matching Settings').first().json.cacheTtlSeconds }}",
  }),
  code('New High Matches', [1320, 480], newMatches),
  execWf('Notify', [1540, 420], 'StrataNotify', 'once'),
  redis('Remember Notified', [1540, 600], { operation: 'set', key: 'matches:notified', value: "={{ $('New High Matches').item.json.pair }}", keyType: 'sets', expire: false }),
], [
  ['Every Hour', 'Matching Settings'], ['Matching Settings', 'Fetch Users'], ['Fetch Users', 'Read Notified'], ['Read Notified', 'Pair Users'], ['Pair Users', 'Loop Users'],
  ['Loop Users', 'New High Matches', 0], ['Loop Users', 'Rank Matches', 1], ['Rank Matches', 'Cache Matches'], ['Cache Matches', 'Loop Users'],
  ['New High Matches', 'Notify'], ['New High Matches', 'Remember Notified'],
]);
save(`${W}/hourly-matching.json`, hourly);
