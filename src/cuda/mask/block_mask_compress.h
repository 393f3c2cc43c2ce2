// Compression of a boolean mask on the GPU into the BlockMaskView arrays
// (api/block_mask_view.h), bit for bit what the host compression builds.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "api/block_mask.h"
#include "api/status.h"

namespace fastattn::cuda {

// A validated device source: dense [Bm, Hm, Lq, Lk] or blocks
// [Bm, Hm, blocks_q, blocks_k], one byte per element, nonzero = true; strides
// in elements of its first three dimensions (the last one is contiguous).
struct BlockMaskSource {
  const uint8_t* data = nullptr;
  int64_t stride_b = 0, stride_h = 0, stride_row = 0;
  bool dense = true;
};

// The result: one cudaMalloc on the current device holding every array.
struct CompressedBlockMask {
  void* storage = nullptr;
  int32_t* cls = nullptr;       // [rows, blocks_k]
  int32_t* kv_list = nullptr;   // [rows, blocks_k], unused tail entries 0
  int32_t* kv_count = nullptr;  // [rows]
  uint32_t* bits = nullptr;     // [partial, block_q, block_k / 32]; null when none
  int64_t empty_blocks = 0, full_blocks = 0, partial_blocks = 0;
  uint64_t state_bytes = 0;  // bytes of the four arrays (alignment padding not counted)
};

// Compresses `src` on `stream` of the current device. Synchronises the stream
// once, after the last read of the source (so it may be freed on return) and
// before the result is allocated; the arrays are complete in stream order,
// later work on `stream` sees them. Scratch memory is freed before return.
// On failure nothing stays allocated.
Status compress_block_mask(const BlockMaskSource& src, const BlockMaskShape& shape,
                           cudaStream_t stream, CompressedBlockMask* out);

}  // namespace fastattn::cuda
