// A small float32 CPU attention call with poisoned outputs, for the tests of
// rejected inputs: each checks the status, a message that names the
// argument, and outputs left exactly as they were.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fastattn/fastattn.h"
#include "fastattn/fastattn.hpp"

namespace fastattn::test_support {

inline constexpr int64_t B = 2, LQ = 5, LK = 7, HQ = 4, HKV = 2, D = 16;
inline constexpr float kPoison = 1234.5f;

// fa_last_error() contains every fragment.
inline void expect_message(const std::vector<std::string>& fragments) {
  const std::string message = fa_last_error();
  for (const auto& f : fragments) EXPECT_NE(message.find(f), std::string::npos) << message;
}

// q, k, v [B, L, H, D] of constant values, out and lse poisoned, the CPU
// backend.
class PoisonedForward : public testing::Test {
 protected:
  void SetUp() override {
    q_.assign(B * LQ * HQ * D, 0.5f);
    k_.assign(B * LK * HKV * D, 0.25f);
    v_.assign(B * LK * HKV * D, -0.5f);
    out_.assign(B * LQ * HQ * D, kPoison);
    lse_.assign(B * HQ * LQ, kPoison);
    args_.q = fastattn::tensor(q_.data(), FA_DTYPE_FLOAT32, {B, LQ, HQ, D});
    args_.k = fastattn::tensor(k_.data(), FA_DTYPE_FLOAT32, {B, LK, HKV, D});
    args_.v = fastattn::tensor(v_.data(), FA_DTYPE_FLOAT32, {B, LK, HKV, D});
    args_.out = fastattn::tensor(out_.data(), FA_DTYPE_FLOAT32, {B, LQ, HQ, D});
    args_.lse = fastattn::tensor(lse_.data(), FA_DTYPE_FLOAT32, {B, HQ, LQ});
    options_.backend = FA_BACKEND_CPU;
  }

  // Every byte of out and lse is still the poison.
  void expect_untouched() {
    for (float x : out_) ASSERT_EQ(std::memcmp(&x, &kPoison, 4), 0);
    for (float x : lse_) ASSERT_EQ(std::memcmp(&x, &kPoison, 4), 0);
  }

  std::vector<float> q_, k_, v_, out_, lse_;
  fa_attention_args args_{};
  fa_run_options options_{};
};

}  // namespace fastattn::test_support
