// The embedded engine as the node sees it: the package's JS API
// (node/lib/index.js over build/Release/strata.node) and the rule-based
// fallbacks (node/rules/*.js), loaded at run time from the package root, and
// a cache of loaded models shared by every execution in this n8n process.
//
// Both are plain CommonJS files shipped beside dist/ (package.json "files"),
// not compiled into it: the addon loader finds build/Release relative to its
// own file, so it must run from the package root.
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface ChatMessage {
	role: string;
	content: string;
}

export interface GenerateOptions {
	maxTokens?: number;
	temperature?: number;
	topK?: number;
	topP?: number;
	repeatPenalty?: number;
	seed?: number;
	json?: boolean;
	stop?: string[];
	signal?: AbortSignal;
	/** Called with each generated piece of text (return false to stop). */
	onToken?: (piece: string) => boolean | void;
}

export interface GenerateResult {
	text: string;
	promptTokens: number;
	genTokens: number;
	stopReason: string;
	timings: { promptMs: number; genMs: number; promptTokensPerSec: number; genTokensPerSec: number };
}

export interface Model {
	readonly info: { arch?: string; name?: string; contextSize?: number; [k: string]: unknown };
	readonly closed: boolean;
	generate(prompt: string | ChatMessage[], options?: GenerateOptions): Promise<GenerateResult>;
	applyChatTemplate(messages: ChatMessage[], options?: { addGenerationPrompt?: boolean }): string;
	close(): Promise<void>;
}

export interface LoadOptions {
	threads?: number;
	contextSize?: number;
	mmap?: boolean;
}

interface EngineModule {
	loadModel(modelPath: string, options?: LoadOptions): Promise<Model>;
}

export interface Profile {
	[key: string]: unknown;
}

export interface RuleMatch {
	score: number;
	reasons: string[];
	subscores: { mutual: number; overlap: number; completion: number };
	source: 'rules';
	details: { aTeachesB: string[]; bTeachesA: string[]; sharedSkills: string[]; commonAvailability: string[] };
}

export interface RankedRuleMatch extends RuleMatch {
	id: unknown;
	name: string;
	index: number;
	rank: number;
}

interface MatchRules {
	matchScore(a: unknown, b: unknown): RuleMatch;
	rankMatches(user: unknown, candidates: unknown): RankedRuleMatch[];
	describeProfile(p: unknown): string;
	normalizeProfile(p: unknown): { id: unknown; name: string; offered: Map<string, { name: string }>; wanted: Map<string, { name: string }> };
}

export interface ModerationVerdict {
	label: 'ok' | 'inappropriate' | 'scam';
	reasons: string[];
	source: 'rules';
}

interface ModerationRules {
	moderateMessage(text: string): ModerationVerdict;
}

const PACKAGE_NAME = 'n8n-nodes-strata';

let rootCache: string | null = null;

/** The installed package's root: the nearest folder up with our package.json. */
export function packageRoot(): string {
	if (rootCache !== null) {
		return rootCache;
	}
	let dir = __dirname;
	for (;;) {
		const manifest = path.join(dir, 'package.json');
		if (fs.existsSync(manifest)) {
			try {
				const pkg = JSON.parse(fs.readFileSync(manifest, 'utf8')) as { name?: string };
				if (pkg.name === PACKAGE_NAME) {
					rootCache = dir;
					return dir;
				}
			} catch {
				// not ours: keep looking
			}
		}
		const up = path.dirname(dir);
		if (up === dir) {
			throw new Error(`strata: cannot find the ${PACKAGE_NAME} package root above ${__dirname}`);
		}
		dir = up;
	}
}

function load<T>(relative: string): T {
	// eslint-disable-next-line @typescript-eslint/no-require-imports
	return require(path.join(packageRoot(), relative)) as T;
}

export function engine(): EngineModule {
	return load<EngineModule>('node/lib/index.js');
}

export function matchRules(): MatchRules {
	return load<MatchRules>('node/rules/match.js');
}

export function moderationRules(): ModerationRules {
	return load<ModerationRules>('node/rules/moderate.js');
}

/**
 * The model `npm start` and the tests use when the node's Model Path is
 * empty: $STRATA_MODEL, else ../shared/models/stories260K.gguf next to the
 * source checkout (a 260K-parameter test model: fluent nonsense, but real).
 */
export function defaultModelPath(): string {
	const env = process.env.STRATA_MODEL;
	if (typeof env === 'string' && env.trim() !== '') {
		return env.trim();
	}
	return path.resolve(packageRoot(), '..', 'shared', 'models', 'stories260K.gguf');
}

// One loaded model per (path, load options) for the life of the n8n
// process; executions share it (the Model queues their calls, so one
// context serves them in turn). A failed load is forgotten so that the next
// execution retries (the file may have appeared meanwhile). Nothing is
// evicted: each distinct path/threads/context size stays loaded.
const models = new Map<string, Promise<Model>>();

