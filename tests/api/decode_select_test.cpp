// The CUDA decode planner is pure host code; these run without a GPU.
#include "cuda/host/decode_select.h"

#include <gtest/gtest.h>

#include <cmath>
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
  const Status s = choose_decode_kernel(capability, FA_CUDA_PATH_SM75, p, &c);
  return s.is_ok() ? "" : s.message();
}

TEST(DecodeSelect, PadsHeadDimAndPacksQueryHeads) {
  // The CUDA-core kernel packs up to 8 rows a block.
  DecodeChoice c;
  ASSERT_TRUE(choose_decode_kernel(90, FA_CUDA_PATH_SM75, problem(1, 128), &c).is_ok());
  EXPECT_FALSE(c.tensor_cores);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.rows, 4);  // G = 4 query heads share each KV head
  EXPECT_EQ(c.row_chunks, 1);
  ASSERT_TRUE(choose_decode_kernel(90, FA_CUDA_PATH_SM75, problem(16, 80), &c).is_ok());
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.rows, 8);
  EXPECT_EQ(c.row_chunks, 8);  // 64 rows
  ASSERT_TRUE(choose_decode_kernel(90, FA_CUDA_PATH_SM75, problem(1, 64, 8, 8), &c).is_ok());
  EXPECT_EQ(c.rows, 1);
  ASSERT_TRUE(choose_decode_kernel(70, FA_CUDA_PATH_AUTO, problem(3, 256, 8, 8), &c).is_ok());
  EXPECT_FALSE(c.tensor_cores);  // Volta: CUDA cores
  EXPECT_EQ(c.head_dim, 256);
  EXPECT_EQ(c.rows, 4);
  EXPECT_EQ(c.row_chunks, 1);
}

TEST(DecodeSelect, TensorCoresFromSm80InTilesOf16Rows) {
  DecodeChoice c;
  ASSERT_TRUE(choose_decode_kernel(80, FA_CUDA_PATH_AUTO, problem(1, 128), &c).is_ok());
  EXPECT_TRUE(c.tensor_cores);
  EXPECT_FALSE(c.early_merge_launch);  // programmatic launch is sm90's
  EXPECT_EQ(c.rows, kDecodeMmaRows);
  EXPECT_EQ(c.row_chunks, 1);  // 4 rows padded to 16
  ASSERT_TRUE(choose_decode_kernel(90, FA_CUDA_PATH_AUTO, problem(16, 80), &c).is_ok());
  EXPECT_TRUE(c.tensor_cores);
  EXPECT_TRUE(c.early_merge_launch);
  EXPECT_EQ(c.row_chunks, 4);  // 64 rows
  ASSERT_TRUE(choose_decode_kernel(90, FA_CUDA_PATH_SM80, problem(1, 64, 8, 8), &c).is_ok());
  EXPECT_TRUE(c.tensor_cores);
  ASSERT_TRUE(choose_decode_kernel(75, FA_CUDA_PATH_AUTO, problem(1, 64), &c).is_ok());
  EXPECT_FALSE(c.tensor_cores);
  DecodeChoice untouched;
  const Status forced = choose_decode_kernel(75, FA_CUDA_PATH_SM80, problem(1, 64), &untouched);
  EXPECT_NE(forced.message().find("options.cuda_path: the tensor-core decode kernel"),
            std::string::npos);
  EXPECT_EQ(untouched.rows, 0);
  EXPECT_NE(choose_decode_kernel(90, 81, problem(1, 64), &untouched).message().find("81 is unknown"),
            std::string::npos);
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
  // 132 SMs x 2 resident blocks = 264 slots; keys counted one by one.
  // Batch 1, 8 KV heads: about one wave, fewer splits where each merges.
  EXPECT_EQ(choose_num_splits(8, 131072, 132, 2, 1), 32);
  EXPECT_EQ(choose_num_splits(8, 32768, 132, 2, 1), 27);  // the fewest within 2% of 32
  // Short sequences: splits of at least kMinKeysPerSplit keys, fewer as
  // each split's merge outweighs its shorter read.
  EXPECT_EQ(choose_num_splits(8, 1024, 132, 2, 1), 5);
  EXPECT_EQ(choose_num_splits(8, 150, 132, 2, 1), 2);
  EXPECT_EQ(choose_num_splits(8, 100, 132, 2, 1), 1);
  // Whole waves already: no split.
  EXPECT_EQ(choose_num_splits(264, 32768, 132, 2, 1), 1);
  EXPECT_EQ(choose_num_splits(512, 32768, 132, 2, 1), 1);  // 1.94 waves
  // 128 blocks: 2 splits fill 256 of 264 slots in one wave.
  EXPECT_EQ(choose_num_splits(128, 32768, 132, 2, 1), 2);
  // 300 blocks: 1.14 waves; 6 splits make 6.8 waves of 5.5K keys.
  const int s300 = choose_num_splits(300, 32768, 132, 2, 1);
  EXPECT_GT(s300, 1);
  const double waves = 300.0 * s300 / 264;
  EXPECT_GE(waves / std::ceil(waves), 0.9);
  for (int64_t blocks : {1, 7, 64, 200, 395, 100000}) {
    const int s = choose_num_splits(blocks, 1 << 20, 132, 2, 1);
    EXPECT_GE(s, 1);
    EXPECT_LE(s, FA_MAX_DECODE_SPLITS);
  }
}

