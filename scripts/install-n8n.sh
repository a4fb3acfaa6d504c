#!/usr/bin/env bash
# Installs the n8n test runtime (tests/n8n: n8n 2.8.4 from its lockfile, ~2 GB,
# a few minutes on a fresh machine) unless it is already there. CI calls this
# before the Tap run so that tests/n8n-e2e.test.mjs does not pay for it;
# `npm start` and the test call the same code themselves when needed.
set -euo pipefail
cd "$(dirname "$0")/.."
exec node --input-type=module -e "
import { ensureN8n } from './scripts/n8n-runtime.mjs';
const bin = ensureN8n({ log: (m) => console.log('install-n8n: ' + m) });
console.log('install-n8n: ready: ' + bin);
"
