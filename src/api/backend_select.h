// The one place that decides which backend runs a call. `fa_*_supported`
// and the entry points both call it, so a support query can never disagree
// with what a run does.
#pragma once

#include "api/params.h"
#include "api/status.h"
#include "fastattn/fastattn.h"

namespace fastattn {

enum class Backend { kCpu, kCpuReference, kCuda };

// Picks the backend for `options` (nullptr = defaults) and the problem's
// dtype; fails with a message when the choice cannot run it.
Status select_backend(const fa_run_options* options, DType dtype, Backend* out);

}  // namespace fastattn
