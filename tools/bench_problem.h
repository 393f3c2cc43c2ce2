// One benchmark problem: its shape, what it costs (FLOPs or bytes) and how
// that cost is counted, so the printed formula and the number always agree.
#pragma once

#include <cstdint>
#include <string>

#include "fastattn/fastattn.h"

namespace fastattn::tools {

struct bench_problem {
  // Decode: attention over a KV cache, memory-bound, reported in bytes/s.
  bool decode = false;
  fa_dtype dtype = FA_DTYPE_FLOAT32;
  int64_t batch = 1;
  int64_t seqlen_q = 1;
  int64_t seqlen_k = 1;
  int64_t heads_q = 1;
  int64_t heads_kv = 1;
  int64_t head_dim = 128;
  fa_mask_kind mask = FA_MASK_NONE;
  int64_t window_left = -1;  // < 0: unbounded
  int64_t window_right = -1;
  float softcap = 0.0f;
  // Decode only: page size of the KV cache, 0 = one contiguous cache.
  int64_t page_size = 16;
};

// "fp32 B=1 Lq=2048 Lk=2048 Hq=8 Hkv=8 D=128 causal".
std::string describe(const bench_problem& p);

// The allowed (query, key) pairs of one sequence and head, counted row by row
// with the library's bottom-right mask alignment.
int64_t allowed_pairs(const bench_problem& p);

// Two matmuls of 2 FLOPs per multiply-add over the allowed pairs.
double flops(const bench_problem& p);
// The formula behind flops(), for the line under the table.
std::string flop_formula(const bench_problem& p);

// K and V read once: B * Lk * Hkv * D * 2 * sizeof(dtype).
double kv_bytes(const bench_problem& p);
std::string byte_formula(const bench_problem& p);

}  // namespace fastattn::tools
