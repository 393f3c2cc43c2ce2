// Thin, cached queries of the CUDA runtime used by the backend's host side.
#pragma once

#include <cuda_runtime.h>

namespace fastattn::cuda {

// Number of usable GPUs; 0 when there is no driver or device (cached).
int device_count();

// major * 10 + minor of `device` (cached per device), or 0 if unknown.
int device_capability(int device);

// Makes `device` current for the guard's lifetime and restores the caller's.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

}  // namespace fastattn::cuda
