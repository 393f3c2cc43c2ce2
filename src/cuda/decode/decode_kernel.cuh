// Split-KV decode attention on CUDA cores, for any GPU from sm70 up.
//
// Decoding reads the whole KV cache once per step and does ~G flops per
// byte (G = query rows sharing a KV head), so it is bound by memory, not by
// math: the kernel is built around keeping 16-byte loads in flight.
//
// One block = one (sequence, KV head, row chunk, key split). Its kRows query
// rows are the (new token, query head) pairs that share that KV head (GQA
// packing: K/V are read once for all of them). Each key is read by
// kHeadDim / 8 lanes (16 bytes each), so a block of 128 threads works on
// 128 * 8 / kHeadDim keys at once, each group of lanes with its own online
// softmax state; the groups' states are merged through shared memory at the
// end. With several splits each block writes a float32 partial (O, LSE) and
// decode_combine_kernel merges them.
#pragma once

#include <cfloat>
#include <cstdint>

#include "cuda/common/ptx.cuh"
#include "cuda/decode/decode_params.h"
#include "cuda/decode/elem.cuh"
#include "cuda/decode/rotary.cuh"

namespace fastattn::cuda {

template <typename Elem_, int kHeadDim_, int kRows_>
struct DecodeTraits {
  using Elem = Elem_;
  static constexpr int kHeadDim = kHeadDim_;  // padded; the problem's may be smaller
  static constexpr int kRows = kRows_;
  static constexpr int kThreads = 128;
  static constexpr int kVec = 8;                              // elements per 16-byte load
  static constexpr int kLanesPerKey = kHeadDim / kVec;        // 8, 16 or 32
  static constexpr int kKeyGroups = kThreads / kLanesPerKey;  // keys in flight per step
  // Steps per iteration, and iterations in flight: each thread streams its
  // own 16-byte chunks through a private ring in shared memory (cp.async),
  // so kStages - 1 iterations of loads stay in flight without holding
  // registers.
  static constexpr int kUnroll = kRows <= 4 ? 4 : 2;
  static constexpr int kStages = 4;
  static constexpr int kKeysPerIter = kKeyGroups * kUnroll;
  static constexpr int kRingBytes = kStages * kUnroll * 2 * kThreads * 16;
  // After the loop the ring is reused to merge the key groups' states.
  static constexpr int kMergeBytes = (kKeyGroups * kRows * (kHeadDim + 6) + kRows) * 4;
  static constexpr int kSmemBytes = kRingBytes > kMergeBytes ? kRingBytes : kMergeBytes;
  static_assert(kHeadDim % (kVec * 8) == 0 && kLanesPerKey <= 32, "head dim 64, 128 or 256");
};

struct RowRange {
  int begin, end;  // allowed keys [begin, end)
};

// Allowed keys of query token i (of Lq, aligned to the end of `keys`).
__device__ __forceinline__ RowRange row_keys(const DecodeKernelParams& p, int i, int keys) {
  const int diag = i + keys - p.seqlen_q;
  int begin = p.window_left < 0 ? 0 : max(0, diag - p.window_left);
  int end = p.window_right < 0 ? keys : min(keys, diag + p.window_right + 1);
  end = min(max(end, p.prefix), keys);
  if (p.chunk > 0) {
    const int c0 = (diag >= 0 ? diag / p.chunk : -((-diag + p.chunk - 1) / p.chunk)) * p.chunk;
    begin = max(begin, c0);
    end = min(end, c0 + p.chunk);
  }
  begin = min(begin, keys);
  end = max(end, begin);
  return {begin, end};
}

// Writes 8 finished elements (dims dv..dv+7) of the row of new token `tok`,
// query head `hq` to `out`.
template <typename Elem>
__device__ __forceinline__ void store_out_chunk(const DecodeKernelParams& p, int b, int tok, int hq,
                                                int dv, const float (&acc)[8]) {
  Elem* orow = static_cast<Elem*>(p.out) + int64_t(b) * p.out_batch_stride +
               int64_t(tok) * p.out_row_stride + int64_t(hq) * p.out_head_stride;
  *reinterpret_cast<uint4*>(orow + dv) = pack8<Elem>(acc);
}

// The row's natural-log LSE to `lse`, when the call asked for it.
__device__ __forceinline__ void store_out_lse(const DecodeKernelParams& p, int b, int tok, int hq,
                                              float lse) {
  if (p.lse != nullptr) {
    p.lse[int64_t(b) * p.lse_batch_stride + int64_t(hq) * p.lse_head_stride +
          int64_t(tok) * p.lse_row_stride] = lse;
  }
}

// 8 finished elements of a split: to `out` when the call has one split,
// else as split `split`'s float32 partial O.
template <typename Elem>
__device__ __forceinline__ void store_row_chunk(const DecodeKernelParams& p, int split, int b,
                                                int tok, int hq, int dv, const float (&acc)[8]) {
  if (p.num_splits == 1) {
    store_out_chunk<Elem>(p, b, tok, hq, dv, acc);
  } else {
    const int64_t row_index = ((int64_t(split) * p.batch + b) * p.seqlen_q + tok) * p.heads_q + hq;
    float4* dst = reinterpret_cast<float4*>(p.partial_o + row_index * p.head_dim + dv);
    dst[0] = make_float4(acc[0], acc[1], acc[2], acc[3]);
    dst[1] = make_float4(acc[4], acc[5], acc[6], acc[7]);
  }
}

// The row's natural-log LSE over the split's keys: to `lse` (when given)
// with one split, else as the split's partial LSE.
__device__ __forceinline__ void store_row_lse(const DecodeKernelParams& p, int split, int b,
                                              int tok, int hq, float lse) {
  if (p.num_splits == 1) {
    store_out_lse(p, b, tok, hq, lse);
  } else {
    p.partial_lse[((int64_t(split) * p.batch + b) * p.heads_q + hq) * p.seqlen_q + tok] = lse;
  }
}

template <typename Traits>
__global__ void __launch_bounds__(Traits::kThreads)
    decode_split_kernel(const DecodeKernelParams p) {
  using Elem = typename Traits::Elem;
  constexpr int kRows = Traits::kRows, kVec = Traits::kVec, kLanes = Traits::kLanesPerKey;
  constexpr int kGroups = Traits::kKeyGroups, kUnroll = Traits::kUnroll;
  constexpr float kNegInf = -INFINITY;

  extern __shared__ __align__(16) unsigned char smem[];
  uint4* ring = reinterpret_cast<uint4*>(smem);

  const int split = blockIdx.x;
  const int h_kv = blockIdx.y % p.heads_kv;
  const int chunk = blockIdx.y / p.heads_kv;
  const int b = blockIdx.z;
  const int lane_d = threadIdx.x % kLanes;  // which 8 elements of a row
  const int group = threadIdx.x / kLanes;   // which key of a step
  const int d0 = lane_d * kVec;
  const bool d_live = d0 < p.head_dim;      // head-dim padding lanes hold zeros

  allow_dependent_launch();  // the merge waits for this grid's end (see decode_mma_kernel)
  const int keys = p.cache_seqlens[b] + p.new_tokens;
  const int rows_total = p.group_size * p.seqlen_q;

  // Rows of this block: row r -> new token r / G, query head h_kv * G + r % G.
  int token[kRows], head[kRows];
  RowRange range[kRows];
  bool row_live[kRows];
  int block_begin = keys, block_end = 0;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int row = chunk * kRows + r;
    row_live[r] = row < rows_total;
    token[r] = row_live[r] ? row / p.group_size : 0;
    head[r] = h_kv * p.group_size + (row_live[r] ? row % p.group_size : 0);
    range[r] = row_live[r] ? row_keys(p, token[r], keys) : RowRange{0, 0};
    if (range[r].begin < range[r].end) {
      block_begin = min(block_begin, range[r].begin);
      block_end = max(block_end, range[r].end);
    }
  }
  const bool masked = p.window_left >= 0 || p.window_right >= 0 || p.chunk > 0;

