// The CUDA decode planner is pure host code; these run without a GPU.
#include "cuda/host/decode_select.h"

#include <gtest/gtest.h>

#include <string>

#include "fastattn/fastattn.h"

namespace fastattn::cuda {
namespace {

alignas(16) unsigned char buffer[64];

// B = 4 sequences, Lq new tokens, Hq = 32, Hkv = 8, paged cache of page 16.
DecodeParams problem(int64_t lq, int64_t head_dim, int64_t hq = 32, int64_t hkv = 8) {
  DecodeParams d;
  AttentionParams& p = d.attn;
  p.dtype = DType::kBFloat16;
  p.batch = 4;
  p.seqlen_q = lq;
  p.seqlen_k = 4096;
  p.heads_q = hq;
  p.heads_kv = hkv;
  p.head_dim = head_dim;
  p.q = p.kv.k = p.kv.v = p.out = buffer;
  p.q_head_stride = p.out_head_stride = head_dim;
  p.q_row_stride = p.out_row_stride = hq * head_dim;
  p.q_batch_stride = p.out_batch_stride = lq * hq * head_dim;
  p.kv.k_head_stride = p.kv.v_head_stride = head_dim;
  p.kv.k_row_stride = p.kv.v_row_stride = hkv * head_dim;
  p.kv.k_page_stride = p.kv.v_page_stride = 16 * hkv * head_dim;
  static const int32_t table[1] = {0};
  p.kv.page_table = table;
  p.kv.page_size = 16;
  p.kv.page_table_stride = 256;
  d.capacity = 4096;
  return d;
}

std::string refusal(int capability, const DecodeParams& p) {
  DecodeChoice c;
  const Status s = choose_decode_kernel(capability, p, &c);
  return s.is_ok() ? "" : s.message();
}

TEST(DecodeSelect, PadsHeadDimAndPacksQueryHeads) {
  DecodeChoice c;
  ASSERT_TRUE(choose_decode_kernel(90, problem(1, 128), &c).is_ok());
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.rows, 4);  // G = 4 query heads share each KV head
  EXPECT_EQ(c.row_chunks, 1);
  ASSERT_TRUE(choose_decode_kernel(90, problem(16, 80), &c).is_ok());
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.rows, 8);
  EXPECT_EQ(c.row_chunks, 8);  // 64 rows
  ASSERT_TRUE(choose_decode_kernel(90, problem(1, 64, 8, 8), &c).is_ok());
  EXPECT_EQ(c.rows, 1);
  ASSERT_TRUE(choose_decode_kernel(70, problem(3, 256, 8, 8), &c).is_ok());
  EXPECT_EQ(c.head_dim, 256);
  EXPECT_EQ(c.rows, 4);
  EXPECT_EQ(c.row_chunks, 1);
}

TEST(DecodeSelect, RefusesWhatTheKernelsDoNotTake) {
  EXPECT_NE(refusal(61, problem(1, 128)).find("compute capability 6.1"), std::string::npos);
  EXPECT_NE(refusal(90, problem(17, 128)).find("q: Lq = 17"), std::string::npos);
  DecodeParams f32 = problem(1, 128);
  f32.attn.dtype = DType::kFloat32;
  EXPECT_NE(refusal(90, f32).find("float32"), std::string::npos);
  DecodeParams strided = problem(1, 128);
  strided.attn.kv.k_row_stride = 8 * 128 + 4;
  EXPECT_NE(refusal(90, strided).find("k_cache: the CUDA decode path needs"), std::string::npos);
  DecodeParams misaligned = problem(1, 128);
  misaligned.attn.out = buffer + 8;
  EXPECT_NE(refusal(90, misaligned).find("out: "), std::string::npos);
}

TEST(DecodeSelect, SplitsFillTheMachineButStayLong) {
  // 132 SMs x 3 resident blocks = 396 slots.
  const int batch1 = choose_num_splits(8, 131072, 132, 3);
  EXPECT_GE(batch1 * 8, 0.9 * 396);
  EXPECT_LE(batch1 * 8, 396);
  // Short sequences: splits of at least kMinKeysPerSplit keys.
  EXPECT_EQ(choose_num_splits(8, 1024, 132, 3), 1024 / kMinKeysPerSplit);
  EXPECT_EQ(choose_num_splits(8, 300, 132, 3), 2);
  EXPECT_EQ(choose_num_splits(8, 100, 132, 3), 1);
  // Whole waves already: no split.
  EXPECT_EQ(choose_num_splits(396, 32768, 132, 3), 1);
  EXPECT_EQ(choose_num_splits(2048, 32768, 132, 3), 1);  // 5.2 waves, 86% busy, limit 1
  // 512 blocks: 1.29 waves (65% busy); 3 splits make 3.88 waves (97%).
  EXPECT_EQ(choose_num_splits(512, 32768, 132, 3), 3);
  // 128 blocks: 3 splits fill 384 of 396 slots in one wave.
  EXPECT_EQ(choose_num_splits(128, 32768, 132, 3), 3);
  for (int64_t blocks : {1, 7, 64, 200, 395, 100000}) {
    const int s = choose_num_splits(blocks, 1 << 20, 132, 3);
    EXPECT_GE(s, 1);
    EXPECT_LE(s, FA_MAX_DECODE_SPLITS);
  }
}

TEST(DecodeSelect, WorkspaceHoldsEveryPartialState) {
  const DecodeParams p = problem(2, 128);
  EXPECT_EQ(decode_workspace_bytes(p, 1), 0u);
  const uint64_t o_bytes = 5ull * 4 * 2 * 32 * 128 * 4;
  EXPECT_GE(decode_workspace_lse_offset(p, 5), o_bytes);
  EXPECT_GE(decode_workspace_bytes(p, 5), decode_workspace_lse_offset(p, 5) + 5ull * 4 * 32 * 2 * 4);
  EXPECT_EQ(decode_workspace_lse_offset(p, 5) % 256, 0u);
}

}  // namespace
}  // namespace fastattn::cuda
