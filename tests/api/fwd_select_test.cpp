// The CUDA kernel choice is a pure function; these run without a GPU.
#include "cuda/host/fwd_select.h"

#include <gtest/gtest.h>

#include <string>

namespace fastattn::cuda {
namespace {

alignas(16) unsigned char buffer[64];

AttentionParams problem(int64_t head_dim) {
  AttentionParams p;
  p.dtype = DType::kFloat16;
  p.batch = 2;
  p.seqlen_q = p.seqlen_k = 100;
  p.heads_q = 8;
  p.heads_kv = 2;
  p.head_dim = head_dim;
  p.q = p.kv.k = p.kv.v = p.out = buffer;
  p.q_row_stride = p.out_row_stride = 8 * head_dim;
  p.kv.k_row_stride = p.kv.v_row_stride = 2 * head_dim;
  p.q_head_stride = p.out_head_stride = p.kv.k_head_stride = p.kv.v_head_stride = head_dim;
  p.q_batch_stride = p.out_batch_stride = 100 * 8 * head_dim;
  p.kv.k_batch_stride = p.kv.v_batch_stride = 100 * 2 * head_dim;
  return p;
}

std::string refusal(int capability, int path, const AttentionParams& p, bool sm90a_code = true) {
  FwdChoice c;
  const Status s = choose_fwd_kernel(capability, path, p, &c, sm90a_code);
  return s.is_ok() ? "" : s.message();
}

TEST(FwdSelect, PadsHeadDimsToTheInstantiatedOnes) {
  const std::pair<int, int> expect[] = {{8, 64},   {64, 64},   {72, 80},   {80, 80},
                                        {96, 96},  {104, 128}, {128, 128}, {136, 256},
                                        {256, 256}};
  for (auto [d, instantiated] : expect) {
    FwdChoice c;
    ASSERT_TRUE(choose_fwd_kernel(80, 0, problem(d), &c, true).is_ok()) << d;
    EXPECT_EQ(c.head_dim, instantiated) << d;
    EXPECT_EQ(c.path, FwdPath::kSm80);
  }
}

TEST(FwdSelect, Sm90HasNoHeadDim80) {
  const std::pair<int, int> expect[] = {{8, 64},    {64, 64},   {72, 96},   {80, 96},
                                        {96, 96},   {104, 128}, {128, 128}, {136, 256},
                                        {256, 256}};
  for (auto [d, instantiated] : expect) {
    FwdChoice c;
    ASSERT_TRUE(choose_fwd_kernel(90, 0, problem(d), &c, true).is_ok()) << d;
    EXPECT_EQ(c.head_dim, instantiated) << d;
    EXPECT_EQ(c.path, FwdPath::kSm90);
  }
}

// The sm80 path's plain kernel takes the tile table's shape on 9.0 only
// (where d = 64's 128-key blocks fit twice per SM), the variant table's
// elsewhere; no other path has the choice.
TEST(FwdSelect, VariantTilesForThePlainSm80KernelOffHopper) {
  for (int cap : {80, 86, 87, 89, 100, 120}) {
    FwdChoice c;
    ASSERT_TRUE(choose_fwd_kernel(cap, 0, problem(64), &c, true).is_ok()) << cap;
    EXPECT_EQ(c.path, FwdPath::kSm80) << cap;
    EXPECT_TRUE(c.variant_tiles) << cap;
  }
  FwdChoice c;
  ASSERT_TRUE(choose_fwd_kernel(90, FA_CUDA_PATH_SM80, problem(64), &c, true).is_ok());
  EXPECT_FALSE(c.variant_tiles);
  for (int path : {FA_CUDA_PATH_SM75, FA_CUDA_PATH_SM70}) {
    ASSERT_TRUE(choose_fwd_kernel(80, path, problem(64), &c, true).is_ok()) << path;
    EXPECT_FALSE(c.variant_tiles) << path;
  }
}

// The sm90 path runs its short-rows kernels (variant_tiles) where rows see
// few keys on average: at d = 64 fewer than 1024 (above that 192-row tiles
// of three consumer warpgroups), at the other head dims 1024 or fewer.
TEST(FwdSelect, Sm90TakesTheShortRowsKernelsForShortRows) {
  struct Case {
    int64_t head_dim, len, window_left;
    bool causal, variant;
  };
  const Case cases[] = {
      {64, 100, -1, false, true},    {64, 512, -1, false, true},  {64, 1024, -1, false, false},
      {64, 1024, -1, true, true},    {64, 2048, -1, true, false}, {64, 16384, -1, true, false},
      {64, 16384, 511, true, true},  {128, 100, -1, false, true},  {96, 512, -1, true, true},
      {128, 1024, -1, false, true},  {128, 2048, -1, true, false}, {256, 4096, -1, false, false},
      {128, 16384, 511, true, true},
  };
  for (const Case& k : cases) {
    AttentionParams p = problem(k.head_dim);
    p.seqlen_q = p.seqlen_k = k.len;
    p.q_batch_stride = p.out_batch_stride = k.len * 8 * k.head_dim;
    p.kv.k_batch_stride = p.kv.v_batch_stride = k.len * 2 * k.head_dim;
    if (k.causal) p.mask.right = 0;
    if (k.window_left >= 0) p.mask.left = k.window_left;
    FwdChoice c;
    ASSERT_TRUE(choose_fwd_kernel(90, 0, p, &c, true).is_ok()) << k.head_dim << " " << k.len;
    EXPECT_EQ(c.path, FwdPath::kSm90);
    EXPECT_EQ(c.variant_tiles, k.variant)
        << "d " << k.head_dim << " L " << k.len << " causal " << k.causal << " left "
        << k.window_left;
  }
}

TEST(FwdSelect, SameChoiceOnEveryAmpereClassDevice) {
  for (int cap : {80, 86, 87, 89, 90, 100, 120}) EXPECT_EQ(refusal(cap, 0, problem(128)), "") << cap;
  EXPECT_EQ(refusal(90, 80, problem(128)), "");
}

FwdPath chosen(int capability, int path, DType dtype = DType::kFloat16, bool sm90a_code = true) {
  AttentionParams p = problem(128);
  p.dtype = dtype;
  FwdChoice c;
  EXPECT_TRUE(choose_fwd_kernel(capability, path, p, &c, sm90a_code).is_ok())
      << capability << " " << path;
  return c.path;
}

TEST(FwdSelect, Sm90OnlyOnHopperWithSm90aCode) {
  EXPECT_EQ(chosen(90, 0), FwdPath::kSm90);
  EXPECT_EQ(chosen(90, 0, DType::kBFloat16), FwdPath::kSm90);
  EXPECT_EQ(chosen(90, FA_CUDA_PATH_SM90), FwdPath::kSm90);
  // sm_90a code runs on 9.0 alone: newer GPUs take the Ampere-class path.
  EXPECT_EQ(chosen(100, 0), FwdPath::kSm80);
  EXPECT_EQ(chosen(120, 0), FwdPath::kSm80);
  EXPECT_EQ(chosen(90, 0, DType::kFloat16, /*sm90a_code=*/false), FwdPath::kSm80);
  EXPECT_NE(refusal(100, FA_CUDA_PATH_SM90, problem(64)).find("runs only on compute capability 9.0"),
            std::string::npos);
  EXPECT_NE(refusal(80, FA_CUDA_PATH_SM90, problem(64)).find("this device has 8.0"),
            std::string::npos);
  EXPECT_NE(refusal(90, FA_CUDA_PATH_SM90, problem(64), false).find("no sm_90a code"),
            std::string::npos);
}

TEST(FwdSelect, Sm90NeedsWhatTheCopyEngineReads) {
  // Varlen tensors whose row totals are unknown cannot be described to TMA.
  AttentionParams p = problem(64);
  const int32_t cu[3] = {0, 50, 100};
  p.cu_seqlens_q = p.cu_seqlens_k = cu;
  EXPECT_EQ(chosen(90, 0), FwdPath::kSm90);
  FwdChoice c;
  ASSERT_TRUE(choose_fwd_kernel(90, 0, p, &c, true).is_ok());
  EXPECT_EQ(c.path, FwdPath::kSm80);
  EXPECT_NE(refusal(90, FA_CUDA_PATH_SM90, p).find("copy engine (TMA)"), std::string::npos);
  p.total_q = p.total_k = 100;
  ASSERT_TRUE(choose_fwd_kernel(90, 0, p, &c, true).is_ok());
  EXPECT_EQ(c.path, FwdPath::kSm90);
}

TEST(FwdSelect, AutoTakesTheNewestFamilyTheDeviceRuns) {
  EXPECT_EQ(chosen(70, 0), FwdPath::kSm70);
  EXPECT_EQ(chosen(72, 0), FwdPath::kSm70);
  EXPECT_EQ(chosen(75, 0), FwdPath::kSm75);
  EXPECT_EQ(chosen(80, 0), FwdPath::kSm80);
  EXPECT_EQ(chosen(90, 0, DType::kFloat16, false), FwdPath::kSm80);
}

TEST(FwdSelect, OlderFamiliesCanBeForcedOnNewerDevices) {
  EXPECT_EQ(chosen(90, FA_CUDA_PATH_SM75), FwdPath::kSm75);
  EXPECT_EQ(chosen(90, FA_CUDA_PATH_SM70), FwdPath::kSm70);
  EXPECT_EQ(chosen(75, FA_CUDA_PATH_SM70), FwdPath::kSm70);
  EXPECT_NE(refusal(75, FA_CUDA_PATH_SM80, problem(64)).find("needs compute capability 8.0"),
            std::string::npos);
  EXPECT_NE(refusal(70, FA_CUDA_PATH_SM75, problem(64)).find("this device has 7.0"),
            std::string::npos);
}

TEST(FwdSelect, OlderFamiliesRefuseBfloat16SayingWhy) {
  AttentionParams bf16 = problem(64);
  bf16.dtype = DType::kBFloat16;
  EXPECT_NE(refusal(75, 0, bf16).find("q: dtype bfloat16 is not supported on the sm75 path: the "
                                      "tensor cores of Turing GPUs have no bfloat16 MMA"),
            std::string::npos);
  EXPECT_NE(refusal(90, FA_CUDA_PATH_SM70, bf16).find("Volta GPUs have no bfloat16 MMA"),
            std::string::npos);
}

TEST(FwdSelect, RefusesPreVoltaDevicesFloat32AndUnknownPaths) {
  EXPECT_NE(refusal(61, 0, problem(64)).find("compute capability 6.1"), std::string::npos);
  AttentionParams f32 = problem(64);
  f32.dtype = DType::kFloat32;
  EXPECT_NE(refusal(90, 0, f32).find("q: dtype float32"), std::string::npos);
  EXPECT_NE(refusal(90, 72, problem(64)).find("options.cuda_path: 72 is unknown"),
            std::string::npos);
}

TEST(FwdSelect, RefusesUnchunkedLayoutsNamingTheTensor) {
  AttentionParams p = problem(64);
  p.kv.v_row_stride = 2 * 64 + 4;
  EXPECT_NE(refusal(90, 0, p).find("v: the CUDA backend needs"), std::string::npos);
  p = problem(64);
  p.out = buffer + 8;
  EXPECT_NE(refusal(90, 0, p).find("out: the CUDA backend needs"), std::string::npos);
}

TEST(FwdSelect, RefusesPagedCachesAndOversizedGrids) {
  AttentionParams p = problem(64);
  const int32_t table[1] = {0};
  p.kv.page_table = table;
  EXPECT_NE(refusal(90, 0, p).find("paged"), std::string::npos);
  p = problem(64);
  p.heads_q = 70000;
  p.heads_kv = 70000;
  EXPECT_NE(refusal(90, 0, p).find("65535"), std::string::npos);
}

}  // namespace
}  // namespace fastattn::cuda
