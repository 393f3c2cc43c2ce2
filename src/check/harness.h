// The correctness harness shared by the GoogleTest suite and `fastattn check`.
//
// A Case describes one attention problem; run_case draws random normal
// inputs (rounded to the case's dtype), poisons the outputs, runs the library
// through its public C ABI on the requested backend and judges the result
// with FlashAttention's rule against the float64 reference:
//   max|O - O_ref| <= 2 * max|O_lp - O_ref| + atol,
//   atol = 2 * max|O_ref + 0.3 - 0.3 - O_ref| (in float32),
// where O_lp is a plain (non-fused) implementation in the case's own
// precision. The same rule is applied to the LSE. Every output element must
// have been written (poison gone) and NaN never passes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fastattn/fastattn.h"

namespace fastattn::check {

struct Case {
  std::string label;
  fa_dtype dtype = FA_DTYPE_FLOAT32;
  int64_t batch = 1;
  int64_t seqlen_q = 1;
  int64_t seqlen_k = 1;
  int64_t heads_q = 1;
  int64_t heads_kv = 1;
  int64_t head_dim = 64;
  fa_mask_kind mask = FA_MASK_NONE;
  int64_t window_left = -1;
  int64_t window_right = -1;
  float softcap = 0.0f;
  float softmax_scale = 0.0f;  // 0 = default 1/sqrt(D)
  bool with_lse = true;
  // Varlen: sequence lengths vary around seqlen_q / seqlen_k (which become
  // maxima); the batch is packed with cu_seqlens.
  bool varlen = false;
  // Inputs and outputs embedded in larger buffers with padded strides and
  // heads interleaved differently from rows.
  bool noncontiguous = false;
  // > 0: K/V go through a paged cache with this page size (fa_paged_attention),
  // pages shuffled; sequence lengths vary per batch entry.
  int64_t page_size = 0;
};

struct Outcome {
  bool passed = false;
  double max_error = 0, tolerance = 0;          // output
  double lse_max_error = 0, lse_tolerance = 0;  // LSE (0 when not requested)
  std::string detail;                           // why it failed, or a summary
};

// Human-readable one-line description of a case.
std::string describe(const Case& c);

// The matrix of ANCHORS.md: awkward (Lq, Lk), head dims, MHA/GQA/MQA, masks,
// softcap, varlen, paging, strides, fully masked rows. `quick` keeps the
// large shapes out (for slow backends and CI).
std::vector<Case> correctness_matrix(bool quick);

// Whether `backend` implements what case `c` needs (CUDA: float16/bfloat16
// with contiguous K/V; paged KV on the GPU comes with the decode path).
bool backend_runs(const Case& c, fa_backend backend);

// The matrix `backend` is judged on: the cases of correctness_matrix it runs,
// plus, for CUDA, multi-tile shapes (the GPU is fast enough for the large
// ones, so `quick` keeps them all but the largest).
std::vector<Case> matrix_for(fa_backend backend, bool quick);

// Runs one case on `options` (backend etc.) with inputs drawn from `seed`.
Outcome run_case(const Case& c, const fa_run_options& options, uint64_t seed);

}  // namespace fastattn::check
