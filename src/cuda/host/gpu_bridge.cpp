// The CUDA backend behind the API layer's gpu:: interface.
#include <cuda_runtime.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "api/gpu_bridge.h"
#include "cuda/decode_launch.h"
#include "cuda/flash_launch.h"
#include "cuda/host/decode_select.h"
#include "cuda/host/fwd_select.h"
#include "cuda/host/runtime.h"

namespace fastattn::gpu {
namespace {

Status device_error(const char* what, cudaError_t err) {
  return {FA_STATUS_BACKEND_ERROR,
          std::string(what) + ": " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err)};
}

// Whether the build compiled the sm90 path for sm_90a (cmake/cuda.cmake).
#ifdef FASTATTN_CUDA_SM90A
constexpr bool kSm90aCode = true;
#else
constexpr bool kSm90aCode = false;
#endif

int requested_path(const fa_run_options* options) { return options ? options->cuda_path : 0; }

// The GPU that holds `ptr` (the API checked every tensor is on it).
Status device_holding(const void* ptr, int* device) {
  const Location loc = locate(ptr);
  if (loc.kind == MemoryKind::kDevice || loc.kind == MemoryKind::kManaged) {
    *device = loc.device >= 0 ? loc.device : 0;
    return Status::ok();
  }
  if (cudaGetDevice(device) != cudaSuccess) return device_error("cudaGetDevice", cudaGetLastError());
  return Status::ok();
}

cudaStream_t stream_of(const fa_run_options* options) {
  return static_cast<cudaStream_t>(options ? options->cuda_stream : nullptr);
}

Status choose(const AttentionParams& p, const fa_run_options* options, int* device,
              cuda::FwdChoice* choice) {
  FA_RETURN_IF_ERROR(device_holding(p.q, device));
  return cuda::choose_fwd_kernel(cuda::device_capability(*device), requested_path(options), p,
                                 choice, kSm90aCode);
}

}  // namespace

bool available() { return cuda::device_count() > 0; }

Location locate(const void* ptr) {
  Location loc;
  if (ptr == nullptr || !available()) return loc;
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, ptr) != cudaSuccess) {
    cudaGetLastError();  // not a pointer the runtime knows: plain host memory
    return loc;
  }
  switch (attr.type) {
    case cudaMemoryTypeDevice: loc.kind = MemoryKind::kDevice; break;
    case cudaMemoryTypeManaged: loc.kind = MemoryKind::kManaged; break;
    case cudaMemoryTypeHost: loc.kind = MemoryKind::kPinnedHost; break;
    default: loc.kind = MemoryKind::kPageableHost; break;
  }
  loc.device = attr.device;
  return loc;
}

Status check_forward(const AttentionParams& p, const fa_run_options* options) {
  int device = 0;
  cuda::FwdChoice choice;
  return choose(p, options, &device, &choice);
}

Status run_forward(const AttentionParams& p, const fa_run_options* options) {
  int device = 0;
  cuda::FwdChoice choice;
  FA_RETURN_IF_ERROR(choose(p, options, &device, &choice));
  cuda::DeviceGuard guard(device);
  auto stream = static_cast<cudaStream_t>(options ? options->cuda_stream : nullptr);
  const cudaError_t err = cuda::launch_forward(choice, p, stream);
  if (err != cudaSuccess) return device_error("attention forward launch", err);
  return Status::ok();
}

}  // namespace fastattn::gpu

