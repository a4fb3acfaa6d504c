// What each operation of the Strata node does with one item, apart from
// n8n: prompts, the engine call, reading the answer, and the rule-based
// fallbacks. Strata.node.ts maps parameters in and results out.
import type { Budget, ChatMessage, GenerateOptions, GenerateResult, Model, RankedRuleMatch, RuleMatch } from './engine';
import { CancelledError, TimeoutError, matchRules, moderationRules } from './engine';
import { extractJson, findKey, readScore, readStrings } from './parse';

export interface OperationContext {
	/** The cached model for this item's path and load options. */
	loadModel: () => Promise<Model>;
	modelPath: string;
	budget: Budget;
	/** Sampling options the user set; operation defaults fill the rest. */
	sampling: GenerateOptions;
	/** Each generated piece of text as it comes (streaming to n8n or LangChain). */
	onToken?: (piece: string) => void;
}

export interface ModelMeta {
	path: string;
	stopReason: string;
	promptTokens: number;
	genTokens: number;
	genTokensPerSec: number;
}

function meta(ctx: OperationContext, r: GenerateResult): ModelMeta {
	return {
		path: ctx.modelPath,
		stopReason: r.stopReason,
		promptTokens: r.promptTokens,
		genTokens: r.genTokens,
		genTokensPerSec: Math.round(r.timings.genTokensPerSec * 10) / 10,
	};
}

function message(err: unknown): string {
	return err instanceof Error ? err.message : String(err);
}

// Models without a chat template (base models, the stories test model) get
// the messages as plain text; the engine only templates arrays.
function promptFor(model: Model, messages: ChatMessage[]): string | ChatMessage[] {
	try {
		model.applyChatTemplate(messages);
		return messages;
	} catch {
		return messages.map((m) => (m.role === 'user' || m.role === 'system' ? m.content : `${m.role}: ${m.content}`)).join('\n\n') + '\n';
	}
}

/**
 * Run messages through the model within the budget. A generation cut by the
 * budget throws TimeoutError (or CancelledError) unless keepPartial is set,
 * in which case the partial result comes back with stopReason 'timeout'.
 */
async function complete(
	ctx: OperationContext,
	messages: ChatMessage[] | string,
	defaults: GenerateOptions,
	keepPartial = false,
): Promise<GenerateResult> {
	const model = await ctx.budget.race(ctx.loadModel());
	ctx.budget.check();
	const prompt = typeof messages === 'string' ? messages : promptFor(model, messages);
	const options: GenerateOptions = { ...defaults, ...ctx.sampling, json: defaults.json ?? ctx.sampling.json, signal: ctx.budget.signal };
	if (ctx.onToken !== undefined) {
		const onToken = ctx.onToken;
		options.onToken = (piece) => {
			try {
				onToken(piece);
			} catch {
				// a listener's failure must not stop the generation
			}
		};
	}
	const r = await model.generate(prompt, options);
	if (r.stopReason === 'cancelled') {
		if (ctx.budget.cancelled) {
			throw new CancelledError('the execution was cancelled');
		}
		if (!keepPartial) {
			throw new TimeoutError('the time budget (timeoutMs) ran out during generation');
		}
		return { ...r, stopReason: 'timeout' };
	}
	return r;
}

function fallbackReason(err: unknown): string {
	if (err instanceof CancelledError) {
		throw err;
	}
	if (err instanceof TimeoutError) {
		return `timeout: ${err.message}`;
	}
	return `model unavailable: ${message(err)}`;
}

// ------------------------------------------------------------- generate ---

export interface TextResult {
	text: string;
	json?: unknown;
	stopReason: string;
	promptTokens: number;
	genTokens: number;
	timings: GenerateResult['timings'];
}

function textResult(r: GenerateResult, json: boolean): TextResult {
	const out: TextResult = {
		text: r.text,
		stopReason: r.stopReason,
		promptTokens: r.promptTokens,
		genTokens: r.genTokens,
		timings: r.timings,
	};
	if (json) {
		out.json = extractJson(r.text) ?? null;
	}
	return out;
}

