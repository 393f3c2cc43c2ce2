// The CUDA backend behind the API layer's gpu:: interface.
#include <cuda_runtime.h>

#include <string>

#include "api/gpu_bridge.h"
#include "cuda/flash_launch.h"
#include "cuda/host/fwd_select.h"
#include "cuda/host/runtime.h"

namespace fastattn::gpu {
namespace {

Status device_error(const char* what, cudaError_t err) {
  return {FA_STATUS_BACKEND_ERROR,
          std::string(what) + ": " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err)};
}

int requested_path(const fa_run_options* options) { return options ? options->cuda_path : 0; }

// The GPU that holds q (the API checked every tensor is on it).
Status device_of(const AttentionParams& p, int* device) {
  const Location loc = locate(p.q);
  if (loc.kind == MemoryKind::kDevice || loc.kind == MemoryKind::kManaged) {
    *device = loc.device >= 0 ? loc.device : 0;
    return Status::ok();
  }
  if (cudaGetDevice(device) != cudaSuccess) return device_error("cudaGetDevice", cudaGetLastError());
  return Status::ok();
}

Status choose(const AttentionParams& p, const fa_run_options* options, int* device,
              cuda::FwdChoice* choice) {
  FA_RETURN_IF_ERROR(device_of(p, device));
  return cuda::choose_fwd_kernel(cuda::device_capability(*device), requested_path(options), p,
                                 choice);
}

}  // namespace

bool available() { return cuda::device_count() > 0; }

Location locate(const void* ptr) {
  Location loc;
  if (ptr == nullptr || !available()) return loc;
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, ptr) != cudaSuccess) {
    cudaGetLastError();  // not a pointer the runtime knows: plain host memory
    return loc;
  }
  switch (attr.type) {
    case cudaMemoryTypeDevice: loc.kind = MemoryKind::kDevice; break;
    case cudaMemoryTypeManaged: loc.kind = MemoryKind::kManaged; break;
    case cudaMemoryTypeHost: loc.kind = MemoryKind::kPinnedHost; break;
    default: loc.kind = MemoryKind::kPageableHost; break;
  }
  loc.device = attr.device;
  return loc;
}

Status check_forward(const AttentionParams& p, const fa_run_options* options) {
  int device = 0;
  cuda::FwdChoice choice;
  return choose(p, options, &device, &choice);
}

Status run_forward(const AttentionParams& p, const fa_run_options* options) {
  int device = 0;
  cuda::FwdChoice choice;
  FA_RETURN_IF_ERROR(choose(p, options, &device, &choice));
  cuda::DeviceGuard guard(device);
  auto stream = static_cast<cudaStream_t>(options ? options->cuda_stream : nullptr);
  const cudaError_t err = cuda::launch_forward(choice, p, stream);
  if (err != cudaSuccess) return device_error("attention forward launch", err);
  return Status::ok();
}

}  // namespace fastattn::gpu
