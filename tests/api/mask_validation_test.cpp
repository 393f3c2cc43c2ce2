// Every rejected mask input (kinds, prefix, chunk, documents, block masks,
// bool tensors where data belongs): INVALID_ARGUMENT, a message that names
// the argument, and nothing written.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "api/block_mask.h"
#include "fastattn/fastattn.h"
#include "fastattn/fastattn.hpp"
#include "poisoned_forward.h"

namespace {

using namespace fastattn::test_support;

class RejectsMask : public PoisonedForward {
 protected:
  void expect_rejected(std::vector<std::string> fragments) {
    for (fa_backend backend : {FA_BACKEND_CPU, FA_BACKEND_CPU_REFERENCE}) {
      options_.backend = backend;
      ASSERT_EQ(fa_attention_supported(&args_, &options_), FA_STATUS_INVALID_ARGUMENT);
      expect_message(fragments);
      ASSERT_EQ(fa_attention_forward(&args_, &options_), FA_STATUS_INVALID_ARGUMENT);
      expect_message(fragments);
      expect_untouched();
    }
  }

  // A host mask over [bm, hm, lq, lk], all true.
  fastattn::BlockMask make_mask(int64_t bm, int64_t hm, int64_t lq, int64_t lk) {
    dense_.assign(bm * hm * lq * lk, 1);
    fastattn::BlockMask m;
    EXPECT_TRUE(fastattn::BlockMask::from_dense(
        fastattn::tensor(dense_.data(), FA_DTYPE_BOOL, {bm, hm, lq, lk}), &m));
    return m;
  }

  std::vector<uint8_t> dense_;
};

TEST_F(RejectsMask, ValidMasksRun) {
  std::vector<int32_t> q_ids(B * LQ, 3), k_ids(B * LK, 3);
  fastattn::BlockMask m = make_mask(1, HQ, LQ, LK);
  for (fa_mask mask : {fastattn::mask::prefix_lm(3), fastattn::mask::chunked(4),
                       fastattn::mask::chunked(2, false),
                       fastattn::mask::documents(q_ids.data(), k_ids.data()),
                       fastattn::mask::with_block_mask(fastattn::mask::causal(), m.get())}) {
    args_.mask = mask;
    ASSERT_EQ(fa_attention_forward(&args_, &options_), FA_STATUS_OK) << fa_last_error();
  }
}

TEST_F(RejectsMask, UnknownKind) {
  args_.mask.kind = static_cast<fa_mask_kind>(7);
  expect_rejected({"mask.kind", "FA_MASK_PREFIX_LM"});
}

TEST_F(RejectsMask, NegativePrefix) {
  args_.mask = fastattn::mask::prefix_lm(-1);
  expect_rejected({"mask.prefix_len", "-1"});
}

TEST_F(RejectsMask, PrefixWithAnotherKind) {
  args_.mask = fastattn::mask::causal();
  args_.mask.prefix_len = 3;
  expect_rejected({"mask.prefix_len", "FA_MASK_PREFIX_LM"});
}

TEST_F(RejectsMask, NegativeChunk) {
  args_.mask = fastattn::mask::chunked(-4);
  expect_rejected({"mask.chunk_size", "-4"});
}

TEST_F(RejectsMask, OneSegmentPointer) {
  std::vector<int32_t> ids(B * LK, 0);
  args_.mask.q_segment_ids = ids.data();
  expect_rejected({"mask.q_segment_ids", "mask.k_segment_ids"});
  args_.mask.q_segment_ids = nullptr;
  args_.mask.k_segment_ids = ids.data();
  expect_rejected({"mask.q_segment_ids", "mask.k_segment_ids"});
}

TEST_F(RejectsMask, DecreasingSegmentIds) {
  std::vector<int32_t> q_ids(B * LQ, 1), k_ids(B * LK, 1);
  q_ids[LQ + 3] = 0;  // sequence 1
  args_.mask = fastattn::mask::documents(q_ids.data(), k_ids.data());
  expect_rejected({"mask.q_segment_ids", "non-decreasing", "sequence 1"});
  q_ids[LQ + 3] = 1;
  k_ids[2] = 0;
  expect_rejected({"mask.k_segment_ids", "non-decreasing", "sequence 0"});
}

TEST_F(RejectsMask, BlockMaskOfWrongShape) {
  for (auto [bm, hm, lq, lk] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{1, 1, LQ, LK + 1},
                                {1, 1, LQ + 1, LK},
                                {3, 1, LQ, LK},
                                {1, 2, LQ, LK}}) {
    fastattn::BlockMask m = make_mask(bm, hm, lq, lk);
    args_.mask = fastattn::mask::with_block_mask(fastattn::mask::none(), m.get());
    expect_rejected({"mask.block_mask", "[B, Hq, Lq, Lk]"});
  }
}

