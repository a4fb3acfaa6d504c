// LangChain's chat-model base classes, taken from the n8n that loads us.
//
// n8n's AI nodes (Basic LLM Chain, AI Agent, ...) work with models of their
// own @langchain/core: messages, chunks and runnables must be that copy's
// classes. So the package does not depend on @langchain/core; it finds the
// copy next to n8n's @n8n/n8n-nodes-langchain at run time, starting from the
// running program (n8n's bin: require.main, else process.argv[1]), and
// builds the Strata chat model class on it once.
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';

/** The members of a LangChain message the model reads. */
export interface LcMessage {
	content: unknown;
	_getType?: () => string;
	getType?: () => string;
}

export interface LcRunManager {
	handleLLMNewToken(token: string): Promise<void>;
}

export interface LcCallOptions {
	signal?: AbortSignal;
	stop?: string[];
}

/** The host's SimpleChatModel, as far as the subclass uses it. */
export interface LcChatModelBase {
	lc_namespace: string[];
}

type LcChatModelCtor = new (fields: Record<string, unknown>) => LcChatModelBase;

export interface LangChainCore {
	/** Where @langchain/core was found (its package folder). */
	readonly root: string;
	readonly SimpleChatModel: LcChatModelCtor;
	readonly AIMessageChunk: new (fields: { content: string }) => unknown;
	readonly ChatGenerationChunk: new (fields: { text: string; message: unknown }) => unknown;
}

const LANGCHAIN_NODES = '@n8n/n8n-nodes-langchain';
const CORE = '@langchain/core';

/** Entry points to search from: the running program first. */
function startPoints(): string[] {
	const out: string[] = [];
	const env = process.env.STRATA_LANGCHAIN_FROM;
	if (typeof env === 'string' && env.trim() !== '') {
		out.push(path.resolve(env.trim()));
	}
	if (require.main?.filename !== undefined) {
		out.push(require.main.filename);
	}
	if (typeof process.argv[1] === 'string' && process.argv[1] !== '') {
		out.push(path.resolve(process.argv[1]));
	}
	return [...new Set(out)];
}

function packageDir(from: string, name: string): string | undefined {
	let req: NodeJS.Require;
	try {
		req = createRequire(from);
	} catch {
		return undefined;
	}
	for (const dir of req.resolve.paths(name) ?? []) {
		const manifest = path.join(dir, name, 'package.json');
		if (fs.existsSync(manifest)) {
			// the real path: in a pnpm layout a package's own dependencies sit
			// beside its real folder, not beside the symlink
			return fs.realpathSync(path.dirname(manifest));
		}
	}
	return undefined;
}

/** @langchain/core's folder as n8n's AI nodes see it, with what was tried. */
export function findLangChainCore(): { root?: string; tried: string[] } {
	const tried: string[] = [];
	for (const start of startPoints()) {
		tried.push(start);
		// the copy n8n's AI nodes use, else the one the program itself sees
		const nodes = packageDir(start, LANGCHAIN_NODES);
		const fromNodes = nodes !== undefined ? packageDir(path.join(nodes, 'package.json'), CORE) : undefined;
		const root = fromNodes ?? packageDir(start, CORE);
		if (root !== undefined) {
			return { root, tried };
		}
	}
	return { tried };
}

let cached: LangChainCore | undefined;

export function langChainCore(): LangChainCore {
	if (cached !== undefined) {
		return cached;
	}
	const { root, tried } = findLangChainCore();
	if (root === undefined) {
		throw new Error(
			`Strata Chat Model: cannot find ${CORE} (from ${LANGCHAIN_NODES}) next to the running n8n ` +
				`(searched from ${tried.join(', ') || 'nothing: no main module'}). It works inside n8n only; ` +
				'set STRATA_LANGCHAIN_FROM to a file inside your n8n installation if n8n is started in an unusual way.',
		);
	}
	const req = createRequire(path.join(root, 'package.json'));
	const chat = req(`${CORE}/language_models/chat_models`) as { SimpleChatModel?: LcChatModelCtor };
	const messages = req(`${CORE}/messages`) as { AIMessageChunk?: LangChainCore['AIMessageChunk'] };
	const outputs = req(`${CORE}/outputs`) as { ChatGenerationChunk?: LangChainCore['ChatGenerationChunk'] };
	if (chat.SimpleChatModel === undefined || messages.AIMessageChunk === undefined || outputs.ChatGenerationChunk === undefined) {
		throw new Error(`Strata Chat Model: ${root} lacks SimpleChatModel, AIMessageChunk or ChatGenerationChunk`);
	}
	cached = {
		root,
		SimpleChatModel: chat.SimpleChatModel,
		AIMessageChunk: messages.AIMessageChunk,
		ChatGenerationChunk: outputs.ChatGenerationChunk,
	};
	return cached;
}

/** A LangChain message's role as the engine names it. */
export function roleOf(m: LcMessage): string {
	const t = typeof m.getType === 'function' ? m.getType() : typeof m._getType === 'function' ? m._getType() : 'human';
	switch (t) {
		case 'human':
			return 'user';
		case 'ai':
			return 'assistant';
		case 'system':
		case 'developer':
			return 'system';
		case 'tool':
		case 'function':
			return 'tool';
		default:
			return 'user';
	}
}

/** A message's text: a string, or the text parts of a content array. */
export function textOf(m: LcMessage): string {
	const c = m.content;
	if (typeof c === 'string') {
		return c;
	}
	if (Array.isArray(c)) {
		return c
			.map((p: unknown) => {
				if (typeof p === 'string') {
					return p;
				}
				const part = p as { type?: unknown; text?: unknown } | null;
				return part !== null && typeof part === 'object' && typeof part.text === 'string' ? part.text : '';
			})
			.join('');
	}
	return c === undefined || c === null ? '' : String(c);
}
