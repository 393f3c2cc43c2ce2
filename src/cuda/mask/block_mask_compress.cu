// Device compression of a boolean mask, in three passes over the blocks:
//   1. classify: one CTA per block of a dense source (one warp per row of a
//      blocks source) reads it once, packs its bits and counts the row's
//      FULL and PARTIAL blocks; the bits of PARTIAL blocks go to scratch;
//   2. scan: the global numbering of PARTIAL blocks (row-major), whose total
//      sizes the result: the one host synchronisation;
//   3. list: one warp per row writes cls, kv_list and kv_count, then the
//      PARTIAL blocks' bits are copied into place.
// Packing the bits in pass 1 means the source is read exactly once; the bits
// of PARTIAL blocks cross memory twice more at 1/8 of the source's size.
// H100, 16384 x 16384 (256 MiB), 128 x 128 blocks: pass 1 takes 0.10 ms with
// aligned rows (2.6 TB/s), 0.12-0.16 ms with a misaligned base or odd Lk;
// the whole call, allocations and the synchronisation included, 0.3-0.6 ms.
#include "cuda/mask/block_mask_compress.h"

#include <climits>
#include <cstdint>
#include <string>

namespace fastattn::cuda {
namespace {

constexpr uint8_t kStateEmpty = 0;
constexpr uint8_t kStateFull = 1;
constexpr uint8_t kStatePartial = 2;

// Pass 1 (dense) and the bit copy: 4 warps; a thread owns words
// w = k * 128 + threadIdx.x of its block, k < block_q * block_k / 32 / 128.
constexpr int kThreads = 128;
constexpr int kWarpsPerRowCta = kThreads / 32;  // list and blocks passes: one warp per row
constexpr int kScanThreads = 1024;

struct DenseArgs {
  const uint8_t* data;
  int64_t stride_b, stride_h, stride_row;
  int64_t heads, seqlen_q, seqlen_k, blocks_q, blocks_k;
  int bq_log2, bk_log2;
  uint8_t* state;        // [rows * blocks_k]
  int32_t* row_partial;  // [rows], zeroed
  int32_t* row_full;     // [rows], zeroed
  uint32_t* block_bits;  // [rows * blocks_k, words per block]: PARTIAL blocks only
};

// Bit b of the result = byte b of x is nonzero, for the 4 bytes of x.
__device__ __forceinline__ uint32_t nonzero_nibble(uint32_t x) {
  x |= x >> 4;
  x |= x >> 2;
  x |= x >> 1;
  x &= 0x01010101u;  // bit 8b: OR of byte b
  // Moves bit 8b to bit 24 + b; the other partial products land on distinct
  // bits outside 24..31, so nothing carries into the result.
  return ((x * 0x01020408u) >> 24) & 0xFu;
}

__device__ __forceinline__ uint32_t nonzero_bits16(uint4 v) {
  return nonzero_nibble(v.x) | nonzero_nibble(v.y) << 4 | nonzero_nibble(v.z) << 8 |
         nonzero_nibble(v.w) << 12;
}

// Bits of row[c .. c + 31] (those before lk), from 16-byte loads that stay
// inside row[0, lk): two where the bytes are aligned, else the three aligned
// vectors around them (the neighbour threads' loads overlap; L1 serves the
// repeats). Only a row's first and last chunks may need byte loads.
__device__ __forceinline__ uint32_t load_word(const uint8_t* row, int64_t c, int64_t lk) {
  const uint8_t* p = row + c;
  const int shift = static_cast<int>(reinterpret_cast<uintptr_t>(p) & 15);
  if (shift == 0 && c + 32 <= lk) {
    const uint4* q = reinterpret_cast<const uint4*>(p);
    return nonzero_bits16(__ldcs(q)) | nonzero_bits16(__ldcs(q + 1)) << 16;
  }
  if (shift != 0 && c >= shift && c - shift + 48 <= lk) {
    const uint4* q = reinterpret_cast<const uint4*>(p - shift);
    const uint64_t m = uint64_t{nonzero_bits16(__ldg(q))} |
                       uint64_t{nonzero_bits16(__ldg(q + 1))} << 16 |
                       uint64_t{nonzero_bits16(__ldg(q + 2))} << 32;
    return static_cast<uint32_t>(m >> shift);
  }
  uint32_t word = 0;
  for (int64_t j = 0; j < 32 && c + j < lk; ++j) word |= uint32_t{p[j] != 0} << j;
  return word;
}

// The pairs of word (i, c0 .. c0 + 31) that lie inside the plane.
__device__ __forceinline__ uint32_t valid_bits(int64_t i, int64_t c0, int64_t lq, int64_t lk) {
  if (i >= lq || c0 >= lk) return 0u;
  const int64_t n = lk - c0;
  return n >= 32 ? ~0u : (1u << n) - 1u;
}

template <int kWordsPerThread>
__global__ void __launch_bounds__(kThreads) classify_dense(DenseArgs a) {
  const int64_t block = blockIdx.x;  // r * blocks_k + kb
  const int64_t r = block / a.blocks_k;
  const int64_t kb = block - r * a.blocks_k;
  const int64_t qb = r % a.blocks_q;
  const int64_t bh = r / a.blocks_q;
  const int64_t hm = bh % a.heads;
  const int64_t bm = bh / a.heads;
  const uint8_t* base = a.data + bm * a.stride_b + hm * a.stride_h;
  const int64_t row0 = qb << a.bq_log2;
  const int64_t col0 = kb << a.bk_log2;
  const int wpr_log2 = a.bk_log2 - 5;  // words per block row: 2, 4 or 8
  const int wpr_mask = (1 << wpr_log2) - 1;

  uint32_t words[kWordsPerThread];
#pragma unroll
  for (int k = 0; k < kWordsPerThread; ++k) {
    const int w = k * kThreads + threadIdx.x;
    const int64_t i = row0 + (w >> wpr_log2);
    const int64_t c = col0 + (int64_t{w & wpr_mask} << 5);
    words[k] = i < a.seqlen_q ? load_word(base + i * a.stride_row, c, a.seqlen_k) : 0u;
  }

  int any = 0, all = 1;
#pragma unroll
  for (int k = 0; k < kWordsPerThread; ++k) {
    const int w = k * kThreads + threadIdx.x;
    const uint32_t valid = valid_bits(row0 + (w >> wpr_log2),
                                      col0 + (int64_t{w & wpr_mask} << 5), a.seqlen_q, a.seqlen_k);
    any |= words[k] != 0u;
    all &= words[k] == valid;
  }
  any = __syncthreads_or(any);
  all = __syncthreads_and(all);
  // Every block holds at least one pair of the plane, so EMPTY and FULL exclude each other.
  const uint8_t state = !any ? kStateEmpty : all ? kStateFull : kStatePartial;
  if (threadIdx.x == 0) {
    a.state[block] = state;
    if (state == kStatePartial) atomicAdd(a.row_partial + r, 1);
    if (state == kStateFull) atomicAdd(a.row_full + r, 1);
  }
  if (state != kStatePartial) return;
  uint32_t* dst = a.block_bits + block * (kWordsPerThread * kThreads);
#pragma unroll
  for (int k = 0; k < kWordsPerThread; ++k) dst[k * kThreads + threadIdx.x] = words[k];
}

struct BlocksArgs {
  const uint8_t* data;
  int64_t stride_b, stride_h, stride_row;
  int64_t rows, heads, blocks_q, blocks_k;
  uint8_t* state;
  int32_t* row_partial;
  int32_t* row_full;
};

// A blocks source: nonzero = FULL, 0 = EMPTY; one warp per row.
__global__ void __launch_bounds__(kThreads) classify_blocks(BlocksArgs a) {
  const int64_t r = int64_t{blockIdx.x} * kWarpsPerRowCta + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (r >= a.rows) return;
  const int64_t qb = r % a.blocks_q;
  const int64_t bh = r / a.blocks_q;
  const uint8_t* src = a.data + (bh / a.heads) * a.stride_b + (bh % a.heads) * a.stride_h +
                       qb * a.stride_row;
  int32_t full = 0;
  for (int64_t kb0 = 0; kb0 < a.blocks_k; kb0 += 32) {
    const int64_t kb = kb0 + lane;
    const bool f = kb < a.blocks_k && src[kb] != 0;
    if (kb < a.blocks_k) a.state[r * a.blocks_k + kb] = f ? kStateFull : kStateEmpty;
    full += __popc(__ballot_sync(0xffffffffu, f));
  }
  if (lane == 0) {
    a.row_partial[r] = 0;
    a.row_full[r] = full;
  }
}

struct Totals {
  long long partial;
  long long full;
};

// Exclusive sum over the CTA; `*total` receives the sum of all values.
__device__ long long cta_exclusive_sum(long long v, long long* total) {
  __shared__ long long warp_sums[kScanThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  long long incl = v;
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const long long up = __shfl_up_sync(0xffffffffu, incl, d);
    if (lane >= d) incl += up;
  }
  if (lane == 31) warp_sums[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    long long s = warp_sums[lane];
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
      const long long up = __shfl_up_sync(0xffffffffu, s, d);
      if (lane >= d) s += up;
    }
    warp_sums[lane] = s;  // inclusive over warps
  }
  __syncthreads();
  const long long before = warp == 0 ? 0 : warp_sums[warp - 1];
  *total = warp_sums[kScanThreads / 32 - 1];
  __syncthreads();  // warp_sums is reused by the next call
  return before + incl - v;
}

// Pass 2, one CTA: row_offset[r] = PARTIAL blocks in rows before r.
// Thread t takes a contiguous run of rows; rows number at most a few 1e5.
__global__ void __launch_bounds__(kScanThreads) scan_rows(const int32_t* row_partial,
                                                          const int32_t* row_full, int64_t rows,
                                                          int32_t* row_offset, Totals* totals) {
  const int64_t per = (rows + kScanThreads - 1) / kScanThreads;
  const int64_t begin = threadIdx.x * per;
  const int64_t end = begin + per < rows ? begin + per : rows;
  long long partial = 0, full = 0;
  for (int64_t r = begin; r < end; ++r) {
    partial += row_partial[r];
    full += row_full[r];
  }
  long long total_partial = 0, total_full = 0;
  long long run = cta_exclusive_sum(partial, &total_partial);
  cta_exclusive_sum(full, &total_full);
  for (int64_t r = begin; r < end; ++r) {
    row_offset[r] = static_cast<int32_t>(run);
    run += row_partial[r];
  }
  if (threadIdx.x == 0) {
    totals->partial = total_partial;
    totals->full = total_full;
  }
}

// Pass 3: one warp per row; PARTIAL block p's source slot goes to partial_src[p].
__global__ void __launch_bounds__(kThreads)
    list_rows(const uint8_t* state, const int32_t* row_offset, int64_t rows, int64_t blocks_k,
              int32_t* cls, int32_t* kv_list, int32_t* kv_count, int32_t* partial_src) {
  const int64_t r = int64_t{blockIdx.x} * kWarpsPerRowCta + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  const uint32_t below = (1u << lane) - 1u;
  int32_t next_partial = row_offset[r];
  int32_t count = 0;
  for (int64_t kb0 = 0; kb0 < blocks_k; kb0 += 32) {
    const int64_t kb = kb0 + lane;
    const int64_t at = r * blocks_k + kb;
    const uint8_t s = kb < blocks_k ? state[at] : kStateEmpty;
    const uint32_t nonempty = __ballot_sync(0xffffffffu, s != kStateEmpty);
    const uint32_t partial = __ballot_sync(0xffffffffu, s == kStatePartial);
    if (kb < blocks_k) {
      int32_t c = s == kStateEmpty ? BlockMaskView::kEmpty : BlockMaskView::kFull;
      if (s == kStatePartial) {
        c = next_partial + __popc(partial & below);
        partial_src[c] = static_cast<int32_t>(at);
      }
      cls[at] = c;
    }
    if (s != kStateEmpty) {
      kv_list[r * blocks_k + count + __popc(nonempty & below)] = static_cast<int32_t>(kb);
    }
    count += __popc(nonempty);
    next_partial += __popc(partial);
  }
  for (int64_t j = count + lane; j < blocks_k; j += 32) kv_list[r * blocks_k + j] = 0;
  if (lane == 0) kv_count[r] = count;
}

// The bits of PARTIAL block p from its scratch slot; one CTA per block.
__global__ void __launch_bounds__(kThreads)
    copy_bits(const uint32_t* block_bits, const int32_t* partial_src, int64_t words_per_block,
              uint32_t* bits) {
  const int64_t p = blockIdx.x;
  const uint4* src = reinterpret_cast<const uint4*>(block_bits + partial_src[p] * words_per_block);
  uint4* dst = reinterpret_cast<uint4*>(bits + p * words_per_block);
  for (int64_t v = threadIdx.x; v < words_per_block / 4; v += kThreads) dst[v] = src[v];
}

Status cuda_error(const char* what, cudaError_t err) {
  cudaGetLastError();  // allocation failures are recorded too; leave none behind
  const fa_status code =
      err == cudaErrorMemoryAllocation ? FA_STATUS_OUT_OF_MEMORY : FA_STATUS_BACKEND_ERROR;
  return {code, std::string("block mask: ") + what + ": " + cudaGetErrorName(err) + ": " +
                    cudaGetErrorString(err)};
}

uint64_t align_up(uint64_t n) { return (n + 255) & ~uint64_t{255}; }

// Temporary memory, stream-ordered where the device has memory pools so that
// freeing it neither waits for nor blocks other streams.
class Scratch {
 public:
  explicit Scratch(cudaStream_t stream) : stream_(stream) {
    int device = 0, pools = 0;
    if (cudaGetDevice(&device) == cudaSuccess &&
        cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device) == cudaSuccess) {
      async_ = pools != 0;
    }
    cudaGetLastError();
  }
  ~Scratch() {
    if (ptr_ == nullptr) return;
    if (async_) cudaFreeAsync(ptr_, stream_);
    else cudaFree(ptr_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

  cudaError_t allocate(uint64_t bytes) {
    return async_ ? cudaMallocAsync(&ptr_, bytes, stream_) : cudaMalloc(&ptr_, bytes);
  }
  uint8_t* at(uint64_t offset) const { return static_cast<uint8_t*>(ptr_) + offset; }

 private:
  cudaStream_t stream_;
  void* ptr_ = nullptr;
  bool async_ = false;
};

cudaError_t launch_classify_dense(const DenseArgs& a, int64_t blocks, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(blocks));
  switch (a.bq_log2 + a.bk_log2) {  // words per thread: block_q * block_k / 32 / 128
    case 12: classify_dense<1><<<grid, kThreads, 0, stream>>>(a); break;
    case 13: classify_dense<2><<<grid, kThreads, 0, stream>>>(a); break;
    case 14: classify_dense<4><<<grid, kThreads, 0, stream>>>(a); break;
    case 15: classify_dense<8><<<grid, kThreads, 0, stream>>>(a); break;
    case 16: classify_dense<16><<<grid, kThreads, 0, stream>>>(a); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace

Status compress_block_mask(const BlockMaskSource& src, const BlockMaskShape& shape,
                           cudaStream_t stream, CompressedBlockMask* out) {
  const int64_t blocks_q = shape.blocks_q(), blocks_k = shape.blocks_k();
  const int64_t rows = shape.batch * shape.heads * blocks_q;
  const int64_t blocks = rows * blocks_k;
  if (shape.block_q_log2 < 6 || shape.block_q_log2 > 8 || shape.block_k_log2 < 6 ||
      shape.block_k_log2 > 8) {
    return {FA_STATUS_INTERNAL_ERROR, "block mask: block sizes must be 64, 128 or 256"};
  }
  if (blocks <= 0) return {FA_STATUS_INTERNAL_ERROR, "block mask: empty plane"};
  // cls holds PARTIAL indices and launches take one CTA per block: 32 bits.
  if (blocks > INT32_MAX) {
    return Status::unsupported("block mask: " + std::to_string(blocks) +
                               " blocks; the CUDA compression handles at most " +
                               std::to_string(INT32_MAX) + " (use larger blocks)");
  }
  const int64_t words_per_block = int64_t{1} << (shape.block_q_log2 + shape.block_k_log2 - 5);

  // Scratch: block states, row counters, row offsets, totals, and for dense
  // sources the PARTIAL slots and every block's bit slot (written for PARTIAL
  // blocks only).
  const uint64_t state_at = 0;
  const uint64_t counts_at = align_up(state_at + blocks);
  const uint64_t offsets_at = align_up(counts_at + 8 * uint64_t(rows));
  const uint64_t totals_at = align_up(offsets_at + 4 * uint64_t(rows));
  const uint64_t src_at = align_up(totals_at + sizeof(Totals));
  const uint64_t bits_at = align_up(src_at + (src.dense ? 4 * uint64_t(blocks) : 0));
  const uint64_t scratch_bytes = bits_at + (src.dense ? 4 * uint64_t(blocks * words_per_block) : 0);
  Scratch scratch(stream);
  cudaError_t err = scratch.allocate(scratch_bytes);
  if (err != cudaSuccess) return cuda_error("scratch allocation", err);
  uint8_t* state = scratch.at(state_at);
  int32_t* row_partial = reinterpret_cast<int32_t*>(scratch.at(counts_at));
  int32_t* row_full = row_partial + rows;
  int32_t* row_offset = reinterpret_cast<int32_t*>(scratch.at(offsets_at));
  Totals* totals_dev = reinterpret_cast<Totals*>(scratch.at(totals_at));
  int32_t* partial_src = reinterpret_cast<int32_t*>(scratch.at(src_at));
  uint32_t* block_bits = reinterpret_cast<uint32_t*>(scratch.at(bits_at));

  const unsigned row_ctas = static_cast<unsigned>((rows + kWarpsPerRowCta - 1) / kWarpsPerRowCta);
  if (src.dense) {
    DenseArgs a;
    a.data = src.data;
    a.stride_b = src.stride_b;
    a.stride_h = src.stride_h;
    a.stride_row = src.stride_row;
    a.heads = shape.heads;
    a.seqlen_q = shape.seqlen_q;
    a.seqlen_k = shape.seqlen_k;
    a.blocks_q = blocks_q;
    a.blocks_k = blocks_k;
    a.bq_log2 = shape.block_q_log2;
    a.bk_log2 = shape.block_k_log2;
    a.state = state;
    a.row_partial = row_partial;
    a.row_full = row_full;
    a.block_bits = block_bits;
    err = cudaMemsetAsync(row_partial, 0, 8 * uint64_t(rows), stream);
    if (err != cudaSuccess) return cuda_error("cudaMemsetAsync", err);
    err = launch_classify_dense(a, blocks, stream);
    if (err != cudaSuccess) return cuda_error("classify launch", err);
  } else {
    BlocksArgs a;
    a.data = src.data;
    a.stride_b = src.stride_b;
    a.stride_h = src.stride_h;
    a.stride_row = src.stride_row;
    a.rows = rows;
    a.heads = shape.heads;
    a.blocks_q = blocks_q;
    a.blocks_k = blocks_k;
    a.state = state;
    a.row_partial = row_partial;
    a.row_full = row_full;
    classify_blocks<<<row_ctas, kThreads, 0, stream>>>(a);
    err = cudaGetLastError();
    if (err != cudaSuccess) return cuda_error("classify launch", err);
  }
  scan_rows<<<1, kScanThreads, 0, stream>>>(row_partial, row_full, rows, row_offset, totals_dev);
  err = cudaGetLastError();
  if (err != cudaSuccess) return cuda_error("scan launch", err);
  Totals totals{};
  err = cudaMemcpyAsync(&totals, totals_dev, sizeof totals, cudaMemcpyDeviceToHost, stream);
  if (err == cudaSuccess) err = cudaStreamSynchronize(stream);
  if (err != cudaSuccess) return cuda_error("classification", err);

  // The result: cls, kv_list, kv_count, then the bits 16-byte aligned.
  const uint64_t table_bytes = 4 * (2 * uint64_t(blocks) + uint64_t(rows));
  const uint64_t bits_bytes = 4 * uint64_t(totals.partial) * uint64_t(words_per_block);
  const uint64_t result_bits_at = (table_bytes + 15) & ~uint64_t{15};
  void* storage = nullptr;
  err = cudaMalloc(&storage, result_bits_at + bits_bytes);
  if (err != cudaSuccess) return cuda_error("allocation of the mask", err);
  int32_t* cls = static_cast<int32_t*>(storage);
  int32_t* kv_list = cls + blocks;
  int32_t* kv_count = kv_list + blocks;
  uint32_t* bits = totals.partial > 0
                       ? reinterpret_cast<uint32_t*>(static_cast<uint8_t*>(storage) + result_bits_at)
                       : nullptr;

  list_rows<<<row_ctas, kThreads, 0, stream>>>(state, row_offset, rows, blocks_k, cls, kv_list,
                                               kv_count, partial_src);
  err = cudaGetLastError();
  if (err == cudaSuccess && totals.partial > 0) {
    copy_bits<<<static_cast<unsigned>(totals.partial), kThreads, 0, stream>>>(
        block_bits, partial_src, words_per_block, bits);
    err = cudaGetLastError();
  }
  if (err != cudaSuccess) {
    cudaFree(storage);
    return cuda_error("list launch", err);
  }

  out->storage = storage;
  out->cls = cls;
  out->kv_list = kv_list;
  out->kv_count = kv_count;
  out->bits = bits;
  out->partial_blocks = totals.partial;
  out->full_blocks = totals.full;
  out->empty_blocks = blocks - totals.partial - totals.full;
  out->state_bytes = table_bytes + bits_bytes;
  return Status::ok();
}

}  // namespace fastattn::cuda
