#include "cuda/host/fwd_select.h"

#include <cstdint>
#include <sstream>

#include "cuda/host/chunk_check.h"
#include "cuda/host/tma_layout.h"
#include "fastattn/fastattn.h"

namespace fastattn::cuda {
namespace {
constexpr const char* kWho = "the CUDA backend";
constexpr const char* kAllowedPaths =
    "FA_CUDA_PATH_AUTO (0), FA_CUDA_PATH_SM70 (70), FA_CUDA_PATH_SM75 (75), FA_CUDA_PATH_SM80 (80), "
    "FA_CUDA_PATH_SM90 (90)";

// Whether the copy engine can move q, k, v and out as the sm90 kernel's
// tensor maps describe them (varlen: rows are the totals, one "sequence"),
// and the persistent grid's tile count fits an int.
bool sm90_reads_ok(const AttentionParams& p) {
  const bool varlen = p.is_varlen();
  if (varlen && (p.total_q <= 0 || p.total_k <= 0)) return false;
  if ((p.seqlen_q + 127) / 128 * p.heads_q * p.batch > INT32_MAX) return false;
  const int64_t rows_q = varlen ? p.total_q : p.seqlen_q, rows_k = varlen ? p.total_k : p.seqlen_k;
  const int64_t seqs = varlen ? 1 : p.batch;
  return tma_layout_ok({p.q, p.head_dim, rows_q, p.heads_q, seqs, p.q_row_stride, p.q_head_stride,
                        p.q_batch_stride}) &&
         tma_layout_ok({p.kv.k, p.head_dim, rows_k, p.heads_kv, seqs, p.kv.k_row_stride,
                        p.kv.k_head_stride, p.kv.k_batch_stride}) &&
         tma_layout_ok({p.kv.v, p.head_dim, rows_k, p.heads_kv, seqs, p.kv.v_row_stride,
                        p.kv.v_head_stride, p.kv.v_batch_stride}) &&
         tma_layout_ok({p.out, p.head_dim, rows_q, p.heads_q, seqs, p.out_row_stride,
                        p.out_head_stride, p.out_batch_stride});
}

// Whether a block mask's blocks are whole tiles of the path's kernel: each
// query tile inside one block row, key tiles (a power of two wide) tiling
// each block column, so that a tile has one class.
bool block_mask_fits(FwdPath path, const AttentionParams& p) {
  if (p.mask.block == nullptr) return true;
  const FwdTileConfig c =
      fwd_variant_tile_config(path, fwd_padded_head_dim(path, int(p.head_dim)));
  const int64_t bq = int64_t{1} << p.mask.block->block_q_log2;
  const int64_t bk = int64_t{1} << p.mask.block->block_k_log2;
  const bool pow2_n = c.block_n > 0 && (c.block_n & (c.block_n - 1)) == 0;
  return c.block_m > 0 && bq % c.block_m == 0 && pow2_n && bk % c.block_n == 0;
}

// The mean number of keys a query row sees under the window, prefix and
// chunk (documents and block masks ignored), from nine rows spread over the
// queries: a heuristic's input, not a bound.
double mean_keys_per_row(const AttentionParams& p) {
  constexpr int kSamples = 9;
  double keys = 0;
  for (int s = 0; s < kSamples; ++s) {
    const int64_t row = p.seqlen_q <= 1 ? 0 : (p.seqlen_q - 1) * s / (kSamples - 1);
    int64_t begin = 0, end = 0;
    p.mask.key_range(row, p.seqlen_q, p.seqlen_k, &begin, &end);
    keys += double(end - begin);
  }
  return keys / kSamples;
}

// sm90, rows that see few keys, where a query tile has a handful of key
// tiles and its start and end weigh as much as its mainloop: the short-rows
// kernels (sm90_short_rows_tile_config, Sm90Traits::kDescribed). At d = 64
// three consumer warpgroups (192-row tiles) pay off once a row sees about
// 1024 keys, and below that two blocks per SM of 128 x 64 tiles were faster;
// at the other head dims the described kernel gained 1-3% up to 1024 keys a
// row and lost 1-3% from 4096 on an H100 (docs/perf/hopper-h100.md).
bool sm90_short_rows(const AttentionParams& p, int head_dim) {
  const double keys = mean_keys_per_row(p);
  return head_dim == 64 ? keys < 1024 : keys <= 1024;
}

Status check_sm90(int capability, bool sm90a_code, const AttentionParams& p) {
  std::ostringstream m;
  if (capability != 90) {
    m << "options.cuda_path: the sm90 path runs only on compute capability 9.0 (its wgmma and "
         "setmaxnreg code is specific to sm_90a); this device has "
      << capability / 10 << "." << capability % 10 << "; allowed here: FA_CUDA_PATH_AUTO, "
      << (capability >= 80 ? "FA_CUDA_PATH_SM80, " : "") << "older paths";
    return Status::unsupported(m.str());
  }
  if (!sm90a_code) {
    return Status::unsupported(
        "options.cuda_path: this build has no sm_90a code for the sm90 path (add 90a to "
        "CMAKE_CUDA_ARCHITECTURES); allowed: FA_CUDA_PATH_AUTO, FA_CUDA_PATH_SM80");
  }
  if (!sm90_reads_ok(p)) {
    return Status::unsupported(
        "q/k/v: the sm90 path reads through the copy engine (TMA), which needs 16-byte aligned "
        "base pointers and positive row, head and batch strides that are multiples of 16 bytes; "
        "allowed with these tensors: FA_CUDA_PATH_AUTO, FA_CUDA_PATH_SM80");
  }
  return Status::ok();
}
}  // namespace

Status choose_fwd_kernel(int capability, int requested_path, const AttentionParams& p,
                         FwdChoice* out, bool sm90a_code) {
  if (p.dtype != DType::kFloat16 && p.dtype != DType::kBFloat16) {
    return Status::unsupported(
        "q: dtype float32 is not supported by the CUDA backend; allowed: float16, bfloat16 "
        "(float32 runs on FA_BACKEND_CPU)");
  }
  if (requested_path != FA_CUDA_PATH_AUTO && requested_path != FA_CUDA_PATH_SM70 &&
      requested_path != FA_CUDA_PATH_SM75 && requested_path != FA_CUDA_PATH_SM80 &&
      requested_path != FA_CUDA_PATH_SM90) {
    std::ostringstream m;
    m << "options.cuda_path: " << requested_path << " is unknown; allowed: "
      << kAllowedPaths;
    return Status::invalid(m.str());
  }
  if (capability < 70) {
    std::ostringstream m;
    m << "device: compute capability " << capability / 10 << "." << capability % 10
      << " has no CUDA attention path; allowed: 7.0 (Volta) and newer";
    return Status::unsupported(m.str());
  }
  const bool sm90_auto =
      capability == 90 && sm90a_code && sm90_reads_ok(p) && block_mask_fits(FwdPath::kSm90, p);
  const FwdPath path = requested_path != FA_CUDA_PATH_AUTO ? static_cast<FwdPath>(requested_path)
                       : sm90_auto                        ? FwdPath::kSm90
                       : capability >= 80                 ? FwdPath::kSm80
                       : capability >= 75                 ? FwdPath::kSm75
                                                          : FwdPath::kSm70;
  const int path_arch = static_cast<int>(path);
  if (path == FwdPath::kSm90) {
    FA_RETURN_IF_ERROR(check_sm90(capability, sm90a_code, p));
  } else if (capability < path_arch) {
    std::ostringstream m;
    m << "options.cuda_path: the sm" << path_arch << " path needs compute capability "
      << path_arch / 10 << "." << path_arch % 10 << " or newer; this device has "
      << capability / 10 << "." << capability % 10;
    return Status::unsupported(m.str());
  }
  if ((path == FwdPath::kSm70 || path == FwdPath::kSm75) && p.dtype == DType::kBFloat16) {
    std::ostringstream m;
    m << "q: dtype bfloat16 is not supported on the sm" << path_arch
      << " path: the tensor cores of " << (path == FwdPath::kSm75 ? "Turing" : "Volta")
      << " GPUs have no bfloat16 MMA; allowed: float16 (bfloat16 runs on FA_BACKEND_CPU, or on "
         "compute capability 8.0 and newer)";
    return Status::unsupported(m.str());
  }
  if (p.kv.page_table != nullptr || p.seqlens_k != nullptr) {
    return Status::unsupported("k/v: the CUDA forward path takes contiguous K/V, not a paged cache");
  }
  if (!block_mask_fits(path, p)) {
    const FwdTileConfig c =
        fwd_variant_tile_config(path, fwd_padded_head_dim(path, int(p.head_dim)));
    std::ostringstream m;
    m << "mask.block_mask: blocks of " << (1 << p.mask.block->block_q_log2) << " x "
      << (1 << p.mask.block->block_k_log2) << " do not align with the sm" << path_arch
      << " path's tiles at head dim " << p.head_dim << " (" << c.block_m << " query rows x "
      << c.block_n << " keys); allowed: block_q a multiple of " << c.block_m
      << " and block_k a multiple of " << c.block_n
      << " (a power of two), e.g. the default 128 x 128"
      << (path == FwdPath::kSm90 ? ", or FA_CUDA_PATH_SM80" : "");
    return Status::unsupported(m.str());
  }
  const int head_dim = fwd_padded_head_dim(path, static_cast<int>(p.head_dim));
  if (p.head_dim % 8 != 0 || head_dim == 0) {
    std::ostringstream m;
    m << "q: head dim " << p.head_dim << " is not supported on CUDA; allowed: multiples of 8 up "
      << "to 256";
    return Status::unsupported(m.str());
  }
  // Grid limits: heads on y, sequences on z.
  if (p.heads_q > 65535 || p.batch > 65535) {
    std::ostringstream m;
    m << "q: " << p.heads_q << " heads and " << p.batch << " sequences; the CUDA backend allows "
      << "at most 65535 of each";
    return Status::unsupported(m.str());
  }
  // Kernels index rows with int and add a tile to the last one.
  constexpr int64_t kMaxLen = int64_t{1} << 30;
  if (p.seqlen_q > kMaxLen || p.seqlen_k > kMaxLen) {
    std::ostringstream m;
    m << "q/k: sequence lengths " << p.seqlen_q << " and " << p.seqlen_k
      << "; the CUDA backend allows at most " << kMaxLen;
    return Status::unsupported(m.str());
  }
  FA_RETURN_IF_ERROR(
      check_chunked(kWho, "q", p.q, {p.q_batch_stride, p.q_row_stride, p.q_head_stride}));
  FA_RETURN_IF_ERROR(check_chunked(
      kWho, "k", p.kv.k, {p.kv.k_batch_stride, p.kv.k_row_stride, p.kv.k_head_stride}));
  FA_RETURN_IF_ERROR(check_chunked(
      kWho, "v", p.kv.v, {p.kv.v_batch_stride, p.kv.v_row_stride, p.kv.v_head_stride}));
  FA_RETURN_IF_ERROR(
      check_chunked(kWho, "out", p.out, {p.out_batch_stride, p.out_row_stride, p.out_head_stride}));
  out->path = path;
  out->head_dim = head_dim;
  out->variant_tiles = (path == FwdPath::kSm80 && capability != 90) ||
                       (path == FwdPath::kSm90 && sm90_short_rows(p, head_dim));
  return Status::ok();
}

}  // namespace fastattn::cuda