export async function generate(ctx: OperationContext, prompt: string): Promise<TextResult> {
	const r = await complete(ctx, prompt, { maxTokens: 256 }, true);
	return textResult(r, ctx.sampling.json === true);
}

export async function chat(ctx: OperationContext, messages: ChatMessage[]): Promise<TextResult> {
	const r = await complete(ctx, messages, { maxTokens: 256 }, true);
	return textResult(r, ctx.sampling.json === true);
}

// ---------------------------------------------------------- match score ---

export interface MatchResult {
	score: number;
	reasons: string[];
	subscores: RuleMatch['subscores'];
	source: 'model' | 'rules';
	ruleScore: number;
	details: RuleMatch['details'];
	fallbackReason?: string;
	model?: ModelMeta;
}

const MATCH_SYSTEM =
	'You judge how well two people fit for a skill exchange: each should be able to teach the other something they want to learn. ' +
	'Answer with JSON only: {"score": <0-100>, "reasons": ["<short reason>", "<short reason>"]}.';

function matchMessages(describeA: string, describeB: string, rules: RuleMatch): ChatMessage[] {
	const hints = [
		`A can teach B: ${rules.details.aTeachesB.join(', ') || 'nothing'}`,
		`B can teach A: ${rules.details.bTeachesA.join(', ') || 'nothing'}`,
	].join('. ');
	return [
		{ role: 'system', content: MATCH_SYSTEM },
		{ role: 'user', content: `Person A: ${describeA}\nPerson B: ${describeB}\nFacts: ${hints}.` },
	];
}

function fromRules(rules: RuleMatch, reason?: string): MatchResult {
	const out: MatchResult = {
		score: rules.score,
		reasons: rules.reasons,
		subscores: rules.subscores,
		source: 'rules',
		ruleScore: rules.score,
		details: rules.details,
	};
	if (reason !== undefined) {
		out.fallbackReason = reason;
	}
	return out;
}

async function modelMatch(ctx: OperationContext, a: unknown, b: unknown, rules: RuleMatch): Promise<MatchResult> {
	const rulesMod = matchRules();
	let r: GenerateResult;
	try {
		r = await complete(ctx, matchMessages(rulesMod.describeProfile(a), rulesMod.describeProfile(b), rules), {
			json: true,
			maxTokens: 96,
			temperature: 0,
		});
	} catch (err) {
		return fromRules(rules, fallbackReason(err));
	}
	const parsed = extractJson(r.text);
	const score = readScore(findKey(parsed, ['score', 'compatibility', 'match', 'rating']));
	if (score === undefined) {
		return { ...fromRules(rules, 'model answer had no usable score'), model: meta(ctx, r) };
	}
	const reasons = readStrings(findKey(parsed, ['reasons', 'reason', 'why', 'explanation']), 5);
	return {
		score,
		reasons: reasons.length > 0 ? reasons : rules.reasons,
		subscores: rules.subscores,
		source: 'model',
		ruleScore: rules.score,
		details: rules.details,
		model: meta(ctx, r),
	};
}

export type Scorer = 'model' | 'rules';

export async function matchScore(ctx: OperationContext, a: unknown, b: unknown, scorer: Scorer): Promise<MatchResult> {
	const rules = matchRules().matchScore(a, b);
	if (scorer === 'rules') {
		return fromRules(rules);
	}
	return modelMatch(ctx, a, b, rules);
}

// --------------------------------------------------------- rank matches ---

export interface RankedMatch extends MatchResult {
	id: unknown;
	name: string;
	rank: number;
}

export interface RankResult {
	userId: unknown;
	matches: RankedMatch[];
	source: 'model' | 'rules' | 'mixed';
	fallbackReason?: string;
}

/**
 * Candidates scored by the model in the rules' order (best first), so that
 * when the budget runs out the unscored tail is the least promising part;
 * it keeps its rule scores. Then sorted by final score.
 */
