// Every rejected input: the status, a message that names the argument, and
// outputs left exactly as they were.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "fastattn/fastattn.h"
#include "fastattn/fastattn.hpp"
#include "poisoned_forward.h"

namespace {

using namespace fastattn::test_support;

class Rejects : public PoisonedForward {
 protected:
  // Runs the call (and the support query), expects `status` and a message
  // containing every fragment, and no output touched.
  void expect_rejected(fa_status status, std::vector<std::string> fragments) {
    ASSERT_EQ(fa_attention_supported(&args_, &options_), status) << fa_last_error();
    ASSERT_EQ(fa_attention_forward(&args_, &options_), status) << fa_last_error();
    expect_message(fragments);
    expect_untouched();
  }
};

TEST_F(Rejects, ValidCallSucceedsAndClearsTheMessage) {
  ASSERT_EQ(fa_attention_forward(nullptr, &options_), FA_STATUS_INVALID_ARGUMENT);
  EXPECT_STRNE(fa_last_error(), "");
  ASSERT_EQ(fa_attention_forward(&args_, &options_), FA_STATUS_OK) << fa_last_error();
  EXPECT_STREQ(fa_last_error(), "");
}

TEST_F(Rejects, NullArgs) {
  EXPECT_EQ(fa_attention_forward(nullptr, &options_), FA_STATUS_INVALID_ARGUMENT);
  EXPECT_NE(std::string(fa_last_error()).find("args"), std::string::npos);
}

TEST_F(Rejects, NullData) {
  args_.q.data = nullptr;
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"q", "NULL"});
}

TEST_F(Rejects, NullOutput) {
  args_.out.data = nullptr;
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"out", "NULL"});
}

TEST_F(Rejects, WrongRank) {
  args_.k.ndim = 3;
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"k", "ndim", "expected 4"});
}

TEST_F(Rejects, UnknownDtype) {
  args_.v.dtype = static_cast<fa_dtype>(9);
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"v", "dtype", "FA_DTYPE_BFLOAT16"});
}

TEST_F(Rejects, MixedDtypes) {
  args_.k.dtype = FA_DTYPE_BFLOAT16;
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"k", "bfloat16", "share one dtype"});
}

TEST_F(Rejects, LseNotFloat32) {
  args_.lse.dtype = FA_DTYPE_FLOAT16;
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"lse", "float32"});
}

TEST_F(Rejects, HeadDimNotMultipleOf8) {
  for (fa_tensor* t : {&args_.q, &args_.k, &args_.v, &args_.out}) t->shape[3] = 12;
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"head dim", "12", "multiples of 8 from 8 to 256"});
}

TEST_F(Rejects, HeadDimTooLarge) {
  std::vector<float> big(B * LK * HKV * 264 * 2, 1.0f);
  for (fa_tensor* t : {&args_.q, &args_.k, &args_.v, &args_.out}) {
    t->shape[3] = 264;
    t->data = big.data();
  }
  args_.out.data = out_.data();
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"264", "multiples of 8"});
}

TEST_F(Rejects, HeadsNotDivisible) {
  args_.k.shape[2] = 3;
  args_.v.shape[2] = 3;
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"Hkv = 3", "Hq = 4"});
}

TEST_F(Rejects, KeyBatchMismatch) {
  args_.k.shape[0] = 1;
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"k", "[B, Lk, Hkv, D]"});
}

TEST_F(Rejects, ValueShapeDiffersFromKey) {
  args_.v.shape[1] = LK - 1;
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"v", "like k"});
}

TEST_F(Rejects, OutputShapeDiffersFromQuery) {
  args_.out.shape[1] = LQ - 1;
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"out", "like q"});
}

TEST_F(Rejects, LseShape) {
  args_.lse.shape[2] = LQ + 1;
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"lse", "[B, Hq, Lq]"});
}

TEST_F(Rejects, NegativeStride) {
  args_.q.strides[1] = -1;
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"q", "strides[1]", ">= 0"});
}

TEST_F(Rejects, HeadDimNotContiguous) {
  args_.k.strides[3] = 2;
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"k", "contiguous"});
}

TEST_F(Rejects, NegativeSize) {
  args_.q.shape[1] = -3;
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"q", "shape[1]", ">= 0"});
}

TEST_F(Rejects, EmptyQuery) {
  args_.q.shape[1] = 0;
  args_.out.shape[1] = 0;
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"Lq >= 1"});
}

TEST_F(Rejects, OffsetsOverflowInt64) {
  args_.q.strides[0] = std::numeric_limits<int64_t>::max() / 2 + 1;
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"q", "int64"});
}

