#include "api/backend_select.h"

#include <sstream>

#include "api/gpu_bridge.h"

namespace fastattn {
namespace {

using gpu::MemoryKind;

const char* kind_name(MemoryKind k) {
  switch (k) {
    case MemoryKind::kPageableHost: return "pageable host memory";
    case MemoryKind::kPinnedHost: return "pinned host memory";
    case MemoryKind::kDevice: return "GPU memory";
    case MemoryKind::kManaged: return "managed memory";
  }
  return "unknown memory";
}

Status check_options(const fa_run_options* options) {
  if (options == nullptr) return Status::ok();
  if (options->num_threads < 0) {
    std::ostringstream m;
    m << "options.num_threads: " << options->num_threads << "; allowed: 0 (all cores) or more";
    return Status::invalid(m.str());
  }
  const int32_t path = options->cuda_path;
  if (path != FA_CUDA_PATH_AUTO && path != FA_CUDA_PATH_SM70 && path != FA_CUDA_PATH_SM75 &&
      path != FA_CUDA_PATH_SM80 && path != FA_CUDA_PATH_SM90) {
    std::ostringstream m;
    m << "options.cuda_path: " << path
      << " is unknown; allowed: FA_CUDA_PATH_AUTO (0), FA_CUDA_PATH_SM70 (70), "
         "FA_CUDA_PATH_SM75 (75), FA_CUDA_PATH_SM80 (80), FA_CUDA_PATH_SM90 (90)";
    return Status::invalid(m.str());
  }
  return Status::ok();
}

}  // namespace

Status select_backend(const fa_run_options* options, const void* probe, Backend* out) {
  FA_RETURN_IF_ERROR(check_options(options));
  const fa_backend requested = options ? options->backend : FA_BACKEND_AUTO;
  switch (requested) {
    case FA_BACKEND_AUTO: {
      const MemoryKind k = gpu::locate(probe).kind;
      *out = k == MemoryKind::kDevice || k == MemoryKind::kManaged ? Backend::kCuda : Backend::kCpu;
      return Status::ok();
    }
    case FA_BACKEND_CPU:
      *out = Backend::kCpu;
      return Status::ok();
    case FA_BACKEND_CPU_REFERENCE:
      *out = Backend::kCpuReference;
      return Status::ok();
    case FA_BACKEND_CUDA:
      if (!gpu::available()) {
        return {FA_STATUS_NO_DEVICE,
                "options.backend: FA_BACKEND_CUDA needs a CUDA GPU and a library built with "
                "CUDA; this one has none usable (available: FA_BACKEND_AUTO, FA_BACKEND_CPU, "
                "FA_BACKEND_CPU_REFERENCE)"};
      }
      *out = Backend::kCuda;
      return Status::ok();
  }
  std::ostringstream m;
  m << "options.backend: " << static_cast<int>(requested)
    << " is unknown; allowed: FA_BACKEND_AUTO, FA_BACKEND_CPU, FA_BACKEND_CPU_REFERENCE, "
       "FA_BACKEND_CUDA";
  return Status::invalid(m.str());
}

namespace {

Status check_placement_of(Backend backend, const NamedPointer* tensors, size_t num_tensors,
                          const NamedPointer* offsets, size_t num_offsets) {
  if (!gpu::available()) return Status::ok();  // every pointer is host memory
  const bool on_gpu = backend == Backend::kCuda;
  int device = -1;
  const char* device_owner = nullptr;
  auto check = [&](const NamedPointer& t, bool is_offsets) -> Status {
    if (t.ptr == nullptr) return Status::ok();
    const gpu::Location loc = gpu::locate(t.ptr);
    const bool host_readable = loc.kind != MemoryKind::kDevice;
    const bool gpu_readable = loc.kind == MemoryKind::kDevice || loc.kind == MemoryKind::kManaged ||
                              (is_offsets && loc.kind == MemoryKind::kPinnedHost);
    std::ostringstream m;
    if (!on_gpu && !host_readable) {
      m << t.name << ": is in GPU memory (device " << loc.device
        << "); the CPU backends read host memory: use FA_BACKEND_AUTO or FA_BACKEND_CUDA";
      return Status::invalid(m.str());
    }
    if (on_gpu && !gpu_readable) {
      m << t.name << ": is in " << kind_name(loc.kind) << "; the CUDA backend reads "
        << (is_offsets ? "device, managed or pinned host memory"
                       : "device or managed memory")
        << " (host data runs on FA_BACKEND_CPU)";
      return Status::invalid(m.str());
    }
    if (on_gpu && loc.kind == MemoryKind::kDevice) {
      if (device_owner == nullptr) {
        device = loc.device;
        device_owner = t.name;
      } else if (loc.device != device) {
        m << t.name << ": is on GPU " << loc.device << " but " << device_owner << " is on GPU "
          << device << "; all tensors of a call must be on one GPU";
        return Status::invalid(m.str());
      }
    }
    return Status::ok();
  };
  for (size_t i = 0; i < num_tensors; ++i) FA_RETURN_IF_ERROR(check(tensors[i], false));
  for (size_t i = 0; i < num_offsets; ++i) FA_RETURN_IF_ERROR(check(offsets[i], true));
  return Status::ok();
}

}  // namespace

Status check_placement(Backend backend, std::initializer_list<NamedPointer> tensors,
                       std::initializer_list<NamedPointer> offsets) {
  return check_placement_of(backend, tensors.begin(), tensors.size(), offsets.begin(),
                            offsets.size());
}

Status check_placement(Backend backend, const std::vector<NamedPointer>& tensors) {
  return check_placement_of(backend, tensors.data(), tensors.size(), nullptr, 0);
}

}  // namespace fastattn
