// Forward tile shapes per head dim, read by host dispatch and by the kernel
// (block size, __launch_bounds__, shared memory). Each warp owns
// block_m / warps query rows (a multiple of 16) and sweeps all block_n keys.
#pragma once

namespace fastattn::cuda {

struct FwdTileConfig {
  int block_m;  // query rows per block (Br)
  int block_n;  // keys per mainloop step (Bc)
  int warps;
  int stages;   // K/V shared-memory buffers (cp.async pipeline depth)
  // Rescale O after P is built, behind a warp-uniform branch, instead of
  // row by row before the exponentials. Only where registers demand it: the
  // branch bounds live ranges (d = 128 spilled 4 bytes, 36 with softcap,
  // without it) but costs the overlap of exponentials with P V, about 3% on
  // an H100 (interleaved A/B runs of the whole grid).
  bool rescale_after_p;
};

// 32 rows per warp for d <= 128: each K/V fragment read from shared memory
// feeds two MMAs. d = 256 drops to 16 rows per warp so the fp32 output
// accumulator (rows * 256 / 32 registers per thread) fits. d = 64 with
// block_n 128 (FlashAttention-2's choice) spilled 4-40 bytes under ptxas 13.0;
// block_n 64 with a third stage does not. Neither is timed yet.
constexpr FwdTileConfig fwd_tile_config(int head_dim) {
  switch (head_dim) {
    case 64: return {128, 64, 4, 3, false};
    case 80: return {128, 64, 4, 2, false};
    case 96: return {128, 64, 4, 2, false};
    case 128: return {128, 64, 4, 2, true};
    case 256: return {128, 64, 8, 2, false};
    default: return {0, 0, 0, 0, false};
  }
}

// The instantiated head dims; other multiples of 8 run on the next one up
// with the extra columns zero-filled.
constexpr int fwd_padded_head_dim(int head_dim) {
  return head_dim <= 64 ? 64 : head_dim <= 80 ? 80 : head_dim <= 96 ? 96
       : head_dim <= 128 ? 128 : head_dim <= 256 ? 256 : 0;
}

}  // namespace fastattn::cuda