TEST_F(Rejects, SequenceLongerThanInt32) {
  args_.k.shape[1] = args_.v.shape[1] = int64_t(1) << 31;
  args_.k.strides[0] = args_.v.strides[0] = 0;  // a view: nothing is read before the check
  args_.k.strides[1] = args_.v.strides[1] = 0;
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"Lk = 2147483648", "at most 2147483647"});
}

TEST_F(Rejects, UnknownMaskKind) {
  args_.mask.kind = static_cast<fa_mask_kind>(42);
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"mask.kind", "FA_MASK_CAUSAL"});
}

TEST_F(Rejects, MaskReservedFields) {
  args_.mask.reserved[2] = 1;
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"mask.reserved"});
}

TEST_F(Rejects, NegativeSoftcap) {
  args_.softcap = -1.0f;
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"softcap", "> 0"});
}

TEST_F(Rejects, NanSoftcap) {
  args_.softcap = std::nanf("");
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"softcap"});
}

TEST_F(Rejects, InfiniteScale) {
  args_.softmax_scale = std::numeric_limits<float>::infinity();
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"softmax_scale", "finite"});
}

TEST_F(Rejects, UnknownBackend) {
  options_.backend = static_cast<fa_backend>(17);
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"options.backend", "FA_BACKEND_CPU"});
}

TEST_F(Rejects, NegativeThreads) {
  options_.num_threads = -2;
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"num_threads"});
}

TEST_F(Rejects, CudaWhenNotBuiltOrAbsent) {
  if (fa_backend_available(FA_BACKEND_CUDA)) GTEST_SKIP() << "a CUDA device is present";
  options_.backend = FA_BACKEND_CUDA;
  expect_rejected(FA_STATUS_NO_DEVICE, {"FA_BACKEND_CUDA"});
}

// Variable-length batches.
class RejectsVarlen : public Rejects {
 protected:
  void SetUp() override {
    Rejects::SetUp();
    args_.q = fastattn::tensor(q_.data(), FA_DTYPE_FLOAT32, {B * LQ, HQ, D});
    args_.k = fastattn::tensor(k_.data(), FA_DTYPE_FLOAT32, {B * LK, HKV, D});
    args_.v = fastattn::tensor(v_.data(), FA_DTYPE_FLOAT32, {B * LK, HKV, D});
    args_.out = fastattn::tensor(out_.data(), FA_DTYPE_FLOAT32, {B * LQ, HQ, D});
    args_.lse = fastattn::tensor(lse_.data(), FA_DTYPE_FLOAT32, {HQ, B * LQ});
    args_.cu_seqlens_q = cu_q_.data();
    args_.cu_seqlens_k = cu_k_.data();
    args_.num_seqs = B;
  }
  std::vector<int32_t> cu_q_{0, 3, int32_t(B * LQ)}, cu_k_{0, 7, int32_t(B * LK)};
};

TEST_F(RejectsVarlen, ValidCallSucceeds) {
  ASSERT_EQ(fa_attention_forward(&args_, &options_), FA_STATUS_OK) << fa_last_error();
}

TEST_F(RejectsVarlen, OnlyOneOffsetArray) {
  args_.cu_seqlens_k = nullptr;
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"cu_seqlens_q", "cu_seqlens_k", "both"});
}

TEST_F(RejectsVarlen, NoSequences) {
  args_.num_seqs = 0;
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"num_seqs", ">= 1"});
}

TEST_F(RejectsVarlen, OffsetsDecrease) {
  cu_k_[1] = 20;
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"cu_seqlens_k", "non-decreasing"});
}

TEST_F(RejectsVarlen, OffsetsStartAfterZero) {
  cu_q_[0] = 1;
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"cu_seqlens_q[0]", "start at 0"});
}

TEST_F(RejectsVarlen, OffsetsPastTheTensor) {
  cu_q_[2] = int32_t(B * LQ + 1);
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"cu_seqlens_q", "exceeds"});
}

TEST_F(RejectsVarlen, LseLayout) {
  args_.lse = fastattn::tensor(lse_.data(), FA_DTYPE_FLOAT32, {B, HQ, LQ});
  expect_rejected(FA_STATUS_INVALID_ARGUMENT, {"lse", "ndim"});
}

