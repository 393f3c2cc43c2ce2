// Merging the states of attention over disjoint key chunks must give the
// state of attention over all keys.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "cpu/test_data.h"
#include "fastattn/fastattn.hpp"

namespace {

using fastattn::testing_data::max_abs_diff;
using fastattn::testing_data::random_normal;

constexpr int64_t B = 2, LQ = 33, LK = 301, HQ = 4, HKV = 2, D = 64;

struct State {
  std::vector<float> out, lse;
};

// Attention of all queries over keys [begin, end) as a strided view.
State attend(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
           int64_t begin, int64_t end, fa_backend backend = FA_BACKEND_CPU) {
  State r{std::vector<float>(B * LQ * HQ * D, NAN), std::vector<float>(B * HQ * LQ, NAN)};
  const int64_t n = end - begin;
  const auto kv_view = [&](const std::vector<float>& x) {
    return fastattn::tensor(const_cast<float*>(x.data()) + begin * HKV * D, FA_DTYPE_FLOAT32,
                            {B, n, HKV, D}, {LK * HKV * D, HKV * D, D, 1});
  };
  fastattn::RunOptions opt;
  opt.backend = backend;
  const auto res =
      fastattn::Attention(fastattn::tensor(const_cast<float*>(q.data()), FA_DTYPE_FLOAT32, {B, LQ, HQ, D}),
                          kv_view(k), kv_view(v),
                          fastattn::tensor(r.out.data(), FA_DTYPE_FLOAT32, {B, LQ, HQ, D}))
          .lse(fastattn::tensor(r.lse.data(), FA_DTYPE_FLOAT32, {B, HQ, LQ}))
          .run(opt);
  EXPECT_TRUE(res.ok()) << res.message();
  return r;
}

TEST(Merge, ChunksEqualTheWhole) {
  const auto q = random_normal(B * LQ * HQ * D, 1);
  const auto k = random_normal(B * LK * HKV * D, 2);
  const auto v = random_normal(B * LK * HKV * D, 3);
  const State whole = attend(q, k, v, 0, LK, FA_BACKEND_CPU_REFERENCE);
  const int64_t cuts[] = {0, 1, 120, 250, LK};
  std::vector<State> parts;
  for (int i = 0; i < 4; ++i) parts.push_back(attend(q, k, v, cuts[i], cuts[i + 1]));
  std::vector<fa_tensor> outs, lses;
  for (auto& p : parts) {
    outs.push_back(fastattn::tensor(p.out.data(), FA_DTYPE_FLOAT32, {B, LQ, HQ, D}));
    lses.push_back(fastattn::tensor(p.lse.data(), FA_DTYPE_FLOAT32, {B, HQ, LQ}));
  }
  State merged{std::vector<float>(whole.out.size(), NAN), std::vector<float>(whole.lse.size(), NAN)};
  const auto res = fastattn::merge_states(
      outs, lses, fastattn::tensor(merged.out.data(), FA_DTYPE_FLOAT32, {B, LQ, HQ, D}),
      fastattn::tensor(merged.lse.data(), FA_DTYPE_FLOAT32, {B, HQ, LQ}));
  ASSERT_TRUE(res.ok()) << res.message();
  EXPECT_LT(max_abs_diff(merged.out, whole.out), 2e-6);
  EXPECT_LT(max_abs_diff(merged.lse, whole.lse), 2e-6);
}

TEST(Merge, EmptyStatesAreIgnoredAndAllEmptyGivesZero) {
  const int64_t n = 2 * 3 * 4 * 8;
  std::vector<float> o1 = random_normal(n, 5), o2 = random_normal(n, 6);
  std::vector<float> l1(2 * 4 * 3), l2(2 * 4 * 3, -std::numeric_limits<float>::infinity());
  for (size_t i = 0; i < l1.size(); ++i) l1[i] = float(i % 5) - 2.0f;
  std::vector<float> out(n, NAN), lse(l1.size(), NAN);
  fa_tensor outs[] = {fastattn::tensor(o1.data(), FA_DTYPE_FLOAT32, {2, 3, 4, 8}),
                      fastattn::tensor(o2.data(), FA_DTYPE_FLOAT32, {2, 3, 4, 8})};
  fa_tensor lses[] = {fastattn::tensor(l1.data(), FA_DTYPE_FLOAT32, {2, 4, 3}),
                      fastattn::tensor(l2.data(), FA_DTYPE_FLOAT32, {2, 4, 3})};
  auto merge = [&]() {
    const auto r = fastattn::merge_states(outs, lses,
                                          fastattn::tensor(out.data(), FA_DTYPE_FLOAT32, {2, 3, 4, 8}),
                                          fastattn::tensor(lse.data(), FA_DTYPE_FLOAT32, {2, 4, 3}));
    ASSERT_TRUE(r.ok()) << r.message();
  };
  merge();
  EXPECT_LT(max_abs_diff(out, o1), 1e-6);
  EXPECT_LT(max_abs_diff(lse, l1), 1e-6);
  std::fill(l1.begin(), l1.end(), -std::numeric_limits<float>::infinity());
  merge();
  for (float x : out) ASSERT_EQ(x, 0.0f);
  for (float x : lse) ASSERT_EQ(x, -std::numeric_limits<float>::infinity());
}

TEST(Merge, WritesLowPrecisionOutputs) {
  const auto q = random_normal(B * LQ * HQ * D, 11);
  const auto k = random_normal(B * LK * HKV * D, 12);
  const auto v = random_normal(B * LK * HKV * D, 13);
  const State whole = attend(q, k, v, 0, LK, FA_BACKEND_CPU_REFERENCE);
  const State a = attend(q, k, v, 0, 100), b = attend(q, k, v, 100, LK);
  fa_tensor outs[] = {fastattn::tensor(const_cast<float*>(a.out.data()), FA_DTYPE_FLOAT32, {B, LQ, HQ, D}),
                      fastattn::tensor(const_cast<float*>(b.out.data()), FA_DTYPE_FLOAT32, {B, LQ, HQ, D})};
  fa_tensor lses[] = {fastattn::tensor(const_cast<float*>(a.lse.data()), FA_DTYPE_FLOAT32, {B, HQ, LQ}),
                      fastattn::tensor(const_cast<float*>(b.lse.data()), FA_DTYPE_FLOAT32, {B, HQ, LQ})};
  std::vector<uint16_t> out(whole.out.size(), 0xffff);
  ASSERT_TRUE(fastattn::merge_states(outs, lses,
                                     fastattn::tensor(out.data(), FA_DTYPE_BFLOAT16, {B, LQ, HQ, D}))
                  .ok());
  for (size_t i = 0; i < out.size(); ++i) {
    uint32_t bits = uint32_t(out[i]) << 16;
    float x;
    std::memcpy(&x, &bits, 4);
    ASSERT_NEAR(x, whole.out[i], std::fabs(whole.out[i]) * 1.0 / 128 + 1e-6) << i;
  }
}

}  // namespace
