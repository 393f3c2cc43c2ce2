// Self-consistency of the fast CPU backend: decode equals the last rows of
// prefill, a paged cache equals a contiguous one, and runs are repeatable.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "cpu/test_data.h"
#include "fastattn/fastattn.hpp"

namespace {

using fastattn::testing_data::max_abs_diff;
using fastattn::testing_data::random_normal;

constexpr int64_t L = 517, HQ = 8, HKV = 2, D = 128;

std::vector<float> prefill(const std::vector<float>& q, const std::vector<float>& k,
                           const std::vector<float>& v, int64_t lq, int64_t lk, int threads = 0) {
  std::vector<float> out(lq * HQ * D, NAN);
  fastattn::RunOptions opt;
  opt.backend = FA_BACKEND_CPU;
  opt.num_threads = threads;
  const auto r = fastattn::Attention(
                     fastattn::tensor(const_cast<float*>(q.data()), FA_DTYPE_FLOAT32, {1, lq, HQ, D}),
                     fastattn::tensor(const_cast<float*>(k.data()), FA_DTYPE_FLOAT32, {1, lk, HKV, D}),
                     fastattn::tensor(const_cast<float*>(v.data()), FA_DTYPE_FLOAT32, {1, lk, HKV, D}),
                     fastattn::tensor(out.data(), FA_DTYPE_FLOAT32, {1, lq, HQ, D}))
                     .mask(fastattn::mask::causal())
                     .run(opt);
  EXPECT_TRUE(r.ok()) << r.message();
  return out;
}

// The same keys scattered over shuffled pages of `page_size`.
std::vector<float> paged(const std::vector<float>& q, const std::vector<float>& k,
                         const std::vector<float>& v, int64_t lq, int64_t lk, int64_t page_size) {
  const int64_t pages = (lk + page_size - 1) / page_size;
  std::vector<int32_t> table(pages);
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), std::mt19937(7));
  const int64_t row = HKV * D;
  std::vector<float> kc(pages * page_size * row, NAN), vc(kc.size(), NAN);
  for (int64_t j = 0; j < lk; ++j) {
    const int64_t dst = (table[j / page_size] * page_size + j % page_size) * row;
    std::copy_n(k.begin() + j * row, row, kc.begin() + dst);
    std::copy_n(v.begin() + j * row, row, vc.begin() + dst);
  }
  const int32_t len = int32_t(lk);
  std::vector<float> out(lq * HQ * D, NAN);
  fastattn::RunOptions opt;
  opt.backend = FA_BACKEND_CPU;
  const auto r =
      fastattn::PagedAttention(
          fastattn::tensor(const_cast<float*>(q.data()) + (L - lq) * HQ * D, FA_DTYPE_FLOAT32, {1, lq, HQ, D}),
          fastattn::tensor(kc.data(), FA_DTYPE_FLOAT32, {pages, page_size, HKV, D}),
          fastattn::tensor(vc.data(), FA_DTYPE_FLOAT32, {pages, page_size, HKV, D}),
          fastattn::tensor(out.data(), FA_DTYPE_FLOAT32, {1, lq, HQ, D}))
          .pages(table.data(), pages, pages, &len)
          .mask(fastattn::mask::causal())
          .run(opt);
  EXPECT_TRUE(r.ok()) << r.message();
  return out;
}

class Consistency : public testing::Test {
 protected:
  std::vector<float> q_ = random_normal(L * HQ * D, 21), k_ = random_normal(L * HKV * D, 22),
                     v_ = random_normal(L * HKV * D, 23);
};

TEST_F(Consistency, DecodeEqualsTheLastRowsOfPrefill) {
  const auto full = prefill(q_, k_, v_, L, L);
  for (int64_t lq : {int64_t(1), int64_t(3), int64_t(16)}) {
    for (int64_t ps : {int64_t(1), int64_t(5), int64_t(16), int64_t(256), L}) {
      const auto dec = paged(q_, k_, v_, lq, L, ps);
      const std::vector<float> tail(full.end() - lq * HQ * D, full.end());
      EXPECT_LT(max_abs_diff(dec, tail), 1e-5) << "Lq " << lq << " page size " << ps;
    }
  }
}

TEST_F(Consistency, TwoRunsAreBitwiseEqual) {
  const auto a = prefill(q_, k_, v_, L, L), b = prefill(q_, k_, v_, L, L);
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0);
  const auto c = paged(q_, k_, v_, 1, L, 16), d = paged(q_, k_, v_, 1, L, 16);
  EXPECT_EQ(std::memcmp(c.data(), d.data(), c.size() * 4), 0);
}

TEST_F(Consistency, ThreadCountDoesNotChangeTheResultBeyondRounding) {
  const auto one = prefill(q_, k_, v_, L, L, 1), all = prefill(q_, k_, v_, L, L, 0);
  EXPECT_LT(max_abs_diff(one, all), 1e-5);
}

}  // namespace
