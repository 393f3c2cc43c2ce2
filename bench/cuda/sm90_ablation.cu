// Ablation of the sm90 forward kernel (fp16, head dim 128, the prefill
// benchmark's grid: hidden 2048, B * L = 16384): the shipped configuration
// beside the same kernel without ping-pong scheduling between the consumer
// warpgroups, without the overlap of softmax and MMAs inside a warpgroup,
// and with a 3-stage K/V ring instead of 2. Each variant's output is
// compared with the shipped one's before it is timed.
//
//   sm90_ablation [--json FILE]
// Built with -DFASTATTN_CUDA_BUILD_DRIVER=ON; runs on an sm90 GPU only.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "cuda/fwd/launch_sm90.cuh"
#include "check_cuda.cuh"
#include "sm90_driver_common.cuh"
#include "device_random.cuh"

namespace {

using fastattn::cuda::FwdParams;
using fastattn::cuda::Sm90Traits;

using fastattn::bench::bshd_params;
using fastattn::bench::fill_normal;
using fastattn::bench::median_ms;

__global__ void max_abs_diff(const __half* a, const __half* b, int64_t n, float* out) {
  float m = 0.f;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    m = fmaxf(m, fabsf(__half2float(a[i]) - __half2float(b[i])));
  for (int o = 16; o > 0; o /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if ((threadIdx.x & 31) == 0) atomicMax(reinterpret_cast<int*>(out), __float_as_int(m));
}

struct Variant {
  const char* name;
  cudaError_t (*run)(const FwdParams&, cudaStream_t);
};

template <int kStages, bool kOverlap, bool kPingPong, int kSection = 0>
cudaError_t run_variant(const FwdParams& p, cudaStream_t stream) {
  using T = Sm90Traits<__half, 128, 128, kStages, kOverlap, kPingPong>;
  auto kernel = &fastattn::cuda::flash_fwd_sm90_kernel<T, false>;
  return fastattn::cuda::launch_sm90_kernel<T>(kernel, p, stream, kSection);
}

// The kernel variants, then the shipped kernel with the tile order's section
// (the (head, sequence) pairs whose query tiles are dealt out together)
// forced instead of sized to L2.
const Variant kVariants[] = {
    {"shipped (2 stages, overlap, ping-pong)", &run_variant<2, true, true>},
    {"no ping-pong", &run_variant<2, true, false>},
    {"no intra-warpgroup overlap", &run_variant<2, false, true>},
    {"neither overlap", &run_variant<2, false, false>},
    {"3 stages (O staged in Q)", &run_variant<3, true, true>},
    {"section of 1 head", &run_variant<2, true, true, 1>},
    {"section of 2 heads", &run_variant<2, true, true, 2>},
    {"section of 8 heads", &run_variant<2, true, true, 8>},
    {"section of 32 heads", &run_variant<2, true, true, 32>},
    {"section of all heads", &run_variant<2, true, true, 1 << 20>},
};



}  // namespace

int main(int argc, char** argv) {
  FILE* json = nullptr;
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--json" && i + 1 < argc) json = std::fopen(argv[++i], "w");
  const cudaDeviceProp prop = fastattn::bench::sm90_device_or_exit("sm90_ablation");
  constexpr int kTokens = 16384, kHeads = 16, kD = 128;
  const int64_t n = int64_t{kTokens} * kHeads * kD;
  __half *q, *k, *v, *o_ref, *o;
  float* diff;
  for (__half** p : {&q, &k, &v, &o_ref, &o}) CHECK_CUDA(cudaMalloc(p, n * sizeof(__half)));
  CHECK_CUDA(cudaMalloc(&diff, sizeof(float)));
  fill_normal<<<1024, 256>>>(q, n, 1);
  fill_normal<<<1024, 256>>>(k, n, 2);
  fill_normal<<<1024, 256>>>(v, n, 3);
  CHECK_CUDA(cudaDeviceSynchronize());

  std::printf("%s, fp16, D=128, hidden 2048, B*L=16384; TF/s = 4*B*L*L*H*D (halved causal), "
              "median of 20\n", prop.name);
  std::printf("%-40s", "variant");
  const int lengths[] = {1024, 2048, 4096, 8192, 16384};
  for (int causal = 0; causal < 2; ++causal)
    for (int l : lengths) std::printf(" %6s%c", (std::to_string(l / 1024) + "K").c_str(), causal ? 'c' : ' ');
  std::printf("  max|O - shipped|\n");
  for (const Variant& var : kVariants) {
    std::printf("%-40s", var.name);
    float worst = 0.f;
    for (int causal = 0; causal < 2; ++causal)
      for (int l : lengths) {
        const int b = kTokens / l;
        const FwdParams ref = bshd_params(q, k, v, o_ref, b, l, kHeads, kD, causal);
        const FwdParams p = bshd_params(q, k, v, o, b, l, kHeads, kD, causal);
        CHECK_CUDA(kVariants[0].run(ref, nullptr));
        CHECK_CUDA(cudaMemset(o, 0xff, n * sizeof(__half)));  // NaN poison
        CHECK_CUDA(var.run(p, nullptr));
        CHECK_CUDA(cudaMemset(diff, 0, sizeof(float)));
        max_abs_diff<<<1024, 256>>>(o_ref, o, n, diff);
        float d = 0.f;
        CHECK_CUDA(cudaMemcpy(&d, diff, sizeof(float), cudaMemcpyDeviceToHost));
        worst = std::isnan(d) || d > worst ? d : worst;
        const double ms = median_ms([&] { return var.run(p, nullptr); }, 20);
        const double tflops = 4.0 * b * double(l) * l * kHeads * kD / (causal ? 2 : 1) / (ms * 1e9);
        std::printf(" %7.1f", tflops);
        if (json)
          std::fprintf(json,
                       "{\"device\": \"%s\", \"variant\": \"%s\", \"L\": %d, \"causal\": %d, "
                       "\"ms\": %.5f, \"tflops\": %.2f}\n",
                       prop.name, var.name, l, causal, ms, tflops);
      }
    std::printf("  %.2e\n", worst);
  }
  if (json) std::fclose(json);
  return 0;
}
