// Ablation of the tensor-core decode kernel (fp16, Hq = 32, D = 128, one new
// query per sequence): block shapes (warps, ring stages) beside the
// CUDA-core kernel, on rows of the decode benchmark's grid, contiguous and
// with 16-token pages. Every variant's output is compared with the CUDA-core
// kernel's before it is timed. Bandwidth is K + V bytes read once, beside a
// device-to-device copy measured in the same run.
//
//   decode_ablation [--quick] [--back-to-back]
// --back-to-back times calls queued one after another, as the decode
// benchmark does, instead of after an L2-evicting read each.
// Built with -DFASTATTN_CUDA_BUILD_DRIVER=ON; any GPU from sm80 up.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda/decode/decode_kernel.cuh"
#include "cuda/decode/decode_mma_kernel.cuh"
#include "cuda/decode_launch.h"
#include "cuda/host/decode_select.h"
#include "check_cuda.cuh"
#include "device_random.cuh"

namespace {

using namespace fastattn::cuda;

constexpr int kD = 128, kHq = 32;
using Elem = __half;

__global__ void hold_stream(long long ns) {
  const long long start = clock64();
  (void)start;
  for (long long waited = 0; waited < ns; waited += 1000) __nanosleep(1000);
}

// Reads a buffer larger than L2, leaving it full of clean lines (a memset
// would leave dirty ones whose write-back the next call would pay for).
__global__ void read_through(const uint4* p, int64_t n, int* sink) {
  uint32_t x = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const uint4 v = p[i];
    x ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (x == 0x12345678u) *sink = 1;
}

__global__ void max_abs_diff(const __half* a, const __half* b, int64_t n, float* out) {
  float m = 0.f;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float d = fabsf(__half2float(a[i]) - __half2float(b[i]));
    m = fmaxf(m, d != d ? INFINITY : d);
  }
  for (int o = 16; o > 0; o /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if ((threadIdx.x & 31) == 0) atomicMax(reinterpret_cast<int*>(out), __float_as_int(m));
}

struct Variant {
  std::string name;
  int blocks_per_sm = 0;
  int rows_per_block = 16;
  int round_keys = 1;  // keys one round of the block's warps takes (choose_num_splits)
  std::function<void(const DecodeKernelParams&, int row_chunks, cudaStream_t)> launch;
};

void launch_combine(const DecodeKernelParams& p, cudaStream_t stream, bool programmatic) {
  CHECK_CUDA(launch_decode_merge(p, fastattn::DType::kFloat16, programmatic, stream));
}

template <int kWarps, int kStages, int kMinBlocks = 1>
Variant mma_variant(bool programmatic) {
  using T = DecodeMmaTraits<Elem, kD, kWarps, kStages, kMinBlocks>;
  auto kernel = decode_mma_kernel<T>;
  CHECK_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  T::kSmemBytes));
  Variant v;
  v.name = "mma w" + std::to_string(kWarps) + " s" + std::to_string(kStages) +
           (kMinBlocks > 1 ? " min" + std::to_string(kMinBlocks) : "") +
           (programmatic ? "" : " no-PDL");
  v.round_keys = T::kTileKeys * kWarps;
  CHECK_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&v.blocks_per_sm, kernel, T::kThreads,
                                                           T::kSmemBytes));
  v.launch = [kernel, programmatic](const DecodeKernelParams& p, int row_chunks,
                                    cudaStream_t stream) {
    const dim3 grid(p.num_splits * row_chunks, p.heads_kv, p.batch);
    kernel<<<grid, T::kThreads, T::kSmemBytes, stream>>>(p);
    if (p.num_splits > 1) launch_combine(p, stream, programmatic);
  };
  return v;
}

