// build_decode_params: what the backends receive (the cache layout, the
// capacity and planning bound, the append and rotary fields), and who reads
// cache_seqlens and the page table: the CPU backends (kHost, checked here) or
// the GPU (kDevice: never dereferenced on the host).
#include <gtest/gtest.h>

#include <vector>

#include "api/build_params.h"
#include "fastattn/fastattn.hpp"

namespace fastattn {
namespace {

constexpr int64_t B = 2, LQ = 3, HQ = 8, HKV = 2, D = 64;

class DecodeParamsTest : public testing::Test {
 protected:
  void SetUp() override {
    args_.q = tensor(q_.data(), FA_DTYPE_BFLOAT16, {B, LQ, HQ, D}, {LQ * HQ * D + 8, HQ * D, D, 1});
    args_.out = tensor(out_.data(), FA_DTYPE_BFLOAT16, {B, LQ, HQ, D});
    // Pages [9, 16, Hkv, D] with padded rows.
    args_.k_cache = tensor(k_.data(), FA_DTYPE_BFLOAT16, {9, 16, HKV, D},
                           {16 * (HKV * D + 8), HKV * D + 8, D, 1});
    args_.v_cache = tensor(v_.data(), FA_DTYPE_BFLOAT16, {9, 16, HKV, D});
    args_.page_table = table_.data();
    args_.max_pages_per_seq = 4;
    args_.page_table_stride = 5;
    args_.cache_seqlens = lens_.data();
    // k_new, v_new: halves of a fused [B, Lq, 2 * Hkv, D].
    args_.k_new = tensor(kv_.data(), FA_DTYPE_BFLOAT16, {B, LQ, HKV, D},
                         {LQ * 2 * HKV * D, 2 * HKV * D, D, 1});
    args_.v_new = args_.k_new;
    args_.v_new.data = kv_.data() + HKV * D;
    args_.rotary_style = FA_ROTARY_INTERLEAVED;
    args_.rotary_dim = 32;
    args_.rotary_cos = tensor(cos_.data(), FA_DTYPE_FLOAT32, {100, 16}, {20, 1});
    args_.rotary_sin = tensor(sin_.data(), FA_DTYPE_FLOAT32, {100, 16});
    args_.lse = tensor(lse_.data(), FA_DTYPE_FLOAT32, {B, HQ, LQ});
    args_.mask.kind = FA_MASK_CAUSAL;
  }

