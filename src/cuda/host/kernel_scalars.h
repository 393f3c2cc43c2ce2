// Scalars every attention kernel takes in the same form, derived once from
// the validated params: window bounds as int and the scores' base-2 scale.
#pragma once

#include <cstdint>

#include "api/params.h"

namespace fastattn::cuda {

// Window bound as int, < 0 meaning unbounded; any bound past 2^30 already
// spans every key of a sequence the kernel choices accept.
inline int window_bound(int64_t w) {
  if (w >= MaskParams::kUnbounded) return -1;
  return static_cast<int>(w < (int64_t{1} << 30) ? w : (int64_t{1} << 30));
}

// Fills `p`'s window_left / window_right, prefix, chunk, scale_log2, softcap and
// softcap_inv_scale. Scores enter exp2 scaled by log2(e) * softmax scale, or,
// with a softcap, as log2(e) * cap * tanh(s * scale / cap).
template <typename KernelParams>
void set_mask_and_scale(const AttentionParams& a, KernelParams* p) {
  p->window_left = window_bound(a.mask.left);
  p->window_right = window_bound(a.mask.right);
  p->prefix = static_cast<int>(a.mask.prefix);  // validated <= INT32_MAX
  p->chunk = static_cast<int>(a.mask.chunk);
  constexpr float kLog2e = 1.4426950408889634f;
  if (a.softcap > 0.f) {
    p->softcap = a.softcap;
    p->softcap_inv_scale = a.scale / a.softcap;
    p->scale_log2 = kLog2e;
  } else {
    p->scale_log2 = a.scale * kLog2e;
  }
}

}  // namespace fastattn::cuda
