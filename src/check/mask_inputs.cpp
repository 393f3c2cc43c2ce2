#include "check/mask_inputs.h"

#include <algorithm>
#include <random>

namespace fastattn::check {
namespace {

int64_t uniform(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, std::max(lo, hi))(rng);
}

// Mixed document lengths around `mean`: length-1 documents are where a
// kernel's per-row document bounds change at every row, long ones span tiles.
int64_t document_length(std::mt19937_64& rng, int64_t mean) {
  const int64_t r = uniform(rng, 0, 9);
  if (r < 2) return 1;
  if (r < 5) return uniform(rng, 2, mean / 2);
  return uniform(rng, std::max<int64_t>(mean / 2, 1), 2 * mean);
}

// One (batch, head) slice [rows, cols] of a dense source.
void fill_dense(const BlockMaskSpec& m, int64_t lq, int64_t lk, std::mt19937_64& rng, uint8_t* x) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  if (m.kind == BlockMaskKind::kDense) {
    // Whole blocks all-false or all-true beside random ones, so that a dense
    // source compresses to EMPTY, FULL and PARTIAL blocks alike.
    for (int64_t r0 = 0; r0 < lq; r0 += m.block_q) {
      for (int64_t c0 = 0; c0 < lk; c0 += m.block_k) {
        const double kind = u(rng);
        for (int64_t i = r0; i < std::min(r0 + m.block_q, lq); ++i) {
          for (int64_t j = c0; j < std::min(c0 + m.block_k, lk); ++j) {
            x[i * lk + j] = kind < 0.25 ? 0 : kind < 0.5 ? 1 : u(rng) < m.density;
          }
        }
      }
    }
    return;
  }
  // Staircase: row i sees [lo(i), hi(i)), both non-decreasing in steps of
  // random height and width that cross block edges anywhere.
  const int64_t band = uniform(rng, std::max<int64_t>(lk / 4, 1), std::max<int64_t>(lk, 1));
  int64_t hi = uniform(rng, 1, std::max<int64_t>(lk / 4, 1)), lo = 0;
  for (int64_t i = 0; i < lq;) {
    const int64_t h = uniform(rng, 1, 2 * m.block_q);
    for (int64_t e = std::min(i + h, lq); i < e; ++i) {
      for (int64_t j = lo; j < std::min(hi, lk); ++j) x[i * lk + j] = 1;
    }
    hi += uniform(rng, 0, (2 * h * lk + lq - 1) / std::max<int64_t>(lq, 1));
    lo = std::max(lo, hi - band);
  }
}

}  // namespace

void make_segment_ids(const Documents& docs, int64_t seq, int64_t lq, int64_t lk,
                      std::vector<int32_t>* q_ids, std::vector<int32_t>* k_ids) {
  std::mt19937_64 rng(docs.seed * 1000003 + uint64_t(seq));
  const int64_t mean = std::max<int64_t>(docs.mean_length, 1);
  // Ids step by 2 from a random even base: ids need not start at 0, and the
  // odd ids in between belong to no key (unmatched queries).
  const int32_t base = int32_t(uniform(rng, 0, 3)) * 2;
  k_ids->assign(lk, 0);
  int32_t count = 0;
  for (int64_t j = 0; j < lk; ++count) {
    const int64_t len = docs.fixed_length ? mean : count == 1 ? 1 : document_length(rng, mean);
    for (int64_t e = std::min(j + len, lk); j < e; ++j) (*k_ids)[j] = base + 2 * count;
  }
  std::vector<bool> unmatched(std::max(count, 1), false);
  if (docs.unmatched_queries) {
    for (int32_t m = 0; m < count; ++m) unmatched[m] = uniform(rng, 0, 3) == 0;
    unmatched[count / 2] = true;
  }
  q_ids->assign(lq, base);
  for (int64_t i = 0; i < lq && lk > 0; ++i) {
    const int32_t id = (*k_ids)[std::clamp<int64_t>(i + lk - lq, 0, lk - 1)];
    (*q_ids)[i] = id + (unmatched[(id - base) / 2] ? 1 : 0);
  }
}

bool MaskSource::allows(int64_t b, int64_t h, int64_t i, int64_t j) const {
  const int64_t slice = (batch == 1 ? 0 : b) * heads + (heads == 1 ? 0 : h);
  const int64_t r = blocks ? i / block_q : i, col = blocks ? j / block_k : j;
  return data[(slice * rows() + r) * cols() + col] != 0;
}

fa_block_mask_args MaskSource::args(const void* where) const {
  fa_tensor t{};
  t.data = const_cast<void*>(where);
  t.dtype = FA_DTYPE_BOOL;
  t.ndim = 4;
  const int64_t shape[4] = {batch, heads, rows(), cols()};
  const int64_t strides[4] = {heads * rows() * cols(), rows() * cols(), cols(), 1};
  std::copy(shape, shape + 4, t.shape);
  std::copy(strides, strides + 4, t.strides);
  fa_block_mask_args a{};
  if (blocks) {
    a.blocks = t;
    a.seqlen_q = seqlen_q;
    a.seqlen_k = seqlen_k;
  } else {
    a.dense = t;
  }
  a.block_q = block_q;
  a.block_k = block_k;
  return a;
}

MaskSource make_mask_source(const Case& c) {
  MaskSource s;
  const BlockMaskSpec& m = c.block_mask;
  if (m.kind == BlockMaskKind::kNone) return s;
  s.blocks = m.kind == BlockMaskKind::kBlocks;
  s.batch = m.per_batch ? c.batch : 1;
  s.heads = m.per_head ? c.heads_q : 1;
  s.seqlen_q = c.seqlen_q;
  s.seqlen_k = c.seqlen_k;
  s.block_q = m.block_q;
  s.block_k = m.block_k;
  const int64_t rows = s.rows(), cols = s.cols();
  s.data.assign(s.batch * s.heads * rows * cols, 0);
  std::mt19937_64 rng(m.seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int64_t slice = 0; slice < s.batch * s.heads; ++slice) {
    uint8_t* x = &s.data[slice * rows * cols];
    if (s.blocks) {
      for (int64_t e = 0; e < rows * cols; ++e) x[e] = u(rng) < m.density;
    } else {
      fill_dense(m, rows, cols, rng, x);
    }
    if (m.empty_block_row) {
      // The second row of blocks (the first when it is the only one): with
      // 64-row blocks that is half of a 128-row query tile, not a whole tile.
      const int64_t qb = std::min<int64_t>(1, (c.seqlen_q - 1) / m.block_q);
      const int64_t r0 = s.blocks ? qb : qb * m.block_q;
      const int64_t r1 = s.blocks ? qb + 1 : std::min((qb + 1) * m.block_q, rows);
      std::fill(x + r0 * cols, x + r1 * cols, uint8_t{0});
    }
  }
  return s;
}

}  // namespace fastattn::check
