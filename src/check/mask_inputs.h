// The mask options that are data rather than numbers, drawn from a Case:
// document segment ids and the boolean source of a block mask, with the
// plain lookups the harness's own implementation reads them through (so it
// never depends on the library's compression), and an owner for the
// compressed masks built from a source.
#pragma once

#include <cstdint>
#include <vector>

#include "check/harness.h"

namespace fastattn::check {

// Segment ids of sequence `seq` (lq queries, lk keys) for `docs`:
// non-decreasing, the query ids taken from the keys at the query's
// bottom-right aligned position (see Documents).
void make_segment_ids(const Documents& docs, int64_t seq, int64_t lq, int64_t lk,
                      std::vector<int32_t>* q_ids, std::vector<int32_t>* k_ids);

// FA_DTYPE_BOOL [batch, heads, rows, cols]: pairs (dense) or blocks.
struct MaskSource {
  bool blocks = false;
  int64_t batch = 0, heads = 0;  // 0: no block mask; 1: broadcast
  int64_t seqlen_q = 0, seqlen_k = 0;
  int64_t block_q = 128, block_k = 128;
  std::vector<uint8_t> data;

  bool present() const { return batch > 0; }
  int64_t rows() const { return blocks ? (seqlen_q + block_q - 1) / block_q : seqlen_q; }
  int64_t cols() const { return blocks ? (seqlen_k + block_k - 1) / block_k : seqlen_k; }
  // Whether pair (i, j) of sequence b, query head h is allowed.
  bool allows(int64_t b, int64_t h, int64_t i, int64_t j) const;
  // Arguments of fa_block_mask_create with the source at `where` (a host or
  // device copy of `data`).
  fa_block_mask_args args(const void* where) const;
};

// The source of c.block_mask over c's padded shape (absent when kNone).
MaskSource make_mask_source(const Case& c);

// A compressed mask, destroyed with its owner.
class OwnedBlockMask {
 public:
  OwnedBlockMask() = default;
  ~OwnedBlockMask() { fa_block_mask_destroy(mask_); }
  OwnedBlockMask(const OwnedBlockMask&) = delete;
  OwnedBlockMask& operator=(const OwnedBlockMask&) = delete;

  fa_status create(const MaskSource& src, const void* where, const fa_run_options& options) {
    const fa_block_mask_args a = src.args(where);
    return fa_block_mask_create(&a, &options, &mask_);
  }
  const fa_block_mask* get() const { return mask_; }

 private:
  fa_block_mask* mask_ = nullptr;
};

}  // namespace fastattn::check
