#!/usr/bin/env bash
# `npm test`: builds the native engine and its C tests, fetches test fixtures
# (tokenizer vocabularies from node-llama-cpp's bundled llama.cpp source),
# then runs every Tap test (C module tests run as Tap subtests too).
set -euo pipefail
cd "$(dirname "$0")/.."
export npm_config_nodedir=/usr
make -s -C native -j"$(nproc)" all >/dev/null
[ -f build/Release/strata.node ] || npx --no-install node-gyp rebuild >/dev/null
bash tests/fixtures/get-vocab.sh >/dev/null
exec npx --no-install tap "$@"
