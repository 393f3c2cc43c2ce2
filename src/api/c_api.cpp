// The C ABI: validate, select a backend, run; convert every failure (and any
// exception) into a status plus the thread-local message.
#include <exception>
#include <new>
#include <string>

#include "api/backend_select.h"
#include "api/build_params.h"
#include "api/gpu_bridge.h"
#include "cpu/backend.h"
#include "fastattn/fastattn.h"

namespace fastattn {
namespace {

thread_local std::string last_error;

fa_status finish(const Status& s) {
  last_error = s.message();
  return s.code();
}

template <typename Body>
fa_status guarded(Body&& body) {
  try {
    return finish(body());
  } catch (const std::bad_alloc&) {
    return finish({FA_STATUS_OUT_OF_MEMORY, "out of host memory"});
  } catch (const std::exception& e) {
    return finish({FA_STATUS_INTERNAL_ERROR, std::string("internal error: ") + e.what()});
  } catch (...) {
    return finish({FA_STATUS_INTERNAL_ERROR, "internal error: unknown exception"});
  }
}

void run_on_cpu(Backend backend, AttentionParams& p, const fa_run_options* options) {
  p.num_threads = options ? options->num_threads : 0;
  if (backend == Backend::kCpuReference) {
    cpu::reference_attention(p);
  } else {
    cpu::flash_attention(p);
  }
}

Status placement_of(Backend backend, const AttentionParams& p) {
  return check_placement(backend,
                         {{"q", p.q}, {"k", p.kv.k}, {"v", p.kv.v}, {"out", p.out}, {"lse", p.lse}},
                         {{"cu_seqlens_q", p.cu_seqlens_q}, {"cu_seqlens_k", p.cu_seqlens_k}});
}

// fa_attention_forward and fa_attention_supported: validate, select, then
// run or only ask the chosen backend whether it would.
Status attention(const fa_attention_args* args, const fa_run_options* options, bool run) {
  if (args == nullptr) return Status::invalid("args: is NULL");
  Backend backend;
  FA_RETURN_IF_ERROR(select_backend(options, args->q.data, &backend));
  const bool gpu = backend == Backend::kCuda;
  AttentionParams p;
  FA_RETURN_IF_ERROR(build_attention_params(
      *args, gpu ? OffsetsAccess::kDevice : OffsetsAccess::kHost, &p));
  FA_RETURN_IF_ERROR(placement_of(backend, p));
  if (gpu) return run ? gpu::run_forward(p, options) : gpu::check_forward(p, options);
  if (run) run_on_cpu(backend, p, options);
  return Status::ok();
}

Status paged_attention(const fa_paged_attention_args* args, const fa_run_options* options) {
  if (args == nullptr) return Status::invalid("args: is NULL");
  Backend backend;
  FA_RETURN_IF_ERROR(select_backend(options, args->q.data, &backend));
  if (backend == Backend::kCuda) {
    return Status::unsupported(
        "fa_paged_attention: the CUDA backend has no paged-KV path in this version; "
        "run it on FA_BACKEND_CPU with host memory");
  }
  AttentionParams p;
  FA_RETURN_IF_ERROR(build_paged_attention_params(*args, &p));
  FA_RETURN_IF_ERROR(placement_of(backend, p));
  FA_RETURN_IF_ERROR(check_placement(backend, {}, {{"page_table", p.kv.page_table},
                                                   {"seq_lens_k", p.seqlens_k}}));
  run_on_cpu(backend, p, options);
  return Status::ok();
}

}  // namespace
}  // namespace fastattn

using fastattn::AttentionParams;
using fastattn::Backend;
using fastattn::MergeParams;
using fastattn::Status;

extern "C" {

FA_API fa_status fa_attention_forward(const fa_attention_args* args,
                                      const fa_run_options* options) {
  return fastattn::guarded([&] { return fastattn::attention(args, options, /*run=*/true); });
}

FA_API fa_status fa_attention_supported(const fa_attention_args* args,
                                        const fa_run_options* options) {
  return fastattn::guarded([&] { return fastattn::attention(args, options, /*run=*/false); });
}

FA_API fa_status fa_paged_attention(const fa_paged_attention_args* args,
                                    const fa_run_options* options) {
  return fastattn::guarded([&] { return fastattn::paged_attention(args, options); });
}

FA_API fa_status fa_merge_states(const fa_merge_args* args, const fa_run_options* options) {
  return fastattn::guarded([&]() -> Status {
    if (args == nullptr) return Status::invalid("args: is NULL");
    MergeParams p;
    FA_RETURN_IF_ERROR(fastattn::build_merge_params(*args, &p));
    Backend backend;
    FA_RETURN_IF_ERROR(fastattn::select_backend(options, args->out.data, &backend));
    if (backend == Backend::kCuda) {
      return Status::unsupported(
          "fa_merge_states: the CUDA backend has no merge in this version; "
          "run it on FA_BACKEND_CPU with host memory");
    }
    FA_RETURN_IF_ERROR(fastattn::check_placement(backend, {{"out", p.out}, {"lse", p.out_lse}}));
    for (int i = 0; i < p.num_states; ++i) {
      const std::string o = "outs[" + std::to_string(i) + "]", l = "lses[" + std::to_string(i) + "]";
      FA_RETURN_IF_ERROR(
          fastattn::check_placement(backend, {{o.c_str(), p.o[i]}, {l.c_str(), p.lse[i]}}));
    }
    p.num_threads = options ? options->num_threads : 0;
    fastattn::cpu::merge_states(p);  // both CPU backends merge in double
    return Status::ok();
  });
}

FA_API const char* fa_last_error(void) { return fastattn::last_error.c_str(); }

FA_API const char* fa_status_string(fa_status status) {
  switch (status) {
    case FA_STATUS_OK: return "ok";
    case FA_STATUS_INVALID_ARGUMENT: return "invalid argument";
    case FA_STATUS_UNSUPPORTED: return "unsupported";
    case FA_STATUS_NO_DEVICE: return "no device";
    case FA_STATUS_BACKEND_ERROR: return "backend error";
    case FA_STATUS_OUT_OF_MEMORY: return "out of memory";
    case FA_STATUS_INTERNAL_ERROR: return "internal error";
  }
  return "unknown status";
}

#define FA_STRINGIFY2(x) #x
#define FA_STRINGIFY(x) FA_STRINGIFY2(x)
FA_API const char* fa_version_string(void) {
  return FA_STRINGIFY(FA_VERSION_MAJOR) "." FA_STRINGIFY(FA_VERSION_MINOR) "." FA_STRINGIFY(
      FA_VERSION_PATCH);
}

FA_API int fa_backend_available(fa_backend backend) {
  switch (backend) {
    case FA_BACKEND_AUTO:
    case FA_BACKEND_CPU:
    case FA_BACKEND_CPU_REFERENCE:
      return 1;
    case FA_BACKEND_CUDA:
      return fastattn::gpu::available() ? 1 : 0;
  }
  return 0;
}

FA_API const char* fa_cpu_target(void) { return fastattn::cpu::simd_target_name(); }

}  // extern "C"
