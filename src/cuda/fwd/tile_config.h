// Forward kernel families and their tile shapes per head dim, read by host
// dispatch and by the kernels (block size, __launch_bounds__, shared memory).
// Each warp owns block_m / warps query rows and sweeps all block_n keys.
#pragma once

namespace fastattn::cuda {

// The kernel families, named by the oldest architecture each runs on. Values
// equal the fa_cuda_path constants of the C API.
enum class FwdPath {
  kSm70 = 70,  // mma.sync m8n8k4, plain loads through registers (Volta)
  kSm75 = 75,  // mma.sync m16n8k8, ldmatrix, register-staged loads (Turing)
  kSm80 = 80,  // mma.sync m16n8k16, ldmatrix, cp.async ring (Ampere and newer)
  kSm90 = 90,  // wgmma, TMA, warp-specialized (Hopper: sm90a code, 9.0 only)
};

struct FwdTileConfig {
  int block_m;  // query rows per block (Br)
  int block_n;  // keys per mainloop step (Bc)
  int warps;
  // sm80: K/V shared-memory buffers (cp.async pipeline depth); sm90: depth of
  // the TMA ring. sm75 and sm70 keep one K and one V buffer and stage the
  // next tile in registers: 1.
  int stages;
  // Rescale O after P is built, behind a warp-uniform branch, instead of
  // row by row before the exponentials. Only where registers demand it: the
  // branch bounds live ranges (without it d = 128 spilled 4 bytes, 36 with
  // softcap, and d = 64's 128-key tiles 44-100) but costs the overlap of
  // exponentials with P V, about 3% on an H100 (interleaved A/B runs of the
  // whole grid).
  bool rescale_after_p;
  // sm90: blocks resident per SM (the persistent grid's blocks per SM); two
  // split the registers and shared memory, so each block's start and end
  // overlap the other's mainloop.
  int blocks_per_sm = 1;
};

// sm80: 32 rows per warp for d <= 128: each K/V fragment read from shared
// memory feeds two MMAs. d = 256 drops to 16 rows per warp so the fp32 output
// accumulator (rows * 256 / 32 registers per thread) fits. d = 64 takes
// 128-key tiles (FlashAttention-2's choice): against 64 keys and a third
// stage, 2-8% faster on every row of the H100 grid (interleaved A/B runs):
// each Q fragment read, barrier and row reduction covers twice the keys. Its
// 128 score floats a thread fit beside O only with the rescale after P (see
// below); its softcap and block-mask variants keep 64 keys
// (fwd_variant_tile_config), and so does its plain kernel off compute
// capability 9.0, where two blocks of the 128-key shape do not fit an SM's
// shared memory or were never measured (FwdChoice::variant_tiles).
constexpr FwdTileConfig sm80_tile_config(int head_dim) {
  switch (head_dim) {
    case 64: return {128, 128, 4, 2, true};
    case 80: return {128, 64, 4, 2, false};
    case 96: return {128, 64, 4, 2, false};
    case 128: return {128, 64, 4, 2, true};
    case 256: return {128, 64, 8, 2, false};
    default: return {0, 0, 0, 0, false};
  }
}

// sm75, sized for a T4 (40 SMs, 64 KiB of shared memory and 64K registers per
// SM). The staged K/V tile costs block_n * d * 2 / threads bytes of registers
// on top of the sm80 budget, so d > 64 keeps 16 rows per warp. d = 64: two
// 32 KiB blocks of 4 warps per SM; d = 80-128: one 64 KiB block of 8 warps
// (255 registers each fill the 64K); d = 256: one 64 KiB block of 4 warps,
// 16 keys a step (32 spilled: 128 accumulator registers plus 32 staged).
constexpr FwdTileConfig sm75_tile_config(int head_dim) {
  switch (head_dim) {
    case 64: return {128, 64, 4, 1, false};
    case 80: return {128, 64, 8, 1, false};
    case 96: return {128, 64, 8, 1, false};
    case 128: return {128, 64, 8, 1, false};
    case 256: return {64, 16, 4, 1, false};
    default: return {0, 0, 0, 0, false};
  }
}

// sm70, sized for a V100 (80 SMs, 96 KiB of shared memory and 64K registers
// per SM). Warps own 16 rows (see m8n8k4_kernel.cuh for why), so block_m is
// 16 * warps; d = 256 steps by 16 keys for the same reason as on sm75.
constexpr FwdTileConfig sm70_tile_config(int head_dim) {
  switch (head_dim) {
    case 64: return {128, 64, 8, 1, false};
    case 80: return {128, 64, 8, 1, false};
    case 96: return {128, 64, 8, 1, false};
    case 128: return {128, 64, 8, 1, false};
    case 256: return {64, 16, 4, 1, false};
    default: return {0, 0, 0, 0, false};
  }
}

// sm90: a consumer warpgroup per 64 rows and one producer warp(group);
// shared memory (227 KiB a block) bounds block_n and the ring's depth: Q
// takes block_m * 128 bytes per 64 columns, each stage a K and a V tile.
// d = 64 runs three consumers (192 rows): its softmax per score is as long
// as its GEMMs, so two warpgroups cannot keep the tensor cores fed.
constexpr FwdTileConfig sm90_tile_config(int head_dim) {
  switch (head_dim) {
    case 64: return {192, 128, 16, 3, false};
    case 96: return {128, 128, 12, 2, false};
    case 128: return {128, 128, 12, 2, false};
    case 256: return {128, 80, 12, 2, false};
    default: return {0, 0, 0, 0, false};
  }
}

// sm90 d = 64 where rows see fewer than about 1024 keys (sm90_short_rows in
// host/fwd_select.cpp): a query tile has a handful of key tiles, and a
// block's start and end (the first Q K^T alone, the last P V, the epilogue)
// weigh as much as its mainloop. Two blocks per SM of 128 rows x 64 keys
// overlap one's start and end with the other's mainloop: +5-12% on those
// rows of the H100 grid against one block of 128 x 128 keys. 104 registers
// per consumer thread leave no room for a second tile's scores, so these
// run without the intra-warpgroup overlap.
// The other head dims keep their tiles there (the short-rows kernels differ
// in how a tile is set up, Sm90Traits::kDescribed).
constexpr FwdTileConfig sm90_short_rows_tile_config(int head_dim) {
  return head_dim == 64 ? FwdTileConfig{128, 64, 12, 3, false, 2} : sm90_tile_config(head_dim);
}

constexpr FwdTileConfig fwd_tile_config(FwdPath path, int head_dim) {
  return path == FwdPath::kSm90   ? sm90_tile_config(head_dim)
         : path == FwdPath::kSm80 ? sm80_tile_config(head_dim)
         : path == FwdPath::kSm75 ? sm75_tile_config(head_dim)
                                  : sm70_tile_config(head_dim);
}

// The softcap and block-mask kernels' tiles: the plain kernels' except for
//   sm80 d = 64, which keeps 64-key tiles with the third stage that suits
//     them: block-mask key tiles must tile the mask's blocks (64 keys and
//     up), and the softcap's registers do not fit beside 128 score floats
//     (4-88 bytes spilled, by target);
//   sm90 d = 64, which keeps two consumers (128 rows): block-mask query
//     tiles must tile the mask's blocks (powers of two);
//   sm75 d = 128, which steps by 32 keys: at 64, S and the staged tile beside
//     the block mask's state spilled 4-24 bytes on every target (about 200
//     registers at 32; the softcap kernel, which did not spill, shares the
//     shape so that one table row serves both).
constexpr FwdTileConfig fwd_variant_tile_config(FwdPath path, int head_dim) {
  return path == FwdPath::kSm90 && head_dim == 64    ? FwdTileConfig{128, 128, 12, 3, false}
         : path == FwdPath::kSm80 && head_dim == 64  ? FwdTileConfig{128, 64, 4, 3, false}
         : path == FwdPath::kSm75 && head_dim == 128 ? FwdTileConfig{128, 32, 8, 1, false}
                                                     : fwd_tile_config(path, head_dim);
}

// The instantiated head dims; other multiples of 8 run on the next one up
// with the extra columns zero-filled. sm90 has no 80: the copy engine
// zero-fills the columns past the real head dim at no cost.
constexpr int fwd_padded_head_dim(int head_dim) {
  return head_dim <= 64 ? 64 : head_dim <= 80 ? 80 : head_dim <= 96 ? 96
       : head_dim <= 128 ? 128 : head_dim <= 256 ? 256 : 0;
}
constexpr int fwd_padded_head_dim(FwdPath path, int head_dim) {
  return path == FwdPath::kSm90 && head_dim > 64 && head_dim <= 80 ? 96
                                                                    : fwd_padded_head_dim(head_dim);
}

}  // namespace fastattn::cuda