namespace fastattn::gpu {

// Decode blocks before the key splits: one per (sequence, KV head, row chunk).
int64_t decode_blocks(const DecodeParams& p, const cuda::DecodeChoice& c) {
  return p.attn.batch * p.attn.heads_kv * c.row_chunks;
}

// The decode kernel for `p` on `device`, with its block shape; `sms` gets
// the device's SM count.
Status choose_decode(int device, const DecodeParams& p, const fa_run_options* options,
                     cuda::DecodeChoice* choice, int* sms) {
  FA_RETURN_IF_ERROR(cuda::choose_decode_kernel(cuda::device_capability(device),
                                                 requested_path(options), p, choice));
  const cudaError_t err = cudaDeviceGetAttribute(sms, cudaDevAttrMultiProcessorCount, device);
  if (err != cudaSuccess) return device_error("cudaDeviceGetAttribute", err);
  if (choice->tensor_cores) {
    choice->warps = cuda::choose_decode_warps(decode_blocks(p, *choice), *sms, choice->head_dim);
  }
  return Status::ok();
}

// Clusters of `size` blocks of the kernel `c` resident at once on `device`,
// asked of the runtime once per (device, dtype, head dim, warps, size): the
// run repeats the plan's choice on every call and must not pay for it. A
// runtime that cannot answer counts as none fitting (the merge kernel runs).
void max_active_clusters(int device, DType dtype, const cuda::DecodeChoice& c, int size,
                         int* clusters) {
  using Key = std::tuple<int, int, int, int, int>;
  static std::mutex mutex;
  static std::map<Key, int> known;
  const Key key{device, static_cast<int>(dtype), c.head_dim, c.warps, size};
  std::lock_guard<std::mutex> lock(mutex);
  if (const auto it = known.find(key); it != known.end()) {
    *clusters = it->second;
    return;
  }
  cuda::DeviceGuard guard(device);
  if (cuda::decode_max_active_clusters(dtype, c, size, clusters) != cudaSuccess) {
    cudaGetLastError();  // not sticky: clear it so that later calls do not see it
    *clusters = 0;
  }
  known.emplace(key, *clusters);
}

// Whether `splits` splits of the kernel `c` merge in clusters: allowed, and
// every cluster resident at once.
bool merges_in_cluster(int device, const DecodeParams& p, const cuda::DecodeChoice& c,
                       int splits) {
  if (!cuda::cluster_merge_allowed(c, splits)) return false;
  int resident = 0;
  max_active_clusters(device, p.attn.dtype, c, splits, &resident);
  return decode_blocks(p, c) <= int64_t(resident);
}

// What settle_decode_occupancy needs of a device, asked of the runtime once
// per device (every run settles its splits again and must not pay for it).
struct DecodeMemoryFacts {
  // Peak DRAM bandwidth over the SMs in GB/s (memory clock x bus width, both
  // edges of the clock); 0 where the runtime does not say.
  double dram_gbps_per_sm = 0.0;
  // Dynamic shared memory over half an SM's (within a block's limit), so
  // that no second block fits beside one.
  int one_block_smem = 0;
};

DecodeMemoryFacts decode_memory_facts(int device, int sms) {
  static std::mutex mutex;
  static std::map<int, DecodeMemoryFacts> known;
  std::lock_guard<std::mutex> lock(mutex);
  if (const auto it = known.find(device); it != known.end()) return it->second;
  DecodeMemoryFacts facts;
  int clock_khz = 0, bus_bits = 0, per_sm = 0, per_block = 0;
  if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, device) == cudaSuccess &&
      cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device) == cudaSuccess &&
      cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device) ==
          cudaSuccess &&
      cudaDeviceGetAttribute(&per_block, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) ==
          cudaSuccess &&
      sms > 0) {
    facts.dram_gbps_per_sm = 2.0 * clock_khz * 1e3 * (bus_bits / 8.0) / 1e9 / sms;
    facts.one_block_smem = std::min(per_block, per_sm / 2 + 1);
  } else {
    cudaGetLastError();  // not sticky: clear it so that later calls do not see it
  }
  known.emplace(device, facts);
  return facts;
}

