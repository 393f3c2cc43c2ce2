// The C ABI: validate, select a backend, run; convert every failure (and any
// exception) into a status plus the thread-local message.
#include <cstring>
#include <exception>
#include <new>
#include <sstream>
#include <string>
#include <vector>

#include "api/backend_select.h"
#include "api/block_mask.h"
#include "api/build_params.h"
#include "api/gpu_bridge.h"
#include "api/tensor_checks.h"
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
                         {{"cu_seqlens_q", p.cu_seqlens_q},
                          {"cu_seqlens_k", p.cu_seqlens_k},
                          {"mask.q_segment_ids", p.mask.q_segments},
                          {"mask.k_segment_ids", p.mask.k_segments}});
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
        "fa_paged_attention: on the CUDA backend a paged KV cache is read by fa_plan_decode / "
        "fa_run_decode (Lq up to FA_MAX_DECODE_QUERIES); use those, or run this call on "
        "FA_BACKEND_CPU with host memory");
  }
  AttentionParams p;
  FA_RETURN_IF_ERROR(build_paged_attention_params(*args, &p));
  FA_RETURN_IF_ERROR(placement_of(backend, p));
  FA_RETURN_IF_ERROR(check_placement(backend, {}, {{"page_table", p.kv.page_table},
                                                   {"seq_lens_k", p.seqlens_k}}));
  run_on_cpu(backend, p, options);
  return Status::ok();
}

fa_backend public_backend(Backend b) {
  switch (b) {
    case Backend::kCpu: return FA_BACKEND_CPU;
    case Backend::kCpuReference: return FA_BACKEND_CPU_REFERENCE;
    case Backend::kCuda: return FA_BACKEND_CUDA;
  }
  return FA_BACKEND_AUTO;
}

const char* backend_name(int32_t b) {
  switch (b) {
    case FA_BACKEND_AUTO: return "FA_BACKEND_AUTO";
    case FA_BACKEND_CPU: return "FA_BACKEND_CPU";
    case FA_BACKEND_CPU_REFERENCE: return "FA_BACKEND_CPU_REFERENCE";
    case FA_BACKEND_CUDA: return "FA_BACKEND_CUDA";
  }
  return "an unknown backend";
}

// fa_decode_plan.problem: what a plan holds for. The split count and the
// workspace size depend on these (and on the max_seqlen_k hint, capacity by
// default); lengths, page tables and pointers may change between runs.
enum PlanField { kBatch, kQueries, kHeadsQ, kHeadsKv, kHeadDim, kDtype, kDevice, kCapacity };
constexpr const char* kPlanFieldNames[8] = {"B", "Lq", "Hq", "Hkv", "D", "dtype", "device",
                                            "capacity"};

void decode_fingerprint(Backend backend, const DecodeParams& p, int64_t problem[8]) {
  const AttentionParams& a = p.attn;
  problem[kBatch] = a.batch;
  problem[kQueries] = a.seqlen_q;
  problem[kHeadsQ] = a.heads_q;
  problem[kHeadsKv] = a.heads_kv;
  problem[kHeadDim] = a.head_dim;
  problem[kDtype] = static_cast<int64_t>(a.dtype);
  problem[kDevice] = backend == Backend::kCuda ? gpu::locate(a.q).device : -1;
  problem[kCapacity] = p.capacity;
}

// Validation shared by plan and run: backend, arguments, placement (with the
// workspace, on CUDA, which must live on q's GPU too).
Status prepare_decode(const fa_decode_args& args, const fa_run_options* options,
                      const void* workspace, Backend* backend, DecodeParams* p) {
  FA_RETURN_IF_ERROR(select_backend(options, args.q.data, backend));
  const bool gpu = *backend == Backend::kCuda;
  FA_RETURN_IF_ERROR(
      build_decode_params(args, gpu ? OffsetsAccess::kDevice : OffsetsAccess::kHost, p));
  return check_placement(*backend,
                         {{"q", args.q.data},
                          {"k_cache", args.k_cache.data},
                          {"v_cache", args.v_cache.data},
                          {"out", args.out.data},
                          {"lse", args.lse.data},
                          {"k_new", args.k_new.data},
                          {"v_new", args.v_new.data},
                          {"rotary_cos", p->rotary.cos},
                          {"rotary_sin", p->rotary.sin},
                          {"workspace", gpu ? workspace : nullptr}},
                         {{"page_table", args.page_table}, {"cache_seqlens", args.cache_seqlens}});
}

Status plan_decode(const fa_decode_args* args, const fa_run_options* options,
                   fa_decode_plan* plan_out) {
  if (args == nullptr) return Status::invalid("args: is NULL");
  if (plan_out == nullptr) {
    return Status::invalid("plan: is NULL; fa_plan_decode fills an fa_decode_plan you own");
  }
  Backend backend;
  DecodeParams p;
  FA_RETURN_IF_ERROR(prepare_decode(*args, options, nullptr, &backend, &p));
  fa_decode_plan plan;
  std::memset(&plan, 0, sizeof plan);
  plan.backend = public_backend(backend);
  decode_fingerprint(backend, p, plan.problem);
  if (backend == Backend::kCuda) {
    FA_RETURN_IF_ERROR(gpu::plan_decode(p, options, &plan));
  } else {
    // The CPU backends split keys across threads on their own, without a
    // workspace; the count is kept only to report what was asked for.
    plan.num_splits = p.num_splits > 0 ? p.num_splits : 1;
    plan.workspace_bytes = 0;
  }
  *plan_out = plan;
  return Status::ok();
}

