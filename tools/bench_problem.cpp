#include "bench_problem.h"

#include <algorithm>
#include <cstdio>

#include "host_tensor.h"

namespace fastattn::tools {

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
  }
  if (p.softcap > 0.0f) {
    char buf[32];
    std::snprintf(buf, sizeof buf, " softcap=%g", static_cast<double>(p.softcap));
    s += buf;
  }
  if (p.decode) s += p.page_size > 0 ? " paged(" + std::to_string(p.page_size) + ")" : " contiguous";
  return s;
}

int64_t allowed_pairs(const bench_problem& p) {
  const int64_t lq = p.seqlen_q, lk = p.seqlen_k;
  if (p.mask == FA_MASK_NONE) return lq * lk;
  int64_t left = -1, right = 0;  // causal
  if (p.mask == FA_MASK_SLIDING_WINDOW) {
    left = p.window_left;
    right = p.window_right;
  }
  int64_t pairs = 0;
  for (int64_t i = 0; i < lq; ++i) {
    const int64_t diag = i + lk - lq;
    const int64_t begin = std::clamp<int64_t>(left < 0 ? 0 : diag - left, 0, lk);
    const int64_t end = std::clamp<int64_t>(right < 0 ? lk : diag + right + 1, begin, lk);
    pairs += end - begin;
  }
  return pairs;
}

double flops(const bench_problem& p) {
  return 4.0 * static_cast<double>(p.head_dim) * static_cast<double>(p.heads_q) *
         static_cast<double>(p.batch) * static_cast<double>(allowed_pairs(p));
}

std::string flop_formula(const bench_problem& p) {
  if (p.mask == FA_MASK_NONE) return "FLOPs = 4*B*Lq*Lk*Hq*D";
  return "FLOPs = 4*D*Hq*pairs summed over the batch, pairs = the (q,k) pairs the mask allows, "
         "counted exactly (" + std::to_string(allowed_pairs(p)) + " per sequence and head)";
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