// Fixes the choice's splits, the warps they run with, how they merge (in
// clusters where they fit, else through the workspace and the merge kernel)
// and how many blocks share an SM.
// The plan and every run take the same path through here.
void settle_splits(int device, const DecodeParams& p, int splits, int sms,
                   cuda::DecodeChoice* c) {
  c->num_splits = splits;
  c->cluster_merge = merges_in_cluster(device, p, *c, splits);
  const DecodeMemoryFacts facts = decode_memory_facts(device, sms);
  const int capability = cuda::device_capability(device);
  const bool paged = p.attn.kv.page_table != nullptr;
  if (c->tensor_cores) {
    const int planned_warps = c->warps;
    const bool clustered =
        cuda::clusters_keep_eight_warps(*c, c->cluster_merge, capability, paged, splits,
                                        p.attn.seqlen_k, facts.dram_gbps_per_sm);
    c->warps = cuda::settle_decode_warps(c->warps, decode_blocks(p, *c), splits, p.attn.seqlen_k,
                                         sms, clustered);
    // 4-warp blocks merge through the merge kernel (settle_decode_warps says why).
    if (c->warps != planned_warps) c->cluster_merge = false;
  }
  c->min_block_smem = cuda::settle_decode_occupancy(*c, capability, paged, splits,
                                                    p.attn.seqlen_k, facts.dram_gbps_per_sm)
                          ? facts.one_block_smem
                          : 0;
}

Status plan_decode(const DecodeParams& p, const fa_run_options* options, fa_decode_plan* plan) {
  int device = 0, sms = 0;
  FA_RETURN_IF_ERROR(device_holding(p.attn.q, &device));
  cuda::DecodeChoice choice;
  FA_RETURN_IF_ERROR(choose_decode(device, p, options, &choice, &sms));
  int splits = p.num_splits;
  if (splits == 0) {
    cuda::DeviceGuard guard(device);
    int blocks_per_sm = 0;
    const cudaError_t err = cuda::decode_blocks_per_sm(p.attn.dtype, choice, &blocks_per_sm);
    if (err != cudaSuccess) return device_error("decode occupancy", err);
    const int64_t blocks = decode_blocks(p, choice);
    const int round_keys = choice.tensor_cores ? cuda::kDecodeMmaTileKeys * choice.warps : 1;
    uint32_t cluster_splits = 0;
    for (int s = 2; s <= cuda::kMaxClusterSplits; ++s) {
      if (merges_in_cluster(device, p, choice, s)) cluster_splits |= 1u << s;
    }
    splits = cuda::choose_num_splits(blocks, p.attn.seqlen_k, sms, blocks_per_sm, round_keys,
                                     cluster_splits);
    splits = cuda::prefer_cluster_read_splits(choice, blocks, splits, cluster_splits,
                                              cuda::device_capability(device),
                                              decode_memory_facts(device, sms).dram_gbps_per_sm);
  }
  settle_splits(device, p, splits, sms, &choice);
  plan->num_splits = splits;
  plan->workspace_bytes = cuda::decode_workspace_bytes(p, choice, splits);
  return Status::ok();
}

Status run_decode(const DecodeParams& p, const fa_decode_plan& plan, void* workspace,
                  const fa_run_options* options) {
  int device = 0, sms = 0;
  FA_RETURN_IF_ERROR(device_holding(p.attn.q, &device));
  cuda::DecodeChoice choice;
  FA_RETURN_IF_ERROR(choose_decode(device, p, options, &choice, &sms));
  if (plan.num_splits < 1 || plan.num_splits > FA_MAX_DECODE_SPLITS) {
    return Status::invalid("plan: num_splits is out of range; pass the plan fa_plan_decode made");
  }
  settle_splits(device, p, plan.num_splits, sms, &choice);
  choice.workspace_bytes = plan.workspace_bytes;
  cuda::DeviceGuard guard(device);
  const cudaError_t err = cuda::launch_decode(choice, p, workspace, stream_of(options));
  if (err != cudaSuccess) return device_error("decode launch", err);
  return Status::ok();
}

Status run_merge(const MergeParams& p, const fa_run_options* options) {
  int device = 0;
  FA_RETURN_IF_ERROR(device_holding(p.out, &device));
  if (cuda::device_capability(device) < 70) {
    return Status::unsupported("device: the CUDA merge needs compute capability 7.0 or newer");
  }
  cuda::DeviceGuard guard(device);
  const cudaError_t err = cuda::launch_merge(p, stream_of(options));
  if (err != cudaSuccess) return device_error("merge launch", err);
  return Status::ok();
}

}  // namespace fastattn::gpu
