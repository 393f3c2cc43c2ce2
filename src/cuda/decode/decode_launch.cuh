// Instantiation helpers for the decode attention kernel: one
// (dtype, head dim) per translation unit, every row count in it.
#pragma once

#include "cuda/decode/decode_kernel.cuh"
#include "cuda/decode/decode_mma_kernel.cuh"
#include "cuda/decode_launch.h"

namespace fastattn::cuda {

// The tensor-core kernel's shapes: a 2-stage ring per warp (8 KB a stage at
// D = 128) and 8 warps (one block per SM) or 4 (two per SM), as
// choose_decode_warps and settle_decode_warps decide; measured on the H100
// beside 3 stages and 2 or 3 blocks per SM (bench/cuda/decode_ablation.cu).
template <typename Elem, int kHeadDim, int kWarps>
using DecodeMmaConfig = DecodeMmaTraits<Elem, kHeadDim, kWarps, 2>;

template <typename Traits>
cudaError_t allow_decode_smem(int bytes = Traits::kSmemBytes) {
  if (bytes <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(decode_mma_kernel<Traits>,
                              cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}


// The planner counts a split's keys in rounds of kDecodeMmaTileKeys-key tiles.
static_assert(DecodeMmaConfig<__half, 128, 8>::kTileKeys == kDecodeMmaTileKeys,
              "decode_select.h's tile size must match the kernel's");

// A launch of the tensor-core kernel over `grid` in clusters of
// `cluster_size` blocks along x; `attribute` (the caller's) holds the
// cluster shape the config points to.
template <typename Traits>
cudaLaunchConfig_t cluster_config(dim3 grid, int cluster_size, cudaStream_t stream,
                                  cudaLaunchAttribute* attribute) {
  attribute->id = cudaLaunchAttributeClusterDimension;
  attribute->val.clusterDim.x = static_cast<unsigned>(cluster_size);
  attribute->val.clusterDim.y = 1;
  attribute->val.clusterDim.z = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = dim3(Traits::kThreads);
  config.dynamicSmemBytes = Traits::kSmemBytes;
  config.stream = stream;
  config.attrs = attribute;
  config.numAttrs = 1;
  return config;
}

template <typename Traits>
cudaError_t launch_decode_mma(const DecodeKernelParams& p, const DecodeChoice& c,
                              cudaStream_t stream) {
  // Past the kernel's own footprint the shared memory stays unused: it only
  // keeps a second block off the SM (c.min_block_smem).
  const int smem = Traits::kSmemBytes > c.min_block_smem ? Traits::kSmemBytes : c.min_block_smem;
  if (const cudaError_t err = allow_decode_smem<Traits>(smem); err != cudaSuccess) return err;
  const dim3 grid(c.num_splits * c.row_chunks, p.heads_kv, p.batch);
  if (!c.cluster_merge) {
    decode_mma_kernel<Traits><<<grid, Traits::kThreads, smem, stream>>>(p);
    return cudaGetLastError();
  }
  // The splits of one (sequence, KV head, row chunk) as one cluster.
  cudaLaunchAttribute cluster;
  const cudaLaunchConfig_t config = cluster_config<Traits>(grid, c.num_splits, stream, &cluster);
  return cudaLaunchKernelEx(&config, decode_mma_kernel<Traits>, p);
}

template <typename Traits>
cudaError_t occupancy_mma(int* blocks) {
  if (const cudaError_t err = allow_decode_smem<Traits>(); err != cudaSuccess) return err;
  return cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, decode_mma_kernel<Traits>,
                                                       Traits::kThreads, Traits::kSmemBytes);
}

template <typename Traits>
cudaError_t clusters_mma(int cluster_size, int* clusters) {
  if (const cudaError_t err = allow_decode_smem<Traits>(); err != cudaSuccess) return err;
  cudaLaunchAttribute cluster;
  const cudaLaunchConfig_t config =
      cluster_config<Traits>(dim3(static_cast<unsigned>(cluster_size)), cluster_size, nullptr,
                             &cluster);
  return cudaOccupancyMaxActiveClusters(clusters, decode_mma_kernel<Traits>, &config);
}

template <typename Elem, int kHeadDim, int kRows>
cudaError_t launch_decode_rows(const DecodeKernelParams& p, const DecodeChoice& c,
                               cudaStream_t stream) {
  using Traits = DecodeTraits<Elem, kHeadDim, kRows>;
  // Above 48 KiB of dynamic shared memory a kernel must opt in (a host-side
  // attribute write, per device, so it is repeated on every launch).
  if (Traits::kSmemBytes > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(
        decode_split_kernel<Traits>, cudaFuncAttributeMaxDynamicSharedMemorySize,
        Traits::kSmemBytes);
    if (err != cudaSuccess) return err;
  }
  const dim3 grid(c.num_splits, p.heads_kv * c.row_chunks, p.batch);
  decode_split_kernel<Traits><<<grid, Traits::kThreads, Traits::kSmemBytes, stream>>>(p);
  return cudaGetLastError();
}

template <typename Elem, int kHeadDim>
cudaError_t launch_decode_attention(const DecodeKernelParams& p, const DecodeChoice& c,
                                    cudaStream_t stream) {
  if (c.tensor_cores) {
    if constexpr (kHeadDim < 256) {  // 8 warps' rings of 16 KB stages would not fit at D = 256
      if (c.warps == 8) return launch_decode_mma<DecodeMmaConfig<Elem, kHeadDim, 8>>(p, c, stream);
    }
    return launch_decode_mma<DecodeMmaConfig<Elem, kHeadDim, 4>>(p, c, stream);
  }
  switch (c.rows) {
    case 1: return launch_decode_rows<Elem, kHeadDim, 1>(p, c, stream);
    case 2: return launch_decode_rows<Elem, kHeadDim, 2>(p, c, stream);
    case 4: return launch_decode_rows<Elem, kHeadDim, 4>(p, c, stream);
    case 8: return launch_decode_rows<Elem, kHeadDim, 8>(p, c, stream);
    default: return cudaErrorInvalidValue;
  }
}

template <typename Elem, int kHeadDim>
cudaError_t decode_clusters(const DecodeChoice& c, int cluster_size, int* clusters) {
  if constexpr (kHeadDim < 256) {
    if (c.warps == 8) {
      return clusters_mma<DecodeMmaConfig<Elem, kHeadDim, 8>>(cluster_size, clusters);
    }
  }
  return clusters_mma<DecodeMmaConfig<Elem, kHeadDim, 4>>(cluster_size, clusters);
}

template <typename Elem, int kHeadDim, int kRows>
cudaError_t occupancy_rows(int* blocks) {
  using Traits = DecodeTraits<Elem, kHeadDim, kRows>;
  if (Traits::kSmemBytes > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(
        decode_split_kernel<Traits>, cudaFuncAttributeMaxDynamicSharedMemorySize,
        Traits::kSmemBytes);
    if (err != cudaSuccess) return err;
  }
  return cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, decode_split_kernel<Traits>,
                                                       Traits::kThreads, Traits::kSmemBytes);
}

template <typename Elem, int kHeadDim>
cudaError_t decode_occupancy(const DecodeChoice& c, int* blocks) {
  if (c.tensor_cores) {
    if constexpr (kHeadDim < 256) {
      if (c.warps == 8) return occupancy_mma<DecodeMmaConfig<Elem, kHeadDim, 8>>(blocks);
    }
    return occupancy_mma<DecodeMmaConfig<Elem, kHeadDim, 4>>(blocks);
  }
  switch (c.rows) {
    case 1: return occupancy_rows<Elem, kHeadDim, 1>(blocks);
    case 2: return occupancy_rows<Elem, kHeadDim, 2>(blocks);
    case 4: return occupancy_rows<Elem, kHeadDim, 4>(blocks);
    case 8: return occupancy_rows<Elem, kHeadDim, 8>(blocks);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace fastattn::cuda

// Defines the three entry points of one (dtype, head dim).
#define FASTATTN_DECODE_INSTANCE(ELEM, HEAD_DIM)                                              \
  namespace fastattn::cuda {                                                                  \
  template <>                                                                                 \
  cudaError_t run_decode_attention<ELEM, HEAD_DIM>(const DecodeKernelParams& p,               \
                                                   const DecodeChoice& c, cudaStream_t s) {   \
    return launch_decode_attention<ELEM, HEAD_DIM>(p, c, s);                                  \
  }                                                                                           \
  template <>                                                                                 \
  cudaError_t decode_attention_occupancy<ELEM, HEAD_DIM>(const DecodeChoice& c, int* blocks) { \
    return decode_occupancy<ELEM, HEAD_DIM>(c, blocks);                                       \
  }                                                                                           \
  template <>                                                                                 \
  cudaError_t decode_attention_clusters<ELEM, HEAD_DIM>(const DecodeChoice& c, int size,       \
                                                        int* clusters) {                      \
    return decode_clusters<ELEM, HEAD_DIM>(c, size, clusters);                                \
  }                                                                                           \
  }
