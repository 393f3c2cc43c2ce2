// The CUDA backend's interface in a library built without CUDA: no GPU is
// ever available, so select_backend never routes a call here.
#include "api/gpu_bridge.h"

namespace fastattn::gpu {
namespace {
Status not_built() {
  return {FA_STATUS_NO_DEVICE, "options.backend: this library was built without CUDA"};
}
}  // namespace

bool available() { return false; }
Location locate(const void*) { return {}; }
Status check_forward(const AttentionParams&, const fa_run_options*) { return not_built(); }
Status run_forward(const AttentionParams&, const fa_run_options*) { return not_built(); }
Status plan_decode(const DecodeParams&, const fa_run_options*, fa_decode_plan*) {
  return not_built();
}
Status run_decode(const DecodeParams&, const fa_decode_plan&, void*, const fa_run_options*) {
  return not_built();
}
Status run_merge(const MergeParams&, const fa_run_options*) { return not_built(); }
Status build_block_mask(const fa_block_mask_args&, const BlockMaskShape&, bool, int,
                        const fa_run_options*, fa_block_mask*) {
  return not_built();
}
void free_block_mask(fa_block_mask*) {}

}  // namespace fastattn::gpu