export async function rankMatches(
	ctx: OperationContext,
	user: unknown,
	candidates: unknown[],
	scorer: Scorer,
	topN: number,
): Promise<RankResult> {
	const ranked: RankedRuleMatch[] = matchRules().rankMatches(user, candidates);
	let stopReason: string | undefined;
	const results: RankedMatch[] = [];
	for (const m of ranked) {
		const rule: RuleMatch = { score: m.score, reasons: m.reasons, subscores: m.subscores, source: 'rules', details: m.details };
		let res: MatchResult;
		if (scorer === 'rules') {
			res = fromRules(rule);
		} else if (stopReason !== undefined) {
			res = fromRules(rule, stopReason);
		} else {
			res = await modelMatch(ctx, user, candidates[m.index], rule);
			if (res.fallbackReason !== undefined && !res.fallbackReason.startsWith('model answer')) {
				// unavailable or out of time: the same holds for every later candidate
				stopReason = res.fallbackReason;
			}
		}
		results.push({ ...res, id: m.id, name: m.name, rank: 0 });
	}
	results.sort((x, y) => y.score - x.score || y.ruleScore - x.ruleScore);
	results.forEach((r, i) => {
		r.rank = i + 1;
	});
	const sources = new Set(results.map((r) => r.source));
	const out: RankResult = {
		userId: matchRules().normalizeProfile(user).id,
		matches: topN > 0 ? results.slice(0, topN) : results,
		source: sources.size === 1 ? [...sources][0] : sources.size === 0 ? scorer : 'mixed',
	};
	if (stopReason !== undefined) {
		out.fallbackReason = stopReason;
	}
	return out;
}

// ---------------------------------------------------------- icebreakers ---

export interface IcebreakerResult {
	icebreakers: string[];
	source: 'model' | 'rules' | 'mixed';
	fallbackReason?: string;
	model?: ModelMeta;
}

/** Three openers from the rules' facts: what A can teach, learn, and when. */
export function templateIcebreakers(from: unknown, to: unknown): string[] {
	const rules = matchRules();
	const m = rules.matchScore(from, to);
	const target = rules.normalizeProfile(to);
	const name = target.name !== '' ? target.name : 'there';
	const out: string[] = [];
	out.push(
		m.details.aTeachesB.length > 0
			? `Hi ${name}! I saw you want to learn ${m.details.aTeachesB[0]} - I'd be glad to help.`
			: `Hi ${name}! Your profile caught my eye.`,
	);
	const offered = [...target.offered.values()].map((s) => s.name);
	out.push(
		m.details.bTeachesA.length > 0
			? `Would you be up for teaching me ${m.details.bTeachesA[0]} in exchange?`
			: offered.length > 0
				? `I'd love to hear how you got into ${offered[0]}.`
				: 'What are you hoping to learn on SkillSwap?',
	);
	out.push(
		m.details.commonAvailability.length > 0
			? `We're both free ${m.details.commonAvailability[0]} - want to set up a first session then?`
			: 'When are you usually free for a session?',
	);
	return out;
}

export async function icebreakers(ctx: OperationContext, from: unknown, to: unknown): Promise<IcebreakerResult> {
	const rules = matchRules();
	const messages: ChatMessage[] = [
		{
			role: 'system',
			content:
				'You write friendly, specific conversation starters for a skill-exchange app. ' +
				'Answer with JSON only: {"icebreakers": ["<starter>", "<starter>", "<starter>"]}.',
		},
		{
			role: 'user',
			content: `Write 3 opening messages from ${rules.describeProfile(from)}\nto ${rules.describeProfile(to)}`,
		},
	];
	const templates = templateIcebreakers(from, to);
	let r: GenerateResult;
	try {
		r = await complete(ctx, messages, { json: true, maxTokens: 192, temperature: 0.7 });
	} catch (err) {
		return { icebreakers: templates, source: 'rules', fallbackReason: fallbackReason(err) };
	}
	const parsed = extractJson(r.text);
	const found = readStrings(findKey(parsed, ['icebreakers', 'starters', 'messages']) ?? parsed, 3).filter(
		(s) => s.length >= 8 && s.length <= 400,
	);
	const list = [...found, ...templates.slice(found.length)].slice(0, 3);
	const out: IcebreakerResult = {
		icebreakers: list,
		source: found.length >= 3 ? 'model' : found.length === 0 ? 'rules' : 'mixed',
		model: meta(ctx, r),
	};
	if (found.length < 3) {
		out.fallbackReason = `model gave ${found.length} usable starter(s)`;
	}
	return out;
}

