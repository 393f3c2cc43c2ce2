// Small builders the matrix files write their cases with.
#pragma once

#include <cstdint>
#include <vector>

#include "check/harness.h"

namespace fastattn::check {

// Batch 2, GQA 4:2: every case crosses sequences and head groups unless it
// says otherwise.
inline Case base(const char* label, fa_dtype dt, int64_t lq, int64_t lk, int64_t d) {
  Case c;
  c.label = label;
  c.dtype = dt;
  c.batch = 2;
  c.seqlen_q = lq;
  c.seqlen_k = lk;
  c.heads_q = 4;
  c.heads_kv = 2;
  c.head_dim = d;
  return c;
}

inline Case with_mask(Case c, fa_mask_kind kind, int64_t left = -1, int64_t right = -1) {
  c.mask = kind;
  c.window_left = left;
  c.window_right = right;
  return c;
}

// The mask options of the matrix's second part (matrix_masks.cpp): prefix-LM,
// chunks, documents and block masks, alone and combined.
std::vector<Case> mask_option_cases(bool quick);

}  // namespace fastattn::check