  // This split's keys: an equal share of the block's range, in whole steps.
  int k_begin = 0, k_end = 0;
  if (block_begin < block_end) {
    const int n = block_end - block_begin;
    int per_split = (n + p.num_splits - 1) / p.num_splits;
    per_split = (per_split + kGroups - 1) / kGroups * kGroups;
    k_begin = min(block_end, block_begin + split * per_split);
    k_end = min(block_end, k_begin + per_split);
  }

  // Queries in float, rotated (and rounded to the dtype, as a stored rotated
  // q would be) when the call appends with rotary.
  float q[kRows][kVec];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const Elem* qrow = static_cast<const Elem*>(p.q) + int64_t(b) * p.q_batch_stride +
                       int64_t(token[r]) * p.q_row_stride + int64_t(head[r]) * p.q_head_stride;
    if (!d_live || !row_live[r]) {
#pragma unroll
      for (int e = 0; e < kVec; ++e) q[r][e] = 0.f;
    } else if (p.rotary_style == kRotaryNone) {
      unpack8<Elem>(*reinterpret_cast<const uint4*>(qrow + d0), q[r]);
    } else {
      const int pos = p.cache_seqlens[b] + token[r];
      const float* cos_row = p.rotary_cos + int64_t(pos) * p.cos_row_stride;
      const float* sin_row = p.rotary_sin + int64_t(pos) * p.sin_row_stride;
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        q[r][e] = round_to<Elem>(
            rotary_element(qrow, d0 + e, p.rotary_style, p.rotary_dim, cos_row, sin_row));
      }
    }
  }

  float o[kRows][kVec], m[kRows], l[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    m[r] = kNegInf;
    l[r] = 0.f;
#pragma unroll
    for (int e = 0; e < kVec; ++e) o[r][e] = 0.f;
  }

  const Elem* k_base = static_cast<const Elem*>(p.k) + d0;
  const Elem* v_base = static_cast<const Elem*>(p.v) + d0;
  const int64_t k_head_offset = int64_t(h_kv) * p.k_head_stride;
  const int64_t v_head_offset = int64_t(h_kv) * p.v_head_stride;
  // Slot of (stage, step u, K or V) of this thread: consecutive threads own
  // consecutive 16 bytes, so ring accesses are free of bank conflicts, and
  // each thread reads only what it copied itself (no block barrier).
  auto slot = [&](int stage, int u, int kv) {
    return ring + ((stage * kUnroll + u) * 2 + kv) * Traits::kThreads + threadIdx.x;
  };
  const int iters = k_begin < k_end ? (k_end - k_begin + Traits::kKeysPerIter - 1) /
                                          Traits::kKeysPerIter
                                    : 0;
  // Page-table entries are looked up one issue ahead, so their loads are in
  // flight during an iteration's math instead of stalling the next copy.
  CacheSlot next[kUnroll];
  auto look_up = [&](int it) {
    const int base = k_begin + it * Traits::kKeysPerIter;
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int key = base + u * kGroups + group;
      next[u] = key < k_end ? cache_slot(p, b, key) : CacheSlot{0, 0};
    }
  };
  auto issue = [&](int it) {
    const int stage = it % Traits::kStages;
    const int base = k_begin + it * Traits::kKeysPerIter;
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int key = base + u * kGroups + group;
      const bool valid = key < k_end && d_live;
      const Elem* k_src = k_base;
      const Elem* v_src = v_base;
      if (valid) {
        k_src += next[u].page * p.k_page_stride + int64_t(next[u].row) * p.k_row_stride +
                 k_head_offset;
        v_src += next[u].page * p.v_page_stride + int64_t(next[u].row) * p.v_row_stride +
                 v_head_offset;
      }
      copy_16_async(slot(stage, u, 0), k_src, valid);
      copy_16_async(slot(stage, u, 1), v_src, valid);
    }
    look_up(it + 1);
  };
  look_up(0);