// The plan must come from fa_plan_decode for this backend and problem.
Status check_plan(const fa_decode_plan& plan, Backend backend, const DecodeParams& p) {
  if (plan.backend != public_backend(backend)) {
    std::ostringstream m;
    m << "plan: was made for " << backend_name(plan.backend) << " but this call runs on "
      << backend_name(public_backend(backend)) << "; plan with the options of the run";
    return Status::invalid(m.str());
  }
  int64_t expected[8];
  decode_fingerprint(backend, p, expected);
  std::ostringstream diff;
  for (int f = 0; f < 8; ++f) {
    if (plan.problem[f] == expected[f]) continue;
    diff << (diff.tellp() > 0 ? "; " : "") << kPlanFieldNames[f] << ": ";
    if (f == kDtype) {
      diff << dtype_name(static_cast<fa_dtype>(plan.problem[f])) << " in the plan, "
           << dtype_name(static_cast<fa_dtype>(expected[f])) << " here";
    } else {
      diff << plan.problem[f] << " in the plan, " << expected[f] << " here";
    }
  }
  if (diff.tellp() > 0) {
    return Status::invalid("plan: was made for a different problem (" + diff.str() +
                           "); a plan holds for one backend, device, dtype, B, Lq, Hq, Hkv, D "
                           "and cache capacity: call fa_plan_decode for this one");
  }
  if (plan.num_splits < 1 || plan.num_splits > FA_MAX_DECODE_SPLITS) {
    std::ostringstream m;
    m << "plan.num_splits: " << plan.num_splits << "; allowed: 1 to " << FA_MAX_DECODE_SPLITS
      << " (pass the plan fa_plan_decode filled, unchanged)";
    return Status::invalid(m.str());
  }
  return Status::ok();
}

Status run_decode(const fa_decode_args* args, const fa_decode_plan* plan, void* workspace,
                  uint64_t workspace_bytes, const fa_run_options* options) {
  if (args == nullptr) return Status::invalid("args: is NULL");
  if (plan == nullptr) return Status::invalid("plan: is NULL; pass the plan fa_plan_decode filled");
  Backend backend;
  DecodeParams p;
  FA_RETURN_IF_ERROR(prepare_decode(*args, options, workspace, &backend, &p));
  FA_RETURN_IF_ERROR(check_plan(*plan, backend, p));
  if (plan->workspace_bytes > 0 && (workspace == nullptr || workspace_bytes < plan->workspace_bytes)) {
    std::ostringstream m;
    m << "workspace: " << (workspace == nullptr ? "NULL" : "given") << " with workspace_bytes = "
      << workspace_bytes << "; the plan needs plan.workspace_bytes = " << plan->workspace_bytes
      << " bytes of memory on the device that runs it";
    return Status::invalid(m.str());
  }
  if (backend == Backend::kCuda) return gpu::run_decode(p, *plan, workspace, options);
  p.attn.num_threads = options ? options->num_threads : 0;
  cpu::decode(p, backend == Backend::kCpuReference);
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

FA_API fa_status fa_plan_decode(const fa_decode_args* args, const fa_run_options* options,
                                fa_decode_plan* plan) {
  return fastattn::guarded([&] { return fastattn::plan_decode(args, options, plan); });
}

FA_API fa_status fa_run_decode(const fa_decode_args* args, const fa_decode_plan* plan,
                               void* workspace, uint64_t workspace_bytes,
                               const fa_run_options* options) {
  return fastattn::guarded(
      [&] { return fastattn::run_decode(args, plan, workspace, workspace_bytes, options); });
}

FA_API fa_status fa_merge_states(const fa_merge_args* args, const fa_run_options* options) {
  return fastattn::guarded([&]() -> Status {
    if (args == nullptr) return Status::invalid("args: is NULL");
    MergeParams p;
    FA_RETURN_IF_ERROR(fastattn::build_merge_params(*args, &p));
    Backend backend;
    FA_RETURN_IF_ERROR(fastattn::select_backend(options, args->out.data, &backend));
    // One placement check over every tensor: on CUDA they must share one GPU.
    std::vector<std::string> names;
    for (int i = 0; i < p.num_states; ++i) {
      names.push_back("outs[" + std::to_string(i) + "]");
      names.push_back("lses[" + std::to_string(i) + "]");
    }
    std::vector<fastattn::NamedPointer> tensors = {{"out", p.out}, {"lse", p.out_lse}};
    for (int i = 0; i < p.num_states; ++i) {
      tensors.push_back({names[2 * i].c_str(), p.o[i]});
      tensors.push_back({names[2 * i + 1].c_str(), p.lse[i]});
    }
    FA_RETURN_IF_ERROR(fastattn::check_placement(backend, tensors));
    if (backend == Backend::kCuda) return fastattn::gpu::run_merge(p, options);
    p.num_threads = options ? options->num_threads : 0;
    fastattn::cpu::merge_states(p);  // both CPU backends merge in double
    return Status::ok();
  });
}

FA_API fa_status fa_block_mask_create(const fa_block_mask_args* args,
                                      const fa_run_options* options, fa_block_mask** mask) {
  return fastattn::guarded([&] { return fastattn::create_block_mask(args, options, mask); });
}

FA_API fa_status fa_block_mask_get_info(const fa_block_mask* mask, fa_block_mask_info* info) {
  return fastattn::guarded([&] { return fastattn::block_mask_info(mask, info); });
}

FA_API void fa_block_mask_destroy(fa_block_mask* mask) {
  if (mask == nullptr) return;
  if (mask->on_device) fastattn::gpu::free_block_mask(mask);
  delete mask;
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
