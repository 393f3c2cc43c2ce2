// Element offsets past 2^31 (64-bit indexing): two batch entries placed
// 2^31 + 64 elements apart in one sparse mapping; only the touched pages
// are ever backed by memory.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cmath>
#include <cstring>

#include "cpu/test_data.h"
#include "fastattn/fastattn.hpp"

namespace {

TEST(LargeOffsets, BatchStridePastInt32) {
  constexpr int64_t B = 2, L = 16, H = 1, D = 64;
  constexpr int64_t stride = (int64_t(1) << 31) + 64;  // elements
  const size_t bytes = size_t(stride * B) * sizeof(uint16_t);
  auto map = [&]() {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? nullptr : static_cast<uint16_t*>(p);
  };
  uint16_t* qkv = map();
  uint16_t* out = map();
  if (!qkv || !out) GTEST_SKIP() << "cannot reserve address space";
  const auto x = fastattn::testing_data::random_normal(B * L * D, 99);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < L * D; ++i) {
      float f = x[b * L * D + i];
      uint32_t bits;
      std::memcpy(&bits, &f, 4);
      qkv[b * stride + i] = uint16_t(bits >> 16);
      out[b * stride + i] = 0xffff;
    }
  }
  auto view = [&](uint16_t* p) {
    return fastattn::tensor(p, FA_DTYPE_BFLOAT16, {B, L, H, D}, {stride, H * D, D, 1});
  };
  std::vector<float> lse(B * H * L, NAN);
  fastattn::RunOptions opt;
  opt.backend = FA_BACKEND_CPU;
  const auto r = fastattn::Attention(view(qkv), view(qkv), view(qkv), view(out))
                     .lse(fastattn::tensor(lse.data(), FA_DTYPE_FLOAT32, {B, H, L}))
                     .mask(fastattn::mask::causal())
                     .run(opt);
  ASSERT_TRUE(r.ok()) << r.message();
  // Row 0 sees only key 0: its output is v's row 0 of its own batch entry.
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t e = 0; e < D; ++e) EXPECT_EQ(out[b * stride + e], qkv[b * stride + e]) << b << " " << e;
    for (int64_t i = 0; i < L * D; ++i) ASSERT_NE(out[b * stride + i], 0xffff);
  }
  for (float l : lse) EXPECT_TRUE(std::isfinite(l));
  munmap(qkv, bytes);
  munmap(out, bytes);
}

}  // namespace
