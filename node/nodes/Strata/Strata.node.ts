import {
	NodeConnectionTypes,
	NodeOperationError,
	UserError,
	type ChunkType,
	type ICredentialsDecrypted,
	type ICredentialTestFunctions,
	type IDataObject,
	type IExecuteFunctions,
	type INodeCredentialTestResult,
	type INodeExecutionData,
	type INodeType,
	type INodeTypeDescription,
} from 'n8n-workflow';

import { properties } from './description';
import { modelSource, sampling, type NodeOptions } from './common';
import { Budget, CancelledError, testWorker, workerTls, type ChatMessage } from './engine';
import * as ops from './operations';

/** A JSON parameter: an object from an expression, or text to parse. */
function jsonParam(value: unknown, what: string): unknown {
	if (typeof value !== 'string') {
		return value;
	}
	if (value.trim() === '') {
		return undefined;
	}
	let parsed: unknown;
	let ok = true;
	try {
		parsed = JSON.parse(value) as unknown;
	} catch {
		ok = false;
	}
	if (!ok) {
		throw new UserError(`${what} is not valid JSON`);
	}
	return parsed;
}

function requireObject(value: unknown, what: string): IDataObject {
	if (value === null || typeof value !== 'object' || Array.isArray(value)) {
		throw new UserError(`${what} must be a JSON object (a SkillSwap profile)`);
	}
	return value as IDataObject;
}

function chatMessages(value: unknown): ChatMessage[] {
	if (!Array.isArray(value) || value.length === 0) {
		throw new UserError('Messages must be a non-empty JSON array of {"role", "content"}');
	}
	return value.map((m: unknown, i) => {
		const o = m as { role?: unknown; content?: unknown } | null;
		if (o === null || typeof o !== 'object' || typeof o.role !== 'string' || typeof o.content !== 'string') {
			throw new UserError(`Messages[${i}] needs string "role" and "content"`);
		}
		return { role: o.role, content: o.content };
	});
}

/**
 * Generate and Chat when the execution streams (a Webhook whose Response
 * Mode is Streaming): each generated piece goes out as an n8n "item" chunk
 * between "begin" and "end" (on failure: "error", sent by n8n for a failed
 * node, by us under Continue On Fail), in order, as it comes.
 * Otherwise just run.
 */
async function streamed<T>(fn: IExecuteFunctions, itemIndex: number, ctx: ops.OperationContext, run: () => Promise<T>): Promise<T> {
	if (typeof fn.isStreaming !== 'function' || !fn.isStreaming()) {
		return run();
	}
	let queue: Promise<unknown> = Promise.resolve();
	const send = (type: ChunkType, content?: string) => {
		queue = queue.then(() => fn.sendChunk(type, itemIndex, content)).catch(() => undefined);
	};
	send('begin');
	ctx.onToken = (piece) => send('item', piece);
	let failure: string | undefined;
	const running = run();
	// registered first: runs before the await below sees the rejection
	running.catch((error: unknown) => {
		failure = error instanceof Error ? error.message : String(error);
	});
	try {
		const result = await running;
		send('end');
		return result;
	} finally {
		// n8n itself sends the "error" chunk of a failed node; with Continue
		// On Fail the node does not fail, so the stream is closed here
		if (failure !== undefined && fn.continueOnFail()) {
			send('error', failure);
		}
		ctx.onToken = undefined;
		await queue;
	}
}

export class Strata implements INodeType {
	description: INodeTypeDescription = {
		displayName: 'Strata',
		name: 'strata',
		icon: { light: 'file:strata.svg', dark: 'file:strata.dark.svg' },
		group: ['transform'],
		version: 1,
		subtitle: '={{ $parameter["operation"] }}',
		description: 'Run a local LLM (GGUF) in n8n: generation, chat, and SkillSwap matching, icebreakers and moderation',
		defaults: {
			name: 'Strata',
		},
		usableAsTool: true,
		inputs: [NodeConnectionTypes.Main],
		outputs: [NodeConnectionTypes.Main],
		credentials: [
			{
				name: 'strataWorkerApi',
				required: true,
				displayOptions: { show: { mode: ['worker'] } },
				testedBy: 'strataWorkerApiTest',
			},
		],
		properties,
	};

	methods = {
		credentialTest: {
			// The worker speaks nng, not HTTP: a health round trip with the token.
			async strataWorkerApiTest(
				this: ICredentialTestFunctions,
				credential: ICredentialsDecrypted,
			): Promise<INodeCredentialTestResult> {
				const data = credential.data ?? {};
				const url = typeof data.baseUrl === 'string' ? data.baseUrl.trim() : '';
				const token = typeof data.token === 'string' ? data.token : '';
				if (url === '') {
					return { status: 'Error', message: 'Worker URL is empty' };
				}
				return testWorker(url, token, workerTls(url, data));
			},
		},
	};