#pragma unroll
  for (int it = 0; it < Traits::kStages - 1; ++it) {
    if (it < iters) issue(it);
    async_commit();
  }
  for (int it = 0; it < iters; ++it) {
    async_wait<Traits::kStages - 2>();  // this thread's copies of iteration `it` landed
    if (it + Traits::kStages - 1 < iters) issue(it + Traits::kStages - 1);
    async_commit();
    const int stage = it % Traits::kStages;
    const int base = k_begin + it * Traits::kKeysPerIter;
    uint4 k_raw[kUnroll], v_raw[kUnroll];
    bool live[kUnroll];
    int key[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      key[u] = base + u * kGroups + group;
      live[u] = key[u] < k_end;
      k_raw[u] = *slot(stage, u, 0);
      v_raw[u] = *slot(stage, u, 1);
    }
    // Scores: partial dot products over this lane's 8 elements, summed over
    // the key's lanes.
    float s[kRows][kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float kf[kVec];
      unpack8<Elem>(k_raw[u], kf);
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        float acc = 0.f;
#pragma unroll
        for (int e = 0; e < kVec; ++e) acc = fmaf(q[r][e], kf[e], acc);
        s[r][u] = acc;
      }
    }
#pragma unroll
    for (int off = kLanes / 2; off > 0; off /= 2) {
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) s[r][u] += __shfl_xor_sync(0xffffffffu, s[r][u], off);
      }
    }
    // Online softmax in base 2, one rescale per row per iteration.
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      float row_max = m[r];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        float t;
        if (p.softcap > 0.f) {
          // cap * tanh(x) = cap - 2 cap / (1 + e^{2x})
          const float x = s[r][u] * p.softcap_inv_scale;
          t = (p.softcap - 2.f * p.softcap * rcp(1.f + ex2(x * 2.8853900817779268f))) *
              1.4426950408889634f;
        } else {
          t = s[r][u] * p.scale_log2;
        }
        bool allowed = live[u];
        if (masked) allowed = allowed && key[u] >= range[r].begin && key[u] < range[r].end;
        s[r][u] = allowed ? t : kNegInf;
        row_max = fmaxf(row_max, s[r][u]);
      }
      const float ref = row_max == kNegInf ? 0.f : row_max;
      const float alpha = ex2(m[r] - ref);
      m[r] = row_max;
      l[r] *= alpha;
