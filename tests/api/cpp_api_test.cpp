// The C++ API over the C ABI, and the C ABI called from C.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "fastattn/fastattn.hpp"

extern "C" int fastattn_c_abi_smoke(void);
extern "C" int fastattn_c_abi_decode_smoke(void);

namespace {

TEST(CApi, CallableFromC) { EXPECT_EQ(fastattn_c_abi_smoke(), 0); }

TEST(CApi, DecodeCallableFromC) { EXPECT_EQ(fastattn_c_abi_decode_smoke(), 0); }

TEST(CppApi, BuilderRunsAndReportsErrors) {
  std::vector<uint16_t> q(2 * 4 * 2 * 64, 0x3f80), kv(2 * 4 * 1 * 64, 0x3f00), out(q.size(), 0xffff);
  for (size_t i = 0; i < kv.size(); ++i) kv[i] = uint16_t(0x3f00 + (i % 97));
  std::vector<float> lse(2 * 2 * 4, NAN);
  auto attn = fastattn::Attention(fastattn::tensor(q.data(), FA_DTYPE_BFLOAT16, {2, 4, 2, 64}),
                                  fastattn::tensor(kv.data(), FA_DTYPE_BFLOAT16, {2, 4, 1, 64}),
                                  fastattn::tensor(kv.data(), FA_DTYPE_BFLOAT16, {2, 4, 1, 64}),
                                  fastattn::tensor(out.data(), FA_DTYPE_BFLOAT16, {2, 4, 2, 64}))
                  .lse(fastattn::tensor(lse.data(), FA_DTYPE_FLOAT32, {2, 2, 4}))
                  .mask(fastattn::mask::sliding_window(2, 0))
                  .softcap(20.0f);
  EXPECT_TRUE(attn.supported());
  const auto ok = attn.run();
  ASSERT_TRUE(ok) << ok.message();
  for (float x : lse) EXPECT_TRUE(std::isfinite(x));
  for (uint16_t x : out) EXPECT_NE(x, 0xffff);

  const auto bad = fastattn::Attention(attn.args().q, attn.args().k, attn.args().v, attn.args().out)
                       .softcap(-1.0f)
                       .run();
  EXPECT_EQ(bad.code(), FA_STATUS_INVALID_ARGUMENT);
  EXPECT_NE(bad.message().find("softcap"), std::string::npos);
}

TEST(CppApi, VersionAndBackends) {
  EXPECT_EQ(fastattn::version(), "0.1.0");
  EXPECT_TRUE(fastattn::backend_available(FA_BACKEND_CPU));
  EXPECT_TRUE(fastattn::backend_available(FA_BACKEND_CPU_REFERENCE));
  EXPECT_STRNE(fa_cpu_target(), "");
}

}  // namespace
