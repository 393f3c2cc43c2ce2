#include "cuda/host/runtime.h"

#include <array>
#include <atomic>

namespace fastattn::cuda {
namespace {
constexpr int kMaxDevices = 64;
std::array<std::atomic<int>, kMaxDevices> capability_cache{};  // 0 = not read yet
}  // namespace

int device_count() {
  static const int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();  // no driver or no device: clear the error, report none
      return 0;
    }
    return n;
  }();
  return count;
}

int device_capability(int device) {
  if (device < 0 || device >= kMaxDevices) return 0;
  int cached = capability_cache[device].load(std::memory_order_relaxed);
  if (cached != 0) return cached;
  int major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  cached = major * 10 + minor;
  capability_cache[device].store(cached, std::memory_order_relaxed);
  return cached;
}

DeviceGuard::DeviceGuard(int device) {
  int current = -1;
  if (device < 0 || cudaGetDevice(&current) != cudaSuccess || current == device) return;
  if (cudaSetDevice(device) == cudaSuccess) previous_ = current;
}

DeviceGuard::~DeviceGuard() {
  if (previous_ >= 0) cudaSetDevice(previous_);
}

}  // namespace fastattn::cuda