#pragma unroll
      for (int e = 0; e < kVec; ++e) o[r][e] *= alpha;
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        s[r][u] = ex2(s[r][u] - ref);  // now the probability
        l[r] += s[r][u];
      }
    }
    // P V: each value vector converted once, used by every row.
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float vf[kVec];
      unpack8<Elem>(v_raw[u], vf);
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
#pragma unroll
        for (int e = 0; e < kVec; ++e) o[r][e] = fmaf(s[r][u], vf[e], o[r][e]);
      }
    }
  }

  // Merge the key groups' states through the ring's memory: weights first,
  // then O.
  async_wait<0>();
  __syncthreads();
  auto s_o = reinterpret_cast<float(*)[kRows][Traits::kHeadDim + 3]>(smem);
  float* tail = reinterpret_cast<float*>(smem) + kGroups * kRows * (Traits::kHeadDim + 3);
  auto s_m = reinterpret_cast<float(*)[kRows]>(tail);
  auto s_l = s_m + kGroups;  // [kGroups][kRows] each, after s_o
  auto s_w = s_l + kGroups;
  float* s_row_lse = reinterpret_cast<float*>(s_w + kGroups);
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int e = 0; e < kVec; ++e) s_o[group][r][d0 + e] = o[r][e];
    if (lane_d == 0) {
      s_m[group][r] = m[r];
      s_l[group][r] = l[r];
    }
  }
  __syncthreads();
  if (threadIdx.x < kRows) {
    const int r = threadIdx.x;
    float row_max = kNegInf;
    for (int g = 0; g < kGroups; ++g) row_max = fmaxf(row_max, s_m[g][r]);
    const float ref = row_max == kNegInf ? 0.f : row_max;
    float sum = 0.f;
    for (int g = 0; g < kGroups; ++g) {
      s_w[g][r] = ex2(s_m[g][r] - ref);
      sum += s_l[g][r] * s_w[g][r];
    }
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    for (int g = 0; g < kGroups; ++g) s_w[g][r] *= inv;
    // Natural-log LSE of the rows' scores over this split's keys.
    s_row_lse[r] = sum > 0.f ? (ref + __log2f(sum)) * 0.6931471805599453f : kNegInf;
  }
  __syncthreads();

  constexpr int kVecsPerRow = Traits::kHeadDim / kVec;
  // Row r's token and head, recomputed: indexing the register arrays with a
  // runtime r would put them in local memory.
  auto row_of = [&](int r) { return chunk * kRows + r; };
  auto token_of = [&](int r) { return row_of(r) / p.group_size; };
  auto head_of = [&](int r) { return h_kv * p.group_size + row_of(r) % p.group_size; };
  for (int task = threadIdx.x; task < kRows * kVecsPerRow; task += Traits::kThreads) {
    const int r = task / kVecsPerRow;
    const int dv = (task % kVecsPerRow) * kVec;
    if (row_of(r) >= rows_total || dv >= p.head_dim) continue;
    const int tok = token_of(r), hq = head_of(r);
    float acc[kVec];
#pragma unroll
    for (int e = 0; e < kVec; ++e) acc[e] = 0.f;
    for (int g = 0; g < kGroups; ++g) {
      const float w = s_w[g][r];
#pragma unroll
      for (int e = 0; e < kVec; ++e) acc[e] = fmaf(w, s_o[g][r][dv + e], acc[e]);
    }
    store_row_chunk<Elem>(p, split, b, tok, hq, dv, acc);
  }
  if (threadIdx.x < kRows && row_of(threadIdx.x) < rows_total) {
    const int r = threadIdx.x;
    store_row_lse(p, split, b, token_of(r), head_of(r), s_row_lse[r]);
  }
}

