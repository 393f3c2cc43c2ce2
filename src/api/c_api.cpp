// The C ABI: validate, select a backend, run; convert every failure (and any
// exception) into a status plus the thread-local message.
#include <exception>
#include <new>
#include <string>

#include "api/backend_select.h"
#include "api/build_params.h"
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

void run_attention(Backend backend, AttentionParams& p, const fa_run_options* options) {
  p.num_threads = options ? options->num_threads : 0;
  if (backend == Backend::kCpuReference) {
    cpu::reference_attention(p);
  } else {
    cpu::flash_attention(p);
  }
}

// Every attention entry point: validate into params, select, run.
template <typename Args>
fa_status validate_and_run(const Args* args, const fa_run_options* options,
                           Status (*build)(const Args&, AttentionParams*)) {
  return guarded([&]() -> Status {
    if (args == nullptr) return Status::invalid("args: is NULL");
    AttentionParams p;
    FA_RETURN_IF_ERROR(build(*args, &p));
    Backend backend;
    FA_RETURN_IF_ERROR(select_backend(options, p.dtype, &backend));
    run_attention(backend, p, options);
    return Status::ok();
  });
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
  return fastattn::validate_and_run(args, options, fastattn::build_attention_params);
}

FA_API fa_status fa_attention_supported(const fa_attention_args* args,
                                        const fa_run_options* options) {
  return fastattn::guarded([&]() -> Status {
    if (args == nullptr) return Status::invalid("args: is NULL");
    AttentionParams p;
    FA_RETURN_IF_ERROR(fastattn::build_attention_params(*args, &p));
    Backend backend;
    return fastattn::select_backend(options, p.dtype, &backend);
  });
}

FA_API fa_status fa_paged_attention(const fa_paged_attention_args* args,
                                    const fa_run_options* options) {
  return fastattn::validate_and_run(args, options, fastattn::build_paged_attention_params);
}

FA_API fa_status fa_merge_states(const fa_merge_args* args, const fa_run_options* options) {
  return fastattn::guarded([&]() -> Status {
    if (args == nullptr) return Status::invalid("args: is NULL");
    MergeParams p;
    FA_RETURN_IF_ERROR(fastattn::build_merge_params(*args, &p));
    Backend backend;
    FA_RETURN_IF_ERROR(fastattn::select_backend(options, p.out_dtype, &backend));
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
  return backend == FA_BACKEND_AUTO || backend == FA_BACKEND_CPU ||
         backend == FA_BACKEND_CPU_REFERENCE;
}

FA_API const char* fa_cpu_target(void) { return fastattn::cpu::simd_target_name(); }

}  // extern "C"