TEST_F(RejectsMask, BlockMaskOnTheWrongSide) {
  fastattn::BlockMask host = make_mask(1, 1, LQ, LK);
  fa_block_mask device;  // what a GPU-built mask looks like to the API layer
  device.view = host.get()->view;
  device.on_device = true;
  device.device = 0;
  args_.mask = fastattn::mask::with_block_mask(fastattn::mask::none(), &device);
  expect_rejected({"mask.block_mask", "GPU"});
}

TEST_F(RejectsMask, BoolDataTensors) {
  const fa_tensor q = args_.q, out = args_.out, lse = args_.lse;
  args_.q.dtype = FA_DTYPE_BOOL;
  expect_rejected({"q", "masks only", "FA_DTYPE_FLOAT32", "FA_DTYPE_BFLOAT16"});
  args_.q = q;
  args_.out.dtype = FA_DTYPE_BOOL;
  expect_rejected({"out", "masks only"});
  args_.out = out;
  args_.lse.dtype = FA_DTYPE_BOOL;
  expect_rejected({"lse", "masks only"});
  args_.lse = lse;
  args_.k.dtype = FA_DTYPE_BOOL;
  args_.v.dtype = FA_DTYPE_BOOL;
  expect_rejected({"k", "masks only"});
}

TEST(RejectsMaskVarlen, BlockMaskWithCuSeqlens) {
  const int64_t total_q = 6, total_k = 9;
  std::vector<float> q(total_q * HQ * D, 0.5f), k(total_k * HKV * D, 0.25f), out(q.size(), kPoison);
  std::vector<int32_t> cu_q = {0, 2, 6}, cu_k = {0, 4, 9};
  std::vector<uint8_t> dense(1 * 1 * 4 * 5, 1);
  fastattn::BlockMask m;
  ASSERT_TRUE(fastattn::BlockMask::from_dense(
      fastattn::tensor(dense.data(), FA_DTYPE_BOOL, {1, 1, 4, 5}), &m));
  fa_attention_args a{};
  a.q = fastattn::tensor(q.data(), FA_DTYPE_FLOAT32, {total_q, HQ, D});
  a.k = fastattn::tensor(k.data(), FA_DTYPE_FLOAT32, {total_k, HKV, D});
  a.v = a.k;
  a.out = fastattn::tensor(out.data(), FA_DTYPE_FLOAT32, {total_q, HQ, D});
  a.cu_seqlens_q = cu_q.data();
  a.cu_seqlens_k = cu_k.data();
  a.num_seqs = 2;
  a.mask = fastattn::mask::with_block_mask(fastattn::mask::none(), m.get());
  fa_run_options o{};
  o.backend = FA_BACKEND_CPU;
  ASSERT_EQ(fa_attention_forward(&a, &o), FA_STATUS_INVALID_ARGUMENT);
  expect_message({"mask.block_mask", "cu_seqlens"});
  for (float x : out) ASSERT_EQ(x, kPoison);
}

