// One benchmark problem: its shape, what it costs (FLOPs or bytes) and how
// that cost is counted, so the printed formula and the number always agree.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

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
  int64_t prefix_len = 0;    // FA_MASK_PREFIX_LM: keys every query sees
  int64_t chunk_size = 0;    // 0 = off; else chunked local attention
  // Refinements that need inputs beyond fa_mask's numbers (make_mask_inputs):
  // documents: segment ids of doc_len-token documents, the same in every
  // sequence of the batch; block_sparse, dense: an fa_block_mask built from
  // a random blocks or dense bool source, broadcast over batch and heads.
  enum class source { none, documents, block_sparse, dense };
  source mask_source = source::none;
  int64_t doc_len = 0;
  // block_sparse: probability of a FULL block (diagonal blocks always FULL,
  // so no query row is empty when Lq <= Lk); dense: of an allowed pair.
  double density = 0.0;
  int64_t block = 128;       // block_q = block_k of the block mask
  uint64_t mask_seed = 1;
  float softcap = 0.0f;
  // Decode only: page size of the KV cache, 0 = one contiguous cache.
  int64_t page_size = 16;
};

// "fp32 B=1 Lq=2048 Lk=2048 Hq=8 Hkv=8 D=128 causal".
std::string describe(const bench_problem& p);
// "none", "causal", "window", "prefix-lm", "chunked", "documents",
// "block-sparse" or "dense": the --mask value that gives this problem.
std::string mask_label(const bench_problem& p);

// The host-side inputs of the mask of one sequence (the same for every
// sequence and head), deterministic in p.mask_seed.
struct mask_inputs {
  std::vector<int32_t> q_segment_ids;  // [Lq], documents only
  std::vector<int32_t> k_segment_ids;  // [Lk]
  int64_t blocks_q = 0, blocks_k = 0;
  std::vector<unsigned char> blocks;   // [blocks_q, blocks_k], block_sparse only
  std::vector<unsigned char> dense;    // [Lq, Lk], dense only
};
mask_inputs make_mask_inputs(const bench_problem& p);

// Whether query row i may see key j, straight from the definitions of
// fastattn.h (bottom-right alignment): the oracle allowed_pairs is checked by.
bool pair_allowed(const bench_problem& p, const mask_inputs& m, int64_t i, int64_t j);
// The rows [row_begin, row_end) of the block-mask source as a dense bool
// [rows, Lk] array (block_sparse, dense): the reference check's mask.
std::vector<unsigned char> dense_rows(const bench_problem& p, const mask_inputs& m, int64_t row_begin,
                                      int64_t row_end);

// The allowed (query, key) pairs of one sequence and head, counted exactly,
// row by row: intervals for the kinds, chunks and documents, then the
// block-mask bits inside them.
int64_t allowed_pairs(const bench_problem& p, const mask_inputs& m);

// Two matmuls of 2 FLOPs per multiply-add over the allowed pairs
// (`pairs`: allowed_pairs of one sequence and head).
double flops(const bench_problem& p, int64_t pairs);
// The formula behind flops(), for the line under the table.
std::string flop_formula(const bench_problem& p, int64_t pairs);

// K and V read once: B * Lk * Hkv * D * 2 * sizeof(dtype).
double kv_bytes(const bench_problem& p);
std::string byte_formula(const bench_problem& p);

}  // namespace fastattn::tools
