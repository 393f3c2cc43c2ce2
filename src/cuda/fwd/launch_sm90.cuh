// Launch of one sm90 forward instantiation: the tensor maps of Q, K, V and O
// are encoded on the host for every call (a few microseconds of CPU, no GPU
// work), then travel by value as __grid_constant__ kernel parameters, so
// the launch still allocates nothing and can be captured in a CUDA graph.
// Included only by src/cuda/instances/.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <type_traits>

#include "cuda/flash_params.h"
#include "cuda/fwd/sm90_kernel.cuh"
#include "cuda/host/tma_desc.h"

namespace fastattn::cuda {

using Sm90Kernel = void (*)(FwdParams, Sm90Args);

inline cudaError_t make_sm90_maps(const FwdParams& p, bool bf16, int block_m, int block_n,
                                  Sm90Args* maps) {
  const bool varlen = p.cu_seqlens_q != nullptr;
  const int64_t seqs = varlen ? 1 : p.batch;
  const int64_t heads_kv = p.heads_q / p.group_size;
  // A tensor map has no empty dimension; with no keys no K/V box is read.
  const int64_t rows_q = std::max<int64_t>(p.rows_q, 1), rows_k = std::max<int64_t>(p.rows_k, 1);
  cudaError_t err = make_tensor_map({p.q, p.head_dim, rows_q, p.heads_q, seqs, p.q_row_stride,
                                     p.q_head_stride, p.q_batch_stride},
                                    bf16, block_m, &maps->q);
  if (err == cudaSuccess)
    err = make_tensor_map({p.k, p.head_dim, rows_k, heads_kv, seqs, p.k_row_stride,
                           p.k_head_stride, p.k_batch_stride},
                          bf16, block_n, &maps->k);
  if (err == cudaSuccess)
    err = make_tensor_map({p.v, p.head_dim, rows_k, heads_kv, seqs, p.v_row_stride,
                           p.v_head_stride, p.v_batch_stride},
                          bf16, block_n, &maps->v);
  // O leaves in boxes of one consumer warpgroup's 64 rows.
  if (err == cudaSuccess && !varlen)
    err = make_tensor_map({p.out, p.head_dim, rows_q, p.heads_q, seqs, p.out_row_stride,
                           p.out_head_stride, p.out_batch_stride},
                          bf16, 64, &maps->o);
  return err;
}

// blocks_per_sm blocks per SM, or fewer when there are fewer pairs of query
// tiles (`pairs_total`); and the tile order's section, in (head, sequence)
// pairs, by one of two rules, each measured best for its kernels:
// - wave_quarter (one block of two consumers per SM): the heads whose pairs
//   of query tiles fill a quarter of the grid. A wave of blocks then covers
//   about four sections, and only the heads of the one section that a wave
//   boundary cuts have pairs in two waves; with sections of a quarter of L2
//   (below) at 512-2K queries, a wave boundary cut through a section of up to
//   50 heads in every wave, and those heads' K/V, read again a wave later,
//   came from DRAM a second time.
// - otherwise as many heads as have K and V in a quarter of L2 (a GQA
//   group's heads share theirs), so that the blocks running at once, all
//   within a section or two, find each other's K/V there.
inline cudaError_t persistent_grid(const FwdParams& p, int64_t pairs_total, int blocks_per_sm,
                                   bool wave_quarter, int* blocks, int* section_heads) {
  int device = 0, sms = 0, l2 = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device);
  *blocks = static_cast<int>(std::min<int64_t>(pairs_total, int64_t{sms} * blocks_per_sm));
  const int64_t heads = int64_t{p.heads_q} * p.batch;
  int64_t section = 0;
  if (wave_quarter) {
    const int64_t pairs_per_head = std::max<int64_t>(pairs_total / std::max<int64_t>(heads, 1), 1);
    section = *blocks / 4 / pairs_per_head;
  } else {
    const int64_t kv_bytes =
        std::max<int64_t>(int64_t{p.seqlen_k} * p.head_dim * 4 / p.group_size, 1);
    section = int64_t{l2} / 4 / kv_bytes;
  }
  *section_heads = static_cast<int>(std::clamp<int64_t>(section, 1, std::max<int64_t>(heads, 1)));
  return err;
}

// Launches one kernel compiled with traits T. section_heads > 0 overrides
// the tile order's section (for measurements).
template <class T>
cudaError_t launch_sm90_kernel(Sm90Kernel kernel, const FwdParams& p, cudaStream_t stream,
                               int section_heads) {
  Sm90Args maps{};
  const cudaError_t err = make_sm90_maps(p, std::is_same_v<typename T::Elem, __nv_bfloat16>,
                                         T::kBlockM, T::kBlockN, &maps);
  if (err != cudaSuccess) return err;
  const cudaError_t attr = cudaFuncSetAttribute(
      kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, T::kSmemBytes);
  if (attr != cudaSuccess) return attr;
  // Work comes in pairs of query tiles (see TileOrder).
  const int64_t pairs =
      int64_t{((p.seqlen_q + T::kBlockM - 1) / T::kBlockM + 1) / 2} * p.heads_q * p.batch;
  int blocks = 0;
  constexpr bool kWaveQuarter = T::kConsumers == 2 && T::kBlocksPerSm == 1;
  const cudaError_t grid_err =
      persistent_grid(p, pairs, T::kBlocksPerSm, kWaveQuarter, &blocks, &maps.section_heads);
  if (grid_err != cudaSuccess) return grid_err;
  if (section_heads > 0) maps.section_heads = std::min(section_heads, p.heads_q * p.batch);
  kernel<<<blocks, T::kThreads, T::kSmemBytes, stream>>>(p, maps);
  return cudaGetLastError();
}

// Launches the shipped kernel of one dtype and head dim for p, as the
// instance files do: the tile table's plain kernel (T); where p.variant_tiles
// asks for it, the short-rows shape (TS, sm90_short_rows_tile_config); with a
// softcap or a block mask, their kernels on the variant table's tiles (TV,
// fwd_variant_tile_config). The kernel choice sends block masks elsewhere
// where the key tile is not a power of two (d = 256's 80 keys), so those
// kernels are not compiled there.
template <typename Elem, int kHeadDim>
cudaError_t launch_default_sm90(const FwdParams& p, cudaStream_t stream) {
  using T = DefaultSm90Traits<Elem, kHeadDim>;
  using TV = DefaultSm90VariantTraits<Elem, kHeadDim>;
  using TS = DefaultSm90ShortRowsTraits<Elem, kHeadDim>;
  const bool block = p.block.cls != nullptr, softcap = p.softcap > 0.f;
  if (block) {
    if constexpr (log2_of(TV::kBlockN) >= 0) {
      return launch_sm90_kernel<TV>(softcap ? &flash_fwd_sm90_kernel<TV, true, true>
                                            : &flash_fwd_sm90_kernel<TV, false, true>,
                                    p, stream, 0);
    }
    return cudaErrorNotSupported;
  }
  if (softcap) return launch_sm90_kernel<TV>(&flash_fwd_sm90_kernel<TV, true>, p, stream, 0);
  return p.variant_tiles ? launch_sm90_kernel<TS>(&flash_fwd_sm90_kernel<TS, false>, p, stream, 0)
                         : launch_sm90_kernel<T>(&flash_fwd_sm90_kernel<T, false>, p, stream, 0);
}

}  // namespace fastattn::cuda