	async execute(this: IExecuteFunctions): Promise<INodeExecutionData[][]> {
		const items = this.getInputData();
		const out: INodeExecutionData[] = [];
		const cancelSignal = this.getExecutionCancelSignal?.();

		for (let itemIndex = 0; itemIndex < items.length; itemIndex++) {
			let budget: Budget | undefined;
			try {
				const operation = this.getNodeParameter('operation', itemIndex) as string;
				const options = this.getNodeParameter('options', itemIndex, {}) as NodeOptions;
				const { loadModel, modelPath } = await modelSource(this, itemIndex, options);
				budget = new Budget(options.timeoutMs ?? 0, cancelSignal);
				const ctx: ops.OperationContext = {
					loadModel,
					modelPath,
					budget,
					sampling: sampling(options),
				};
				const scorer = (): ops.Scorer => this.getNodeParameter('scorer', itemIndex, 'model') as ops.Scorer;

				let result: object;
				switch (operation) {
					case 'generate': {
						const prompt = this.getNodeParameter('prompt', itemIndex) as string;
						result = await streamed(this, itemIndex, ctx, () => ops.generate(ctx, prompt));
						break;
					}
					case 'chat': {
						let messages: ChatMessage[];
						if (this.getNodeParameter('messagesInput', itemIndex, 'fields') === 'json') {
							messages = chatMessages(jsonParam(this.getNodeParameter('messages', itemIndex), 'Messages'));
						} else {
							const system = this.getNodeParameter('systemMessage', itemIndex, '') as string;
							const user = this.getNodeParameter('userMessage', itemIndex) as string;
							messages = system.trim() !== '' ? [{ role: 'system', content: system }] : [];
							messages.push({ role: 'user', content: user });
						}
						result = await streamed(this, itemIndex, ctx, () => ops.chat(ctx, messages));
						break;
					}
					case 'matchScore': {
						const a = requireObject(jsonParam(this.getNodeParameter('profileA', itemIndex), 'Profile A'), 'Profile A');
						const b = requireObject(jsonParam(this.getNodeParameter('profileB', itemIndex), 'Profile B'), 'Profile B');
						result = await ops.matchScore(ctx, a, b, scorer());
						break;
					}
					case 'rankMatches': {
						const user = requireObject(jsonParam(this.getNodeParameter('userProfile', itemIndex), 'User Profile'), 'User Profile');
						const candidates = jsonParam(this.getNodeParameter('candidates', itemIndex), 'Candidates');
						if (!Array.isArray(candidates)) {
							throw new UserError('Candidates must be a JSON array of profiles');
						}
						const topN = this.getNodeParameter('topN', itemIndex, 10) as number;
						result = await ops.rankMatches(ctx, user, candidates, scorer(), topN);
						break;
					}
					case 'icebreakers': {
						const from = requireObject(jsonParam(this.getNodeParameter('fromProfile', itemIndex), 'From Profile'), 'From Profile');
						const to = requireObject(jsonParam(this.getNodeParameter('toProfile', itemIndex), 'To Profile'), 'To Profile');
						result = await ops.icebreakers(ctx, from, to);
						break;
					}
					case 'improveSkill':
						result = await ops.improveSkill(
							ctx,
							this.getNodeParameter('skillName', itemIndex) as string,
							this.getNodeParameter('skillDescription', itemIndex, '') as string,
							this.getNodeParameter('skillLevel', itemIndex, '') as string,
						);
						break;
					case 'moderate':
						result = await ops.moderate(ctx, this.getNodeParameter('message', itemIndex) as string, scorer());
						break;
					default:
						throw new NodeOperationError(this.getNode(), `Unknown operation "${operation}"`, { itemIndex });
				}
				out.push({ json: result as IDataObject, pairedItem: { item: itemIndex } });
			} catch (error) {
				if (error instanceof CancelledError) {
					// a cancelled execution stops; it is not an item failure
					throw new NodeOperationError(this.getNode(), error as Error, { itemIndex });
				}
				if (this.continueOnFail()) {
					out.push({ json: { error: (error as Error).message }, pairedItem: { item: itemIndex } });
					continue;
				}
				throw new NodeOperationError(this.getNode(), error as Error, { itemIndex });
			} finally {
				budget?.dispose();
			}
		}
		return [out];
	}
}
