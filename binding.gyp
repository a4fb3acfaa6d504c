{
  # The Node-API addon: native/addon/*.c (the JS binding) compiled with every
  # engine source in native/src. Kernels pick their SIMD path at run time, so
  # no -march=native here: the .node must run on any x86-64/arm64 machine.
  "variables": {
    # 1: the CUDA backend (native/cuda): on when nvcc is found (PATH or
    # /usr/local/cuda/bin) unless STRATA_CUDA=0. The addon then links
    # native/build/libstrata_cuda.a (made by `make -C native cuda-lib`,
    # the action below) and the static CUDA runtime, never libcuda: it still
    # loads on machines without a GPU or driver and runs on the CPU there.
    "strata_cuda%": "<!(node -p \"process.env.STRATA_CUDA === '0' ? 0 : (process.env.STRATA_CUDA === '1' || require('child_process').spawnSync('sh', ['-c', 'command -v nvcc || test -x /usr/local/cuda/bin/nvcc']).status === 0) ? 1 : 0\")",
    # 1: the strata-worker client (native/addon/client.c) links nng; 0 (no
    # nng headers found, or STRATA_NNG=0) builds it as stubs that throw.
    "strata_nng%": "<!(node -p \"process.env.STRATA_NNG || (['/usr/include','/usr/local/include','/opt/homebrew/include'].some(d=>require('fs').existsSync(d+'/nng/nng.h')) ? 1 : 0)\")"
  },
  "targets": [
    {
      "target_name": "strata",
      "sources": [
        "<!@(node -p \"require('fs').readdirSync('native/addon').filter(f=>f.endsWith('.c')).sort().map(f=>'native/addon/'+f).join(' ')\")",
        "<!@(node -p \"require('fs').readdirSync('native/src').filter(f=>f.endsWith('.c')).sort().map(f=>'native/src/'+f).join(' ')\")",
        "native/cuda/backend.c"
      ],
      "include_dirs": ["native/include", "native/src"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags": ["-O2", "-pthread", "-fPIC", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_c": ["-std=c11"],
      "ldflags": ["-pthread"],
      "libraries": ["-lm", "-pthread", "-ljansson"],
      "configurations": {
        "Release": {
          "cflags!": ["-O3"],
          "cflags": ["-O2"]
        }
      },
      "conditions": [
        ["strata_nng==1", {
          "libraries": ["-lnng"]
        }, {
          "defines": ["STRATA_NO_WORKER_CLIENT=1"]
        }],
        ["strata_cuda==1", {
          "defines": ["STRATA_CUDA=1"],
          "actions": [{
            "action_name": "strata_cuda_lib",
            "inputs": [
              "<!@(node -p \"require('fs').readdirSync('native/cuda').filter(f=>/\\.(cu|cuh|c|h)$/.test(f)).sort().map(f=>'native/cuda/'+f).join(' ')\")"
            ],
            "outputs": ["<(module_root_dir)/native/build/libstrata_cuda.a"],
            "action": ["make", "-s", "-C", "<(module_root_dir)/native", "BUILD=build", "STRATA_CUDA=1", "cuda-lib"]
          }],
          "libraries": [
            "<(module_root_dir)/native/build/libstrata_cuda.a",
            "-L/usr/local/cuda/lib64", "-lcudart_static", "-ldl", "-lrt", "-lpthread", "-lstdc++"
          ]
        }],
        ["OS=='mac'", {
          "xcode_settings": {
            "GCC_C_LANGUAGE_STANDARD": "c11",
            "OTHER_CFLAGS": ["-O2", "-pthread", "-fPIC"]
          }
        }]
      ]
    }
  ]
}
