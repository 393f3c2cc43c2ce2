// The compressed-mask object behind the opaque fa_block_mask handle: its
// view (what kernels read), where it lives, its counts, and its storage.
#pragma once

#include <cstdint>
#include <vector>

#include "api/block_mask_view.h"
#include "api/status.h"
#include "fastattn/fastattn.h"

struct fa_block_mask {
  fastattn::BlockMaskView view;
  bool on_device = false;
  int device = -1;
  int64_t empty_blocks = 0, full_blocks = 0, partial_blocks = 0;
  uint64_t state_bytes = 0;
  // Host masks: the arrays the view points into.
  std::vector<int32_t> host_cls, host_list, host_count;
  std::vector<uint32_t> host_bits;
  // Device masks: one allocation holding every array.
  void* device_storage = nullptr;
};

namespace fastattn {

inline const BlockMaskView& block_mask_view(const fa_block_mask* m) { return m->view; }

// Shape of the plane a mask covers, from its validated source.
struct BlockMaskShape {
  int64_t batch = 1, heads = 1, seqlen_q = 0, seqlen_k = 0;
  int block_q_log2 = 7, block_k_log2 = 7;
  int64_t blocks_q() const { return (seqlen_q + (int64_t{1} << block_q_log2) - 1) >> block_q_log2; }
  int64_t blocks_k() const { return (seqlen_k + (int64_t{1} << block_k_log2) - 1) >> block_k_log2; }
};

// Checks fa_block_mask_args; `*on_device` says which side the source is on.
Status check_block_mask_args(const fa_block_mask_args& a, BlockMaskShape* shape, bool* dense,
                             bool* on_device);

// Compression on the host from a host source (dense or blocks).
Status build_block_mask_host(const fa_block_mask_args& a, const BlockMaskShape& shape, bool dense,
                             fa_block_mask* out);

// fa_block_mask_create: checks, then compresses on the source's side
// (host here, the GPU through gpu::build_block_mask). *mask is written only
// on success.
Status create_block_mask(const fa_block_mask_args* args, const fa_run_options* options,
                         fa_block_mask** mask);
Status block_mask_info(const fa_block_mask* mask, fa_block_mask_info* info);

}  // namespace fastattn
