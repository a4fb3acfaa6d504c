#!/usr/bin/env bash
# GPU benchmark: a random 7B-shaped Llama (Llama-2-7B shapes, Q8_0, 7.2 GB,
# made by mkmodel on the machine that runs this), tokens/s fully resident on
# the GPU vs streamed with a 4 GB VRAM budget (the rest of the weights cross
# PCIe through the pinned staging buffers every step) vs 1 GB, plus a short
# CPU reference and node-llama-cpp's CUDA build when one is installed.
# Prints a table; writes bench.jsonl and bench.md under $OUT when set.
#   BUILD=build bash bench/gpu/bench.sh      (after make -C native all)
# Env: BENCH_MODEL (reuse a file), BENCH_TYPE (Q8_0), BENCH_CPU=0 (skip CPU).
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
OUT=${OUT:-/tmp/strata-gpu-bench}
mkdir -p "$OUT"
TYPE=${BENCH_TYPE:-Q8_0}
MODEL=${BENCH_MODEL:-/tmp/strata-bench-7b-${TYPE}.gguf}
NPROC=$(nproc)
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}

if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "SKIP: no NVIDIA GPU here (nvidia-smi -L failed)"
  exit 0
fi
[ -f "native/$BUILD/libstrata_cuda.a" ] || { echo "FAIL: native/$BUILD/libstrata_cuda.a missing (build with CUDA first)"; exit 1; }

BIN=native/$BUILD/gpu_bench
cc -std=c11 -D_GNU_SOURCE -O2 -pthread -Inative/include -Inative/src bench/gpu/gpu_bench.c \
  -Wl,--start-group "native/$BUILD/libstrata.a" "native/$BUILD/libstrata_cuda.a" -Wl,--end-group \
  -L"$CUDA_HOME/lib64" -lcudart_static -ldl -lrt -lpthread -lstdc++ -lm -ljansson -o "$BIN" || { echo "FAIL: gpu_bench build"; exit 1; }

if [ ! -f "$MODEL" ]; then
  t0=$(date +%s)
  "native/$BUILD/tools/mkmodel" --arch llama --type "$TYPE" --dim 4096 --layers 32 --heads 32 --kv-heads 32 \
    --ff 11008 --vocab-size 32000 --ctx 4096 --threads "$NPROC" -o "$MODEL" >/dev/null || { echo "FAIL: mkmodel"; exit 1; }
  echo "made $MODEL ($(du -h "$MODEL" | cut -f1)) in $(( $(date +%s) - t0 )) s"
fi

J="$OUT/bench.jsonl"
: > "$J"
bad=0
run() { # label args...
  local label=$1; shift
  local line
  line=$(timeout 60 "$BIN" "$MODEL" --threads "$NPROC" "$@" 2>>"$OUT/bench.stderr") || { echo "FAIL: $label"; tail -5 "$OUT/bench.stderr"; bad=1; return; }
  echo "{\"label\":\"$label\",${line#\{}" >> "$J"
  echo "$label: $line"
}
run "cuda resident"        --backend cuda --vram-budget 0          --pp 512 --tg 64 --batch 8
run "cuda vram 4 GB"       --backend cuda --vram-budget 4000000000 --pp 512 --tg 16 --batch 8
run "cuda vram 1 GB"       --backend cuda --vram-budget 1000000000 --pp 512 --tg 8  --batch 8
if [ "${BENCH_CPU:-1}" != 0 ]; then
  run "cpu ($NPROC threads)" --backend cpu --pp 64 --tg 4 --batch 1
fi

# node-llama-cpp (llama.cpp) with CUDA on the same file, when installed
NLC="node-llama-cpp: skipped"
if command -v node >/dev/null && node -e "require.resolve('@node-llama-cpp/linux-x64-cuda/package.json')" 2>/dev/null; then
  NLC=$(timeout 150 node --input-type=module -e "
    import { getLlama } from 'node-llama-cpp';
    const llama = await getLlama({ gpu: 'cuda', build: 'never', logLevel: 'error' });
    const model = await llama.loadModel({ modelPath: '$MODEL', gpuLayers: 'max' });
    const ctx = await model.createContext({ contextSize: 1024 });
    const seq = ctx.getSequence();
    const toks = Array.from({ length: 512 }, (_, i) => (i * 7919 + 13) % 32000);
    let t0 = performance.now();
    await seq.evaluateWithoutGeneratingNewTokens(toks);
    const pp = 512 * 1e3 / (performance.now() - t0);
    let n = 0; t0 = performance.now();
    for await (const t of seq.evaluate([1], { temperature: 0 })) { if (++n >= 64) break; }
    const tg = 64 * 1e3 / (performance.now() - t0);
    console.log('node-llama-cpp cuda (all layers on GPU): pp ' + pp.toFixed(1) + ' tok/s, tg ' + tg.toFixed(2) + ' tok/s');
  " 2>&1 | tail -1)
else
  NLC="node-llama-cpp: no CUDA build installed here (@node-llama-cpp/linux-x64-cuda missing), not measured"
fi
echo "$NLC"

{
  echo "| run | backend | VRAM budget | prompt tok/s | gen tok/s (1 seq) | gen tok/s (8 seqs) | load s |"
  echo "|---|---|---|---|---|---|---|"
  python3 - "$J" <<'PY'
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    vb = r["vram_budget"]
    vb = "all" if r["backend"] == "cuda" and vb == 0 else ("-" if r["backend"] != "cuda" else f"{vb/1e9:.0f} GB")
    b = f'{r["batch_tg_tps"]:.1f}' if r["batch"] > 1 else "-"
    print(f'| {r["label"]} | {r["backend"]} {r["device"]} | {vb} | {r["pp_tps"]:.1f} | {r["tg_tps"]:.2f} | {b} | {r["load_s"]:.1f} |')
PY
  echo
  echo "Model: $MODEL ($(du -h "$MODEL" | cut -f1); default: random Llama-2-7B shapes, $TYPE). $NLC"
} | tee "$OUT/bench.md"
exit $bad
