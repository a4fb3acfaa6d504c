#!/usr/bin/env bash
# Builds and runs the CUDA kernel test (native/cuda/tests/kernels_gpu_test.cu):
# every kernel of native/cuda/cu_kernels.h and every weight type against the
# CPU references, then a short matmul timing. Exit 0: passed; 77: no usable
# CUDA device or no nvcc ("SKIP: ..." line); other: build or check failed.
#   BUILD=build-x bash tests/gpu/kernels.sh [--no-bench]
#   CU_ARCH_FLAGS="-gencode arch=compute_90,code=sm_90" to build for one GPU only.
# The GPU-less half (dequant math vs quant.c) is `make -C native cuda-test-host`.
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
export PATH="$PATH:/usr/local/cuda/bin"
if ! command -v nvcc > /dev/null 2>&1; then
  echo "SKIP: no CUDA device (nvcc not found, cannot build the kernels)"
  exit 77
fi
make -C native -j"$(nproc)" BUILD="$BUILD" STRATA_CUDA=1 cuda-test-gpu > /tmp/strata-kernels-build.$$.log 2>&1 || {
  tail -n 40 /tmp/strata-kernels-build.$$.log; rm -f /tmp/strata-kernels-build.$$.log; echo "FAIL: build"; exit 1; }
rm -f /tmp/strata-kernels-build.$$.log
"native/$BUILD/cuda/tests/kernels_gpu_test" "$@"