TEST(DecodeSelect, SplitsAreWholeRoundsOfTheWarpsTiles) {
  // 8 warps of 16-key tiles (one block per SM): 4K keys in 10 splits would
  // leave 32 tiles (4 rounds) on the longest block, as 8 splits do; 11 take
  // 24 (3 rounds).
  EXPECT_EQ(choose_num_splits(8, 4096, 132, 1, 1), 10);
  EXPECT_EQ(choose_num_splits(8, 4096, 132, 1, 128), 11);
  EXPECT_EQ(choose_num_splits(8, 2048, 132, 1, 128), 8);
  EXPECT_EQ(choose_num_splits(8, 1024, 132, 1, 128), 4);
  EXPECT_EQ(choose_num_splits(8, 32768, 132, 1, 128), 16);
}

TEST(DecodeSelect, SplitsMergedInClustersCostLess) {
  // Batch 1, 8 KV heads, 8 warps: where 2 to 8 splits would merge inside
  // their clusters, 8 of them beat 11 (4K keys) and 4 (1K keys) merged by
  // the kernel; from 8K keys 16 splits still win.
  uint32_t up_to_8 = 0;
  for (int s = 2; s <= kMaxClusterSplits; ++s) up_to_8 |= 1u << s;
  EXPECT_EQ(choose_num_splits(8, 4096, 132, 1, 128, up_to_8), 8);
  EXPECT_EQ(choose_num_splits(8, 1024, 132, 1, 128, up_to_8), 8);
  EXPECT_EQ(choose_num_splits(8, 512, 132, 1, 128, up_to_8), 4);
  EXPECT_EQ(choose_num_splits(8, 8192, 132, 1, 128, up_to_8), 16);
  EXPECT_EQ(choose_num_splits(8, 32768, 132, 1, 128, up_to_8), 16);
}

TEST(DecodeSelect, EightWarpsForFewBlocksFourForManyOrAtHeadDim256) {
  EXPECT_EQ(choose_decode_warps(8, 132, 128), 8);     // batch 1, 8 KV heads
  EXPECT_EQ(choose_decode_warps(128, 132, 128), 8);   // batch 16
  EXPECT_EQ(choose_decode_warps(263, 132, 64), 8);
  EXPECT_EQ(choose_decode_warps(264, 132, 128), 4);   // two waves of one block per SM
  EXPECT_EQ(choose_decode_warps(2048, 132, 128), 4);
  EXPECT_EQ(choose_decode_warps(8, 132, 256), 4);
}

