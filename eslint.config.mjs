// `npm run lint` (n8n-node lint runs eslint with this file). n8n's own config
// for community nodes, adapted to this package's layout and nature:
//
// - configWithoutCloudSupport: Strata runs a native inference engine inside
//   the n8n process (a Node-API addon, the model file from disk, STRATA_MODEL
//   from the environment), which n8n Cloud's sandbox rules (no-restricted-
//   globals, no-restricted-imports) forbid by design; it is a self-hosted node.
// - The node sources live in node/nodes/, not nodes/: n8n's per-file node
//   rules are keyed to ./nodes/**, so they are applied to node/nodes/** here.
// - Rules this package cannot satisfy yet, each turned off with its reason.
import { configWithoutCloudSupport } from '@n8n/node-cli/eslint';
import n8nNodesBase from 'eslint-plugin-n8n-nodes-base';

export default [
	{
		ignores: ['dist/**', 'build/**', 'native/**', 'tests/**', 'bench/**', 'node/lib/**', 'node/bin/**', 'node/rules/**', '.strata-run/**'],
	},
	...configWithoutCloudSupport,
	{
		files: ['node/nodes/**/*.ts'],
		plugins: { 'n8n-nodes-base': n8nNodesBase },
		rules: {
			...n8nNodesBase.configs.nodes.rules,
			'n8n-nodes-base/node-class-description-inputs-wrong-regular-node': 'off',
			'n8n-nodes-base/node-class-description-outputs-wrong': 'off',
			'n8n-nodes-base/node-param-type-options-max-value-present': 'off',
		},
	},
	{
		files: ['package.json'],
		rules: {
			// "install": "node-gyp rebuild" builds the native addon when the
			// package is installed from npm outside n8n (n8n itself installs
			// community packages with --ignore-scripts and uses the prebuilt
			// build/Release/strata.node shipped in the tarball).
			'@n8n/community-nodes/no-forbidden-lifecycle-scripts': 'off',
		},
	},
	{
		files: ['credentials/StrataWorkerApi.credentials.ts'],
		rules: {
			// The worker speaks nng, not HTTP: the Strata node tests this
			// credential (methods.credentialTest, `testedBy`) with a health call.
			'@n8n/community-nodes/credential-test-required': 'off',
		},
	},
];
