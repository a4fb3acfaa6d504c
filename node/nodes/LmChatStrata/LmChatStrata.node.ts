import {
	NodeConnectionTypes,
	NodeOperationError,
	type INodeProperties,
	type INodeType,
	type INodeTypeDescription,
	type ISupplyDataFunctions,
	type SupplyData,
	UnexpectedError,
} from 'n8n-workflow';

import { modelSource, sampling, type NodeOptions } from '../Strata/common';
import { properties as strataProperties } from '../Strata/description';
import { Budget, type ChatMessage } from '../Strata/engine';
import * as ops from '../Strata/operations';
import { createStrataChatModel, type RunChat } from './model';

// Mode and Model Path as in the Strata node; its options without JSON
// Output (chains parse answers themselves), with the sub-node's timeout text.
const pick = (name: string): INodeProperties => {
	const p = strataProperties.find((x) => x.name === name);
	if (p === undefined) {
		throw new UnexpectedError(`Strata Chat Model: the Strata node has no "${name}" parameter`);
	}
	return p;
};
const strataOptions = pick('options');
const chatOptions: INodeProperties = {
	...strataOptions,
	options: (strataOptions.options ?? [])
		.filter((o) => o.name !== 'json')
		.map((o) =>
			o.name === 'timeoutMs'
				? {
						...(o as INodeProperties),
						description:
							'Time budget per model call, model loading included (0: none). When it runs out, the call returns the text so far.',
					}
				: o,
		),
};

export class LmChatStrata implements INodeType {
	description: INodeTypeDescription = {
		displayName: 'Strata Chat Model',
		name: 'lmChatStrata',
		icon: { light: 'file:strata.svg', dark: 'file:strata.dark.svg' },
		group: ['transform'],
		version: 1,
		subtitle: '={{ $parameter["mode"] === "worker" ? "Worker" : "Embedded" }}',
		description: 'A local LLM (GGUF) run by Strata, for the AI Agent, Basic LLM Chain and other AI nodes',
		defaults: {
			name: 'Strata Chat Model',
		},
		codex: {
			categories: ['AI'],
			subcategories: {
				AI: ['Language Models', 'Root Nodes'],
				'Language Models': ['Chat Models (Recommended)'],
			},
			resources: {
				primaryDocumentation: [{ url: 'https://github.com/strata-llm/n8n-nodes-strata#readme' }],
			},
		},
		inputs: [],
		outputs: [NodeConnectionTypes.AiLanguageModel],
		outputNames: ['Model'],
		credentials: [
			{
				name: 'strataWorkerApi',
				required: true,
				displayOptions: { show: { mode: ['worker'] } },
			},
		],
		properties: [pick('mode'), pick('modelPath'), chatOptions],
	};

	async supplyData(this: ISupplyDataFunctions, itemIndex: number): Promise<SupplyData> {
		const options = this.getNodeParameter('options', itemIndex, {}) as NodeOptions;
		const source = await modelSource(this, itemIndex, options);
		const cancel = this.getExecutionCancelSignal?.();

		const run: RunChat = async (messages: ChatMessage[], call) => {
			const signals = [cancel, call.signal].filter((s): s is AbortSignal => s !== undefined);
			const stopOn = signals.length === 0 ? undefined : signals.length === 1 ? signals[0] : AbortSignal.any(signals);
			const budget = new Budget(options.timeoutMs ?? 0, stopOn);
			const s = sampling(options);
			if (Array.isArray(call.stop) && call.stop.length > 0) {
				s.stop = call.stop;
			}
			// what the editor shows for this sub-node: the messages in, the answer out
			const { index } = this.addInputData(NodeConnectionTypes.AiLanguageModel, [[{ json: { messages } }]]);
			try {
				const r = await ops.chat({ loadModel: source.loadModel, modelPath: source.modelPath, budget, sampling: s, onToken: call.onToken }, messages);
				this.addOutputData(NodeConnectionTypes.AiLanguageModel, index, [
					[{ json: { response: r.text, stopReason: r.stopReason, promptTokens: r.promptTokens, genTokens: r.genTokens } }],
				]);
				return r;
			} catch (error) {
				const err = new NodeOperationError(this.getNode(), error as Error, { itemIndex });
				this.addOutputData(NodeConnectionTypes.AiLanguageModel, index, err);
				throw err;
			} finally {
				budget.dispose();
			}
		};

		let model;
		try {
			model = createStrataChatModel(run);
		} catch (error) {
			throw new NodeOperationError(this.getNode(), error as Error, { itemIndex });
		}
		return { response: model };
	}
}
