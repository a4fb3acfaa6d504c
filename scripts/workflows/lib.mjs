import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
export const uuid = (s) => { const h = createHash('sha1').update(s).digest('hex'); return `${h.slice(0,8)}-${h.slice(8,12)}-4${h.slice(13,16)}-a${h.slice(17,20)}-${h.slice(20,32)}`; };
export const REDIS = { redis: { id: 'StrataRedisLocal', name: 'Strata Redis' } };
export const HOOKAUTH = { httpHeaderAuth: { id: 'StrataWebhookKey', name: 'Strata Webhook Key' } };
export const APIAUTH = { httpHeaderAuth: { id: 'SkillSwapApiKey', name: 'SkillSwap API Key' } };
export const SMTP = { smtp: { id: 'StrataSmtp', name: 'Strata SMTP' } };
export function workflow(id, name, nodes, edges, extra = {}) {
  const connections = {};
  for (const [from, to, out = 0] of edges) {
    connections[from] ??= { main: [] };
    const m = connections[from].main;
    while (m.length <= out) m.push([]);
    m[out].push({ node: to, type: 'main', index: 0 });
  }
  for (const n of nodes) { n.id = uuid(`${id}/${n.name}`); if (n.type === 'n8n-nodes-base.webhook') n.webhookId = uuid(`${id}/${n.name}/hook`); }
  const names = new Set(nodes.map((n) => n.name));
  for (const [f, t] of edges) { if (!names.has(f) || !names.has(t)) throw new Error(`${id}: bad edge ${f} -> ${t}`); }
  return { id, name, nodes: nodes.map(({ id: i, ...n }) => ({ id: i, ...n })), connections, settings: { executionOrder: 'v1', callerPolicy: 'any', ...(extra.settings ?? {}) }, pinData: {}, active: false, meta: { templateCredsSetupCompleted: true }, tags: [] };
}
export const node = (name, type, typeVersion, position, parameters, more = {}) => ({ name, type: type.includes('.') ? type : `n8n-nodes-base.${type}`, typeVersion, position, parameters, ...more });
export const code = (name, position, jsCode, mode = 'runOnceForAllItems', more = {}) => node(name, 'code', 2, position, mode === 'runOnceForAllItems' ? { jsCode } : { mode, jsCode }, more);
export const redis = (name, position, parameters, more = {}) => node(name, 'redis', 1, position, parameters, { credentials: REDIS, ...more });
let cid = 0;
export function cond(leftValue, operator, rightValue = '') {
  const op = { equals: { type: 'string', operation: 'equals' }, numEquals: { type: 'number', operation: 'equals' }, true: { type: 'boolean', operation: 'true', singleValue: true }, notEmpty: { type: 'string', operation: 'notEmpty', singleValue: true }, false: { type: 'boolean', operation: 'false', singleValue: true } }[operator];
  return { id: uuid(`cond${cid++}${leftValue}${rightValue}`), leftValue, rightValue, operator: op };
}
export const conditions = (...cs) => ({ options: { caseSensitive: true, leftValue: '', typeValidation: 'loose', version: 2 }, conditions: cs, combinator: 'and' });
export const ifNode = (name, position, ...cs) => node(name, 'if', 2.2, position, { conditions: conditions(...cs), looseTypeValidation: true, options: {} });
export const switchNode = (name, position, field, keys, fallback) => node(name, 'switch', 3.2, position, {
  rules: { values: keys.map((k) => ({ conditions: conditions(cond(field, 'equals', k)), renameOutput: true, outputKey: k })) },
  looseTypeValidation: true,
  options: fallback ? { fallbackOutput: 'extra', renameFallbackOutput: fallback } : {},
});
export function set(name, position, fields, includeOtherFields = false, more = {}) {
  return node(name, 'set', 3.4, position, {
    mode: 'manual',
    assignments: { assignments: fields.map(([n, value, type = 'string']) => ({ id: uuid(`${name}/${n}`), name: n, value, type })) },
    includeOtherFields,
    options: {},
  }, more);
}
export const respond = (name, position, body, code = 200, headers) => node(name, 'respondToWebhook', 1.1, position, { respondWith: 'json', responseBody: body, options: { responseCode: code, ...(headers ? { responseHeaders: { entries: headers } } : {}) } });
export const webhook = (name, position, method, path, responseMode = 'responseNode') => node(name, 'webhook', 2.1, position, { httpMethod: method, path, authentication: 'headerAuth', responseMode, options: {} }, { credentials: HOOKAUTH });
export const execWf = (name, position, workflowId, mode, more = {}) => node(name, 'executeWorkflow', 1.2, position, {
  source: 'database', workflowId: { __rl: true, value: workflowId, mode: 'id' }, mode,
  workflowInputs: { mappingMode: 'defineBelow', value: {}, matchingColumns: [], schema: [], attemptToConvertTypes: false, convertFieldsToString: true },
  options: { waitForSubWorkflow: true },
}, more);
/** Execute Workflow, one sub-execution per item, not waited for: they run concurrently. */
export const execWfAsync = (name, position, workflowId, more = {}) => {
  const n = execWf(name, position, workflowId, 'each', more);
  n.parameters.options = { waitForSubWorkflow: false };
  return n;
};
export const subTrigger = (name, position) => node(name, 'executeWorkflowTrigger', 1.1, position, { inputSource: 'passthrough' });
export const save = (path, wf) => writeFileSync(path, JSON.stringify(wf, null, 2) + '\n');
export const sticky = (name, position, content, width = 520, height = 300) => node(name, 'stickyNote', 1, position, { content, width, height });