function cacheKey(modelPath: string, options: LoadOptions): string {
	return JSON.stringify([path.resolve(modelPath), options.threads ?? 0, options.contextSize ?? 0, options.mmap ?? true]);
}

export function getModel(modelPath: string, options: LoadOptions): Promise<Model> {
	const key = cacheKey(modelPath, options);
	const cached = models.get(key);
	if (cached !== undefined) {
		return cached;
	}
	const loading = (async () => {
		if (!fs.existsSync(modelPath)) {
			const err = new Error(`model file not found: ${modelPath}`) as Error & { code?: string };
			err.code = 'STRATA_ERR_MODEL_MISSING';
			throw err;
		}
		return engine().loadModel(modelPath, options);
	})();
	models.set(key, loading);
	loading.catch(() => {
		if (models.get(key) === loading) {
			models.delete(key);
		}
	});
	return loading;
}

/** Close and forget every cached model (tests; n8n itself never needs it). */
export async function closeAllModels(): Promise<void> {
	const all = [...models.values()];
	models.clear();
	for (const p of all) {
		try {
			const m = await p;
			await m.close();
		} catch {
			// a failed load has nothing to close
		}
	}
}

export class TimeoutError extends Error {
	code = 'STRATA_ERR_TIMEOUT';
}

export class CancelledError extends Error {
	code = 'STRATA_ERR_CANCELLED';
}

/**
 * A time budget for one item: the deadline (ms since epoch, Infinity for
 * none) and an AbortSignal that fires at the deadline or when the execution
 * is cancelled, whichever comes first.
 */
export class Budget {
	readonly deadline: number;

	private readonly controller = new AbortController();

	private timer: ReturnType<typeof setTimeout> | null = null;

	private onCancel: (() => void) | null = null;

	timedOut = false;

	constructor(
		timeoutMs: number,
		private readonly cancel?: AbortSignal,
	) {
		this.deadline = timeoutMs > 0 ? Date.now() + timeoutMs : Infinity;
		if (timeoutMs > 0) {
			this.timer = setTimeout(() => {
				this.timedOut = true;
				this.controller.abort();
			}, timeoutMs);
		}
		if (cancel !== undefined) {
			if (cancel.aborted) {
				this.controller.abort();
			} else {
				this.onCancel = () => this.controller.abort();
				cancel.addEventListener('abort', this.onCancel, { once: true });
			}
		}
	}

	get signal(): AbortSignal {
		return this.controller.signal;
	}

	get cancelled(): boolean {
		return this.cancel?.aborted === true;
	}

	/** Throws CancelledError or TimeoutError when the budget is spent. */
	check(): void {
		if (this.cancelled) {
			throw new CancelledError('the execution was cancelled');
		}
		if (this.timedOut || Date.now() >= this.deadline) {
			this.timedOut = true;
			throw new TimeoutError('the time budget (timeoutMs) ran out');
		}
	}

	/** p, or a rejection when the budget runs out first (p keeps running). */
	race<T>(p: Promise<T>): Promise<T> {
		if (this.signal.aborted) {
			p.catch(() => undefined);
			return Promise.reject(this.cancelled ? new CancelledError('the execution was cancelled') : new TimeoutError('the time budget (timeoutMs) ran out'));
		}
		return new Promise<T>((resolve, reject) => {
			const onAbort = () => {
				reject(this.cancelled ? new CancelledError('the execution was cancelled') : new TimeoutError('the time budget (timeoutMs) ran out'));
			};
			this.signal.addEventListener('abort', onAbort, { once: true });
			p.then(
				(v) => {
					this.signal.removeEventListener('abort', onAbort);
					resolve(v);
				},
				(e: unknown) => {
					this.signal.removeEventListener('abort', onAbort);
					reject(e);
				},
			);
		});
	}

	dispose(): void {
		if (this.timer !== null) {
			clearTimeout(this.timer);
			this.timer = null;
		}
		if (this.onCancel !== null && this.cancel !== undefined) {
			this.cancel.removeEventListener('abort', this.onCancel);
			this.onCancel = null;
		}
	}
}

// ------------------------------------------------------------- worker ---

/** The client of node/lib/worker.js, as far as the node uses it. */
export interface WorkerClient {
	readonly url: string;
	readonly closed: boolean;
	generate(prompt: string | ChatMessage[], options?: GenerateOptions): Promise<GenerateResult>;
	health(options?: { timeoutMs?: number }): Promise<{ status: string; version: string; protocol: number; model: Model['info'] }>;
	close(): Promise<void>;
}

interface WorkerModule {
	connectWorker(url: string, options?: { token?: string; timeoutMs?: number; tls?: WorkerTls }): WorkerClient;
}

export function workerModule(): WorkerModule {
	return load<WorkerModule>('node/lib/worker.js');
}

