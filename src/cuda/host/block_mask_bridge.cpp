// gpu::build_block_mask / free_block_mask: a device source compressed on its
// GPU (cuda/mask/block_mask_compress) into a mask object owning the result.
#include <cuda_runtime.h>

#include "api/gpu_bridge.h"
#include "cuda/host/runtime.h"
#include "cuda/mask/block_mask_compress.h"

namespace fastattn::gpu {

Status build_block_mask(const fa_block_mask_args& args, const BlockMaskShape& shape, bool dense,
                        int device, const fa_run_options* options, fa_block_mask* out) {
  const fa_tensor& t = dense ? args.dense : args.blocks;
  cuda::BlockMaskSource src;
  src.data = static_cast<const uint8_t*>(t.data);
  src.stride_b = t.strides[0];
  src.stride_h = t.strides[1];
  src.stride_row = t.strides[2];
  src.dense = dense;
  cuda::DeviceGuard guard(device);
  cuda::CompressedBlockMask m;
  FA_RETURN_IF_ERROR(cuda::compress_block_mask(
      src, shape, static_cast<cudaStream_t>(options ? options->cuda_stream : nullptr), &m));

  BlockMaskView& v = out->view;
  v.batch = shape.batch;
  v.heads = shape.heads;
  v.seqlen_q = shape.seqlen_q;
  v.seqlen_k = shape.seqlen_k;
  v.block_q_log2 = shape.block_q_log2;
  v.block_k_log2 = shape.block_k_log2;
  v.blocks_q = shape.blocks_q();
  v.blocks_k = shape.blocks_k();
  v.cls = m.cls;
  v.kv_list = m.kv_list;
  v.kv_count = m.kv_count;
  v.bits = m.bits;
  out->on_device = true;
  out->device = device;
  out->empty_blocks = m.empty_blocks;
  out->full_blocks = m.full_blocks;
  out->partial_blocks = m.partial_blocks;
  out->state_bytes = m.state_bytes;
  out->device_storage = m.storage;
  return Status::ok();
}

void free_block_mask(fa_block_mask* mask) {
  if (mask == nullptr || mask->device_storage == nullptr) return;
  cuda::DeviceGuard guard(mask->device);
  if (cudaFree(mask->device_storage) != cudaSuccess) cudaGetLastError();  // nothing to report to
  mask->device_storage = nullptr;
}

}  // namespace fastattn::gpu