template <int kRows>
Variant cuda_core_variant() {
  using T = DecodeTraits<Elem, kD, kRows>;
  auto kernel = decode_split_kernel<T>;
  CHECK_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  T::kSmemBytes));
  Variant v;
  v.name = "cuda-core rows" + std::to_string(kRows);
  v.rows_per_block = kRows;
  CHECK_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&v.blocks_per_sm, kernel, T::kThreads,
                                                           T::kSmemBytes));
  v.launch = [kernel](const DecodeKernelParams& p, int row_chunks, cudaStream_t stream) {
    const dim3 grid(p.num_splits, p.heads_kv * row_chunks, p.batch);
    kernel<<<grid, T::kThreads, T::kSmemBytes, stream>>>(p);
    if (p.num_splits > 1) launch_combine(p, stream, false);
  };
  return v;
}

struct Row {
  int batch, heads_kv, keys, page_size;  // page_size 0: contiguous
};

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, back_to_back = false;
  for (int i = 1; i < argc; ++i) {
    quick = quick || std::strcmp(argv[i], "--quick") == 0;
    back_to_back = back_to_back || std::strcmp(argv[i], "--back-to-back") == 0;
  }
  int sms = 0;
  CHECK_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs\n", prop.name, sms);
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  cudaEvent_t e0, e1;
  CHECK_CUDA(cudaEventCreate(&e0));
  CHECK_CUDA(cudaEventCreate(&e1));

  // Copy bandwidth: 1 GiB device to device, read + write counted.
  const size_t copy_bytes = size_t{1} << 30;
  void *src = nullptr, *dst = nullptr;
  CHECK_CUDA(cudaMalloc(&src, copy_bytes));
  CHECK_CUDA(cudaMalloc(&dst, copy_bytes));
  std::vector<float> copy_ms;
  for (int i = 0; i < 12; ++i) {
    CHECK_CUDA(cudaEventRecord(e0, stream));
    CHECK_CUDA(cudaMemcpyAsync(dst, src, copy_bytes, cudaMemcpyDeviceToDevice, stream));
    CHECK_CUDA(cudaEventRecord(e1, stream));
    CHECK_CUDA(cudaEventSynchronize(e1));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, e0, e1));
    if (i >= 2) copy_ms.push_back(ms);
  }
  std::sort(copy_ms.begin(), copy_ms.end());
  const double copy_tbs = 2.0 * copy_bytes / (copy_ms[copy_ms.size() / 2] * 1e-3) / 1e12;
  std::printf("copy bandwidth: %.2f TB/s (read + write)\n", copy_tbs);
  CHECK_CUDA(cudaFree(dst));
  // `src` stays: reading 256 MiB of it between timed calls evicts L2.
  const uint4* flush = static_cast<const uint4*>(src);
  int* sink = nullptr;
  CHECK_CUDA(cudaMalloc(&sink, sizeof(int)));

  std::vector<Variant> variants;
  variants.push_back(cuda_core_variant<4>());
  variants.push_back(mma_variant<4, 2>(true));
  variants.push_back(mma_variant<4, 3>(true));
  variants.push_back(mma_variant<4, 2, 3>(true));
  variants.push_back(mma_variant<8, 2>(true));
  variants.push_back(mma_variant<8, 3>(true));
  variants.push_back(mma_variant<4, 4>(true));  // deeper ring (decode-h200.md)
  variants.push_back(mma_variant<4, 2>(false));

  std::vector<Row> rows = {
      {1, 8, 1024, 0},   {1, 8, 4096, 0},    {1, 8, 32768, 0},  {1, 8, 131072, 0},
      {1, 32, 1024, 0},  {1, 32, 4096, 0},   {1, 32, 131072, 0}, {16, 8, 1024, 0},
      {16, 8, 4096, 0},  {16, 8, 32768, 0},  {16, 8, 131072, 0}, {16, 32, 32768, 0},
      {16, 32, 1024, 0}, {16, 32, 1024, 16}, {64, 32, 1024, 0},
      {64, 8, 1024, 0},  {64, 8, 32768, 0},  {64, 32, 4096, 0},  {16, 8, 32768, 16},
      {1, 8, 131072, 16}, {64, 8, 1024, 16}, {16, 8, 4096, 5},
  };
  if (quick) rows = {{64, 8, 1024, 0}, {64, 32, 1024, 0}, {16, 32, 1024, 0}, {64, 32, 1024, 16}};

  std::mt19937 rng(7);
  for (const Row& row : rows) {
    const int64_t b = row.batch, hkv = row.heads_kv, lk = row.keys;
    const int64_t cache_elems = b * lk * hkv * kD;
    const double bytes = 2.0 * cache_elems * sizeof(Elem);
    Elem *k = nullptr, *v = nullptr, *q = nullptr, *out = nullptr, *ref = nullptr;
    CHECK_CUDA(cudaMalloc(&k, cache_elems * sizeof(Elem)));
    CHECK_CUDA(cudaMalloc(&v, cache_elems * sizeof(Elem)));
    CHECK_CUDA(cudaMalloc(&q, b * kHq * kD * sizeof(Elem)));
    CHECK_CUDA(cudaMalloc(&out, b * kHq * kD * sizeof(Elem)));
    CHECK_CUDA(cudaMalloc(&ref, b * kHq * kD * sizeof(Elem)));
    fastattn::bench::fill_normal<<<1024, 256, 0, stream>>>(k, cache_elems, 1);
    fastattn::bench::fill_normal<<<1024, 256, 0, stream>>>(v, cache_elems, 2);
    fastattn::bench::fill_normal<<<64, 256, 0, stream>>>(q, b * kHq * kD, 3);
    std::vector<int32_t> lens(b, static_cast<int32_t>(lk));
    int32_t* d_lens = nullptr;
    CHECK_CUDA(cudaMalloc(&d_lens, b * sizeof(int32_t)));
    CHECK_CUDA(cudaMemcpy(d_lens, lens.data(), b * sizeof(int32_t), cudaMemcpyHostToDevice));
    int32_t* d_table = nullptr;
    const int64_t pages_per_seq = row.page_size ? (lk + row.page_size - 1) / row.page_size : 0;
    if (row.page_size) {
      // The cache holds b * pages_per_seq pages (lk is a multiple of the
      // page size in every row here), handed out in a random order.
      std::vector<int32_t> table(b * pages_per_seq);
      std::iota(table.begin(), table.end(), 0);
      std::shuffle(table.begin(), table.end(), rng);
      CHECK_CUDA(cudaMalloc(&d_table, table.size() * sizeof(int32_t)));
      CHECK_CUDA(cudaMemcpy(d_table, table.data(), table.size() * sizeof(int32_t),
                            cudaMemcpyHostToDevice));
    }
    float* workspace = nullptr;
    CHECK_CUDA(cudaMalloc(&workspace, size_t(FA_MAX_DECODE_SPLITS) * b * kHq * (kD + 1) * 4 + 4096));
    float* d_diff = nullptr;
    CHECK_CUDA(cudaMalloc(&d_diff, sizeof(float)));

    std::printf("\nB=%lld Hkv=%lld Lk=%lld %s (%.1f MiB)\n", (long long)b, (long long)hkv,
                (long long)lk,
                row.page_size ? ("page " + std::to_string(row.page_size)).c_str() : "contiguous",
                bytes / (1 << 20));
    for (size_t vi = 0; vi < variants.size(); ++vi) {
      const Variant& var = variants[vi];
      DecodeKernelParams p;
      p.q = q;
      p.q_head_stride = kD;
      p.q_row_stride = kHq * kD;
      p.q_batch_stride = kHq * kD;
      p.out = out;
      p.out_head_stride = kD;
      p.out_row_stride = kHq * kD;
      p.out_batch_stride = kHq * kD;
      p.k = k;
      p.v = v;
      p.k_head_stride = p.v_head_stride = kD;
      p.k_row_stride = p.v_row_stride = hkv * kD;
      if (row.page_size) {
        p.k_page_stride = p.v_page_stride = int64_t(row.page_size) * hkv * kD;
        p.page_table = d_table;
        p.page_table_stride = pages_per_seq;
        p.page_size = FastDivmod(row.page_size);
      } else {
        p.k_page_stride = p.v_page_stride = lk * hkv * kD;
      }
      p.cache_seqlens = d_lens;
      p.batch = int(b);
      p.seqlen_q = 1;
      p.heads_q = kHq;
      p.heads_kv = int(hkv);
      p.group_size = int(kHq / hkv);
      p.head_dim = kD;
      p.scale_log2 = 1.4426950408889634f / std::sqrt(float(kD));
      const int rows_total = p.group_size;
      const int row_chunks = (rows_total + var.rows_per_block - 1) / var.rows_per_block;
      p.num_splits = choose_num_splits(b * hkv * row_chunks, lk, sms, var.blocks_per_sm, var.round_keys);
      p.partial_o = workspace;
      p.partial_lse = workspace + size_t(p.num_splits) * b * kHq * kD;
      // Check against the first variant's output (the CUDA-core kernel).
      CHECK_CUDA(cudaMemsetAsync(out, 0xff, b * kHq * kD * sizeof(Elem), stream));
      var.launch(p, row_chunks, stream);
      CHECK_CUDA(cudaGetLastError());
      CHECK_CUDA(cudaStreamSynchronize(stream));
      float diff = 0.f;
      if (vi == 0) {
        CHECK_CUDA(cudaMemcpy(ref, out, b * kHq * kD * sizeof(Elem), cudaMemcpyDeviceToDevice));
      } else {
        CHECK_CUDA(cudaMemset(d_diff, 0, sizeof(float)));
        max_abs_diff<<<64, 256, 0, stream>>>(out, ref, b * kHq * kD, d_diff);
        CHECK_CUDA(cudaMemcpy(&diff, d_diff, sizeof(float), cudaMemcpyDeviceToHost));
      }
      // Timed: each call after an L2-evicting read, between two events; a
      // sleeping kernel holds the stream while the host queues them all.
      constexpr int kRepeats = 25;
      std::vector<cudaEvent_t> ev(2 * kRepeats);
      for (auto& e : ev) CHECK_CUDA(cudaEventCreate(&e));
      hold_stream<<<1, 1, 0, stream>>>(3000000);
      for (int r = 0; r < kRepeats; ++r) {
        if (!back_to_back) read_through<<<4 * sms, 512, 0, stream>>>(flush, (256 << 20) / 16, sink);
        CHECK_CUDA(cudaEventRecord(ev[2 * r], stream));
        var.launch(p, row_chunks, stream);
        CHECK_CUDA(cudaEventRecord(ev[2 * r + 1], stream));
      }
      CHECK_CUDA(cudaStreamSynchronize(stream));
      std::vector<float> ms(kRepeats);
      for (int r = 0; r < kRepeats; ++r) {
        CHECK_CUDA(cudaEventElapsedTime(&ms[r], ev[2 * r], ev[2 * r + 1]));
      }
      for (auto& e : ev) CHECK_CUDA(cudaEventDestroy(e));
      std::sort(ms.begin(), ms.end());
      const double t = ms[kRepeats / 2] * 1e-3;
      std::printf("  %-22s splits %3d occ %d: %8.1f us  %5.2f TB/s  %4.0f%% copy  diff %.2e\n",
                  var.name.c_str(), p.num_splits, var.blocks_per_sm, t * 1e6, bytes / t / 1e12,
                  100.0 * bytes / t / 1e12 / copy_tbs, diff);
    }
    CHECK_CUDA(cudaFree(k));
    CHECK_CUDA(cudaFree(v));
    CHECK_CUDA(cudaFree(q));
    CHECK_CUDA(cudaFree(out));
    CHECK_CUDA(cudaFree(ref));
    CHECK_CUDA(cudaFree(d_lens));
    CHECK_CUDA(cudaFree(workspace));
    CHECK_CUDA(cudaFree(d_diff));
    if (d_table) CHECK_CUDA(cudaFree(d_table));
  }
  return 0;
}