  std::vector<uint16_t> q_ = std::vector<uint16_t>(B * (LQ * HQ * D + 8)),
                        out_ = std::vector<uint16_t>(B * LQ * HQ * D),
                        k_ = std::vector<uint16_t>(9 * 16 * (HKV * D + 8)),
                        v_ = std::vector<uint16_t>(9 * 16 * HKV * D),
                        kv_ = std::vector<uint16_t>(B * LQ * 2 * HKV * D);
  std::vector<float> cos_ = std::vector<float>(100 * 20), sin_ = std::vector<float>(100 * 16),
                     lse_ = std::vector<float>(B * HQ * LQ);
  std::vector<int32_t> table_{3, 1, 4, 0, -1, 8, 2, -1, -1, -1}, lens_{40, 20};
  fa_decode_args args_{};
};

TEST_F(DecodeParamsTest, PagedCacheAppendAndRotary) {
  DecodeParams p;
  ASSERT_TRUE(build_decode_params(args_, OffsetsAccess::kHost, &p).is_ok());
  EXPECT_EQ(p.capacity, 64);
  EXPECT_EQ(p.attn.seqlen_k, 64);  // max_seqlen_k 0: the capacity
  EXPECT_EQ(p.attn.seqlen_q, LQ);
  EXPECT_EQ(p.attn.seqlens_k, nullptr);
  EXPECT_EQ(p.attn.dtype, DType::kBFloat16);
  EXPECT_EQ(p.attn.q_batch_stride, LQ * HQ * D + 8);
  EXPECT_EQ(p.attn.kv.page_table, table_.data());
  EXPECT_EQ(p.attn.kv.page_table_stride, 5);
  EXPECT_EQ(p.attn.kv.page_size, 16);
  EXPECT_EQ(p.attn.kv.k_page_stride, 16 * (HKV * D + 8));
  EXPECT_EQ(p.attn.kv.k_row_stride, HKV * D + 8);
  EXPECT_EQ(p.attn.kv.v_row_stride, HKV * D);
  EXPECT_EQ(p.attn.kv.k_head_stride, D);
  EXPECT_EQ(p.cache_seqlens, lens_.data());
  EXPECT_EQ(p.new_tokens, LQ);
  EXPECT_EQ(p.keys(0), 43);
  EXPECT_EQ(p.v_new, kv_.data() + HKV * D);
  EXPECT_EQ(p.k_new_row_stride, 2 * HKV * D);
  EXPECT_EQ(p.v_new_batch_stride, LQ * 2 * HKV * D);
  EXPECT_EQ(p.rotary.style, RotaryStyle::kInterleaved);
  EXPECT_EQ(p.rotary.dim, 32);
  EXPECT_EQ(p.rotary.cos_row_stride, 20);
  EXPECT_EQ(p.rotary.sin_row_stride, 16);
  EXPECT_EQ(p.rotary.max_position, 100);
  EXPECT_EQ(p.attn.mask.right, 0);
  EXPECT_EQ(p.num_splits, 0);

  args_.max_seqlen_k = 50;
  args_.num_splits = 7;
  ASSERT_TRUE(build_decode_params(args_, OffsetsAccess::kHost, &p).is_ok());
  EXPECT_EQ(p.attn.seqlen_k, 50);
  EXPECT_EQ(p.num_splits, 7);
}

TEST_F(DecodeParamsTest, ContiguousCacheWithoutAppend) {
  std::vector<uint16_t> cache(B * 70 * HKV * D);
  args_.k_cache = args_.v_cache = tensor(cache.data(), FA_DTYPE_BFLOAT16, {B, 70, HKV, D});
  args_.page_table = nullptr;
  args_.max_pages_per_seq = args_.page_table_stride = 0;
  args_.k_new = args_.v_new = fa_tensor{};
  args_.rotary_style = FA_ROTARY_NONE;
  args_.rotary_dim = 0;
  args_.rotary_cos = args_.rotary_sin = fa_tensor{};
  DecodeParams p;
  ASSERT_TRUE(build_decode_params(args_, OffsetsAccess::kHost, &p).is_ok());
  EXPECT_EQ(p.capacity, 70);
  EXPECT_EQ(p.attn.kv.page_table, nullptr);
  EXPECT_EQ(p.attn.kv.k_batch_stride, 70 * HKV * D);
  EXPECT_EQ(p.attn.kv.v_batch_stride, 70 * HKV * D);
  EXPECT_EQ(p.new_tokens, 0);
  EXPECT_EQ(p.k_new, nullptr);
  EXPECT_EQ(p.rotary.style, RotaryStyle::kNone);
  EXPECT_EQ(p.keys(1), 20);
}

TEST_F(DecodeParamsTest, DeviceOffsetsAreTrustedAndNeverRead) {
  // Addresses no host code may dereference: the CUDA backend reads them on the GPU.
  args_.cache_seqlens = reinterpret_cast<const int32_t*>(uintptr_t(16));
  args_.page_table = reinterpret_cast<const int32_t*>(uintptr_t(64));
  DecodeParams p;
  ASSERT_TRUE(build_decode_params(args_, OffsetsAccess::kDevice, &p).is_ok());
  EXPECT_EQ(p.cache_seqlens, args_.cache_seqlens);

  // The same out-of-range contents: refused where read on the host, trusted on the device.
  args_.cache_seqlens = lens_.data();
  args_.page_table = table_.data();
  lens_[1] = 62;
  EXPECT_EQ(build_decode_params(args_, OffsetsAccess::kHost, &p).code(), FA_STATUS_INVALID_ARGUMENT);
  EXPECT_TRUE(build_decode_params(args_, OffsetsAccess::kDevice, &p).is_ok());
  lens_[1] = 20;
  table_[6] = 9;
  EXPECT_EQ(build_decode_params(args_, OffsetsAccess::kHost, &p).code(), FA_STATUS_INVALID_ARGUMENT);
  EXPECT_TRUE(build_decode_params(args_, OffsetsAccess::kDevice, &p).is_ok());
  // Shapes are checked either way.
  args_.rotary_dim = 33;
  EXPECT_EQ(build_decode_params(args_, OffsetsAccess::kDevice, &p).code(), FA_STATUS_INVALID_ARGUMENT);
}

}  // namespace
}  // namespace fastattn
