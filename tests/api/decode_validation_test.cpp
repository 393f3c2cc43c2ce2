// Every rejected input of fa_plan_decode / fa_run_decode: the status, a
// message that names the argument, and nothing written (not the outputs, not
// the cache the append would write, not the plan).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "fastattn/fastattn.h"
#include "fastattn/fastattn.hpp"

namespace {

constexpr int64_t B = 2, LQ = 2, HQ = 4, HKV = 2, D = 16, ROTARY = 16, POSITIONS = 16;

// A paged step: 6 pages of 4 keys, 3 pages per sequence (capacity 12);
// sequence 0 has 7 keys + 2 new (3 pages), sequence 1 has 3 + 2 (2 pages, so
// its third table entry, -1, is never read).
class RejectsDecode : public testing::Test {
 protected:
  static constexpr int64_t kPages = 6, kPageSize = 4;

  void SetUp() override {
    q_.assign(B * LQ * HQ * D, 0.5f);
    k_cache_.assign(kPages * kPageSize * HKV * D, 0.25f);
    v_cache_.assign(k_cache_.size(), -0.5f);
    kv_new_.assign(B * LQ * HKV * D, 0.75f);
    cos_.assign(POSITIONS * ROTARY / 2, 0.6f);
    sin_.assign(POSITIONS * ROTARY / 2, 0.8f);
    out_.assign(B * LQ * HQ * D, kPoison);
    lse_.assign(B * HQ * LQ, kPoison);
    args_.q = fastattn::tensor(q_.data(), FA_DTYPE_FLOAT32, {B, LQ, HQ, D});
    args_.k_cache = fastattn::tensor(k_cache_.data(), FA_DTYPE_FLOAT32, {kPages, kPageSize, HKV, D});
    args_.v_cache = fastattn::tensor(v_cache_.data(), FA_DTYPE_FLOAT32, {kPages, kPageSize, HKV, D});
    args_.page_table = table_.data();
    args_.max_pages_per_seq = 3;
    args_.page_table_stride = 3;
    args_.cache_seqlens = lens_.data();
    args_.k_new = fastattn::tensor(kv_new_.data(), FA_DTYPE_FLOAT32, {B, LQ, HKV, D});
    args_.v_new = args_.k_new;
    args_.rotary_style = FA_ROTARY_HALF;
    args_.rotary_dim = ROTARY;
    args_.rotary_cos = fastattn::tensor(cos_.data(), FA_DTYPE_FLOAT32, {POSITIONS, ROTARY / 2});
    args_.rotary_sin = fastattn::tensor(sin_.data(), FA_DTYPE_FLOAT32, {POSITIONS, ROTARY / 2});
    args_.out = fastattn::tensor(out_.data(), FA_DTYPE_FLOAT32, {B, LQ, HQ, D});
    args_.lse = fastattn::tensor(lse_.data(), FA_DTYPE_FLOAT32, {B, HQ, LQ});
    options_.backend = FA_BACKEND_CPU;
    ASSERT_EQ(fa_plan_decode(&args_, &options_, &plan_), FA_STATUS_OK) << fa_last_error();
    k_before_ = k_cache_;
    v_before_ = v_cache_;
  }

  // Both the plan and the run refuse with `status` and a message holding
  // every fragment; nothing is written.
  void expect_rejected(std::vector<std::string> fragments,
                       fa_status status = FA_STATUS_INVALID_ARGUMENT) {
    fa_decode_plan plan;
    std::memset(&plan, 0x5a, sizeof plan);
    const fa_decode_plan poisoned = plan;
    ASSERT_EQ(fa_plan_decode(&args_, &options_, &plan), status) << fa_last_error();
    expect_message(fragments);
    EXPECT_EQ(std::memcmp(&plan, &poisoned, sizeof plan), 0) << "the plan was written";
    expect_run_rejected(fragments, status);
  }
  // Only the run refuses (the plan does not match, the workspace is short).
  void expect_run_rejected(std::vector<std::string> fragments,
                           fa_status status = FA_STATUS_INVALID_ARGUMENT) {
    ASSERT_EQ(fa_run_decode(&args_, &plan_, workspace_, workspace_bytes_, &options_), status)
        << fa_last_error();
    expect_message(fragments);
    expect_untouched();
  }
  void expect_message(const std::vector<std::string>& fragments) {
    const std::string message = fa_last_error();
    for (const auto& f : fragments) EXPECT_NE(message.find(f), std::string::npos) << message;
  }
  void expect_untouched() {
    for (float x : out_) ASSERT_EQ(std::memcmp(&x, &kPoison, 4), 0);
    for (float x : lse_) ASSERT_EQ(std::memcmp(&x, &kPoison, 4), 0);
    ASSERT_EQ(k_cache_, k_before_) << "k_cache was written";
    ASSERT_EQ(v_cache_, v_before_) << "v_cache was written";
  }

