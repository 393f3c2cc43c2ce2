// What the sm90 kernel drivers (sm90_ablation, sm90_trace, kv_read_bench)
// share: the check for an sm90 GPU, the prefill benchmark's problem as
// FwdParams over [B, L, H, D] tensors, and the median of CUDA-event-timed
// launches.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "check_cuda.cuh"
#include "cuda/flash_params.h"

namespace fastattn::bench {

inline cuda::FwdParams bshd_params(void* q, void* k, void* v, void* o, int b, int l, int h, int d,
                                   bool causal) {
  cuda::FwdParams p;
  p.q = q, p.k = k, p.v = v, p.out = o;
  p.q_row_stride = p.k_row_stride = p.v_row_stride = p.out_row_stride = int64_t{h} * d;
  p.q_head_stride = p.k_head_stride = p.v_head_stride = p.out_head_stride = d;
  p.q_batch_stride = p.k_batch_stride = p.v_batch_stride = p.out_batch_stride = int64_t{l} * h * d;
  p.batch = b, p.heads_q = h, p.group_size = 1;
  p.seqlen_q = p.seqlen_k = l;
  p.rows_q = p.rows_k = l;
  p.head_dim = d;
  p.window_left = -1;
  p.window_right = causal ? 0 : -1;
  p.scale_log2 = 1.4426950408889634f / std::sqrt(float(d));
  return p;
}

// Device 0's properties, or exit with status 2 naming `driver` unless it is
// an sm90 GPU (the drivers run sm_90a code only).
inline cudaDeviceProp sm90_device_or_exit(const char* driver) {
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  if (prop.major != 9 || prop.minor != 0) {
    std::fprintf(stderr, "%s: needs a compute capability 9.0 GPU, found %d.%d\n", driver,
                 prop.major, prop.minor);
    std::exit(2);
  }
  return prop;
}

// launch() returns a cudaError_t; 5 untimed calls first.
template <class Launch>
float median_ms(Launch&& launch, int repeats) {
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  for (int i = 0; i < 5; ++i) CHECK_CUDA(launch());
  std::vector<float> ms(repeats);
  for (float& m : ms) {
    CHECK_CUDA(cudaEventRecord(start));
    CHECK_CUDA(launch());
    CHECK_CUDA(cudaEventRecord(stop));
    CHECK_CUDA(cudaEventSynchronize(stop));
    CHECK_CUDA(cudaEventElapsedTime(&m, start, stop));
  }
  std::sort(ms.begin(), ms.end());
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  return ms[ms.size() / 2];
}

}  // namespace fastattn::bench
