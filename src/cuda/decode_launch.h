// Launch side of the CUDA decode path and of the GPU merge of states.
#pragma once

#include <cuda_runtime.h>

#include "api/params.h"
#include "cuda/decode/decode_params.h"
#include "cuda/host/decode_select.h"

namespace fastattn::cuda {

// Resident blocks per SM of the attention kernel `choice` selects (the
// planner's input), from the runtime's occupancy calculator.
cudaError_t decode_blocks_per_sm(DType dtype, const DecodeChoice& choice, int* blocks);

// Clusters of `cluster_size` blocks of that kernel resident at once on the
// current device (cudaOccupancyMaxActiveClusters; sm90 and newer).
cudaError_t decode_max_active_clusters(DType dtype, const DecodeChoice& choice, int cluster_size,
                                       int* clusters);

// Append (when p has new tokens), attention over the splits, merge of the
// splits (when more than one: inside the attention kernel's clusters with
// choice.cluster_merge, else a second kernel over the workspace's partials).
// `workspace` holds choice.workspace_bytes. Allocates nothing, never
// synchronises the host.
cudaError_t launch_decode(const DecodeChoice& choice, const DecodeParams& p, void* workspace,
                          cudaStream_t stream);

// The merge of p.num_splits partial states into p.out (and p.lse). With
// `early` it is launched with programmatic stream serialization (sm90), so
// it is scheduled while the attention kernel's last blocks still run.
cudaError_t launch_decode_merge(const DecodeKernelParams& p, DType dtype, bool early,
                                cudaStream_t stream);

// fa_merge_states for tensors on one GPU.
cudaError_t launch_merge(const MergeParams& p, cudaStream_t stream);

// One file per (dtype, padded head dim) under src/cuda/instances/.
template <typename Elem, int kHeadDim>
cudaError_t run_decode_attention(const DecodeKernelParams& p, const DecodeChoice& choice,
                                 cudaStream_t stream);
template <typename Elem, int kHeadDim>
cudaError_t decode_attention_occupancy(const DecodeChoice& choice, int* blocks);
template <typename Elem, int kHeadDim>
cudaError_t decode_attention_clusters(const DecodeChoice& choice, int cluster_size, int* clusters);

}  // namespace fastattn::cuda