// ---------------------------------------------------- skill description ---

export interface ImproveResult {
	skill: string;
	original: string;
	improved: string;
	changed: boolean;
	model: ModelMeta;
}

export async function improveSkill(ctx: OperationContext, skill: string, description: string, level: string): Promise<ImproveResult> {
	const messages: ChatMessage[] = [
		{
			role: 'system',
			content:
				'You rewrite skill descriptions for a skill-exchange profile: clear, friendly, concrete about what a learner gets, ' +
				'at most three sentences, no preamble. Answer with the new description only.',
		},
		{
			role: 'user',
			content: `Skill: ${skill}${level !== '' ? ` (${level})` : ''}\nDescription: ${description || '(none yet)'}`,
		},
	];
	const r = await complete(ctx, messages, { maxTokens: 160, temperature: 0.5 });
	let text = r.text.trim().replace(/^(improved description|description)\s*:\s*/i, '');
	if (/^".*"$/s.test(text)) {
		text = text.slice(1, -1).trim();
	}
	const improved = text !== '' ? text : description;
	return { skill, original: description, improved, changed: improved !== description, model: meta(ctx, r) };
}

// ------------------------------------------------------------ moderation ---

export type ModerationLabel = 'ok' | 'inappropriate' | 'scam';

export interface ModerationResult {
	label: ModerationLabel;
	reasons: string[];
	source: 'model' | 'rules';
	ruleLabel: ModerationLabel;
	ruleReasons: string[];
	fallbackReason?: string;
	model?: ModelMeta;
}

function readLabel(v: unknown): ModerationLabel | undefined {
	if (typeof v !== 'string') {
		return undefined;
	}
	const s = v.trim().toLowerCase();
	if (s === 'ok' || s === 'safe' || s === 'fine' || s === 'allowed') {
		return 'ok';
	}
	if (s.includes('scam') || s.includes('fraud') || s.includes('spam')) {
		return 'scam';
	}
	if (s.includes('inappropriate') || s.includes('abus') || s.includes('offensive') || s.includes('harass')) {
		return 'inappropriate';
	}
	return undefined;
}

export async function moderate(ctx: OperationContext, text: string, scorer: Scorer): Promise<ModerationResult> {
	const rules = moderationRules().moderateMessage(text);
	const base = { ruleLabel: rules.label, ruleReasons: rules.reasons };
	if (scorer === 'rules') {
		return { label: rules.label, reasons: rules.reasons, source: 'rules', ...base };
	}
	const messages: ChatMessage[] = [
		{
			role: 'system',
			content:
				'You moderate messages between users of a skill-exchange app. Label a message "scam" (asks for money, gift cards, ' +
				'crypto, codes or moving off the platform), "inappropriate" (insults, harassment, sexual or violent content) or "ok". ' +
				'Answer with JSON only: {"label": "ok" | "inappropriate" | "scam", "reasons": ["<short reason>"]}.',
		},
		{ role: 'user', content: `Message: ${JSON.stringify(text)}` },
	];
	let r: GenerateResult;
	try {
		r = await complete(ctx, messages, { json: true, maxTokens: 96, temperature: 0 });
	} catch (err) {
		return { label: rules.label, reasons: rules.reasons, source: 'rules', ...base, fallbackReason: fallbackReason(err) };
	}
	const parsed = extractJson(r.text);
	const label = readLabel(findKey(parsed, ['label', 'verdict', 'category', 'classification']));
	if (label === undefined) {
		return {
			label: rules.label,
			reasons: rules.reasons,
			source: 'rules',
			...base,
			fallbackReason: 'model answer had no usable label',
			model: meta(ctx, r),
		};
	}
	const reasons = readStrings(findKey(parsed, ['reasons', 'reason', 'why', 'explanation']), 5);
	return { label, reasons, source: 'model', ...base, model: meta(ctx, r) };
}
