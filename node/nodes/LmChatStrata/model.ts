// The Strata chat model for LangChain: a subclass of the host n8n's
// SimpleChatModel whose _call and _streamResponseChunks run one chat through
// Strata (the same path as the Strata node's Chat operation).
import type { ChatMessage } from '../Strata/engine';
import type { TextResult } from '../Strata/operations';
import { langChainCore, roleOf, textOf, type LangChainCore, type LcCallOptions, type LcChatModelBase, type LcMessage, type LcRunManager } from './langchain';

/** Runs one chat: messages in, the generated text out; onToken gets each piece. */
export type RunChat = (
	messages: ChatMessage[],
	call: { signal?: AbortSignal; stop?: string[]; onToken?: (piece: string) => void },
) => Promise<TextResult>;

export interface StrataChatModelInstance extends LcChatModelBase {
	_llmType(): string;
	_call(messages: LcMessage[], options: LcCallOptions, runManager?: LcRunManager): Promise<string>;
	_streamResponseChunks(messages: LcMessage[], options: LcCallOptions, runManager?: LcRunManager): AsyncGenerator<unknown>;
}

type StrataChatModelCtor = new (run: RunChat) => StrataChatModelInstance;

export function toChatMessages(messages: LcMessage[]): ChatMessage[] {
	return messages.map((m) => ({ role: roleOf(m), content: textOf(m) }));
}

function build(core: LangChainCore): StrataChatModelCtor {
	class StrataChatModel extends core.SimpleChatModel {
		private readonly runChat: RunChat;

		constructor(run: RunChat) {
			super({});
			this.runChat = run;
		}

		_llmType(): string {
			return 'strata';
		}

		/**
		 * The AI Agent binds its tools to the model. Strata models answer in
		 * text and have no tool calling: with no tools the agent can use the
		 * model as is; with tools it gets a clear error instead of a model
		 * that never calls them.
		 */
		bindTools(tools: unknown[]): this {
			if (Array.isArray(tools) && tools.length > 0) {
				const names = tools.map((t) => (t as { name?: unknown })?.name).filter((n) => typeof n === 'string');
				throw new Error(
					`Strata Chat Model does not support tool calling (the agent has tools: ${names.join(', ') || tools.length}); ` +
						'use it without tools or in a Basic LLM Chain',
				);
			}
			return this;
		}

		async _call(messages: LcMessage[], options: LcCallOptions, runManager?: LcRunManager): Promise<string> {
			const r = await this.runChat(toChatMessages(messages), {
				signal: options?.signal,
				stop: options?.stop,
				onToken: runManager !== undefined ? (piece) => void runManager.handleLLMNewToken(piece).catch(() => undefined) : undefined,
			});
			return r.text;
		}

		async *_streamResponseChunks(messages: LcMessage[], options: LcCallOptions, runManager?: LcRunManager): AsyncGenerator<unknown> {
			// the consumer may stop reading early: then the generation stops too
			const stopper = new AbortController();
			const signal = options?.signal !== undefined ? AbortSignal.any([options.signal, stopper.signal]) : stopper.signal;
			const pieces: string[] = [];
			let wake: (() => void) | null = null;
			let done = false;
			let failure: unknown = null;
			let yielded = false;
			const running = this.runChat(toChatMessages(messages), {
				signal,
				stop: options?.stop,
				onToken: (piece) => {
					pieces.push(piece);
					wake?.();
				},
			});
			running.then(
				() => {
					done = true;
					wake?.();
				},
				(err: unknown) => {
					failure = err;
					done = true;
					wake?.();
				},
			);
			try {
				for (;;) {
					while (pieces.length > 0) {
						const text = pieces.shift() as string;
						yielded = true;
						yield new core.ChatGenerationChunk({ text, message: new core.AIMessageChunk({ content: text }) });
						await runManager?.handleLLMNewToken(text);
					}
					if (done) {
						break;
					}
					await new Promise<void>((resolve) => {
						wake = resolve;
					});
					wake = null;
				}
				if (failure !== null) {
					throw failure;
				}
				if (!yielded) {
					// nothing generated (end of text at once): LangChain wants at least one chunk
					yield new core.ChatGenerationChunk({ text: '', message: new core.AIMessageChunk({ content: '' }) });
				}
			} finally {
				if (!done) {
					stopper.abort();
					await running.catch(() => undefined);
				}
			}
		}
	}
	return StrataChatModel as unknown as StrataChatModelCtor;
}

const classes = new Map<string, StrataChatModelCtor>();

/** A Strata chat model on the host n8n's LangChain, running chats with run. */
export function createStrataChatModel(run: RunChat): StrataChatModelInstance {
	const core = langChainCore();
	let ctor = classes.get(core.root);
	if (ctor === undefined) {
		ctor = build(core);
		classes.set(core.root, ctor);
	}
	return new ctor(run);
}
