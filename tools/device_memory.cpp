#include "device_memory.h"

#include "check/device_copy.h"

#include <chrono>
#include <stdexcept>

#if defined(FASTATTN_WITH_CUDA)
#include <cuda_runtime.h>
#endif

namespace fastattn::tools {

namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

#if defined(FASTATTN_WITH_CUDA)
void cuda_check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("CUDA ") + what + ": " + cudaGetErrorString(err));
  }
}
// Larger than the L2 of every current GPU (H100: 50 MB, B200: 126 MB).
constexpr size_t kL2FlushBytes = size_t{256} << 20;
#else
[[noreturn]] void no_cuda() {
  throw std::runtime_error("this fastattn program was built without the CUDA runtime");
}
#endif

}  // namespace

bool gpu_buffers_built() {
#if defined(FASTATTN_WITH_CUDA)
  return true;
#else
  return false;
#endif
}

std::string gpu_name() {
#if defined(FASTATTN_WITH_CUDA)
  int device = 0;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&device) != cudaSuccess) return "";
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) return "";
  return prop.name;
#else
  return "";
#endif
}

device_mirror::device_mirror(bool on_gpu, void* host, int64_t bytes) : host_(host) {
  if (!on_gpu) return;
  copy_ = std::make_unique<check::DeviceCopy>(host, static_cast<size_t>(bytes));
  if (!copy_->ok()) throw std::runtime_error(copy_->error());
}

device_mirror::~device_mirror() = default;

void* device_mirror::data() const { return copy_ ? copy_->data() : host_; }

void device_mirror::download() {
  if (copy_ && !copy_->copy_back(host_)) throw std::runtime_error(copy_->error());
}

call_timer::call_timer(bool on_gpu) : on_gpu_(on_gpu) {
  if (!on_gpu) return;
#if defined(FASTATTN_WITH_CUDA)
  cudaEvent_t a, b;
  cuda_check(cudaEventCreate(&a), "cudaEventCreate");
  start_event_ = a;
  cuda_check(cudaEventCreate(&b), "cudaEventCreate");
  stop_event_ = b;
  cuda_check(cudaMalloc(&l2_scratch_, kL2FlushBytes), "cudaMalloc (L2 flush buffer)");
#else
  no_cuda();
#endif
}

call_timer::~call_timer() {
#if defined(FASTATTN_WITH_CUDA)
  if (start_event_ != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(start_event_));
  if (stop_event_ != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(stop_event_));
  if (l2_scratch_ != nullptr) cudaFree(l2_scratch_);
#endif
}

void call_timer::start() {
  if (!on_gpu_) {
    start_ns_ = now_ns();
    return;
  }
#if defined(FASTATTN_WITH_CUDA)
  cuda_check(cudaMemsetAsync(l2_scratch_, 0, kL2FlushBytes, nullptr), "cudaMemsetAsync");
  cuda_check(cudaEventRecord(static_cast<cudaEvent_t>(start_event_), nullptr), "cudaEventRecord");
#endif
}

double call_timer::stop_ms() {
  if (!on_gpu_) return static_cast<double>(now_ns() - start_ns_) * 1e-6;
#if defined(FASTATTN_WITH_CUDA)
  auto stop = static_cast<cudaEvent_t>(stop_event_);
  cuda_check(cudaEventRecord(stop, nullptr), "cudaEventRecord");
  cuda_check(cudaEventSynchronize(stop), "cudaEventSynchronize");
  float ms = 0.0f;
  cuda_check(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start_event_), stop),
             "cudaEventElapsedTime");
  return ms;
#else
  return 0.0;
#endif
}

}  // namespace fastattn::tools
