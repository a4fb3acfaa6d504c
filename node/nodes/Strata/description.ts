// The Strata node's parameters: mode and model, the operation, each
// operation's inputs, and options shaped like n8n's Ollama node.
import type { INodeProperties } from 'n8n-workflow';

const PROFILE_HINT =
	'A SkillSwap profile: {"id", "name", "bio", "offered": [{"name", "level"}], "wanted": [{"name", "level"}], "availability": [...]}. ' +
	'Skills may also be plain strings; levels: beginner, intermediate, advanced, expert.';

const scorer = (operations: string[]): INodeProperties => ({
	displayName: 'Scorer',
	name: 'scorer',
	type: 'options',
	default: 'model',
	displayOptions: { show: { operation: operations } },
	options: [
		{
			name: 'Model (Rules as Fallback)',
			value: 'model',
			description: 'Ask the model; use the rules when it is unavailable, too slow or answers unusably',
		},
		{
			name: 'Rules Only',
			value: 'rules',
			description: 'SkillSwap rules only: fast and deterministic, no model needed',
		},
	],
});

export const properties: INodeProperties[] = [
	{
		displayName: 'Mode',
		name: 'mode',
		type: 'options',
		default: 'embedded',
		options: [
			{
				name: 'Embedded',
				value: 'embedded',
				description: 'Run the model inside the n8n process (loaded once, reused by every execution)',
			},
			{
				name: 'Worker',
				value: 'worker',
				description: 'Send requests to a Strata worker (strata-worker) that keeps the model loaded and batches requests',
			},
		],
	},
	{
		displayName: 'Model Path',
		name: 'modelPath',
		type: 'string',
		default: '',
		placeholder: '/models/qwen2.5-0.5b-instruct-q4_k_m.gguf',
		description:
			'Path of a GGUF model file on the n8n host. Empty: the STRATA_MODEL environment variable, else the small test model that `npm start` uses.',
		displayOptions: { show: { mode: ['embedded'] } },
	},
	{
		displayName: 'Operation',
		name: 'operation',
		type: 'options',
		noDataExpression: true,
		default: 'matchScore',
		options: [
			{
				name: 'Chat',
				value: 'chat',
				action: 'Chat with the model',
				description: 'Answer a conversation (system and user message, or a list of messages)',
			},
			{
				name: 'Generate',
				value: 'generate',
				action: 'Generate text',
				description: 'Continue a prompt',
			},
			{
				name: 'Icebreakers',
				value: 'icebreakers',
				action: 'Suggest conversation starters',
				description: 'Three opening messages from one SkillSwap user to another',
			},
			{
				name: 'Improve Skill Description',
				value: 'improveSkill',
				action: 'Improve a skill description',
				description: 'Rewrite a skill description to be clear and concrete',
			},
			{
				name: 'Match Score',
				value: 'matchScore',
				action: 'Score a skill swap match',
				description: 'Compatibility of two SkillSwap profiles, 0-100 with reasons',
			},
			{
				name: 'Moderate Message',
				value: 'moderate',
				action: 'Moderate a message',
				description: 'Label a message ok, inappropriate or scam',
			},
			{
				name: 'Rank Matches',
				value: 'rankMatches',
				action: 'Rank candidate matches',
				description: 'Score one user against many candidates, best first',
			},
		],
	},

	// ------------------------------------------------------------ generate
	{
		displayName: 'Prompt',
		name: 'prompt',
		type: 'string',
		typeOptions: { rows: 4 },
		default: '',
		required: true,
		description: 'Text the model continues (no chat template applied)',
		displayOptions: { show: { operation: ['generate'] } },
	},

	// ---------------------------------------------------------------- chat
	{
		displayName: 'Messages Input',
		name: 'messagesInput',
		type: 'options',
		default: 'fields',
		displayOptions: { show: { operation: ['chat'] } },
		options: [
			{ name: 'System and User Message', value: 'fields' },
			{ name: 'Message List (JSON)', value: 'json' },
		],
	},
	{
		displayName: 'System Message',
		name: 'systemMessage',
		type: 'string',
		typeOptions: { rows: 2 },
		default: '',
		description: 'Instructions for the model (optional)',
		displayOptions: { show: { operation: ['chat'], messagesInput: ['fields'] } },
	},
	{
		displayName: 'User Message',
		name: 'userMessage',
		type: 'string',
		typeOptions: { rows: 4 },
		default: '',
		required: true,
		displayOptions: { show: { operation: ['chat'], messagesInput: ['fields'] } },
	},
	{
		displayName: 'Messages',
		name: 'messages',
		type: 'json',
		default: '[{"role": "user", "content": "Hello"}]',
		description: 'Array of {"role": "system" | "user" | "assistant", "content": "..."}',
		displayOptions: { show: { operation: ['chat'], messagesInput: ['json'] } },
	},

	// ------------------------------------------------- match / icebreakers
	{
		displayName: 'Profile A',
		name: 'profileA',
		type: 'json',
		default: '={{ $json.a }}',
		description: PROFILE_HINT,
		displayOptions: { show: { operation: ['matchScore'] } },
	},
	{
		displayName: 'Profile B',
		name: 'profileB',
		type: 'json',
		default: '={{ $json.b }}',
		description: PROFILE_HINT,
		displayOptions: { show: { operation: ['matchScore'] } },
	},
	{
		displayName: 'From Profile',
		name: 'fromProfile',
		type: 'json',
		default: '={{ $json.from }}',
		description: 'The SkillSwap profile of the user who sends the first message (same shape as in Match Score)',
		displayOptions: { show: { operation: ['icebreakers'] } },
	},
	{
		displayName: 'To Profile',
		name: 'toProfile',
		type: 'json',
		default: '={{ $json.to }}',
		description: 'The SkillSwap profile of the user who receives it (same shape as in Match Score)',
		displayOptions: { show: { operation: ['icebreakers'] } },
	},

	// -------------------------------------------------------- rank matches
	{
		displayName: 'User Profile',
		name: 'userProfile',
		type: 'json',
		default: '={{ $json.user }}',
		description: PROFILE_HINT,
		displayOptions: { show: { operation: ['rankMatches'] } },
	},
	{
		displayName: 'Candidates',
		name: 'candidates',
		type: 'json',
		default: '={{ $json.candidates }}',
		description: 'Array of SkillSwap profiles to rank',
		displayOptions: { show: { operation: ['rankMatches'] } },
	},
	{
		displayName: 'Top N',
		name: 'topN',
		type: 'number',
		default: 10,
		typeOptions: { minValue: 0 },
		description: 'How many of the best matches to return (0: all)',
		displayOptions: { show: { operation: ['rankMatches'] } },
	},
	scorer(['matchScore', 'rankMatches', 'moderate']),

	// ---------------------------------------------------- improve / moderate
	{
		displayName: 'Skill Name',
		name: 'skillName',
		type: 'string',
		default: '',
		required: true,
		placeholder: 'Python',
		displayOptions: { show: { operation: ['improveSkill'] } },
	},
	{
		displayName: 'Skill Level',
		name: 'skillLevel',
		type: 'options',
		default: '',
		displayOptions: { show: { operation: ['improveSkill'] } },
		options: [
			{ name: 'Advanced', value: 'advanced' },
			{ name: 'Beginner', value: 'beginner' },
			{ name: 'Expert', value: 'expert' },
			{ name: 'Intermediate', value: 'intermediate' },
			{ name: 'Unspecified', value: '' },
		],
	},
	{
		displayName: 'Description',
		name: 'skillDescription',
		type: 'string',
		typeOptions: { rows: 3 },
		default: '',
		description: 'The current description (may be empty)',
		displayOptions: { show: { operation: ['improveSkill'] } },
	},
	{
		displayName: 'Message',
		name: 'message',
		type: 'string',
		typeOptions: { rows: 3 },
		default: '',
		required: true,
		description: 'The message to moderate',
		displayOptions: { show: { operation: ['moderate'] } },
	},

	// ------------------------------------------------------------- options
	{
		displayName: 'Options',
		name: 'options',
		type: 'collection',
		placeholder: 'Add Option',
		default: {},
		options: [
			{
				displayName: 'Context Size',
				name: 'contextSize',
				type: 'number',
				default: 0,
				typeOptions: { minValue: 0 },
				description: 'KV cache size in tokens (0: the smaller of the model\'s trained length and 4096). Part of the loaded model\'s identity: a new value loads the model again.',
			},
			{
				displayName: 'JSON Output',
				name: 'json',
				type: 'boolean',
				default: false,
				description: 'Whether to constrain Generate and Chat to well-formed JSON, parsed into an extra output field. The structured operations always use it.',
			},
			{
				displayName: 'Max Tokens',
				name: 'maxTokens',
				type: 'number',
				default: 256,
				typeOptions: { minValue: 1 },
				description: 'The most tokens to generate (default depends on the operation)',
			},
			{
				displayName: 'Repeat Penalty',
				name: 'repeatPenalty',
				type: 'number',
				default: 1.1,
				typeOptions: { minValue: 0, numberPrecision: 2 },
				description: 'Penalty for repeating recent tokens (1: none)',
			},
			{
				displayName: 'Sampling Temperature',
				name: 'temperature',
				type: 'number',
				default: 0.8,
				typeOptions: { minValue: 0, maxValue: 2, numberPrecision: 2 },
				description: 'Randomness of the answer (0: always the most likely token). Default depends on the operation.',
			},
			{
				displayName: 'Seed',
				name: 'seed',
				type: 'number',
				default: 0,
				description: 'Random seed for sampling, for repeatable answers',
			},
			{
				displayName: 'Threads',
				name: 'threads',
				type: 'number',
				default: 0,
				typeOptions: { minValue: 0 },
				description: 'CPU threads for the engine (0: all cores). Part of the loaded model\'s identity.',
			},
			{
				displayName: 'Timeout (Ms)',
				name: 'timeoutMs',
				type: 'number',
				default: 0,
				typeOptions: { minValue: 0 },
				description:
					'Time budget per item, model loading included (0: none). When it runs out, Match Score, Rank Matches, Icebreakers and Moderate Message answer from the rules; Generate and Chat return the text so far; Improve Skill Description fails.',
			},
			{
				displayName: 'Top K',
				name: 'topK',
				type: 'number',
				default: 40,
				typeOptions: { minValue: 0 },
				description: 'Sample from the K most likely tokens only (0: all)',
			},
			{
				displayName: 'Top P',
				name: 'topP',
				type: 'number',
				default: 0.9,
				typeOptions: { minValue: 0, maxValue: 1, numberPrecision: 2 },
				description: 'Sample from the smallest set of tokens whose probabilities add up to P',
			},
		],
	},
];
