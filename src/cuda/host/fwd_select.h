// Kernel choice for the CUDA forward path: one pure function of the device's
// compute capability, the requested path and the problem. The run and
// fa_attention_supported() both call it, so they cannot disagree; it touches
// no GPU, so it is unit-tested on machines without one.
#pragma once

#include "api/params.h"
#include "api/status.h"
#include "cuda/fwd/tile_config.h"

namespace fastattn::cuda {

struct FwdChoice {
  FwdPath path = FwdPath::kSm80;
  int head_dim = 0;  // the instantiated head dim (the problem's, rounded up)
  // The plain kernel takes other tiles than the tile table's:
  // - sm80 path, every device but 9.0: the variant table's
  //   (fwd_variant_tile_config). There the tile table's d = 64 shape
  //   (128 keys, 81 KiB of shared memory) fits twice in an SM's 228 KiB;
  //   8.0's 164 KiB hold one such block plus its reserved KiB, not two (4
  //   warps where the 64-key shape runs 8), and 8.6 / 8.9 keep the shape
  //   they ran before: the 128-key tile was measured on 9.0 alone.
  // - sm90 path, rows that see about 1024 keys or fewer on average: the
  //   short-rows kernels (sm90_short_rows_tile_config, Sm90Traits::
  //   kDescribed); at d = 64 two blocks per SM of 128 rows x 64 keys
  //   instead of one of 192 x 128.
  bool variant_tiles = false;
};

// `capability` is major * 10 + minor (90 for an H100); `requested_path` an
// fa_cuda_path value; `sm90a_code` whether the build holds sm_90a code.
// FA_CUDA_PATH_AUTO takes the newest family the device runs (sm70-72: sm70,
// sm75: sm75, 9.0: sm90 where the copy engine can read the tensors, else
// sm80 and newer: sm80). A forced family runs on any device at least as new
// as its own architecture, except sm90, which runs on 9.0 alone. On failure
// the status names the argument and what is allowed, and `out` is untouched.
Status choose_fwd_kernel(int capability, int requested_path, const AttentionParams& p,
                         FwdChoice* out, bool sm90a_code);

}  // namespace fastattn::cuda
