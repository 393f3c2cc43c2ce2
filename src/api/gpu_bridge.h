// What the API layer asks of the CUDA backend. Implemented in src/cuda/host/
// when the library is built with CUDA, and by gpu_bridge_stub.cpp otherwise,
// so the API layer has no #ifdef.
#pragma once

#include "api/block_mask.h"
#include "api/params.h"
#include "api/status.h"
#include "fastattn/fastattn.h"

namespace fastattn::gpu {

// Where a pointer's memory lives, as far as a backend can read it.
enum class MemoryKind {
  kPageableHost,  // plain host memory (or any pointer when no GPU is usable)
  kPinnedHost,    // page-locked host memory: both sides can read it
  kDevice,        // one GPU's memory
  kManaged,       // unified memory: both sides can read it
};

struct Location {
  MemoryKind kind = MemoryKind::kPageableHost;
  int device = -1;  // kDevice / kManaged: the owning GPU
};

// True when CUDA is built in and at least one GPU can be used.
bool available();

// The location of `ptr`; kPageableHost when no GPU is usable.
Location locate(const void* ptr);

// Whether the CUDA forward path would run `p` with `options` (the same
// kernel-choice function the run uses). Reads nothing on the GPU.
Status check_forward(const AttentionParams& p, const fa_run_options* options);

// Runs `p` on options->cuda_stream: no allocation, no host synchronisation.
Status run_forward(const AttentionParams& p, const fa_run_options* options);

// Decode planning: fills plan->num_splits and plan->workspace_bytes for the
// GPU that holds q (p.num_splits > 0 forces the split count). No GPU work.
Status plan_decode(const DecodeParams& p, const fa_run_options* options, fa_decode_plan* plan);

// Runs a planned decode step on options->cuda_stream (append, attention,
// merge of the splits); the API layer has checked the plan matches `p` and
// the workspace is large enough. No allocation, no host synchronisation.
Status run_decode(const DecodeParams& p, const fa_decode_plan& plan, void* workspace,
                  const fa_run_options* options);

// fa_merge_states on the GPU, on options->cuda_stream.
Status run_merge(const MergeParams& p, const fa_run_options* options);

// fa_block_mask_create from a device source (checked, on GPU `device`):
// compresses it on options->cuda_stream into one device allocation owned by
// `out` (view, counts, state_bytes, on_device, device set). Synchronises the
// stream once, to size the allocation.
Status build_block_mask(const fa_block_mask_args& args, const BlockMaskShape& shape, bool dense,
                        int device, const fa_run_options* options, fa_block_mask* out);
// Frees a device mask's storage.
void free_block_mask(fa_block_mask* mask);

}  // namespace fastattn::gpu
