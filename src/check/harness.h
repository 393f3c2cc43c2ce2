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
// have been written (poison gone) and NaN never passes. Masks given as data
// (segment ids, block masks) are built on the side of the backend under test
// and, separately, on the host for the reference, from the same source.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fastattn/fastattn.h"

namespace fastattn::check {

// Documents packed into each sequence (fa_mask segment ids). Key j gets the
// id of its document; query row i the id of key position i + Lk - Lq
// (clamped), so queries and keys agree under bottom-right alignment.
struct Documents {
  int64_t mean_length = 0;  // 0: no documents
  // Every document mean_length keys long (the last one cut); otherwise
  // lengths are mixed: length-1 documents, short ones and long ones.
  bool fixed_length = false;
  // Some documents' queries get an id that no key has: their rows see nothing.
  bool unmatched_queries = false;
  uint64_t seed = 1;  // the pattern, independent of the inputs' seed
};

enum class BlockMaskKind {
  kNone,
  kBlocks,     // per-block source: each block FULL with probability `density`, else EMPTY
  kDense,      // dense source: blocks all-true, all-false, or pairs true with probability `density`
  kStaircase,  // dense source: a band between two random non-decreasing staircases
};

// A compressed mask (fa_block_mask_create) and the source it is built from.
struct BlockMaskSpec {
  BlockMaskKind kind = BlockMaskKind::kNone;
  double density = 0.5;
  int64_t block_q = 128, block_k = 128;
  bool per_batch = false;  // Bm = B (else 1: broadcast)
  bool per_head = false;   // Hm = Hq (else 1: broadcast)
  // One row of blocks all false: the queries of those blocks see nothing.
  bool empty_block_row = false;
  uint64_t seed = 1;  // the pattern, independent of the inputs' seed
};

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
  // FA_MASK_PREFIX_LM's bidirectional prefix, and chunked attention (0 = off).
  int64_t prefix_len = 0;
  int64_t chunk_size = 0;
  Documents documents;
  BlockMaskSpec block_mask;
  // A forced CUDA path may answer FA_STATUS_UNSUPPORTED (its key tile does
  // not divide block_k): reported as a skip, not a failure. Never set on a
  // case without a block mask.
  bool forced_path_may_refuse = false;
};

struct Outcome {
  bool passed = false;
  // The forced CUDA path refused a case that allows it (passed stays false;
  // detail says why). Callers count it apart, never as a pass.
  bool skipped = false;
  double max_error = 0, tolerance = 0;          // output
  double lse_max_error = 0, lse_tolerance = 0;  // LSE (0 when not requested)
  std::string detail;                           // why it failed, or a summary
};

// Human-readable one-line description of a case.
std::string describe(const Case& c);

// The matrix of ANCHORS.md: awkward (Lq, Lk), head dims, MHA/GQA/MQA, masks,
// softcap, varlen, paging, strides, fully masked rows, and the mask options
// given as values or data (prefix-LM, chunks, documents, block masks).
// `quick` keeps the large shapes out (for slow backends and CI).
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
