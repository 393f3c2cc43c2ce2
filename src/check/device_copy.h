// Device copies of the harness's host buffers, so a case can run on
// FA_BACKEND_CUDA through the same public ABI and be judged the same way.
// Without CUDA in the build every operation fails with a message.
#pragma once

#include <cstddef>
#include <string>

namespace fastattn::check {

// True when the build has CUDA and a GPU is present.
bool gpu_present();

class DeviceCopy {
 public:
  // Allocates `bytes` on the current GPU and copies `host` there.
  DeviceCopy(const void* host, size_t bytes);
  ~DeviceCopy();
  DeviceCopy(const DeviceCopy&) = delete;
  DeviceCopy& operator=(const DeviceCopy&) = delete;

  void* data() const { return device_; }
  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  // Waits for the device, then copies the whole buffer back into `host`.
  bool copy_back(void* host);

 private:
  void* device_ = nullptr;
  size_t bytes_ = 0;
  std::string error_;
};

}  // namespace fastattn::check
