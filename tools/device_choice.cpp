#include "device_choice.h"

#include <stdexcept>

#include "device_memory.h"

namespace fastattn::tools {

fa_backend resolve_device(const std::string& name) {
  if (name == "cpu") return FA_BACKEND_CPU;
  if (name == "cpu-reference") return FA_BACKEND_CPU_REFERENCE;
  const bool cuda_ready = fa_backend_available(FA_BACKEND_CUDA) == 1;
  if (name == "auto") return cuda_ready ? FA_BACKEND_CUDA : FA_BACKEND_CPU;
  if (name == "cuda") {
    if (!cuda_ready) {
      throw std::runtime_error(
          "--device cuda: the CUDA backend is not available (library built without CUDA, or no GPU)");
    }
    return FA_BACKEND_CUDA;
  }
  throw std::runtime_error("--device " + name + ": not one of auto, cpu, cpu-reference, cuda");
}

std::string device_label(fa_backend backend) {
  switch (backend) {
    case FA_BACKEND_CPU: return std::string("cpu (") + fa_cpu_target() + ")";
    case FA_BACKEND_CPU_REFERENCE: return "cpu-reference (float64)";
    case FA_BACKEND_CUDA: {
      const std::string gpu = gpu_name();
      return gpu.empty() ? "cuda" : "cuda (" + gpu + ")";
    }
    case FA_BACKEND_AUTO: break;
  }
  return "auto";
}

}  // namespace fastattn::tools
