// Where a document starts and ends among a sequence's keys: the lower and
// upper bounds of a segment id in the non-decreasing key ids, found by one
// thread or by a whole warp. Each probe is a round trip to L2, so the
// searches overlap their chains of loads rather than run one after another.
#pragma once

#include <cstdint>

namespace fastattn::cuda {

// A document's keys: [lo, hi) of segment id `id` in the sequence's keys.
struct SegmentSpan {
  int32_t id;
  int lo, hi;
};

// Lower and upper bounds of s0 and s1 in the non-decreasing ids[0, n), all
// four searched in lockstep so that their chains of dependent loads overlap
// (each is a round trip to L2: a query tile's first and last rows searched
// one after the other cost about twice the tile's own work at 1K-token
// documents).
__device__ __forceinline__ void segment_bounds2(const int32_t* ids, int n, int32_t s0,
                                                int32_t s1, SegmentSpan* a, SegmentSpan* c) {
  int lo[4] = {0, 0, 0, 0}, len[4] = {n, n, n, n};
  const int32_t key[4] = {s0, s0, s1, s1};
  for (int step = n; step > 0; step >>= 1) {
    int32_t v[4];
#pragma unroll
    for (int x = 0; x < 4; ++x) v[x] = len[x] > 0 ? __ldg(ids + lo[x] + (len[x] >> 1)) : 0;
#pragma unroll
    for (int x = 0; x < 4; ++x) {
      if (len[x] == 0) continue;
      const int half = len[x] >> 1;
      // Lower bounds (x even) step past ids < key; upper bounds past ids <= key.
      const bool right = (x & 1) ? v[x] <= key[x] : v[x] < key[x];
      if (right) {
        lo[x] += half + 1;
        len[x] -= half + 1;
      } else {
        len[x] = half;
      }
    }
  }
  *a = {s0, lo[0], lo[1]};
  *c = {s1, lo[2], lo[3]};
}

// The same four bounds found by a whole warp, which every lane calls and
// gets the same spans from. Each round the 32 lanes probe 32 evenly spaced
// ids of every range still open, and the ballot of "id before the key"
// narrows the range 33-fold: 3 round trips for 16K keys against 14 for one
// thread, cheap enough for the producer warp to do per query tile.
__device__ __forceinline__ void warp_segment_bounds2(const int32_t* ids, int n, int32_t s0,
                                                     int32_t s1, SegmentSpan* a, SegmentSpan* c) {
  const int lane = threadIdx.x & 31;
  int lo[4] = {0, 0, 0, 0}, len[4] = {n, n, n, n};
  const int32_t key[4] = {s0, s0, s1, s1};
  while ((len[0] | len[1] | len[2] | len[3]) > 0) {
    bool right[4];
#pragma unroll
    for (int x = 0; x < 4; ++x) {
      // A range of at most 32 ids is probed whole, one id a lane; a longer
      // one at lo + (lane + 1) len / 33, strictly inside it.
      const bool whole = len[x] <= 32;
      const int at = whole ? lane : static_cast<int>((int64_t{lane} + 1) * len[x] / 33);
      const bool probe = !whole || lane < len[x];
      const int32_t v = probe ? __ldg(ids + lo[x] + at) : 0;
      right[x] = probe && ((x & 1) ? v <= key[x] : v < key[x]);
    }
#pragma unroll
    for (int x = 0; x < 4; ++x) {
      // The probes before the bound form a prefix of the lanes.
      const int before = __popc(__ballot_sync(0xffffffffu, right[x]));
      if (len[x] <= 32) {
        lo[x] += before;
        len[x] = 0;
      } else {
        const int64_t l = len[x];
        const int hi = before < 32 ? lo[x] + static_cast<int>((before + 1) * l / 33) : lo[x] + len[x];
        if (before > 0) lo[x] += static_cast<int>(before * l / 33) + 1;
        len[x] = hi - lo[x];
      }
    }
  }
  *a = {s0, lo[0], lo[1]};
  *c = {s1, lo[2], lo[3]};
}

}  // namespace fastattn::cuda
