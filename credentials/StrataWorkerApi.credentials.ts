import type { ICredentialType, INodeProperties, IAuthenticateGeneric, Icon } from 'n8n-workflow';

// A Strata worker: a long-running process that keeps models loaded across
// executions and batches requests from many workflows (DESIGN.md, point 6).
// The worker's HTTP API does not exist yet, so this credential has no `test`
// request; add one (GET {baseUrl}/v1/health with the token) with the worker.
export class StrataWorkerApi implements ICredentialType {
	name = 'strataWorkerApi';

	displayName = 'Strata Worker API';

	icon: Icon = { light: 'file:../node/nodes/Strata/strata.svg', dark: 'file:../node/nodes/Strata/strata.dark.svg' };

	documentationUrl = 'https://github.com/strata-llm/n8n-nodes-strata#worker-mode';

	properties: INodeProperties[] = [
		{
			displayName: 'Worker URL',
			name: 'baseUrl',
			type: 'string',
			default: 'http://127.0.0.1:8765',
			placeholder: 'http://127.0.0.1:8765',
			description: 'Base URL of the Strata worker that keeps the model loaded',
			required: true,
		},
		{
			displayName: 'Auth Token',
			name: 'token',
			type: 'string',
			typeOptions: { password: true },
			default: '',
			description: 'Bearer token the worker expects (leave empty if it runs without auth)',
		},
	];

	authenticate: IAuthenticateGeneric = {
		type: 'generic',
		properties: {
			headers: {
				Authorization: '=Bearer {{$credentials.token}}',
			},
		},
	};
}