/** Per-request transport timeout of the cached clients (the item's budget cuts earlier). */
export const WORKER_REQUEST_TIMEOUT_MS = 120000;

/** How long an item waits for the worker's health reply before it counts as down. */
export const WORKER_HEALTH_TIMEOUT_MS = 3000;

/** TLS settings of a tls+tcp:// worker (PEM strings), as node/lib/worker.js takes them. */
export interface WorkerTls {
	ca?: string;
	cert?: string;
	key?: string;
}

/** The credential's TLS fields, for tls+tcp:// URLs only (undefined otherwise). */
export function workerTls(url: string, data: Record<string, unknown>): WorkerTls | undefined {
	if (!url.startsWith('tls+tcp://')) {
		return undefined;
	}
	const tls: WorkerTls = {};
	for (const [field, name] of [['tlsCa', 'ca'], ['tlsCert', 'cert'], ['tlsPrivateKey', 'key']] as const) {
		const v = data[field];
		if (typeof v === 'string' && v.trim() !== '') {
			tls[name] = v;
		}
	}
	return tls;
}

// One client (one nng connection, redialled by itself after a worker
// restart) per (url, token, tls) for the life of the n8n process, like the models.
const workers = new Map<string, WorkerClient>();

export function getWorkerClient(url: string, token: string, tls?: WorkerTls): WorkerClient {
	const key = JSON.stringify([url, token, tls ?? null]);
	const cached = workers.get(key);
	if (cached !== undefined && !cached.closed) {
		return cached;
	}
	const client = workerModule().connectWorker(url, {
		token: token !== '' ? token : undefined,
		timeoutMs: WORKER_REQUEST_TIMEOUT_MS,
		tls,
	});
	workers.set(key, client);
	return client;
}

/** Close and forget every cached worker client (tests). */
export async function closeAllWorkers(): Promise<void> {
	const all = [...workers.values()];
	workers.clear();
	for (const c of all) {
		await c.close();
	}
}

function workerError(url: string, err: unknown): Error {
	const e = err as Error & { code?: string };
	const detail = e instanceof Error ? e.message : String(err);
	let text: string;
	if (e.code === 'STRATA_ERR_AUTH') {
		text = `Strata worker at ${url} refused the token (check the credential's Auth Token): ${detail}`;
	} else if (e.code === 'STRATA_ERR_TIMEOUT') {
		text = url.startsWith('tls+tcp://')
			? `Strata worker at ${url} did not answer (is it running and reachable, or did the TLS handshake fail? ` +
				"check the credential's TLS CA Certificate, the name or IP in the worker's certificate, and the client " +
				`certificate if the worker requires one): ${detail}`
			: `Strata worker at ${url} did not answer (is it running and reachable?): ${detail}`;
	} else {
		text = `Strata worker at ${url}: ${detail}`;
	}
	const out = new Error(text) as Error & { code?: string };
	out.code = e.code;
	return out;
}

/**
 * The worker as a Model for the operations: checks that it answers (a
 * health round trip, so a worker that is down or refuses the token fails
 * here, before any generation), then forwards generate. Chat messages go
 * to the worker as messages: it applies the model's template ("plain" for
 * models without one), so applyChatTemplate only says "templated".
 */
export async function workerModel(client: WorkerClient): Promise<Model> {
	let health: Awaited<ReturnType<WorkerClient['health']>>;
	try {
		health = await client.health({ timeoutMs: WORKER_HEALTH_TIMEOUT_MS });
	} catch (err) {
		throw workerError(client.url, err);
	}
	return {
		info: health.model ?? {},
		get closed() {
			return client.closed;
		},
		async generate(prompt, options) {
			try {
				return await client.generate(prompt, options);
			} catch (err) {
				throw workerError(client.url, err);
			}
		},
		applyChatTemplate: () => '',
		// the client is shared by every execution: closing is the cache's job
		close: async () => undefined,
	};
}

/** A real check of a worker and token, for the credential test. */
export async function testWorker(
	url: string,
	token: string,
	tls?: WorkerTls,
): Promise<{ status: 'OK' | 'Error'; message: string }> {
	let client: WorkerClient;
	try {
		client = workerModule().connectWorker(url, {
			token: token !== '' ? token : undefined,
			timeoutMs: WORKER_HEALTH_TIMEOUT_MS,
			tls,
		});
	} catch (err) {
		return { status: 'Error', message: (err as Error).message };
	}
	try {
		const h = await client.health();
		if (h.status !== 'ok') {
			return { status: 'Error', message: `Strata worker at ${url} reports status "${h.status}"` };
		}
		const name = typeof h.model?.name === 'string' ? h.model.name : 'a model';
		return { status: 'OK', message: `Strata worker ${h.version} serving ${name}` };
	} catch (err) {
		return { status: 'Error', message: workerError(url, err).message };
	} finally {
		await client.close();
	}
}
