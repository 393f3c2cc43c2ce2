// Shared-memory tile layout: rows of 16-byte chunks, chunk c of row r stored
// at chunk position c ^ (r % 8). Rows are a multiple of 128 bytes, so any 8
// consecutive rows read at one logical chunk (ldmatrix phases, cp.async of a
// row) hit 8 distinct 16-byte bank groups: conflict-free without padding.
#pragma once

#include <cstdint>

namespace fastattn::cuda {

// Byte offset of chunk c of row r; kRowChunks is a multiple of 8.
template <int kRowChunks>
__device__ __forceinline__ uint32_t swizzled_offset(int r, int c) {
  static_assert(kRowChunks % 8 == 0, "rows must span whole 128-byte swizzle atoms");
  return static_cast<uint32_t>((r * kRowChunks + (c ^ (r & 7))) * 16);
}

}  // namespace fastattn::cuda
