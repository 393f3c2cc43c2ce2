// Timeline of the sm90 forward kernel: the shipped kernel of a head dim,
// rebuilt with traits whose record() timestamps each step of a query tile
// (Sm90Event, SM clock cycles) in the first blocks of the grid: the producer
// thread and thread 0 of each consumer warpgroup. Prints, per role, where the
// time goes between consecutive steps (waits for data, for the ping-pong
// turn, for the tensor cores; softmax; epilogue), and the traced kernel's
// time beside the shipped one's (the cost of tracing itself).
//
//   sm90_trace [--d 64|128] [--len L] [--causal] [--short-rows] [--csv FILE]
// The grid is the prefill benchmark's: fp16, hidden 2048, B * L = 16384.
// Built with -DFASTATTN_CUDA_BUILD_DRIVER=ON; runs on an sm90 GPU only.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cuda/fwd/launch_sm90.cuh"
#include "check_cuda.cuh"
#include "sm90_driver_common.cuh"
#include "device_random.cuh"

namespace {

using fastattn::cuda::FwdParams;
namespace fc = fastattn::cuda;

constexpr int kTracedBlocks = 8;
constexpr int kRoles = 4;  // the producer and up to three consumer warpgroups
constexpr int kMaxEvents = 8192;

// Entry n of (block, role): clock << 8 | event; 0 = not recorded.
__device__ unsigned long long g_trace[kTracedBlocks][kRoles][kMaxEvents];

template <class Base>
struct Traced : Base {
  static constexpr bool kTrace = true;
  static __device__ __forceinline__ void record(int role, int n, int event) {
    if (blockIdx.x < kTracedBlocks && n < kMaxEvents)
      g_trace[blockIdx.x][role][n] = (static_cast<unsigned long long>(clock64()) << 8) | event;
  }
};

const char* const kEventNames[fc::kEvCount] = {
    "tile begin", "Q ready", "K ready", "turn", "MMAs issued", "S done",
    "softmax done", "PV done", "O stored", "O buffer free", "O staged",
    "P: Q issued", "P: K issued", "P: V issued"};



// Per role: the time between each pair of consecutive steps, summed over
// the traced blocks, largest first.
void summarise(const std::vector<unsigned long long>& trace, int consumers, FILE* csv) {
  for (int role = 0; role <= consumers; ++role) {
    std::vector<double> sum(fc::kEvCount * fc::kEvCount, 0.0);
    std::vector<long> count(fc::kEvCount * fc::kEvCount, 0);
    double span = 0.0;
    long tiles = 0;
    for (int blk = 0; blk < kTracedBlocks; ++blk) {
      const unsigned long long* e = &trace[(size_t(blk) * kRoles + role) * kMaxEvents];
      int n = 0;
      while (n < kMaxEvents && e[n] != 0) ++n;
      for (int i = 0; i < n; ++i) {
        const int ev = int(e[i] & 0xff);
        if (ev == fc::kEvTileBegin || ev == fc::kEvProducerQ) ++tiles;
        if (csv)
          std::fprintf(csv, "%d,%d,%d,%llu,%s\n", blk, role, i, e[i] >> 8, kEventNames[ev]);
        if (i == 0) continue;
        const int prev = int(e[i - 1] & 0xff);
        const double dt = double((e[i] >> 8) - (e[i - 1] >> 8));
        sum[prev * fc::kEvCount + ev] += dt;
        ++count[prev * fc::kEvCount + ev];
      }
      if (n > 1) span += double((e[n - 1] >> 8) - (e[0] >> 8));
    }
    std::printf("\n%s: %ld query tiles over %d blocks, %.0f cycles per query tile\n",
                role == 0 ? "producer" : ("consumer " + std::to_string(role - 1)).c_str(), tiles,
                kTracedBlocks, tiles ? span / tiles : 0.0);
    std::vector<int> order;
    for (int i = 0; i < fc::kEvCount * fc::kEvCount; ++i)
      if (count[i] > 0) order.push_back(i);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return sum[a] > sum[b]; });
    std::printf("  %-14s -> %-14s %8s %10s %10s %7s\n", "from", "to", "count", "cycles/ea",
                "per tile", "share");
    for (int i : order)
      std::printf("  %-14s -> %-14s %8ld %10.0f %10.0f %6.1f%%\n",
                  kEventNames[i / fc::kEvCount], kEventNames[i % fc::kEvCount], count[i],
                  sum[i] / count[i], tiles ? sum[i] / tiles : 0.0, 100.0 * sum[i] / span);
  }
}

