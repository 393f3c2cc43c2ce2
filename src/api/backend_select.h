// The one place that decides which backend runs a call. `fa_*_supported`
// and the entry points both call it, so a support query can never disagree
// with what a run does.
#pragma once

#include <initializer_list>
#include <vector>

#include "api/params.h"
#include "api/status.h"
#include "fastattn/fastattn.h"

namespace fastattn {

enum class Backend { kCpu, kCpuReference, kCuda };

// Picks the backend for `options` (nullptr = defaults). FA_BACKEND_AUTO looks
// at where `probe` (q's data) lives: GPU memory selects CUDA, else the CPU.
Status select_backend(const fa_run_options* options, const void* probe, Backend* out);

struct NamedPointer {
  const char* name;
  const void* ptr;  // nullptr: absent, skipped
};

// Every tensor must be readable by `backend` (host memory for the CPU ones;
// device or managed memory on q's GPU for CUDA). `offsets` are index arrays
// (cu_seqlens): for CUDA, pinned host memory is allowed too.
Status check_placement(Backend backend, std::initializer_list<NamedPointer> tensors,
                       std::initializer_list<NamedPointer> offsets = {});
// The same over a list built at run time (one entry per merged state), so
// that every tensor of the call is checked against one GPU. A braced list
// still picks the overload above ([over.ics.rank]: initializer_list wins).
Status check_placement(Backend backend, const std::vector<NamedPointer>& tensors);

}  // namespace fastattn
