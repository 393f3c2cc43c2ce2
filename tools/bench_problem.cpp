#include "bench_problem.h"

#include <algorithm>
#include <cstdio>
#include <random>

#include "host_tensor.h"

namespace fastattn::tools {

namespace {

// Floor division (C++ '/' truncates toward zero; positions d can be negative
// when Lq > Lk).
int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Documents are doc_len-token runs of keys; a query belongs to the document
// of its aligned position d = i + Lk - Lq (no document, -1, before key 0).
int32_t document_of(int64_t position, int64_t doc_len) {
  return position < 0 ? -1 : static_cast<int32_t>(position / doc_len);
}

struct interval {
  int64_t begin, end;  // [begin, end)
};

}  // namespace

std::string mask_label(const bench_problem& p) {
  switch (p.mask_source) {
    case bench_problem::source::documents: return "documents";
    case bench_problem::source::block_sparse: return "block-sparse";
    case bench_problem::source::dense: return "dense";
    case bench_problem::source::none: break;
  }
  switch (p.mask) {
    case FA_MASK_NONE: return "none";
    case FA_MASK_CAUSAL: return p.chunk_size > 0 ? "chunked" : "causal";
    case FA_MASK_SLIDING_WINDOW: return "window";
    case FA_MASK_PREFIX_LM: return "prefix-lm";
  }
  return "?";
}

std::string describe(const bench_problem& p) {
  std::string s = std::string(dtype_name(p.dtype)) + " B=" + std::to_string(p.batch) +
                  " Lq=" + std::to_string(p.seqlen_q) + " Lk=" + std::to_string(p.seqlen_k) +
                  " Hq=" + std::to_string(p.heads_q) + " Hkv=" + std::to_string(p.heads_kv) +
                  " D=" + std::to_string(p.head_dim);
  switch (p.mask) {
    case FA_MASK_NONE: break;
    case FA_MASK_CAUSAL: s += " causal"; break;
    case FA_MASK_SLIDING_WINDOW:
      s += " window(" + std::to_string(p.window_left) + "," + std::to_string(p.window_right) + ")";
      break;
    case FA_MASK_PREFIX_LM: s += " prefix-lm(" + std::to_string(p.prefix_len) + ")"; break;
  }
  if (p.chunk_size > 0) s += " chunk=" + std::to_string(p.chunk_size);
  char buf[64];
  switch (p.mask_source) {
    case bench_problem::source::none: break;
    case bench_problem::source::documents: s += " docs=" + std::to_string(p.doc_len); break;
    case bench_problem::source::block_sparse:
      std::snprintf(buf, sizeof buf, " block-sparse(%g,%lld)", p.density, static_cast<long long>(p.block));
      s += buf;
      break;
    case bench_problem::source::dense:
      std::snprintf(buf, sizeof buf, " dense(%g)", p.density);
      s += buf;
      break;
  }
  if (p.softcap > 0.0f) {
    std::snprintf(buf, sizeof buf, " softcap=%g", static_cast<double>(p.softcap));
    s += buf;
  }
  if (p.decode) s += p.page_size > 0 ? " paged(" + std::to_string(p.page_size) + ")" : " contiguous";
  return s;
}

mask_inputs make_mask_inputs(const bench_problem& p) {
  mask_inputs m;
  const int64_t lq = p.seqlen_q, lk = p.seqlen_k, off = lk - lq;
  std::mt19937_64 rng(p.mask_seed);
  switch (p.mask_source) {
    case bench_problem::source::none: break;
    case bench_problem::source::documents:
      m.q_segment_ids.resize(static_cast<size_t>(lq));
      m.k_segment_ids.resize(static_cast<size_t>(lk));
      for (int64_t i = 0; i < lq; ++i) m.q_segment_ids[i] = document_of(i + off, p.doc_len);
      for (int64_t j = 0; j < lk; ++j) m.k_segment_ids[j] = document_of(j, p.doc_len);
      break;
    case bench_problem::source::block_sparse: {
      m.blocks_q = (lq + p.block - 1) / p.block;
      m.blocks_k = (lk + p.block - 1) / p.block;
      m.blocks.resize(static_cast<size_t>(m.blocks_q * m.blocks_k));
      std::bernoulli_distribution full(p.density);
      for (int64_t bi = 0; bi < m.blocks_q; ++bi) {
        for (int64_t bj = 0; bj < m.blocks_k; ++bj) {
          const bool draw = full(rng);  // drawn for every block, so the pattern does not depend on Lq vs Lk
          m.blocks[bi * m.blocks_k + bj] = draw || bi == bj;
        }
      }
      break;
    }
    case bench_problem::source::dense: {
      m.dense.resize(static_cast<size_t>(lq * lk));
      // 16 random bits a pair, four pairs a draw: an L = 16384 mask in about a second.
      const uint64_t threshold = static_cast<uint64_t>(p.density * 65536.0 + 0.5);
      uint64_t word = 0;
      for (int64_t e = 0; e < lq * lk; ++e) {
        if (e % 4 == 0) word = rng();
        m.dense[e] = (word & 0xFFFF) < threshold;
        word >>= 16;
      }
      break;
    }
  }
  return m;
}

bool pair_allowed(const bench_problem& p, const mask_inputs& m, int64_t i, int64_t j) {
  const int64_t d = i + p.seqlen_k - p.seqlen_q;
  bool ok = true;
  switch (p.mask) {
    case FA_MASK_NONE: break;
    case FA_MASK_CAUSAL: ok = j <= d; break;
    case FA_MASK_SLIDING_WINDOW:
      ok = (p.window_left < 0 || j >= d - p.window_left) && (p.window_right < 0 || j <= d + p.window_right);
      break;
    case FA_MASK_PREFIX_LM: ok = j <= d || j < p.prefix_len; break;
  }
  if (p.chunk_size > 0) ok = ok && floor_div(j, p.chunk_size) == floor_div(d, p.chunk_size);
  switch (p.mask_source) {
    case bench_problem::source::none: break;
    case bench_problem::source::documents: ok = ok && m.q_segment_ids[i] == m.k_segment_ids[j]; break;
    case bench_problem::source::block_sparse:
      ok = ok && m.blocks[(i / p.block) * m.blocks_k + j / p.block] != 0;
      break;
    case bench_problem::source::dense: ok = ok && m.dense[i * p.seqlen_k + j] != 0; break;
  }
  return ok;
}

std::vector<unsigned char> dense_rows(const bench_problem& p, const mask_inputs& m, int64_t row_begin,
                                      int64_t row_end) {
  const int64_t lk = p.seqlen_k;
  std::vector<unsigned char> rows(static_cast<size_t>((row_end - row_begin) * lk));
  for (int64_t i = row_begin; i < row_end; ++i) {
    unsigned char* row = rows.data() + (i - row_begin) * lk;
    if (p.mask_source == bench_problem::source::dense) {
      std::copy_n(m.dense.data() + i * lk, lk, row);
    } else {
      for (int64_t j = 0; j < lk; ++j) row[j] = m.blocks[(i / p.block) * m.blocks_k + j / p.block];
    }
  }
  return rows;
}

int64_t allowed_pairs(const bench_problem& p, const mask_inputs& m) {
  const int64_t lq = p.seqlen_q, lk = p.seqlen_k;
  int64_t pairs = 0;
  for (int64_t i = 0; i < lq; ++i) {
    const int64_t d = i + lk - lq;
    // The kind: one interval of keys (prefix-LM: j < prefix_len or j <= d is j < max(prefix_len, d + 1)).
    interval kind{0, lk};
    switch (p.mask) {
      case FA_MASK_NONE: break;
      case FA_MASK_CAUSAL: kind = {0, d + 1}; break;
      case FA_MASK_SLIDING_WINDOW:
        kind = {p.window_left < 0 ? 0 : d - p.window_left, p.window_right < 0 ? lk : d + p.window_right + 1};
        break;
      case FA_MASK_PREFIX_LM: kind = {0, std::max(p.prefix_len, d + 1)}; break;
    }
    // The refinements, each one interval of keys: the chunk and the document of d.
    interval keep{0, lk};
    if (p.chunk_size > 0) {
      const int64_t c = floor_div(d, p.chunk_size) * p.chunk_size;
      keep = {std::max(keep.begin, c), std::min(keep.end, c + p.chunk_size)};
    }
    if (p.mask_source == bench_problem::source::documents) {
      const auto range = std::equal_range(m.k_segment_ids.begin(), m.k_segment_ids.end(), m.q_segment_ids[i]);
      keep = {std::max(keep.begin, static_cast<int64_t>(range.first - m.k_segment_ids.begin())),
              std::min(keep.end, static_cast<int64_t>(range.second - m.k_segment_ids.begin()))};
    }
    const bool bits = p.mask_source == bench_problem::source::block_sparse ||
                      p.mask_source == bench_problem::source::dense;
    const int64_t begin = std::max({kind.begin, keep.begin, int64_t{0}});
    const int64_t end = std::min({kind.end, keep.end, lk});
    if (end <= begin) continue;
    if (!bits) {
      pairs += end - begin;
    } else if (p.mask_source == bench_problem::source::dense) {
      pairs += std::count(m.dense.begin() + i * lk + begin, m.dense.begin() + i * lk + end, 1);
    } else {
      const unsigned char* row = m.blocks.data() + (i / p.block) * m.blocks_k;
      for (int64_t j = begin; j < end;) {
        const int64_t block_end = std::min(end, (j / p.block + 1) * p.block);
        if (row[j / p.block]) pairs += block_end - j;
        j = block_end;
      }
    }
  }
  return pairs;
}

double flops(const bench_problem& p, int64_t pairs) {
  return 4.0 * static_cast<double>(p.head_dim) * static_cast<double>(p.heads_q) *
         static_cast<double>(p.batch) * static_cast<double>(pairs);
}

std::string flop_formula(const bench_problem& p, int64_t pairs) {
  if (p.mask == FA_MASK_NONE && p.chunk_size == 0 && p.mask_source == bench_problem::source::none) {
    return "FLOPs = 4*B*Lq*Lk*Hq*D";
  }
  return "FLOPs = 4*D*Hq*pairs summed over the batch, pairs = the (q,k) pairs the mask allows, "
         "counted exactly (" + std::to_string(pairs) + " per sequence and head)";
}

double kv_bytes(const bench_problem& p) {
  return static_cast<double>(p.batch) * static_cast<double>(p.seqlen_k) *
         static_cast<double>(p.heads_kv) * static_cast<double>(p.head_dim) * 2.0 *
         static_cast<double>(dtype_size(p.dtype));
}

std::string byte_formula(const bench_problem&) {
  return "bytes = K and V read once = B*Lk*Hkv*D*2*sizeof(dtype)";
}

}  // namespace fastattn::tools