// Paged KV cache.
class RejectsPaged : public testing::Test {
 protected:
  static constexpr int64_t kPages = 6, kPageSize = 4;
  void SetUp() override {
    q_.assign(B * 1 * HQ * D, 0.5f);
    cache_.assign(kPages * kPageSize * HKV * D, 0.25f);
    out_.assign(B * 1 * HQ * D, 777.0f);
    args_.q = fastattn::tensor(q_.data(), FA_DTYPE_FLOAT32, {B, 1, HQ, D});
    args_.k_cache = fastattn::tensor(cache_.data(), FA_DTYPE_FLOAT32, {kPages, kPageSize, HKV, D});
    args_.v_cache = args_.k_cache;
    args_.out = fastattn::tensor(out_.data(), FA_DTYPE_FLOAT32, {B, 1, HQ, D});
    args_.page_table = table_.data();
    args_.max_pages_per_seq = 3;
    args_.page_table_stride = 3;
    args_.seq_lens_k = lens_.data();
    options_.backend = FA_BACKEND_CPU;
  }
  void expect_rejected(std::vector<std::string> fragments) {
    ASSERT_EQ(fa_paged_attention(&args_, &options_), FA_STATUS_INVALID_ARGUMENT);
    const std::string message = fa_last_error();
    for (const auto& f : fragments) EXPECT_NE(message.find(f), std::string::npos) << message;
    for (float x : out_) ASSERT_EQ(x, 777.0f);
  }
  std::vector<float> q_, cache_, out_;
  std::vector<int32_t> table_{5, 0, 2, 1, 3, -1}, lens_{12, 7};
  fa_paged_attention_args args_{};
  fa_run_options options_{};
};

TEST_F(RejectsPaged, ValidCallSucceeds) {
  ASSERT_EQ(fa_paged_attention(&args_, &options_), FA_STATUS_OK) << fa_last_error();
}

TEST_F(RejectsPaged, NullPageTable) {
  args_.page_table = nullptr;
  expect_rejected({"page_table", "NULL"});
}

TEST_F(RejectsPaged, NullLengths) {
  args_.seq_lens_k = nullptr;
  expect_rejected({"seq_lens_k", "NULL"});
}

TEST_F(RejectsPaged, LengthBeyondThePages) {
  lens_[1] = 13;
  expect_rejected({"seq_lens_k[1]", "0 to max_pages_per_seq * page_size = 12"});
}

TEST_F(RejectsPaged, NegativeLength) {
  lens_[0] = -1;
  expect_rejected({"seq_lens_k[0]"});
}

TEST_F(RejectsPaged, PageOutOfRange) {
  table_[4] = 6;
  expect_rejected({"page_table[1][1] = 6", "0 to 5"});
}

TEST_F(RejectsPaged, NarrowTableStride) {
  args_.page_table_stride = 2;
  expect_rejected({"page_table_stride"});
}

TEST_F(RejectsPaged, EmptyPages) {
  args_.k_cache.shape[1] = 0;
  args_.v_cache.shape[1] = 0;
  expect_rejected({"k_cache", "page_size >= 1"});
}

TEST_F(RejectsPaged, CacheShapesDiffer) {
  args_.v_cache.shape[2] = 1;
  expect_rejected({"v_cache", "like k_cache"});
}

// Merge of partial states.
TEST(RejectsMerge, StateCountAndShapes) {
  std::vector<float> o(2 * 3 * 4 * 8, 1.0f), l(2 * 4 * 3, 0.0f), out(o.size(), 9.0f);
  const fa_tensor ot = fastattn::tensor(o.data(), FA_DTYPE_FLOAT32, {2, 3, 4, 8});
  const fa_tensor lt = fastattn::tensor(l.data(), FA_DTYPE_FLOAT32, {2, 4, 3});
  fa_tensor outs[2] = {ot, ot}, lses[2] = {lt, lt};
  fa_merge_args a{};
  a.num_states = 2;
  a.outs = outs;
  a.lses = lses;
  a.out = fastattn::tensor(out.data(), FA_DTYPE_FLOAT32, {2, 3, 4, 8});
  ASSERT_EQ(fa_merge_states(&a, nullptr), FA_STATUS_OK) << fa_last_error();
  std::fill(out.begin(), out.end(), 9.0f);

  auto expect = [&](const char* fragment) {
    EXPECT_EQ(fa_merge_states(&a, nullptr), FA_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(std::string(fa_last_error()).find(fragment), std::string::npos) << fa_last_error();
    for (float x : out) ASSERT_EQ(x, 9.0f);
  };
  a.num_states = 0;
  expect("num_states");
  a.num_states = 65;
  expect("1 to 64");
  a.num_states = 2;
  a.outs = nullptr;
  expect("outs");
  a.outs = outs;
  outs[1].shape[2] = 2;
  expect("outs[1]");
  outs[1] = ot;
  lses[1].dtype = FA_DTYPE_BFLOAT16;
  expect("lses[1]");
  lses[1] = lt;
  lses[0].shape[1] = 3;
  expect("lses[0]");
}

}  // namespace