// Over a KV cache: no documents and no block masks (fa_paged_attention and
// fa_plan_decode / fa_run_decode).
TEST(RejectsMaskCache, DocumentsAndBlockMasks) {
  const int64_t lq = 1, pages = 4, page = 4;
  std::vector<float> q(B * lq * HQ * D, 0.5f), cache(pages * page * HKV * D, 0.25f),
      out(q.size(), kPoison);
  std::vector<int32_t> table = {0, 1, 2, 3}, lens = {5, 3}, ids(B * 8, 0);
  std::vector<uint8_t> dense(lq * 5, 1);
  fastattn::BlockMask m;
  ASSERT_TRUE(fastattn::BlockMask::from_dense(
      fastattn::tensor(dense.data(), FA_DTYPE_BOOL, {1, 1, lq, 5}), &m));
  const fa_mask masks[] = {fastattn::mask::documents(ids.data(), ids.data()),
                           fastattn::mask::with_block_mask(fastattn::mask::none(), m.get())};
  const char* names[] = {"mask.q_segment_ids", "mask.block_mask"};
  fa_run_options o{};
  o.backend = FA_BACKEND_CPU;
  for (int x = 0; x < 2; ++x) {
    fa_paged_attention_args pa{};
    pa.q = fastattn::tensor(q.data(), FA_DTYPE_FLOAT32, {B, lq, HQ, D});
    pa.k_cache = fastattn::tensor(cache.data(), FA_DTYPE_FLOAT32, {pages, page, HKV, D});
    pa.v_cache = pa.k_cache;
    pa.page_table = table.data();
    pa.page_table_stride = 2;
    pa.max_pages_per_seq = 2;
    pa.seq_lens_k = lens.data();
    pa.out = fastattn::tensor(out.data(), FA_DTYPE_FLOAT32, {B, lq, HQ, D});
    pa.mask = masks[x];
    ASSERT_EQ(fa_paged_attention(&pa, &o), FA_STATUS_INVALID_ARGUMENT);
    expect_message({names[x], "KV cache"});

    fa_decode_args da{};
    da.q = pa.q;
    da.k_cache = pa.k_cache;
    da.v_cache = pa.v_cache;
    da.page_table = table.data();
    da.page_table_stride = 2;
    da.max_pages_per_seq = 2;
    da.cache_seqlens = lens.data();
    da.out = pa.out;
    da.mask = masks[x];
    fa_decode_plan plan{};
    plan.num_splits = -7;
    ASSERT_EQ(fa_plan_decode(&da, &o, &plan), FA_STATUS_INVALID_ARGUMENT);
    expect_message({names[x], "KV cache"});
    EXPECT_EQ(plan.num_splits, -7);
    for (float v : out) ASSERT_EQ(v, kPoison);
  }
}

// ------------------------------------------------------ fa_block_mask_create

class RejectsBlockMaskArgs : public testing::Test {
 protected:
  void SetUp() override {
    dense_.assign(2 * 3 * 100 * 70, 1);
    blocks_.assign(1 * 1 * 2 * 1, 1);
    args_.dense = fastattn::tensor(dense_.data(), FA_DTYPE_BOOL, {2, 3, 100, 70});
  }
  void expect_rejected(std::vector<std::string> fragments) {
    fa_block_mask* sentinel = reinterpret_cast<fa_block_mask*>(&dense_);
    fa_block_mask* m = sentinel;
    ASSERT_EQ(fa_block_mask_create(&args_, nullptr, &m), FA_STATUS_INVALID_ARGUMENT);
    expect_message(fragments);
    EXPECT_EQ(m, sentinel);
  }
  // The blocks form over a 200 x 70 plane at 128 x 128: [1, 1, 2, 1].
  void use_blocks() {
    args_.dense = fa_tensor{};
    args_.blocks = fastattn::tensor(blocks_.data(), FA_DTYPE_BOOL, {1, 1, 2, 1});
    args_.seqlen_q = 200;
    args_.seqlen_k = 70;
  }
  std::vector<uint8_t> dense_, blocks_;
  fa_block_mask_args args_{};
};

