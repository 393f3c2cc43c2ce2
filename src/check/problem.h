// A random attention problem held per sequence in float (values already
// rounded to the case's dtype), and the two plain implementations the
// correctness rule needs: the float64 reference (run through the library's
// reference backend on float32 copies, which are exact) and the naive
// low-precision one.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "check/harness.h"
#include "check/mask_inputs.h"

namespace fastattn::check {

struct Sequence {
  int64_t lq = 0, lk = 0;
  std::vector<float> q, k, v;  // [lq, Hq, D], [lk, Hkv, D], [lk, Hkv, D]
  std::vector<int32_t> q_ids, k_ids;  // segment ids [lq], [lk] when the case has documents
};

struct Problem {
  Case c;
  std::vector<Sequence> seqs;
  float scale = 0;  // resolved softmax scale
  MaskSource block_mask;  // the block mask's source, when the case has one
};

// Results per sequence: out [lq, Hq, D] and lse [Hq, lq].
struct Result {
  std::vector<std::vector<float>> out;
  std::vector<std::vector<float>> lse;
};

Problem make_problem(const Case& c, std::mt19937_64& rng);

// The parts of FlashAttention's rule: max |a - b| over outputs or LSE (rows
// where b is infinite skipped: they are checked exactly; NaN in a gives
// infinity), and the slack for float32 rounding near ref's values,
// 2 * max |ref + 0.3 - 0.3 - ref|.
double max_abs_diff(const Result& a, const Result& b, bool lse);
double rounding_atol(const Result& ref, bool lse);

// Float64 reference through FA_BACKEND_CPU_REFERENCE (float32 storage; the
// varlen form, or the padded one with a block mask, which it builds on the
// host from p.block_mask). Returns false with `error` set if the library
// refused.
bool reference_result(const Problem& p, Result* out, std::string* error);

// Scores rounded to the dtype, softmax in float32 with P rounded to the
// dtype, P V accumulated in float32 and rounded: what an unfused
// implementation in the case's precision computes.
// `rounding` is the dtype the scores, P and O are rounded to: the case's own
// for the tolerance, float32 for a check of the reference's logic.
Result low_precision_result(const Problem& p, fa_dtype rounding);

// Whether query row i of sequence b, query head h, may see key j, straight
// from the definitions of fastattn.h (bottom-right aligned): kind, prefix,
// chunk, documents and the block mask's source, not its compressed form.
bool mask_allows(const Problem& p, int64_t b, int64_t h, int64_t i, int64_t j);

float round_to_dtype(float x, fa_dtype t);

}  // namespace fastattn::check
