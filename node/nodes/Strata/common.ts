// What the Strata node and the Strata Chat Model sub-node share: their
// options, the sampling settings taken from them, and the model an item runs
// on (embedded: a cached model from a file; worker: a strata-worker client
// through the Strata Worker API credential).
import { NodeOperationError, type ICredentialDataDecryptedObject, type INode } from 'n8n-workflow';

import { defaultModelPath, getModel, getWorkerClient, workerModel, workerTls, type GenerateOptions, type LoadOptions, type Model } from './engine';

export interface NodeOptions {
	contextSize?: number;
	json?: boolean;
	maxTokens?: number;
	repeatPenalty?: number;
	seed?: number;
	temperature?: number;
	threads?: number;
	timeoutMs?: number;
	topK?: number;
	topP?: number;
}

export function sampling(o: NodeOptions): GenerateOptions {
	const s: GenerateOptions = {};
	for (const k of ['maxTokens', 'temperature', 'topK', 'topP', 'repeatPenalty', 'seed'] as const) {
		if (typeof o[k] === 'number') {
			s[k] = o[k];
		}
	}
	if (o.json === true) {
		s.json = true;
	}
	return s;
}

/** The part of n8n's execute / supply-data context that picking a model needs. */
export interface ModelSourceContext {
	getNode(): INode;
	getNodeParameter(name: string, itemIndex: number, fallback?: unknown): unknown;
	getCredentials(type: string, itemIndex?: number): Promise<ICredentialDataDecryptedObject>;
}

export interface ModelSource {
	loadModel: () => Promise<Model>;
	/** The model file (embedded) or the worker URL (worker), for results and errors. */
	modelPath: string;
}

/** The model this item runs on, from the node's Mode, Model Path and options. */
export async function modelSource(ctx: ModelSourceContext, itemIndex: number, options: NodeOptions): Promise<ModelSource> {
	const mode = ctx.getNodeParameter('mode', itemIndex) as string;
	if (mode === 'worker') {
		const creds = await ctx.getCredentials('strataWorkerApi', itemIndex);
		const url = typeof creds.baseUrl === 'string' ? creds.baseUrl.trim() : '';
		if (url === '') {
			throw new NodeOperationError(ctx.getNode(), 'The Strata Worker API credential has no Worker URL', { itemIndex });
		}
		const token = typeof creds.token === 'string' ? creds.token : '';
		const client = getWorkerClient(url, token, workerTls(url, creds));
		return { loadModel: () => workerModel(client), modelPath: url };
	}
	if (mode !== 'embedded') {
		throw new NodeOperationError(ctx.getNode(), `Unknown mode "${mode}"`, { itemIndex });
	}
	const pathParam = String(ctx.getNodeParameter('modelPath', itemIndex, '') ?? '').trim();
	const file = pathParam !== '' ? pathParam : defaultModelPath();
	const load: LoadOptions = {};
	if (typeof options.threads === 'number' && options.threads > 0) {
		load.threads = options.threads;
	}
	if (typeof options.contextSize === 'number' && options.contextSize > 0) {
		load.contextSize = options.contextSize;
	}
	return { loadModel: () => getModel(file, load), modelPath: file };
}