template <class T>
int run(int len, bool causal, FILE* csv) {
  using TT = Traced<T>;
  constexpr int kTokens = 16384, kD = T::kHeadDim, kHeads = 2048 / kD;
  const int b = kTokens / len;
  const int64_t n = int64_t{kTokens} * kHeads * kD;
  __half *q, *k, *v, *o;
  for (__half** ptr : {&q, &k, &v, &o}) CHECK_CUDA(cudaMalloc(ptr, n * sizeof(__half)));
  fastattn::bench::fill_normal<<<1024, 256>>>(q, n, 1);
  fastattn::bench::fill_normal<<<1024, 256>>>(k, n, 2);
  fastattn::bench::fill_normal<<<1024, 256>>>(v, n, 3);
  const FwdParams p = fastattn::bench::bshd_params(q, k, v, o, b, len, kHeads, kD, causal);
  auto shipped = [&] {
    return fc::launch_sm90_kernel<T>(&fc::flash_fwd_sm90_kernel<T, false>, p, nullptr, 0);
  };
  auto traced = [&] {
    return fc::launch_sm90_kernel<TT>(&fc::flash_fwd_sm90_kernel<TT, false>, p, nullptr, 0);
  };
  const double flops = 4.0 * b * double(len) * len * kHeads * kD / (causal ? 2 : 1);
  const float ms_shipped = fastattn::bench::median_ms(shipped, 20),
              ms_traced = fastattn::bench::median_ms(traced, 20);
  std::printf("fp16 D=%d L=%d B=%d H=%d %s: %d consumers, %d-key tiles, %d stages, %d block(s)/SM\n",
              kD, len, b, kHeads, causal ? "causal" : "non-causal", T::kConsumers, T::kBlockN,
              T::kStages, T::kBlocksPerSm);
  std::printf("shipped %.1f us (%.1f TF/s), traced %.1f us (%.1f TF/s)\n", ms_shipped * 1e3,
              flops / (ms_shipped * 1e9), ms_traced * 1e3, flops / (ms_traced * 1e9));
  // One traced call on a cleared buffer.
  std::vector<unsigned long long> trace(size_t(kTracedBlocks) * kRoles * kMaxEvents, 0);
  CHECK_CUDA(cudaMemcpyToSymbol(g_trace, trace.data(), trace.size() * sizeof(trace[0])));
  CHECK_CUDA(traced());
  CHECK_CUDA(cudaDeviceSynchronize());
  CHECK_CUDA(cudaMemcpyFromSymbol(trace.data(), g_trace, trace.size() * sizeof(trace[0])));
  if (csv) std::fprintf(csv, "block,role,n,cycle,event\n");
  summarise(trace, T::kConsumers, csv);
  for (__half* ptr : {q, k, v, o}) CHECK_CUDA(cudaFree(ptr));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int d = 128, len = 512;
  bool causal = false, short_rows = false;
  FILE* csv = nullptr;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--d" && i + 1 < argc) d = std::atoi(argv[++i]);
    else if (a == "--len" && i + 1 < argc) len = std::atoi(argv[++i]);
    else if (a == "--causal") causal = true;
    else if (a == "--short-rows") short_rows = true;
    else if (a == "--csv" && i + 1 < argc) csv = std::fopen(argv[++i], "w");
    else {
      std::fprintf(stderr, "usage: sm90_trace [--d 64|128] [--len L] [--causal] [--short-rows] [--csv FILE]\n");
      return 2;
    }
  }
  if ((d != 64 && d != 128) || len < 1 || 16384 % len != 0) {
    std::fprintf(stderr, "sm90_trace: --d must be 64 or 128 and --len divide 16384\n");
    return 2;
  }
  const cudaDeviceProp prop = fastattn::bench::sm90_device_or_exit("sm90_trace");
  std::printf("%s\n", prop.name);
  int rc;
  using fc::DefaultSm90ShortRowsTraits, fc::DefaultSm90Traits;
  if (d == 128 && short_rows) rc = run<DefaultSm90ShortRowsTraits<__half, 128>>(len, causal, csv);
  else if (d == 128) rc = run<DefaultSm90Traits<__half, 128>>(len, causal, csv);
  else if (short_rows) rc = run<DefaultSm90ShortRowsTraits<__half, 64>>(len, causal, csv);
  else rc = run<DefaultSm90Traits<__half, 64>>(len, causal, csv);
  if (csv) std::fclose(csv);
  return rc;
}