TEST_F(RejectsBlockMaskArgs, ValidSourcesSucceed) {
  fa_block_mask* m = nullptr;
  ASSERT_EQ(fa_block_mask_create(&args_, nullptr, &m), FA_STATUS_OK) << fa_last_error();
  fa_block_mask_destroy(m);
  use_blocks();
  ASSERT_EQ(fa_block_mask_create(&args_, nullptr, &m), FA_STATUS_OK) << fa_last_error();
  fa_block_mask_info info{};
  ASSERT_EQ(fa_block_mask_get_info(m, &info), FA_STATUS_OK);
  EXPECT_EQ(info.full_blocks, 2);
  fa_block_mask_destroy(m);
  fa_block_mask_destroy(nullptr);
}

TEST_F(RejectsBlockMaskArgs, NullPointers) {
  fa_block_mask* m = nullptr;
  ASSERT_EQ(fa_block_mask_create(nullptr, nullptr, &m), FA_STATUS_INVALID_ARGUMENT);
  expect_message({"args"});
  ASSERT_EQ(fa_block_mask_create(&args_, nullptr, nullptr), FA_STATUS_INVALID_ARGUMENT);
  expect_message({"mask", "NULL"});
  fa_block_mask_info info{};
  ASSERT_EQ(fa_block_mask_get_info(nullptr, &info), FA_STATUS_INVALID_ARGUMENT);
  expect_message({"mask"});
}

TEST_F(RejectsBlockMaskArgs, ExactlyOneSource) {
  args_.blocks = fastattn::tensor(blocks_.data(), FA_DTYPE_BOOL, {1, 1, 2, 1});
  expect_rejected({"dense / blocks", "both"});
  args_.dense = fa_tensor{};
  args_.blocks = fa_tensor{};
  expect_rejected({"dense / blocks", "NULL"});
}

TEST_F(RejectsBlockMaskArgs, DenseDescriptor) {
  args_.dense.dtype = FA_DTYPE_FLOAT32;
  expect_rejected({"dense", "FA_DTYPE_BOOL"});
  args_.dense.dtype = FA_DTYPE_BOOL;
  args_.dense.ndim = 3;
  expect_rejected({"dense", "ndim"});
  args_.dense.ndim = 4;
  args_.dense.strides[3] = 2;
  expect_rejected({"dense", "strides[3]"});
  args_.dense.strides[3] = 1;
  args_.dense.shape[1] = 0;
  expect_rejected({"dense", "shape[1]"});
  args_.dense.shape[1] = 3;
  args_.dense.strides[0] = -1;
  expect_rejected({"dense", "strides[0]"});
}

TEST_F(RejectsBlockMaskArgs, DensePlaneDisagrees) {
  args_.seqlen_q = 99;
  expect_rejected({"seqlen_q", "100"});
  args_.seqlen_q = 0;
  args_.seqlen_k = 71;
  expect_rejected({"seqlen_k", "70"});
}

TEST_F(RejectsBlockMaskArgs, BlocksShapeAndPlane) {
  use_blocks();
  args_.seqlen_q = 300;  // needs 3 query blocks
  expect_rejected({"blocks", "ceil(Lq / block_q)", "3"});
  args_.seqlen_q = 0;
  expect_rejected({"seqlen_q", "1 to"});
  args_.seqlen_q = 200;
  args_.seqlen_k = int64_t{1} << 32;
  expect_rejected({"seqlen_k"});
}

TEST_F(RejectsBlockMaskArgs, BlockSizes) {
  for (int64_t size : {-128, 1, 32, 100, 512}) {
    args_.block_q = size;
    expect_rejected({"block_q", "64, 128, 256"});
    args_.block_q = 0;
    args_.block_k = size;
    expect_rejected({"block_k", "64, 128, 256"});
    args_.block_k = 0;
  }
}

TEST_F(RejectsBlockMaskArgs, Reserved) {
  args_.reserved[3] = 1;
  expect_rejected({"reserved"});
}

}  // namespace