TEST(DecodeSelect, LongSplitsOnHalfTheSmsOrMoreRunFourWarps) {
  struct Case {
    int warps;
    int64_t blocks;
    int splits;
    int64_t keys;
    bool clustered;
    int expected;
    const char* why;
  };
  const Case cases[] = {
      {8, 128, 1, 4096, false, 4, "batch 16, 8 KV heads, 4K keys a block"},
      {8, 128, 1, 131072, false, 4, "batch 16, 8 KV heads, 128K keys"},
      {8, 128, 1, 1024, false, 8, "batch 16, 8 KV heads, 1K keys"},
      {8, 8, 16, 131072, false, 4, "batch 1, 16 splits of 8K keys"},
      {8, 8, 16, 32768, false, 8, "batch 1, 16 splits of 2K keys"},
      {8, 128, 2, 8190, false, 8, "two splits of 4095 keys"},
      {8, 128, 2, 8191, false, 4, "a split's keys round up to 4096"},
      {8, 8, 8, 131072, false, 8, "64 blocks, under half the SMs"},
      {8, 33, 2, 131072, false, 4, "66 blocks, half the SMs"},
      {8, 32, 2, 131072, false, 8, "64 blocks"},
      {8, 32, 4, 131072, true, 8, "splits merged in clusters"},
      {4, 2048, 1, 1024, false, 4, "4 warps stay 4"},
      {4, 8, 1, 131072, true, 4, "4 warps stay 4, clustered"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(settle_decode_warps(c.warps, c.blocks, c.splits, c.keys, 132, c.clustered),
              c.expected)
        << c.why;
  }
}

TEST(DecodeSelect, LongContiguousFourWarpSplitsRunOneBlockAnSmOnAnH100) {
  DecodeChoice c;
  c.tensor_cores = true;
  c.head_dim = 128;
  c.warps = 4;
  const int64_t at = kOneBlockPerSmKeys;
  const double h100 = 3352.3 / 132, h200 = 4800.0 / 132;  // GB/s an SM
  auto one = [&](const DecodeChoice& choice, int splits, int64_t keys) {
    return settle_decode_occupancy(choice, 90, false, splits, keys, h100);
  };
  EXPECT_TRUE(one(c, 1, at)) << "one split of the threshold";
  EXPECT_TRUE(one(c, 1, 131072));
  EXPECT_FALSE(one(c, 1, at - 1)) << "one key short";
  EXPECT_FALSE(one(c, 1, 1024)) << "short blocks keep two an SM";
  EXPECT_TRUE(one(c, 16, 16 * at)) << "16 splits of the threshold";
  EXPECT_TRUE(one(c, 2, 2 * at - 1)) << "a split's keys round up";
  EXPECT_FALSE(one(c, 2, 2 * at - 2));
  EXPECT_FALSE(settle_decode_occupancy(c, 90, true, 1, 131072, h100)) << "paged";
  EXPECT_FALSE(settle_decode_occupancy(c, 90, false, 1, 131072, h200)) << "an H200's bandwidth";
  EXPECT_FALSE(settle_decode_occupancy(c, 90, false, 1, 131072, 0.0)) << "bandwidth unknown";
  EXPECT_FALSE(settle_decode_occupancy(c, 80, false, 1, 131072, 1555.0 / 108)) << "an A100";
  DecodeChoice other = c;
  other.warps = 8;
  EXPECT_FALSE(one(other, 1, 131072)) << "8 warps fill an SM already";
  other = c;
  other.head_dim = 64;
  EXPECT_FALSE(one(other, 1, 131072)) << "D = 64 was not measured";
  other = c;
  other.head_dim = 256;
  EXPECT_FALSE(one(other, 1, 131072)) << "D = 256 fills an SM already";
  other = c;
  other.cluster_merge = true;
  EXPECT_FALSE(one(other, 4, 131072)) << "clusters keep their footprint";
  other = c;
  other.tensor_cores = false;
  EXPECT_FALSE(one(other, 1, 131072)) << "the CUDA-core kernel";
}

TEST(DecodeSelect, FewBlocksOnAnH100ReadInClustersOfFourToEight) {
  DecodeChoice c;
  c.tensor_cores = true;
  c.head_dim = 128;
  c.warps = 8;
  const double h100 = 3352.3 / 132, h200 = 4800.0 / 132;  // GB/s an SM
  uint32_t all = 0;  // every count from 2 to 8 merges in clusters
  for (int s = 2; s <= kMaxClusterSplits; ++s) all |= 1u << s;
  auto prefer = [&](int64_t blocks, int splits, uint32_t clusters = 0xffffffffu) {
    return prefer_cluster_read_splits(c, blocks, splits, clusters == 0xffffffffu ? all : clusters,
                                      90, h100);
  };
  EXPECT_EQ(prefer(8, 16), 8) << "batch 1, 8 KV heads: 64 blocks in clusters of 8";
  EXPECT_EQ(prefer(16, 8), 4) << "batch 2, 8 KV heads: 64 blocks in clusters of 4";
  EXPECT_EQ(prefer(32, 4), 4) << "clusters of 2 read slower than 128 blocks";
  EXPECT_EQ(prefer(64, 2), 2) << "64 blocks without clusters read slower too";
  EXPECT_EQ(prefer(8, 8), 8) << "already the largest cluster count";
  EXPECT_EQ(prefer(4, 32), 32) << "16 blocks in clusters of 8 are too few";
  EXPECT_EQ(prefer(9, 16), 8) << "72 blocks";
  EXPECT_EQ(prefer(8, 16, all & ~(1u << 8)), 16) << "7 splits make 56 blocks: too few";
  EXPECT_EQ(prefer(16, 16), 4) << "the fewest splits that make 64 blocks";
  EXPECT_EQ(prefer(16, 16, all & ~(1u << 4)), 5) << "the fewest whose clusters are resident";
  EXPECT_EQ(prefer_cluster_read_splits(c, 8, 16, all, 90, h200), 16) << "an H200's bandwidth";
  EXPECT_EQ(prefer_cluster_read_splits(c, 8, 16, all, 90, 0.0), 16) << "bandwidth unknown";
  EXPECT_EQ(prefer_cluster_read_splits(c, 8, 16, all, 80, 1555.0 / 108), 16) << "an A100";
  DecodeChoice other = c;
  other.warps = 4;
  EXPECT_EQ(prefer_cluster_read_splits(other, 8, 16, all, 90, h100), 16) << "4-warp blocks";
  other = c;
  other.head_dim = 64;
  EXPECT_EQ(prefer_cluster_read_splits(other, 8, 16, all, 90, h100), 16) << "D = 64";
  other = c;
  other.tensor_cores = false;
  EXPECT_EQ(prefer_cluster_read_splits(other, 8, 16, all, 90, h100), 16) << "CUDA cores";
}

TEST(DecodeSelect, ClustersThatDoNotFitGiveWayToFourWarpsOneAnSmOnAnH100) {
  DecodeChoice c;
  c.tensor_cores = true;
  c.clusters = true;
  c.head_dim = 128;
  c.warps = 8;
  const double h100 = 3352.3 / 132, h200 = 4800.0 / 132;  // GB/s an SM
  const int64_t keys = 4 * kOneBlockPerSmKeys;
  auto keep = [&](bool merges, bool paged, int splits, int64_t max_keys, double bw) {
    return clusters_keep_eight_warps(c, merges, 90, paged, splits, max_keys, bw);
  };
  EXPECT_FALSE(keep(false, false, 4, keys, h100)) << "batch 1, 32 KV heads, 4 splits of 8K keys";
  EXPECT_TRUE(keep(true, false, 4, keys, h100)) << "clusters that fit keep 8 warps";
  EXPECT_TRUE(keep(false, true, 4, keys, h100)) << "paged: 4 warps would run two an SM";
  EXPECT_TRUE(keep(false, false, 4, keys, h200)) << "an H200's bandwidth";
  EXPECT_TRUE(keep(false, false, 4, keys - 4, h100)) << "splits under 8K keys";
  EXPECT_FALSE(keep(false, false, 1, keys, h100)) << "one split merges in no cluster";
  EXPECT_FALSE(keep(false, false, 9, 9 * kOneBlockPerSmKeys, h100)) << "9 splits: no cluster";
  EXPECT_TRUE(clusters_keep_eight_warps(c, false, 80, false, 4, keys, h100)) << "sm80";
  DecodeChoice other = c;
  other.clusters = false;
  EXPECT_FALSE(clusters_keep_eight_warps(other, false, 90, false, 4, keys, h100))
      << "no clusters on this path";
}

TEST(DecodeSelect, WorkspaceHoldsEveryPartialState) {
  const DecodeParams p = problem(2, 128);
  DecodeChoice sm80;
  ASSERT_TRUE(choose_decode_kernel(80, FA_CUDA_PATH_AUTO, p, &sm80).is_ok());
  EXPECT_EQ(decode_workspace_bytes(p, sm80, 1), 0u);
  const uint64_t o_bytes = 5ull * 4 * 2 * 32 * 128 * 4;
  EXPECT_GE(decode_workspace_lse_offset(p, 5), o_bytes);
  EXPECT_GE(decode_workspace_bytes(p, sm80, 5),
            decode_workspace_lse_offset(p, 5) + 5ull * 4 * 32 * 2 * 4);
  EXPECT_EQ(decode_workspace_lse_offset(p, 5) % 256, 0u);
}

TEST(DecodeSelect, ClustersMergeUpToEightSplitsOnSm90) {
  const DecodeParams p = problem(2, 128);
  DecodeChoice sm90, sm80, forced80;
  ASSERT_TRUE(choose_decode_kernel(90, FA_CUDA_PATH_AUTO, p, &sm90).is_ok());
  ASSERT_TRUE(choose_decode_kernel(80, FA_CUDA_PATH_AUTO, p, &sm80).is_ok());
  ASSERT_TRUE(choose_decode_kernel(90, FA_CUDA_PATH_SM80, p, &forced80).is_ok());
  EXPECT_FALSE(cluster_merge_allowed(sm90, 1));
  for (int s = 2; s <= kMaxClusterSplits; ++s) {
    EXPECT_TRUE(cluster_merge_allowed(sm90, s)) << s;
    EXPECT_FALSE(cluster_merge_allowed(sm80, s)) << s;
    EXPECT_FALSE(cluster_merge_allowed(forced80, s)) << s;  // runs as an sm80 would
  }
  EXPECT_FALSE(cluster_merge_allowed(sm90, kMaxClusterSplits + 1));
  // The workspace follows the choice the caller settled on.
  EXPECT_GT(decode_workspace_bytes(p, sm90, 4), 0u);
  sm90.cluster_merge = true;
  EXPECT_EQ(decode_workspace_bytes(p, sm90, 4), 0u);
}

}  // namespace
}  // namespace fastattn::cuda
