import type { ICredentialType, INodeProperties, Icon } from 'n8n-workflow';

// A Strata worker (native/worker, `strata-worker`): a long-running process
// that keeps a model loaded across executions and batches requests from many
// workflows. It speaks nng (tcp:// or ipc://), not HTTP, so this credential
// has no `test` request: the Strata node tests it (its credentialTest method
// strataWorkerApiTest, `testedBy` in the node's credentials) with a health
// round trip carrying the token.
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
			default: 'tcp://127.0.0.1:7777',
			placeholder: 'tcp://127.0.0.1:7777',
			description: 'Address the Strata worker listens on (its --listen): tcp://host:port or ipc:///path/to/socket',
			required: true,
		},
		{
			displayName: 'Auth Token',
			name: 'token',
			type: 'string',
			typeOptions: { password: true },
			default: '',
			description: 'Shared secret the worker expects (its --token); leave empty if it runs without one',
		},
		{
			displayName: 'TLS CA Certificate',
			name: 'tlsCa',
			type: 'string',
			typeOptions: { rows: 4 },
			default: '',
			placeholder: '-----BEGIN CERTIFICATE-----',
			description:
				'For tls+tcp:// URLs: PEM of the CA that signed the worker\'s certificate (its --tls-cert). Required for TLS.',
		},
		{
			displayName: 'TLS Client Certificate',
			name: 'tlsCert',
			type: 'string',
			typeOptions: { password: true },
			default: '',
			description: 'For tls+tcp:// URLs when the worker requires client certificates (its --tls-ca): this client\'s PEM certificate',
		},
		{
			displayName: 'TLS Client Key',
			name: 'tlsPrivateKey',
			type: 'string',
			typeOptions: { password: true },
			default: '',
			description: 'PEM private key of the TLS client certificate',
		},
	];
}
