#include "cuda/host/decode_select.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "cuda/host/chunk_check.h"
#include "fastattn/fastattn.h"

namespace fastattn::cuda {
namespace {

constexpr const char* kWho = "the CUDA decode path";

uint64_t align256(uint64_t bytes) { return (bytes + 255) / 256 * 256; }

// sm90 devices with under kOneBlockPerSmDramGBps of DRAM an SM (the H100),
// where fewer blocks reach the DRAM's speed: the gate of one block an SM and
// of clusters for few blocks alike.
bool few_blocks_fill_dram(int capability, double dram_gbps_per_sm) {
  return capability == 90 && dram_gbps_per_sm > 0.0 && dram_gbps_per_sm < kOneBlockPerSmDramGBps;
}

}  // namespace

Status choose_decode_kernel(int capability, int requested_path, const DecodeParams& p,
                            DecodeChoice* out) {
  const AttentionParams& a = p.attn;
  if (requested_path != FA_CUDA_PATH_AUTO && requested_path != FA_CUDA_PATH_SM70 &&
      requested_path != FA_CUDA_PATH_SM75 && requested_path != FA_CUDA_PATH_SM80 &&
      requested_path != FA_CUDA_PATH_SM90) {
    std::ostringstream m;
    m << "options.cuda_path: " << requested_path << " is unknown; allowed: FA_CUDA_PATH_AUTO (0), "
      << "FA_CUDA_PATH_SM70 (70), FA_CUDA_PATH_SM75 (75), FA_CUDA_PATH_SM80 (80), "
      << "FA_CUDA_PATH_SM90 (90)";
    return Status::invalid(m.str());
  }
  if (a.dtype != DType::kFloat16 && a.dtype != DType::kBFloat16) {
    return Status::unsupported(
        "q: dtype float32 is not supported by the CUDA backend; allowed: float16, bfloat16 "
        "(float32 runs on FA_BACKEND_CPU)");
  }
  if (capability < 70) {
    std::ostringstream m;
    m << "device: compute capability " << capability / 10 << "." << capability % 10
      << " has no CUDA decode path; allowed: 7.0 and newer";
    return Status::unsupported(m.str());
  }
  if (a.seqlen_q > FA_MAX_DECODE_QUERIES) {
    std::ostringstream m;
    m << "q: Lq = " << a.seqlen_q << " new queries per sequence; the CUDA decode path takes 1 to "
      << FA_MAX_DECODE_QUERIES << " (longer chunks are prefill: fa_attention_forward)";
    return Status::unsupported(m.str());
  }
  int head_dim = 0;
  for (int d : {64, 128, 256}) {
    if (a.head_dim <= d) {
      head_dim = d;
      break;
    }
  }
  if (head_dim == 0 || a.head_dim % 8 != 0) {
    std::ostringstream m;
    m << "q: head dim " << a.head_dim << " is not supported on CUDA; allowed: multiples of 8 up "
      << "to 256";
    return Status::unsupported(m.str());
  }
  const bool tensor_cores =
      requested_path == FA_CUDA_PATH_AUTO ? capability >= 80 : requested_path >= FA_CUDA_PATH_SM80;
  if (tensor_cores && capability < 80) {
    std::ostringstream m;
    m << "options.cuda_path: the tensor-core decode kernel (FA_CUDA_PATH_SM80/SM90) needs "
      << "compute capability 8.0 or newer; this device has " << capability / 10 << "."
      << capability % 10 << "; allowed here: FA_CUDA_PATH_AUTO, FA_CUDA_PATH_SM70, "
      << "FA_CUDA_PATH_SM75";
    return Status::unsupported(m.str());
  }
  const int64_t rows_total = a.group_size() * a.seqlen_q;
  int rows = 1;
  if (tensor_cores) {
    rows = kDecodeMmaRows;
  } else {
    while (rows < rows_total && rows < kDecodeRowsMax) rows *= 2;
  }
  const int64_t row_chunks = (rows_total + rows - 1) / rows;
  if (a.batch > 65535 || a.heads_kv * row_chunks > 65535) {
    std::ostringstream m;
    m << "q: " << a.batch << " sequences and " << a.heads_kv * row_chunks
      << " blocks of (KV head, " << rows << " query rows); the CUDA decode path allows at most "
      << "65535 of each";
    return Status::unsupported(m.str());
  }
  if (p.capacity > INT32_MAX) {
    std::ostringstream m;
    m << "k_cache: " << p.capacity << " keys per sequence; the CUDA decode path allows at most "
      << INT32_MAX;
    return Status::unsupported(m.str());
  }
  const KVLayout& kv = a.kv;
  const int64_t k_outer = kv.page_table ? kv.k_page_stride : kv.k_batch_stride;
  const int64_t v_outer = kv.page_table ? kv.v_page_stride : kv.v_batch_stride;
  FA_RETURN_IF_ERROR(
      check_chunked(kWho, "q", a.q, {a.q_batch_stride, a.q_row_stride, a.q_head_stride}));
  FA_RETURN_IF_ERROR(
      check_chunked(kWho, "out", a.out, {a.out_batch_stride, a.out_row_stride, a.out_head_stride}));
  FA_RETURN_IF_ERROR(
      check_chunked(kWho, "k_cache", kv.k, {k_outer, kv.k_row_stride, kv.k_head_stride}));
  FA_RETURN_IF_ERROR(
      check_chunked(kWho, "v_cache", kv.v, {v_outer, kv.v_row_stride, kv.v_head_stride}));
  out->head_dim = head_dim;
  out->tensor_cores = tensor_cores;
  out->early_merge_launch = capability >= 90;
  // FA_CUDA_PATH_SM80 on an sm90 device runs the kernel as an sm80 would:
  // splits merged by the merge kernel.
  out->clusters = capability >= 90 && requested_path != FA_CUDA_PATH_SM80;
  out->rows = rows;
  out->row_chunks = static_cast<int>(row_chunks);
  out->num_splits = 1;
  out->workspace_bytes = 0;
  return Status::ok();
}

int choose_decode_warps(int64_t blocks, int sms, int head_dim) {
  return head_dim < 256 && blocks < 2 * int64_t(sms) ? 8 : 4;
}

int settle_decode_warps(int warps, int64_t blocks, int num_splits, int64_t max_keys, int sms,
                        bool clustered) {
  if (warps != 8 || num_splits < 1 || clustered) return warps;
  const int64_t keys_per_split = (max_keys + num_splits - 1) / num_splits;
  const bool fills_half = blocks * num_splits * 2 >= sms;
  return keys_per_split >= kFourWarpSplitKeys && fills_half ? 4 : 8;
}

bool settle_decode_occupancy(const DecodeChoice& c, int capability, bool paged, int num_splits,
                             int64_t max_keys, double dram_gbps_per_sm) {
  if (!c.tensor_cores || c.warps != 4 || c.head_dim != 128 || c.cluster_merge || paged ||
      num_splits < 1 || !few_blocks_fill_dram(capability, dram_gbps_per_sm)) {
    return false;
  }
  return (max_keys + num_splits - 1) / num_splits >= kOneBlockPerSmKeys;
}

int choose_num_splits(int64_t blocks, int64_t max_keys, int sms, int blocks_per_sm,
                      int round_keys, uint32_t cluster_splits) {
  if (blocks <= 0) return 1;
  const int64_t round = std::max(round_keys, 1);
  const int64_t resident = int64_t(std::max(sms, 1)) * std::max(blocks_per_sm, 1);
  const int64_t limit = std::min<int64_t>(FA_MAX_DECODE_SPLITS,
                                          std::max<int64_t>(1, max_keys / kMinKeysPerSplit));
  // Modelled time of s splits: waves of resident blocks, each as long as one
  // block's keys plus its fixed cost (reading the lengths and the first
  // tiles, merging its warps, writing a partial), then the merge of s
  // partials. More splits shorten the blocks and fill the last wave; past
  // that they add fixed and merge costs.
  auto cost = [&](int64_t s) {
    const int64_t waves = (blocks * s + resident - 1) / resident;
    const int64_t keys = ((max_keys + s - 1) / s + round - 1) / round * round;
    const bool in_cluster = s < 32 && ((cluster_splits >> s) & 1u) != 0;
    const int64_t merge = s > 1 ? s * (in_cluster ? kClusterMergeKeys : kSplitMergeKeys) : 0;
    return waves * (keys + kBlockFixedKeys) + merge;
  };
  int64_t best = 1;
  for (int64_t s = 2; s <= limit; ++s) {
    if (cost(s) < cost(best)) best = s;
  }
  // The fewest splits within 2% of the best: the model leaves out what each
  // split adds (a partial state written and merged, one more wave's tail).
  for (int64_t s = 1; s < best; ++s) {
    if (cost(s) * 100 <= cost(best) * 102) return static_cast<int>(s);
  }
  return static_cast<int>(best);
}

bool clusters_keep_eight_warps(const DecodeChoice& c, bool merges, int capability, bool paged,
                               int num_splits, int64_t max_keys, double dram_gbps_per_sm) {
  if (!cluster_merge_allowed(c, num_splits)) return false;
  if (merges) return true;
  DecodeChoice four = c;
  four.warps = 4;
  four.cluster_merge = false;
  return !settle_decode_occupancy(four, capability, paged, num_splits, max_keys, dram_gbps_per_sm);
}

int prefer_cluster_read_splits(const DecodeChoice& c, int64_t blocks, int num_splits,
                               uint32_t cluster_splits, int capability, double dram_gbps_per_sm) {
  if (!c.tensor_cores || c.warps != 8 || c.head_dim != 128 || blocks <= 0 ||
      !few_blocks_fill_dram(capability, dram_gbps_per_sm)) {
    return num_splits;
  }
  for (int s = kClusterReadMinSplits; s <= std::min(num_splits - 1, kMaxClusterSplits); ++s) {
    if (((cluster_splits >> s) & 1u) != 0 && blocks * s >= kClusterReadBlocks) return s;
  }
  return num_splits;
}

uint64_t decode_workspace_lse_offset(const DecodeParams& p, int num_splits) {
  const AttentionParams& a = p.attn;
  return align256(uint64_t(num_splits) * a.batch * a.seqlen_q * a.heads_q * a.head_dim *
                  sizeof(float));
}

bool cluster_merge_allowed(const DecodeChoice& c, int num_splits) {
  return c.clusters && c.tensor_cores && num_splits > 1 && num_splits <= kMaxClusterSplits;
}

uint64_t decode_workspace_bytes(const DecodeParams& p, const DecodeChoice& c, int num_splits) {
  if (num_splits <= 1 || c.cluster_merge) return 0;
  const AttentionParams& a = p.attn;
  return decode_workspace_lse_offset(p, num_splits) +
         align256(uint64_t(num_splits) * a.batch * a.heads_q * a.seqlen_q * sizeof(float));
}

}  // namespace fastattn::cuda
