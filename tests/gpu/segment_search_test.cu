// The document searches of the GPU kernels (cuda/common/segment_search.cuh):
// the one-thread and the warp-wide search, run on the device, against
// std::lower_bound / upper_bound on the host, over id arrays of many lengths
// (around the warp's 32- and 33-fold steps too), documents of many sizes,
// and keys below, inside, between and above the ids.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "check/device_copy.h"
#include "cuda/common/segment_search.cuh"

namespace {

using fastattn::cuda::SegmentSpan;

// Query q of `keys` (pairs s0, s1), one warp each: thread 0's own search
// into out[q * kPer + 0, 1], and each lane's result of the warp-wide search
// into out[q * kPer + 2 + 2 lane + 0, 1] (every lane must get the bounds).
constexpr int kPer = 2 + 2 * 32;

__global__ void search_kernel(const int32_t* ids, int n, const int32_t* keys, int queries,
                              SegmentSpan* out) {
  const int q = blockIdx.x;
  if (q >= queries) return;
  const int32_t s0 = keys[2 * q], s1 = keys[2 * q + 1];
  SegmentSpan a, c;
  fastattn::cuda::warp_segment_bounds2(ids, n, s0, s1, &a, &c);
  out[q * kPer + 2 + 2 * threadIdx.x] = a;
  out[q * kPer + 3 + 2 * threadIdx.x] = c;
  if (threadIdx.x == 0) {
    fastattn::cuda::segment_bounds2(ids, n, s0, s1, &a, &c);
    out[q * kPer] = a;
    out[q * kPer + 1] = c;
  }
}

#define ASSERT_CUDA(x) ASSERT_EQ((x), cudaSuccess) << #x

// Non-decreasing ids with gaps (ids absent from the array) and documents of
// random length up to 2 * doc.
std::vector<int32_t> sorted_ids(int n, int doc, std::mt19937* rng) {
  std::vector<int32_t> ids(n);
  int32_t id = -3;
  for (int i = 0; i < n;) {
    id += 1 + static_cast<int32_t>((*rng)() % 3);
    const int len = 1 + static_cast<int>((*rng)() % (2 * doc));
    for (int j = 0; j < len && i < n; ++j) ids[i++] = id;
  }
  return ids;
}

TEST(SegmentSearch, ThreadAndWarpMatchTheHost) {
  if (!fastattn::check::gpu_present()) GTEST_SKIP() << "no CUDA GPU";
  std::mt19937 rng(7);
  const int lengths[] = {0, 1, 2, 31, 32, 33, 34, 64, 65, 1000, 1088, 1089, 4096, 16384, 40000};
  const int doc_sizes[] = {1, 3, 32, 33, 128, 1024, 100000};
  for (int n : lengths) {
    for (int doc : doc_sizes) {
      const std::vector<int32_t> ids = sorted_ids(n, doc, &rng);
      std::vector<int32_t> keys;
      const int32_t lo_key = n ? ids.front() - 2 : -2, hi_key = n ? ids.back() + 2 : 2;
      for (int k = 0; k < 64; ++k) {
        const int32_t s0 = lo_key + static_cast<int32_t>(rng() % (hi_key - lo_key + 1));
        keys.push_back(s0);
        keys.push_back(s0 + static_cast<int32_t>(rng() % 4));
      }
      const int queries = static_cast<int>(keys.size() / 2);
      int32_t *d_ids = nullptr, *d_keys = nullptr;
      SegmentSpan* d_out = nullptr;
      ASSERT_CUDA(cudaMalloc(&d_ids, std::max<size_t>(n, 1) * sizeof(int32_t)));
      ASSERT_CUDA(cudaMalloc(&d_keys, keys.size() * sizeof(int32_t)));
      ASSERT_CUDA(cudaMalloc(&d_out, kPer * queries * sizeof(SegmentSpan)));
      ASSERT_CUDA(cudaMemcpy(d_ids, ids.data(), n * sizeof(int32_t), cudaMemcpyHostToDevice));
      ASSERT_CUDA(cudaMemcpy(d_keys, keys.data(), keys.size() * sizeof(int32_t),
                             cudaMemcpyHostToDevice));
      ASSERT_CUDA(cudaMemset(d_out, 0xff, kPer * queries * sizeof(SegmentSpan)));  // poison
      search_kernel<<<queries, 32>>>(d_ids, n, d_keys, queries, d_out);
      ASSERT_CUDA(cudaGetLastError());
      std::vector<SegmentSpan> out(kPer * queries);
      ASSERT_CUDA(cudaMemcpy(out.data(), d_out, out.size() * sizeof(SegmentSpan),
                             cudaMemcpyDeviceToHost));
      cudaFree(d_ids);
      cudaFree(d_keys);
      cudaFree(d_out);
      for (int q = 0; q < queries; ++q) {
        for (int side = 0; side < 2; ++side) {
          const int32_t key = keys[2 * q + side];
          const auto lo = std::lower_bound(ids.begin(), ids.end(), key) - ids.begin();
          const auto hi = std::upper_bound(ids.begin(), ids.end(), key) - ids.begin();
          for (int who = 0; who <= 32; ++who) {  // thread 0 alone, then each lane
            const SegmentSpan& got = out[q * kPer + 2 * who + side];
            SCOPED_TRACE(testing::Message() << "n " << n << " doc " << doc << " key " << key
                                            << (who ? " warp lane " : " thread ") << who - 1
                                            << (side ? " (s1)" : " (s0)"));
            ASSERT_EQ(got.id, key);
            ASSERT_EQ(got.lo, lo);
            ASSERT_EQ(got.hi, hi);
          }
        }
      }
    }
  }
}

}  // namespace
