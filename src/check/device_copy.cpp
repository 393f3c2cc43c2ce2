#include "check/device_copy.h"

#ifdef FASTATTN_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace fastattn::check {

#ifdef FASTATTN_WITH_CUDA

bool gpu_present() {
  static const bool present = [] {
    int n = 0;
    const bool ok = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
    cudaGetLastError();
    return ok;
  }();
  return present;
}

DeviceCopy::DeviceCopy(const void* host, size_t bytes) : bytes_(bytes) {
  cudaError_t e = cudaMalloc(&device_, bytes > 0 ? bytes : 1);
  if (e == cudaSuccess && bytes > 0) e = cudaMemcpy(device_, host, bytes, cudaMemcpyHostToDevice);
  if (e != cudaSuccess) error_ = std::string("device copy: ") + cudaGetErrorString(e);
}

DeviceCopy::~DeviceCopy() {
  if (device_ != nullptr) cudaFree(device_);
}

bool DeviceCopy::copy_back(void* host) {
  cudaError_t e = cudaDeviceSynchronize();
  if (e == cudaSuccess) e = cudaMemcpy(host, device_, bytes_, cudaMemcpyDeviceToHost);
  if (e != cudaSuccess) error_ = std::string("copy back: ") + cudaGetErrorString(e);
  return e == cudaSuccess;
}

#else

bool gpu_present() { return false; }
DeviceCopy::DeviceCopy(const void*, size_t bytes) : bytes_(bytes), error_("built without CUDA") {}
DeviceCopy::~DeviceCopy() = default;
bool DeviceCopy::copy_back(void*) { return false; }

#endif

}  // namespace fastattn::check
