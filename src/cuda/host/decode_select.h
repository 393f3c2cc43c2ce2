// Planning of the CUDA decode path: which kernel runs a decode step and into
// how many key splits it is cut. Pure functions of the device's properties
// and the problem (no GPU is touched), so the planner is unit-tested on
// machines without one.
#pragma once

#include <cstdint>

#include "api/params.h"
#include "api/status.h"

namespace fastattn::cuda {

// A decode block works on kDecodeRowsMax query rows at most; a split covers
// at least kMinKeysPerSplit keys, so its fixed costs (loading q, merging its
// lanes, writing a float32 partial) stay small beside its reads.
inline constexpr int kDecodeRowsMax = 8;
inline constexpr int kMinKeysPerSplit = 128;

struct DecodeChoice {
  int head_dim = 0;    // instantiated head dim: 64, 128 or 256
  int rows = 0;        // query rows per block: 1, 2, 4 or 8
  int row_chunks = 0;  // blocks per (sequence, KV head, split) to cover G * Lq rows
  int num_splits = 1;
  uint64_t workspace_bytes = 0;
};

// Checks the problem against what the decode kernels take and fills the
// kernel shape (head_dim, rows, row_chunks). `capability` is major * 10 +
// minor. On failure the status names the argument and `out` is untouched.
Status choose_decode_kernel(int capability, const DecodeParams& p, DecodeChoice* out);

// Splits per (sequence, KV head, row chunk): the fewest that keep 90% of
// the resident slots (sms * blocks_per_sm) busy over all waves, so neither
// a batch of one nor a last, partial wave leaves SMs idle; never splits
// shorter than kMinKeysPerSplit keys.
int choose_num_splits(int64_t blocks, int64_t max_keys, int sms, int blocks_per_sm);

// Device memory for the splits' float32 partial O and LSE (0 for one split).
uint64_t decode_workspace_bytes(const DecodeParams& p, int num_splits);

// Byte offset of the partial LSE array within the workspace.
uint64_t decode_workspace_lse_offset(const DecodeParams& p, int num_splits);

}  // namespace fastattn::cuda
