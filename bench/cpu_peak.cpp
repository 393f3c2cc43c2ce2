// Measures the two ceilings the CPU attention kernel is judged against:
// the fp32 FMA peak (all cores and one core) and the memory read bandwidth.
// Standalone: no fastattn dependency. Highway dynamic dispatch picks the
// widest vector ISA of the machine it runs on.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu_peak.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

HWY_BEFORE_NAMESPACE();
namespace cpu_peak {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// 16 independent FMA chains: Zen 4 needs latency (4) x pipes (2) = 8 chains
// of 256-bit ops in flight, Intel cores 4 x 2 = 8 of 512-bit ones; 16 leaves
// margin and still fits the 16 registers of AVX2.
double fma_loop(int64_t iters, float* sink) {
  const hn::ScalableTag<float> d;
  const auto a = hn::Set(d, 0.999999f);
  const auto b = hn::Set(d, 1e-7f);
  auto c0 = hn::Set(d, 1.0f), c1 = hn::Set(d, 1.1f), c2 = hn::Set(d, 1.2f), c3 = hn::Set(d, 1.3f);
  auto c4 = hn::Set(d, 1.4f), c5 = hn::Set(d, 1.5f), c6 = hn::Set(d, 1.6f), c7 = hn::Set(d, 1.7f);
  auto c8 = hn::Set(d, 2.0f), c9 = hn::Set(d, 2.1f), c10 = hn::Set(d, 2.2f), c11 = hn::Set(d, 2.3f);
  auto c12 = hn::Set(d, 2.4f), c13 = hn::Set(d, 2.5f), c14 = hn::Set(d, 2.6f), c15 = hn::Set(d, 2.7f);
  for (int64_t i = 0; i < iters; ++i) {
    c0 = hn::MulAdd(c0, a, b);
    c1 = hn::MulAdd(c1, a, b);
    c2 = hn::MulAdd(c2, a, b);
    c3 = hn::MulAdd(c3, a, b);
    c4 = hn::MulAdd(c4, a, b);
    c5 = hn::MulAdd(c5, a, b);
    c6 = hn::MulAdd(c6, a, b);
    c7 = hn::MulAdd(c7, a, b);
    c8 = hn::MulAdd(c8, a, b);
    c9 = hn::MulAdd(c9, a, b);
    c10 = hn::MulAdd(c10, a, b);
    c11 = hn::MulAdd(c11, a, b);
    c12 = hn::MulAdd(c12, a, b);
    c13 = hn::MulAdd(c13, a, b);
    c14 = hn::MulAdd(c14, a, b);
    c15 = hn::MulAdd(c15, a, b);
  }
  const auto s = ((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7)) + ((c8 + c9) + (c10 + c11)) +
                 ((c12 + c13) + (c14 + c15));
  *sink += hn::GetLane(hn::SumOfLanes(d, s));
  return 2.0 * 16.0 * static_cast<double>(hn::Lanes(d)) * static_cast<double>(iters);
}

// Sum of a buffer, four accumulators so the adds never limit the loads.
float sum_range(const float* x, int64_t n) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  auto s0 = hn::Zero(d), s1 = hn::Zero(d), s2 = hn::Zero(d), s3 = hn::Zero(d);
  int64_t i = 0;
  for (; i + 4 * lanes <= n; i += 4 * lanes) {
    s0 = hn::Add(s0, hn::Load(d, x + i));
    s1 = hn::Add(s1, hn::Load(d, x + i + lanes));
    s2 = hn::Add(s2, hn::Load(d, x + i + 2 * lanes));
    s3 = hn::Add(s3, hn::Load(d, x + i + 3 * lanes));
  }
  float tail = 0.0f;
  for (; i < n; ++i) tail += x[i];
  return hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(s0, s1), hn::Add(s2, s3)))) + tail;
}

}  // namespace HWY_NAMESPACE
}  // namespace cpu_peak
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace cpu_peak {
HWY_EXPORT(fma_loop);
HWY_EXPORT(sum_range);

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

// GFLOP/s of `threads` threads each running the FMA loop; best of 5.
double fma_gflops(int threads) {
  constexpr int64_t kIters = 200'000'000;
  double best = 0.0;
  for (int rep = 0; rep < 5; ++rep) {
    double flops = 0.0;
    float sink = 0.0f;
    const auto t0 = clock_type::now();
#pragma omp parallel num_threads(threads) reduction(+ : flops, sink)
    { flops += HWY_DYNAMIC_DISPATCH(fma_loop)(kIters, &sink); }
    const double t = seconds_since(t0);
    if (sink == 12345.0f) std::printf(" ");  // keeps the chains alive
    best = std::max(best, flops / t * 1e-9);
  }
  return best;
}

// Read bandwidth of a sum over `bytes`, all threads, each on its own slice
// (first touched by the same thread); median of 7.
double read_gbps(size_t bytes, int threads) {
  const int64_t n = static_cast<int64_t>(bytes / sizeof(float));
  float* x = static_cast<float*>(std::aligned_alloc(64, bytes));
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(i & 1023) * 1e-3f;
  std::vector<double> rates;
  for (int rep = 0; rep < 7; ++rep) {
    float total = 0.0f;
    const auto t0 = clock_type::now();
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t chunk = (n + nt - 1) / nt;
      const int64_t begin = std::min<int64_t>(n, t * chunk), end = std::min<int64_t>(n, begin + chunk);
      total += HWY_DYNAMIC_DISPATCH(sum_range)(x + begin, end - begin);
    }
    const double t = seconds_since(t0);
    if (total == -1.0f) std::printf(" ");
    rates.push_back(static_cast<double>(bytes) / t * 1e-9);
  }
  std::free(x);
  std::sort(rates.begin(), rates.end());
  return rates[rates.size() / 2];
}

}  // namespace cpu_peak

int main() {
  const int threads = omp_get_max_threads();
  // Dynamic dispatch runs the best compiled target the CPU supports: the
  // lowest bit of the intersection.
  const int64_t targets = hwy::SupportedTargets() & HWY_TARGETS;
  const char* target = hwy::TargetName(targets & -targets);
  const size_t bytes = size_t{2} << 30;
  const double all = cpu_peak::fma_gflops(threads);
  const double one = cpu_peak::fma_gflops(1);
  const double bw = cpu_peak::read_gbps(bytes, threads);
  std::printf("target            %s\n", target);
  std::printf("threads           %d\n", threads);
  std::printf("%-34s %10s\n", "measurement", "value");
  std::printf("%-34s %10.1f GFLOP/s\n", "fp32 FMA peak, all cores", all);
  std::printf("%-34s %10.1f GFLOP/s\n", "fp32 FMA peak, one core", one);
  std::printf("%-34s %10.1f GB/s\n", "memory read, 2 GiB sum, all cores", bw);
  std::printf("FLOPs = 2 x FMAs (16 independent chains x lanes); bytes = buffer size / time\n");
  return 0;
}
#endif  // HWY_ONCE
