// Where the benchmark's tensors live while the library runs on them.
// On the CPU the host buffers are used as they are; for the CUDA backend they
// are mirrored into GPU memory and timed with CUDA events (host clocks would
// measure the launch, not the kernel).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace fastattn::check {
class DeviceCopy;
}

namespace fastattn::tools {

// True when this program was built with the CUDA backend.
bool gpu_buffers_built();
// "NVIDIA H100 80GB HBM3" or "" when there is none.
std::string gpu_name();

// Throws std::runtime_error on CUDA failures.
class device_mirror {
 public:
  // on_gpu: allocate bytes on the GPU and copy host there; else alias host.
  device_mirror(bool on_gpu, void* host, int64_t bytes);
  ~device_mirror();
  device_mirror(const device_mirror&) = delete;
  device_mirror& operator=(const device_mirror&) = delete;

  void* data() const;
  // Copies the device contents back into the host buffer (no-op on the CPU).
  void download();

 private:
  void* host_;
  std::unique_ptr<check::DeviceCopy> copy_;  // the harness's device copy; null on the CPU
};

// Times one call: steady_clock on the CPU, events on the default stream on
// the GPU. Before each GPU measurement a large memset evicts the L2, so that
// inputs that fit in it are not served from cache.
class call_timer {
 public:
  explicit call_timer(bool on_gpu);
  ~call_timer();
  call_timer(const call_timer&) = delete;
  call_timer& operator=(const call_timer&) = delete;

  void start();
  double stop_ms();

 private:
  bool on_gpu_;
  int64_t start_ns_ = 0;
  void* start_event_ = nullptr;
  void* stop_event_ = nullptr;
  void* l2_scratch_ = nullptr;
};

}  // namespace fastattn::tools