// Merges the splits' partial states: one warp per (sequence, token, head).
template <typename Elem>
__global__ void __launch_bounds__(128) decode_combine_kernel(const DecodeKernelParams p) {
  constexpr int kWarps = 4;
  __shared__ float s_weight[kWarps][256];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t rows = int64_t(p.batch) * p.seqlen_q * p.heads_q;
  const int64_t row = int64_t(blockIdx.x) * kWarps + warp;
  wait_for_prerequisite_grid();  // launched early behind the split kernel (sm90)
  if (row >= rows) return;
  const int h = static_cast<int>(row % p.heads_q);
  const int i = static_cast<int>((row / p.heads_q) % p.seqlen_q);
  const int b = static_cast<int>(row / (int64_t(p.heads_q) * p.seqlen_q));
  const int splits = p.num_splits;
  auto lse_at = [&](int s) {
    return p.partial_lse[((int64_t(s) * p.batch + b) * p.heads_q + h) * p.seqlen_q + i];
  };
  float row_max = -INFINITY;
  for (int s = lane; s < splits; s += 32) row_max = fmaxf(row_max, lse_at(s));
#pragma unroll
  for (int off = 16; off > 0; off /= 2) row_max = fmaxf(row_max, __shfl_xor_sync(~0u, row_max, off));
  const float ref = row_max == -INFINITY ? 0.f : row_max;
  float sum = 0.f;
  for (int s = lane; s < splits; s += 32) {
    const float w = __expf(lse_at(s) - ref);
    s_weight[warp][s] = w;
    sum += w;
  }
#pragma unroll
  for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(~0u, sum, off);
  __syncwarp();
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  Elem* orow = static_cast<Elem*>(p.out) + int64_t(b) * p.out_batch_stride +
               int64_t(i) * p.out_row_stride + int64_t(h) * p.out_head_stride;
  const int64_t split_stride = int64_t(p.batch) * p.seqlen_q * p.heads_q * p.head_dim;
  const float* src = p.partial_o + ((int64_t(b) * p.seqlen_q + i) * p.heads_q + h) * p.head_dim;
  // The partials sit in L2, about 0.2 us away: the loads of kBatch splits go
  // out together, then are summed, so a row waits for splits / kBatch round
  // trips instead of one a split (batch 1, 8 KV heads, 16 splits: the call
  // 1.0-1.5 us shorter on an H100 at 4K-128K keys). An empty split's partial
  // may hold anything: it is loaded with the rest but never added.
  constexpr int kBatch = 8;
  for (int d = lane * 4; d < p.head_dim; d += 128) {
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int s0 = 0; s0 < splits; s0 += kBatch) {
      float4 x[kBatch];
#pragma unroll
      for (int j = 0; j < kBatch; ++j) {
        if (s0 + j < splits) x[j] = *reinterpret_cast<const float4*>(src + (s0 + j) * split_stride + d);
      }
#pragma unroll
      for (int j = 0; j < kBatch; ++j) {
        const float w = s0 + j < splits ? s_weight[warp][s0 + j] : 0.f;
        if (w == 0.f) continue;
        acc.x = fmaf(w, x[j].x, acc.x);
        acc.y = fmaf(w, x[j].y, acc.y);
        acc.z = fmaf(w, x[j].z, acc.z);
        acc.w = fmaf(w, x[j].w, acc.w);
      }
    }
    orow[d + 0] = from_float<Elem>(acc.x * inv);
    orow[d + 1] = from_float<Elem>(acc.y * inv);
    orow[d + 2] = from_float<Elem>(acc.z * inv);
    orow[d + 3] = from_float<Elem>(acc.w * inv);
  }
  if (lane == 0 && p.lse != nullptr) {
    p.lse[int64_t(b) * p.lse_batch_stride + int64_t(h) * p.lse_head_stride +
          int64_t(i) * p.lse_row_stride] = sum > 0.f ? ref + __logf(sum) : -INFINITY;
  }
}

}  // namespace fastattn::cuda
