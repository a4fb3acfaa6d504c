#!/usr/bin/env bash
# `npm test`: builds the native engine, its C tests and the addon, compiles the
# n8n node, fetches fixtures (tokenizer vocabularies from node-llama-cpp's
# bundled llama.cpp source) and the n8n 2.8.4 test runtime, then runs every
# Tap test (the C module tests run as Tap subtests too).
set -euo pipefail
cd "$(dirname "$0")/.."
export npm_config_nodedir=/usr
# The suites compare CPU numerics with llama.cpp and expect quiet stderr: run
# on the CPU even where a GPU is present, without the backend log line
# (tests/backend.test.mjs and tests/gpu/run.sh cover the backends).
export STRATA_BACKEND=${STRATA_BACKEND:-cpu} STRATA_LOG=${STRATA_LOG:-0}
make -s -C native -j"$(nproc)" all >/dev/null
[ -f build/Release/strata.node ] || npx --no-install node-gyp rebuild >/dev/null
npm run -s build >/dev/null
bash tests/fixtures/get-vocab.sh >/dev/null
bash scripts/install-n8n.sh
exec npx --no-install tap "$@"
