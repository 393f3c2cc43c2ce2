#include "api/backend_select.h"

#include <sstream>

namespace fastattn {

Status select_backend(const fa_run_options* options, DType dtype, Backend* out) {
  (void)dtype;  // every CPU backend takes float32, float16 and bfloat16
  const fa_backend requested = options ? options->backend : FA_BACKEND_AUTO;
  if (options && options->num_threads < 0) {
    std::ostringstream m;
    m << "options.num_threads: " << options->num_threads << "; allowed: 0 (all cores) or more";
    return Status::invalid(m.str());
  }
  if (options && options->cuda_path != 0) {
    return Status::invalid("options.cuda_path: must be 0 (automatic) in this build");
  }
  switch (requested) {
    case FA_BACKEND_AUTO:  // no GPU backend is built in yet: the data is on the host
    case FA_BACKEND_CPU:
      *out = Backend::kCpu;
      return Status::ok();
    case FA_BACKEND_CPU_REFERENCE:
      *out = Backend::kCpuReference;
      return Status::ok();
    case FA_BACKEND_CUDA:
      return {FA_STATUS_NO_DEVICE,
              "options.backend: FA_BACKEND_CUDA is not built into this library; "
              "available: FA_BACKEND_AUTO, FA_BACKEND_CPU, FA_BACKEND_CPU_REFERENCE"};
  }
  std::ostringstream m;
  m << "options.backend: " << static_cast<int>(requested)
    << " is unknown; allowed: FA_BACKEND_AUTO, FA_BACKEND_CPU, FA_BACKEND_CPU_REFERENCE, "
       "FA_BACKEND_CUDA";
  return Status::invalid(m.str());
}

}  // namespace fastattn