  static constexpr float kPoison = 1234.5f;
  std::vector<float> q_, k_cache_, v_cache_, kv_new_, cos_, sin_, out_, lse_, k_before_, v_before_;
  std::vector<int32_t> table_{5, 0, 2, 1, 3, -1}, lens_{7, 3};
  fa_decode_args args_{};
  fa_run_options options_{};
  fa_decode_plan plan_{};
  void* workspace_ = nullptr;
  uint64_t workspace_bytes_ = 0;
};

TEST_F(RejectsDecode, ValidCallSucceedsAndWritesTheCache) {
  ASSERT_EQ(fa_run_decode(nullptr, &plan_, nullptr, 0, &options_), FA_STATUS_INVALID_ARGUMENT);
  EXPECT_STRNE(fa_last_error(), "");
  ASSERT_EQ(fa_run_decode(&args_, &plan_, nullptr, 0, &options_), FA_STATUS_OK) << fa_last_error();
  EXPECT_STREQ(fa_last_error(), "");
  for (float x : out_) ASSERT_TRUE(std::isfinite(x));
  for (float x : lse_) ASSERT_TRUE(std::isfinite(x));
  // Sequence 1's new keys: positions 3 (page 1, row 3) and 4 (page 3, row 0).
  EXPECT_NE(k_cache_, k_before_);
  EXPECT_EQ(v_cache_[(1 * kPageSize + 3) * HKV * D], 0.75f);
  EXPECT_EQ(v_cache_[(3 * kPageSize + 0) * HKV * D], 0.75f);
  // Rotated: (x1, x2) = (0.75, 0.75) -> (0.75 * 0.6 - 0.75 * 0.8, 0.75 * 0.6 + 0.75 * 0.8).
  EXPECT_FLOAT_EQ(k_cache_[(3 * kPageSize) * HKV * D], 0.75f * 0.6f - 0.75f * 0.8f);
  EXPECT_FLOAT_EQ(k_cache_[(3 * kPageSize) * HKV * D + ROTARY / 2], 0.75f * 0.6f + 0.75f * 0.8f);
}

TEST_F(RejectsDecode, NullArgsAndPlan) {
  EXPECT_EQ(fa_plan_decode(nullptr, &options_, &plan_), FA_STATUS_INVALID_ARGUMENT);
  expect_message({"args", "NULL"});
  EXPECT_EQ(fa_plan_decode(&args_, &options_, nullptr), FA_STATUS_INVALID_ARGUMENT);
  expect_message({"plan", "NULL"});
  EXPECT_EQ(fa_run_decode(&args_, nullptr, nullptr, 0, &options_), FA_STATUS_INVALID_ARGUMENT);
  expect_message({"plan", "NULL"});
  expect_untouched();
}

TEST_F(RejectsDecode, QueryRank) {
  args_.q.ndim = 3;
  expect_rejected({"q", "ndim", "expected 4"});
}

TEST_F(RejectsDecode, NoQueries) {
  args_.q.shape[1] = 0;
  expect_rejected({"q", "Lq >= 1"});
}

TEST_F(RejectsDecode, HeadDim) {
  for (fa_tensor* t : {&args_.q, &args_.k_cache, &args_.v_cache, &args_.out}) t->shape[3] = 12;
  expect_rejected({"head dim", "12", "multiples of 8"});
}

TEST_F(RejectsDecode, CacheDtype) {
  args_.v_cache.dtype = FA_DTYPE_BFLOAT16;
  expect_rejected({"v_cache", "bfloat16", "share one dtype"});
}

TEST_F(RejectsDecode, OutputDtype) {
  args_.out.dtype = FA_DTYPE_FLOAT16;
  expect_rejected({"out", "float16"});
}

TEST_F(RejectsDecode, HeadsNotDivisible) {
  args_.k_cache.shape[2] = args_.v_cache.shape[2] = 3;
  expect_rejected({"Hkv = 3", "Hq = 4"});
}

TEST_F(RejectsDecode, EmptyPages) {
  args_.k_cache.shape[1] = args_.v_cache.shape[1] = 0;
  expect_rejected({"k_cache", "page_size >= 1"});
}

TEST_F(RejectsDecode, ValueCacheShape) {
  args_.v_cache.shape[0] = kPages - 1;
  expect_rejected({"v_cache", "like k_cache"});
}

TEST_F(RejectsDecode, NoPagesPerSequence) {
  args_.max_pages_per_seq = 0;
  expect_rejected({"max_pages_per_seq = 0", ">= 1"});
}

TEST_F(RejectsDecode, NarrowTableStride) {
  args_.page_table_stride = 2;
  expect_rejected({"page_table_stride = 2", ">= max_pages_per_seq"});
}

TEST_F(RejectsDecode, CapacityBeyondInt32) {
  args_.max_pages_per_seq = args_.page_table_stride = int64_t(1) << 30;
  expect_rejected({"max_pages_per_seq * page_size", "2147483647"});
}

TEST_F(RejectsDecode, NullLengths) {
  args_.cache_seqlens = nullptr;
  expect_rejected({"cache_seqlens", "NULL"});
}

TEST_F(RejectsDecode, KeysWithoutValues) {
  args_.v_new = fa_tensor{};
  expect_rejected({"k_new / v_new", "both"});
}

TEST_F(RejectsDecode, NewKeysShape) {
  args_.k_new.shape[1] = 1;
  expect_rejected({"k_new", "[B, Lq, Hkv, D]", "[2, 2, 2, 16]"});
}

TEST_F(RejectsDecode, NewValuesDtype) {
  args_.v_new.dtype = FA_DTYPE_FLOAT16;
  expect_rejected({"v_new", "float16"});
}

TEST_F(RejectsDecode, UnknownRotaryStyle) {
  args_.rotary_style = 7;
  expect_rejected({"rotary_style", "7", "FA_ROTARY_NONE", "FA_ROTARY_HALF", "FA_ROTARY_INTERLEAVED"});
}

TEST_F(RejectsDecode, RotaryArgumentsWithoutStyle) {
  args_.rotary_style = FA_ROTARY_NONE;
  expect_rejected({"rotary_dim", "FA_ROTARY_NONE"});
  args_.rotary_dim = 0;
  expect_rejected({"rotary_cos", "FA_ROTARY_NONE"});
}

TEST_F(RejectsDecode, RotaryWithoutAppend) {
  args_.k_new = args_.v_new = fa_tensor{};
  expect_rejected({"rotary_style", "needs k_new and v_new"});
}

TEST_F(RejectsDecode, RotaryDim) {
  for (int32_t dim : {0, 7, 18, -2}) {
    args_.rotary_dim = dim;
    expect_rejected({"rotary_dim: " + std::to_string(dim), "even, from 2 to the head dim D = 16"});
  }
}

TEST_F(RejectsDecode, NullRotaryTable) {
  args_.rotary_sin.data = nullptr;
  expect_rejected({"rotary_sin", "NULL"});
}

TEST_F(RejectsDecode, RotaryTableDtype) {
  args_.rotary_cos.dtype = FA_DTYPE_FLOAT16;
  expect_rejected({"rotary_cos", "float32"});
}

TEST_F(RejectsDecode, RotaryTableShape) {
  args_.rotary_cos.shape[1] = 4;
  expect_rejected({"rotary_cos", "[max_position, rotary_dim / 2]"});
}

TEST_F(RejectsDecode, RotaryTablesOfDifferentLength) {
  args_.rotary_sin.shape[0] = POSITIONS - 1;
  expect_rejected({"rotary_sin", "like rotary_cos"});
}

TEST_F(RejectsDecode, RotaryTableNotContiguous) {
  args_.rotary_cos.strides[1] = 2;
  expect_rejected({"rotary_cos", "contiguous"});
}

TEST_F(RejectsDecode, EmptyRotaryTable) {
  args_.rotary_cos.shape[0] = args_.rotary_sin.shape[0] = 0;
  expect_rejected({"rotary_cos", "max_position"});
}

TEST_F(RejectsDecode, OutputShape) {
  args_.out.shape[2] = HQ - 1;
  expect_rejected({"out", "like q"});
}

TEST_F(RejectsDecode, LseShapeAndDtype) {
  args_.lse.shape[2] = LQ + 1;
  expect_rejected({"lse", "[B, Hq, Lq]"});
  args_.lse.shape[2] = LQ;
  args_.lse.dtype = FA_DTYPE_BFLOAT16;
  expect_rejected({"lse", "float32"});
}

TEST_F(RejectsDecode, MaskScaleSoftcap) {
  args_.mask.kind = static_cast<fa_mask_kind>(9);
  expect_rejected({"mask.kind", "FA_MASK_SLIDING_WINDOW"});
  args_.mask = fa_mask{};
  args_.softcap = -2.0f;
  expect_rejected({"softcap", "> 0"});
  args_.softcap = 0.0f;
  args_.softmax_scale = std::numeric_limits<float>::infinity();
  expect_rejected({"softmax_scale", "finite"});
}

TEST_F(RejectsDecode, NumSplits) {
  for (int32_t n : {-1, FA_MAX_DECODE_SPLITS + 1}) {
    args_.num_splits = n;
    expect_rejected({"num_splits: " + std::to_string(n), "1 to 256"});
  }
}

TEST_F(RejectsDecode, MaxSeqlenK) {
  for (int64_t n : {int64_t(-1), int64_t(13)}) {
    args_.max_seqlen_k = n;
    expect_rejected({"max_seqlen_k: " + std::to_string(n), "capacity 12"});
  }
}

TEST_F(RejectsDecode, NegativeLength) {
  lens_[0] = -1;
  expect_rejected({"cache_seqlens[0] = -1", "negative", "allowed: 0 to 10"});
}

TEST_F(RejectsDecode, LengthPastCapacity) {
  lens_[1] = 11;
  expect_rejected({"cache_seqlens[1] = 11 with Lq = 2 new tokens exceeds the cache capacity 12",
                   "max_pages_per_seq * page_size", "allowed: 0 to 10"});
}

TEST_F(RejectsDecode, PageOutOfRange) {
  table_[4] = 6;
  expect_rejected({"page_table[1][1] = 6", "0 to 5"});
  table_[4] = -3;
  expect_rejected({"page_table[1][1] = -3"});
}

TEST_F(RejectsDecode, PageOfTheAppendOutOfRange) {
  // With 7 + 2 keys sequence 1 needs its third page, whose entry is -1.
  lens_[1] = 7;
  expect_rejected({"page_table[1][2] = -1"});
}

TEST_F(RejectsDecode, RotaryPositionsPastTheTables) {
  args_.rotary_cos.shape[0] = args_.rotary_sin.shape[0] = 8;
  expect_rejected({"cache_seqlens[0] = 7", "up to 8", "max_position = 8"});
}

TEST_F(RejectsDecode, PlanForAnotherProblem) {
  std::vector<float> q1(LQ * HQ * D), out1(q1.size()), lse1(HQ * LQ);
  fa_decode_args one = args_;
  one.q = fastattn::tensor(q1.data(), FA_DTYPE_FLOAT32, {1, LQ, HQ, D});
  one.out = fastattn::tensor(out1.data(), FA_DTYPE_FLOAT32, {1, LQ, HQ, D});
  one.lse = fastattn::tensor(lse1.data(), FA_DTYPE_FLOAT32, {1, HQ, LQ});
  one.k_new.shape[0] = one.v_new.shape[0] = 1;
  ASSERT_EQ(fa_plan_decode(&one, &options_, &plan_), FA_STATUS_OK) << fa_last_error();
  expect_run_rejected({"plan", "different problem", "B: 1 in the plan, 2 here"});

  ASSERT_EQ(fa_plan_decode(&args_, &options_, &plan_), FA_STATUS_OK);
  plan_.problem[5] = FA_DTYPE_BFLOAT16;
  plan_.problem[7] = 16;
  expect_run_rejected({"dtype: bfloat16 in the plan, float32 here", "capacity: 16 in the plan, 12 here"});
}

TEST_F(RejectsDecode, PlanForAnotherBackend) {
  fa_run_options reference = options_;
  reference.backend = FA_BACKEND_CPU_REFERENCE;
  ASSERT_EQ(fa_plan_decode(&args_, &reference, &plan_), FA_STATUS_OK);
  expect_run_rejected({"plan", "FA_BACKEND_CPU_REFERENCE", "runs on FA_BACKEND_CPU"});
}

TEST_F(RejectsDecode, TamperedSplitCount) {
  plan_.num_splits = 0;
  expect_run_rejected({"plan.num_splits: 0", "1 to 256"});
}

TEST_F(RejectsDecode, WorkspaceTooSmall) {
  plan_.workspace_bytes = 64;
  expect_run_rejected({"workspace", "NULL", "plan.workspace_bytes = 64"});
  std::vector<char> small(32);
  workspace_ = small.data();
  workspace_bytes_ = small.size();
  expect_run_rejected({"workspace", "workspace_bytes = 32", "64"});
  workspace_bytes_ = 64;  // large enough: the CPU runs without touching it
  ASSERT_EQ(fa_run_decode(&args_, &plan_, workspace_, workspace_bytes_, &options_), FA_STATUS_OK)
      << fa_last_error();
}

TEST_F(RejectsDecode, CudaWhenNotBuiltOrAbsent) {
  if (fa_backend_available(FA_BACKEND_CUDA)) GTEST_SKIP() << "a CUDA device is present";
  options_.backend = FA_BACKEND_CUDA;
  expect_rejected({"FA_BACKEND_CUDA"}, FA_STATUS_NO_DEVICE);
}

// A contiguous cache [B, capacity, Hkv, D].
class RejectsContiguousDecode : public RejectsDecode {
 protected:
  void SetUp() override {
    RejectsDecode::SetUp();
    args_.k_cache = fastattn::tensor(k_cache_.data(), FA_DTYPE_FLOAT32, {B, 12, HKV, D});
    args_.v_cache = fastattn::tensor(v_cache_.data(), FA_DTYPE_FLOAT32, {B, 12, HKV, D});
    args_.page_table = nullptr;
    args_.max_pages_per_seq = args_.page_table_stride = 0;
    ASSERT_EQ(fa_plan_decode(&args_, &options_, &plan_), FA_STATUS_OK) << fa_last_error();
  }
};

TEST_F(RejectsContiguousDecode, ValidCallSucceeds) {
  ASSERT_EQ(fa_run_decode(&args_, &plan_, nullptr, 0, &options_), FA_STATUS_OK) << fa_last_error();
  EXPECT_EQ(v_cache_[(1 * 12 + 3) * HKV * D], 0.75f);  // sequence 1, position 3
}

TEST_F(RejectsContiguousDecode, CacheBatch) {
  args_.k_cache.shape[0] = 1;
  expect_rejected({"k_cache", "[B, capacity, Hkv, D]", "page_table is NULL"});
}

TEST_F(RejectsContiguousDecode, EmptyCache) {
  args_.k_cache.shape[1] = args_.v_cache.shape[1] = 0;
  expect_rejected({"k_cache", "capacity >= 1"});
}

TEST_F(RejectsContiguousDecode, PagingFieldsWithoutTable) {
  args_.max_pages_per_seq = 3;
  expect_rejected({"max_pages_per_seq = 3", "page_table is NULL"});
}

TEST_F(RejectsContiguousDecode, LengthPastCapacity) {
  lens_[0] = 11;
  expect_rejected({"cache_seqlens[0] = 11 with Lq = 2 new tokens exceeds the cache capacity 12",
                   "k_cache.shape[1]"});
}

TEST_F(RejectsContiguousDecode, NewTokensDoNotFit) {
  args_.k_cache.shape[1] = args_.v_cache.shape[1] = 1;
  lens_ = {0, 0};
  expect_rejected({"k_new", "Lq = 2 new tokens", "capacity 1"});
}

TEST_F(RejectsContiguousDecode, PlanForAnotherCapacity) {
  args_.k_cache.shape[1] = args_.v_cache.shape[1] = 10;
  expect_run_rejected({"capacity: 12 in the plan, 10 here"});
}

TEST(MergePlacement, HostStatesMergeOnTheCpu) {
  std::vector<float> o(1 * 2 * 3 * 8, 1.0f), l(1 * 3 * 2, 0.0f), out(o.size(), 9.0f);
  fa_tensor outs[2] = {fastattn::tensor(o.data(), FA_DTYPE_FLOAT32, {1, 2, 3, 8}),
                       fastattn::tensor(o.data(), FA_DTYPE_FLOAT32, {1, 2, 3, 8})};
  fa_tensor lses[2] = {fastattn::tensor(l.data(), FA_DTYPE_FLOAT32, {1, 3, 2}),
                       fastattn::tensor(l.data(), FA_DTYPE_FLOAT32, {1, 3, 2})};
  const auto r = fastattn::merge_states(outs, lses,
                                        fastattn::tensor(out.data(), FA_DTYPE_FLOAT32, {1, 2, 3, 8}));
  ASSERT_TRUE(r.ok()) << r.message();
  for (float x : out) EXPECT_EQ(x, 1.0f);
}

}  // namespace
