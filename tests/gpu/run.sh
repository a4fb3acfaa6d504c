#!/usr/bin/env bash
# Everything that needs a GPU, in one script sized for a short GPU session
# (< 6 minutes on an H200): build with CUDA for this GPU's architecture only,
# the kernel tests (tests/gpu/kernels.sh), the backend tests
# (cuda_fallback_test: AUTO/CUDA pick the GPU; cuda_parity_test: CUDA vs CPU
# logits, batched vs alone, streamed vs resident), then bench/gpu/bench.sh.
# Results and logs go under $OUT (default /tmp/strata-gpu-out); the exit
# status is non-zero when a check failed. Elsewhere: prints SKIP, exits 0.
#   bash tests/gpu/run.sh            GPU_BENCH=0 skips the benchmark
set -uo pipefail
cd "$(dirname "$0")/../.."
export OUT=${OUT:-/tmp/strata-gpu-out}
mkdir -p "$OUT"
export BUILD=${BUILD:-build}
S="$OUT/summary.txt"
: > "$S"
say() { echo "[gpu $(date +%T)] $*" | tee -a "$S"; }
fail=0
step() { # name timeout_s command...
  local name=$1 t=$2; shift 2
  local t0=$(date +%s)
  timeout "$t" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local dt=$(( $(date +%s) - t0 ))
  if [ $rc -eq 0 ]; then
    say "ok   $name (${dt}s)"
  elif [ $rc -eq 77 ]; then
    say "skip $name: $(grep -m1 SKIP "$OUT/$name.log")"
  else
    say "FAIL $name (rc $rc, ${dt}s)"; tail -n 25 "$OUT/$name.log" | tee -a "$S"; fail=1
  fi
  return $rc
}

if ! nvidia-smi -L > "$OUT/device.txt" 2>&1; then
  echo "SKIP: no NVIDIA GPU here (nvidia-smi -L failed); nothing to run" | tee -a "$S"
  exit 0
fi
say "device: $(head -1 "$OUT/device.txt")"
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv >> "$S" 2>&1
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '. ')
ARCH="-gencode arch=compute_${cap},code=sm_${cap}"

# 1. build what the checks need (kernels for this GPU only: the all-architecture
#    build is slow; no worker, so nng is not needed)
#    GPU_PREBUILT=1: use native/$BUILD as it came (e.g. carried from a machine
#    with nvcc: make -C native BUILD=build-gpu CU_ARCH_FLAGS=... the same targets)
if [ "${GPU_PREBUILT:-0}" = 1 ]; then
  say "build: using the prebuilt native/$BUILD"
else
  step build 200 make -C native -j"$(nproc)" BUILD="$BUILD" STRATA_CUDA=1 CU_ARCH_FLAGS="$ARCH" \
    "$BUILD/libstrata.a" cuda-lib "$BUILD/tests/cuda_fallback_test" "$BUILD/tests/cuda_parity_test" \
    "$BUILD/tools/mkmodel" || exit 1
fi
[ -f "native/$BUILD/libstrata_cuda.a" ] || { say "FAIL build: no libstrata_cuda.a (nvcc missing?)"; exit 1; }

# 2. kernels (cudak's test)
if [ -f tests/gpu/kernels.sh ]; then
  step kernels 90 env CU_ARCH_FLAGS="$ARCH" bash tests/gpu/kernels.sh
else
  say "skip kernels: tests/gpu/kernels.sh not present"
fi

# 3. backend selection + parity
step cuda_fallback_test 30 "native/$BUILD/tests/cuda_fallback_test"
step cuda_parity_test 90 "native/$BUILD/tests/cuda_parity_test"
if grep -q '^SKIP' "$OUT/cuda_parity_test.log"; then
  say "FAIL cuda_parity_test skipped although nvidia-smi sees a GPU: $(grep -m1 '^SKIP' "$OUT/cuda_parity_test.log")"
  fail=1
fi
grep -E "rel rms|greedy|SKIP" "$OUT/cuda_parity_test.log" > "$OUT/parity-summary.txt" 2>/dev/null

# 4. benchmark
if [ "${GPU_BENCH:-1}" != 0 ]; then
  step bench 180 bash bench/gpu/bench.sh
  cat "$OUT/bench.md" 2>/dev/null | tee -a "$S"
fi
say "done: $([ $fail -eq 0 ] && echo all passed || echo FAILURES)"
exit $fail
