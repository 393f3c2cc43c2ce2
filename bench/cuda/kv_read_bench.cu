// Read bandwidth of the decode access pattern, with no attention math: K and
// V caches laid out [B][Lk][Hkv][D = 128] fp16, one block per (key split, KV
// head, sequence) as in the decode kernels, each block reading its keys of
// one head from both caches. The load mechanisms, one column each:
//   r<W>s<S>       cp.async into a per-warp ring of S stages of 16-key tiles,
//                  W warps (the tensor-core decode kernel's copy); "perm":
//                  the 16-key pages of each sequence in a random order
//   rows8s<S>      the same rings with a block's 8 warps on 8 neighbouring
//                  heads of one key range (whole [key][head] rows when
//                  Hkv = 8), the keys split 8 times finer so the block count
//                  stays; "sync": a block barrier a tile keeps the warps on
//                  the same tile
//   ldg            ld.global.cs (__ldcs) into registers, two tiles per warp
//                  in flight
//   tma<T>x<S>     cp.async.bulk.tensor boxes of T keys, one producer thread
//                  filling an S-stage ring that 4 consumer warps release
//                  through mbarriers; L2 promotion of 256 bytes, "np": none
// beside a device-to-device copy (read + write counted) and a linear read of
// 1 GiB. Each time is the median of 12 calls (15, the first 3 dropped), each
// call after a 256 MiB memset that evicts L2, so that every call reads HBM.
// Bytes per shape: 2 * B * Lk * Hkv * D * 2 (K and V read once).
//
//   kv_read_bench [--shapes "B,Hkv,Lk,splits;B,Hkv,Lk,splits;..."]
// --shapes replaces the default list; Lk must be a multiple of 128. Shapes
// whose K (or V) exceeds the 2 GiB buffers are listed as skipped.
// Built with -DFASTATTN_CUDA_BUILD_DRIVER=ON (sm_90a code only); runs on an
// sm90 GPU only.
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "check_cuda.cuh"
#include "cuda/common/ptx.cuh"
#include "cuda/common/sm90.cuh"
#include "cuda/common/swizzle.cuh"
#include "sm90_driver_common.cuh"

namespace {

namespace fc = fastattn::cuda;
namespace sm90 = fastattn::cuda::sm90;

constexpr int kD = 128;
constexpr int kRowBytes = kD * 2;  // one key of one head, fp16
constexpr int kTileKeys = 16;      // the decode kernels' key tile (and page)
constexpr int kTileBytes = kTileKeys * kRowBytes;
constexpr int kRingStageBytes = 2 * kTileBytes;  // a K tile, then a V tile

constexpr size_t kBufferBytes = size_t{2} << 30;     // each of K and V
constexpr size_t kReferenceBytes = size_t{1} << 30;  // the copy and the linear read
constexpr size_t kFlushBytes = size_t{256} << 20;    // 5x the 50 MiB L2 of an H100
constexpr int kCalls = 15, kDroppedCalls = 3;

struct Shape {
  int batch, heads_kv, keys, splits;
};

dim3 grid_of(const Shape& s) { return dim3(s.splits, s.heads_kv, s.batch); }

double bytes_of(const Shape& s) { return 2.0 * s.batch * s.keys * s.heads_kv * kRowBytes; }

// Keys [k0, k1) of a split: an equal share, rounded up; the last split takes
// what is left.
__device__ __forceinline__ void split_range(const Shape& s, int split, int& k0, int& k1) {
  const int per = (s.keys + s.splits - 1) / s.splits;
  k0 = min(s.keys, split * per);
  k1 = min(s.keys, k0 + per);
}

// Every kernel folds what it read into `acc` and stores it under a condition
// that never holds, so the compiler keeps the loads and nothing is written.
__device__ __forceinline__ void keep_alive(unsigned acc, unsigned* sink) {
  if (acc == 0x12345678u) sink[0] = acc;
}

// ---- cp.async ring ---------------------------------------------------------

template <int kWarps, int kStages>
constexpr int kRingSmemBytes = kWarps * kStages * kRingStageBytes;

// A lane's share of copying head h's 16-key tiles of K and of V into a ring
// stage: 16-byte chunk lane % 16 of rows lane / 16, + 2, ..., + 14.
struct TileCopy {
  int chunk, row0;
  int64_t key_stride;
  const uint16_t* k_base;
  const uint16_t* v_base;
  __device__ TileCopy(const uint16_t* k, const uint16_t* v, const Shape& s, int h, int lane)
      : chunk(lane % 16), row0(lane / 16), key_stride(int64_t(s.heads_kv) * kD),
        k_base(k + int64_t(h) * kD + chunk * 8), v_base(v + int64_t(h) * kD + chunk * 8) {}
  // The tile whose first row of the [B * Lk] key rows is `first_key`.
  __device__ __forceinline__ void operator()(uint32_t stage, int64_t first_key) const {
#pragma unroll
    for (int pass = 0; pass < 8; ++pass) {
      const int r = row0 + 2 * pass;
      const int64_t key = first_key + r;
      const uint32_t at = fc::swizzled_offset<kD / 8>(r, chunk);
      fc::cp_async_16(stage + at, k_base + key * key_stride, true);
      fc::cp_async_16(stage + kTileBytes + at, v_base + key * key_stride, true);
    }
  }
};

// A warp's ring over `tiles` tiles: kStages - 1 copies ahead, each tile
// read once it has landed (kSync: with a block barrier a tile). Returns a
// word of what was read.
template <int kStages, bool kSync, class Issue>
__device__ __forceinline__ unsigned drain_ring(int tiles, Issue&& issue,
                                               const unsigned char* my_ring, int lane) {
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (i < tiles) issue(i);
    fc::cp_async_commit();
  }
  unsigned acc = 0;
  for (int i = 0; i < tiles; ++i) {
    // The stage refilled next was read in the previous iteration by every lane.
    if constexpr (kSync) {
      __syncthreads();
    } else {
      __syncwarp();
    }
    if (i + kStages - 1 < tiles) issue(i + kStages - 1);
    fc::cp_async_commit();
    fc::cp_async_wait<kStages - 1>();
    // The wait covers this lane's copies only; the word read below is
    // another lane's.
    __syncwarp();
    acc ^= *reinterpret_cast<const unsigned*>(my_ring + (i % kStages) * kRingStageBytes +
                                              lane * 128);
  }
  return acc;
}

// Warp w takes the split's tiles w, w + kWarps, ... into its own ring, as the
// tensor-core decode kernel does: per tile, each lane copies 16-byte chunk
// lane % 16 of rows lane / 16, +2, ..., +14 of K and of V. `pages` (may be
// null): the physical 16-key page of each (sequence, logical page).
template <int kWarps, int kStages>
__global__ void __launch_bounds__(kWarps * 32)
    ring_read_kernel(const uint16_t* k, const uint16_t* v, Shape s, const int* pages,
                     unsigned* sink) {
  extern __shared__ __align__(16) unsigned char ring_smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int split = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  int k0, k1;
  split_range(s, split, k0, k1);
  const int t0 = k0 / kTileKeys, t1 = (k1 + kTileKeys - 1) / kTileKeys;
  const int tiles = t0 + warp < t1 ? (t1 - t0 - warp + kWarps - 1) / kWarps : 0;
  const unsigned char* my_ring = ring_smem + warp * kStages * kRingStageBytes;
  const uint32_t ring = fc::smem_addr(my_ring);
  const TileCopy copy(k, v, s, h, lane);
  const int64_t seq_pages = s.keys / kTileKeys;
  auto issue = [&](int i) {
    const int tile = t0 + warp + i * kWarps;
    const int64_t logical = int64_t(b) * seq_pages + tile;
    const int64_t page = pages ? pages[logical] : logical;
    copy(ring + (i % kStages) * kRingStageBytes, page * kTileKeys);
  };
  keep_alive(drain_ring<kStages, false>(tiles, issue, my_ring, lane), sink);
}

// The same per-warp rings with the warps of a block on kWarps neighbouring
// heads of one key range instead of one head's tiles: warp w reads head
// h0 + w, and all warps walk the range's 16-key tiles in the same order, so
// that a block reads whole [key][heads] rows (all heads of a key when
// Hkv == kWarps). Grid: (splits * kWarps, Hkv / kWarps, B), the same block
// count as the per-head mapping; kSync adds a block barrier a tile.
template <int kWarps, int kStages, bool kSync>
__global__ void __launch_bounds__(kWarps * 32)
    row_ring_read_kernel(const uint16_t* k, const uint16_t* v, Shape s, unsigned* sink) {
  extern __shared__ __align__(16) unsigned char ring_smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int h = blockIdx.y * kWarps + warp, b = blockIdx.z;
  Shape wide = s;
  wide.splits = s.splits * kWarps;
  int k0, k1;
  split_range(wide, blockIdx.x, k0, k1);
  const int t0 = k0 / kTileKeys, t1 = (k1 + kTileKeys - 1) / kTileKeys;
  const int tiles = t1 - t0;
  const unsigned char* my_ring = ring_smem + warp * kStages * kRingStageBytes;
  const uint32_t ring = fc::smem_addr(my_ring);
  const TileCopy copy(k, v, s, h, lane);
  auto issue = [&](int i) {
    copy(ring + (i % kStages) * kRingStageBytes,
         int64_t(b) * s.keys + int64_t(t0 + i) * kTileKeys);
  };
  keep_alive(drain_ring<kStages, kSync>(tiles, issue, my_ring, lane), sink);
}

// ---- loads into registers --------------------------------------------------

constexpr int kLdgWarps = 8;

// The ring kernel's tiles and lane mapping, loaded into registers with no
// shared memory: each warp holds two tiles (32 uint4 per lane) in flight.
__global__ void __launch_bounds__(kLdgWarps * 32)
    ldg_read_kernel(const uint16_t* k, const uint16_t* v, Shape s, unsigned* sink) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int split = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  int k0, k1;
  split_range(s, split, k0, k1);
  const int t0 = k0 / kTileKeys, t1 = (k1 + kTileKeys - 1) / kTileKeys;
  const int chunk = lane % 16, row0 = lane / 16;
  const int64_t key_stride = int64_t(s.heads_kv) * kD;
  const int64_t seq_offset = (int64_t(b) * s.keys * s.heads_kv + h) * kD + chunk * 8;
  const uint16_t* k_base = k + seq_offset;
  const uint16_t* v_base = v + seq_offset;
  unsigned acc = 0;
  for (int tile = t0 + warp; tile < t1; tile += 2 * kLdgWarps) {
    uint4 a[32];
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      // Past the split's end the second tile re-reads the first, which keeps
      // every load unconditional and in bounds.
      const int second = tile + kLdgWarps * u;
      const int t = second < t1 ? second : tile;
#pragma unroll
      for (int pass = 0; pass < 8; ++pass) {
        const int64_t key = t * kTileKeys + row0 + 2 * pass;
        a[u * 16 + 2 * pass] = __ldcs(reinterpret_cast<const uint4*>(k_base + key * key_stride));
        a[u * 16 + 2 * pass + 1] =
            __ldcs(reinterpret_cast<const uint4*>(v_base + key * key_stride));
      }
    }
#pragma unroll
    for (int i = 0; i < 32; ++i) acc ^= a[i].x ^ a[i].w;
  }
  keep_alive(acc, sink);
}

// ---- TMA ring --------------------------------------------------------------

constexpr int kTmaConsumers = 4;
constexpr int kTmaThreads = (kTmaConsumers + 1) * 32;  // warp 0 produces

// The stages, then a full and an empty mbarrier per stage; 2048 bytes of
// slack cover rounding the base up to 1024 (the copy engine needs 128) and
// the barriers.
template <int kT, int kS>
constexpr int kTmaSmemBytes = kS * 2 * kT * kRowBytes + 2048;

// Stage st holds a box of kT keys of K, then one of V, both (kT, kD)
// unswizzled. Thread 0 issues both boxes of a stage once the consumers have
// released it; each consumer warp waits for the stage, reads a word per lane
// and releases it.
template <int kT, int kS, int kC>
__global__ void __launch_bounds__((kC + 1) * 32)
    tma_read_kernel(const __grid_constant__ CUtensorMap k_map,
                    const __grid_constant__ CUtensorMap v_map, Shape s, unsigned* sink) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(16) unsigned char tma_smem[];
  constexpr uint32_t kStageBytes = 2 * kT * kRowBytes;
  const uint32_t unaligned = fc::smem_addr(tma_smem);
  const uint32_t base = (unaligned + 1023) & ~1023u;
  const uint32_t full = base + kS * kStageBytes;  // 8 bytes per barrier
  const uint32_t empty = full + 8 * kS;
  const int split = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  int k0, k1;
  split_range(s, split, k0, k1);
  const int boxes = (k1 - k0 + kT - 1) / kT;
  if (threadIdx.x == 0) {
    for (int st = 0; st < kS; ++st) {
      sm90::mbarrier_init(full + 8 * st, 1);
      sm90::mbarrier_init(empty + 8 * st, kC);
    }
    sm90::fence_barrier_init();
  }
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (warp == 0) {
    if (lane == 0) {
      for (int i = 0; i < boxes; ++i) {
        const int st = i % kS;
        sm90::mbarrier_wait(empty + 8 * st, ((i / kS) & 1) ^ 1);
        sm90::mbarrier_arrive_expect_tx(full + 8 * st, kStageBytes);
        const uint32_t dst = base + st * kStageBytes;
        sm90::tma_load_4d(dst, &k_map, full + 8 * st, 0, h, k0 + i * kT, b);
        sm90::tma_load_4d(dst + kT * kRowBytes, &v_map, full + 8 * st, 0, h, k0 + i * kT, b);
      }
    }
  } else {
    const unsigned char* tiles = tma_smem + (base - unaligned);
    unsigned acc = 0;
    for (int i = 0; i < boxes; ++i) {
      const int st = i % kS;
      sm90::mbarrier_wait(full + 8 * st, (i / kS) & 1);
      acc ^= *reinterpret_cast<const unsigned*>(tiles + st * kStageBytes + threadIdx.x * 4);
      __syncwarp();
      if (lane == 0) sm90::mbarrier_arrive(empty + 8 * st);
    }
    keep_alive(acc, sink);
  }
#elif defined(__CUDA_ARCH__)
  __trap();
#endif
}

// ---- reference read --------------------------------------------------------

// Grid-stride read of n uint4, four loads in flight per thread.
__global__ void linear_read_kernel(const uint4* a, size_t n, unsigned* sink) {
  const size_t threads = size_t(gridDim.x) * blockDim.x;
  unsigned acc = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += 4 * threads) {
    uint4 x[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const size_t j = i + u * threads;
      x[u] = j < n ? __ldcs(a + j) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) acc ^= x[u].x ^ x[u].w;
  }
  keep_alive(acc, sink);
}

// ---- host ------------------------------------------------------------------

// cuTensorMapEncodeTiled through the runtime's entry-point query, as
// cuda/host/tma_desc.cpp does, so that the driver needs no link to libcuda.
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    CHECK_CUDA(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000,
                                                cudaEnableDefault, &found));
    if (found != cudaDriverEntryPointSuccess || fn == nullptr) {
      std::fprintf(stderr, "kv_read_bench: the driver has no cuTensorMapEncodeTiled\n");
      std::exit(2);
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  return encode;
}

// A cache [B][Lk][Hkv][kD] as a 4-d tensor (kD, Hkv, Lk, B), read in boxes of
// (kD, 1, box_keys, 1).
CUtensorMap cache_map(const void* cache, const Shape& s, int box_keys,
                      CUtensorMapL2promotion promotion) {
  const cuuint64_t dims[4] = {cuuint64_t(kD), cuuint64_t(s.heads_kv), cuuint64_t(s.keys),
                              cuuint64_t(s.batch)};
  const cuuint64_t strides[3] = {cuuint64_t(kRowBytes), cuuint64_t(s.heads_kv) * kRowBytes,
                                 cuuint64_t(s.keys) * s.heads_kv * kRowBytes};
  const cuuint32_t box[4] = {cuuint32_t(kD), 1, cuuint32_t(box_keys), 1};
  const cuuint32_t elem_strides[4] = {1, 1, 1, 1};
  CUtensorMap map;
  const CUresult r = tensor_map_encoder()(
      &map, CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 4, const_cast<void*>(cache), dims, strides, box,
      elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE, promotion,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    std::fprintf(stderr, "%s:%d cuTensorMapEncodeTiled (box of %d keys): CUresult %d\n", __FILE__,
                 __LINE__, box_keys, int(r));
    std::exit(2);
  }
  return map;
}

template <class Kernel>
void allow_smem(Kernel* kernel, int bytes) {
  CHECK_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
}

// Median time of launch() (returns a cudaError_t) in ms, every call after a
// memset of `flush` that evicts L2.
class ColdTimer {
 public:
  ColdTimer() {
    CHECK_CUDA(cudaMalloc(&flush_, kFlushBytes));
    CHECK_CUDA(cudaEventCreate(&start_));
    CHECK_CUDA(cudaEventCreate(&stop_));
  }
  ~ColdTimer() {
    CHECK_CUDA(cudaEventDestroy(start_));
    CHECK_CUDA(cudaEventDestroy(stop_));
    CHECK_CUDA(cudaFree(flush_));
  }
  ColdTimer(const ColdTimer&) = delete;
  ColdTimer& operator=(const ColdTimer&) = delete;

  template <class Launch>
  float median_ms(Launch&& launch) {
    std::vector<float> ms;
    for (int call = 0; call < kCalls; ++call) {
      CHECK_CUDA(cudaMemsetAsync(flush_, call, kFlushBytes));
      CHECK_CUDA(cudaEventRecord(start_));
      CHECK_CUDA(launch());
      CHECK_CUDA(cudaEventRecord(stop_));
      CHECK_CUDA(cudaEventSynchronize(stop_));
      float t = 0.f;
      CHECK_CUDA(cudaEventElapsedTime(&t, start_, stop_));
      if (call >= kDroppedCalls) ms.push_back(t);
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  }

 private:
  void* flush_ = nullptr;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

// Device buffers shared by every shape: K and V, the page permutation and
// the kernels' sink word.
struct Buffers {
  uint16_t* k = nullptr;
  uint16_t* v = nullptr;
  int* pages = nullptr;
  unsigned* sink = nullptr;
};

template <int kWarps, int kStages>
cudaError_t launch_ring(const Buffers& buf, const Shape& s, bool paged) {
  constexpr int kSmem = kRingSmemBytes<kWarps, kStages>;
  ring_read_kernel<kWarps, kStages><<<grid_of(s), kWarps * 32, kSmem>>>(
      buf.k, buf.v, s, paged ? buf.pages : nullptr, buf.sink);
  return cudaGetLastError();
}

template <int kWarps, int kStages, bool kSync>
cudaError_t launch_row_ring(const Buffers& buf, const Shape& s) {
  constexpr int kSmem = kRingSmemBytes<kWarps, kStages>;
  if (s.heads_kv % kWarps != 0) return cudaErrorInvalidValue;
  const dim3 grid(s.splits * kWarps, s.heads_kv / kWarps, s.batch);
  row_ring_read_kernel<kWarps, kStages, kSync><<<grid, kWarps * 32, kSmem>>>(buf.k, buf.v, s,
                                                                          buf.sink);
  return cudaGetLastError();
}

template <int kT, int kS>
cudaError_t launch_tma(const CUtensorMap& k_map, const CUtensorMap& v_map, const Shape& s,
                       unsigned* sink) {
  constexpr int kSmem = kTmaSmemBytes<kT, kS>;
  tma_read_kernel<kT, kS, kTmaConsumers><<<grid_of(s), kTmaThreads, kSmem>>>(k_map, v_map, s,
                                                                              sink);
  return cudaGetLastError();
}

// Every configuration launched below, given the shared memory it asks for.
void allow_kernel_smem() {
  allow_smem(ring_read_kernel<8, 2>, kRingSmemBytes<8, 2>);
  allow_smem(ring_read_kernel<8, 3>, kRingSmemBytes<8, 3>);
  allow_smem(ring_read_kernel<4, 2>, kRingSmemBytes<4, 2>);
  allow_smem(row_ring_read_kernel<8, 2, false>, kRingSmemBytes<8, 2>);
  allow_smem(row_ring_read_kernel<8, 2, true>, kRingSmemBytes<8, 2>);
  allow_smem(row_ring_read_kernel<8, 3, false>, kRingSmemBytes<8, 3>);
  allow_smem(tma_read_kernel<64, 4, kTmaConsumers>, kTmaSmemBytes<64, 4>);
  allow_smem(tma_read_kernel<64, 6, kTmaConsumers>, kTmaSmemBytes<64, 6>);
  allow_smem(tma_read_kernel<32, 8, kTmaConsumers>, kTmaSmemBytes<32, 8>);
  allow_smem(tma_read_kernel<16, 8, kTmaConsumers>, kTmaSmemBytes<16, 8>);
  allow_smem(tma_read_kernel<128, 3, kTmaConsumers>, kTmaSmemBytes<128, 3>);
}

// A random order of the B * Lk / 16 pages, the same for a shape on every run.
void upload_page_permutation(const Shape& s, int* pages) {
  std::vector<int> perm(size_t(s.batch) * (s.keys / kTileKeys));
  std::iota(perm.begin(), perm.end(), 0);
  std::mt19937 rng(7);
  std::shuffle(perm.begin(), perm.end(), rng);
  CHECK_CUDA(cudaMemcpy(pages, perm.data(), perm.size() * sizeof(int), cudaMemcpyHostToDevice));
}

void print_time(const char* name, float ms, double bytes) {
  std::printf(" %s %.1f (%.2f)", name, ms * 1e3, bytes / ms / 1e9);
}

void measure_shape(const Shape& s, const Buffers& buf, ColdTimer& timer) {
  const double bytes = bytes_of(s);
  std::printf("B=%d Hkv=%d Lk=%d sp=%d %8.0f |", s.batch, s.heads_kv, s.keys, s.splits,
              bytes / (1 << 20));
  if (bytes / 2 > double(kBufferBytes)) {
    std::printf(" skipped: K and V are %.0f MiB each, over the %zu MiB buffers\n",
                bytes / 2 / (1 << 20), kBufferBytes >> 20);
    return;
  }
  upload_page_permutation(s, buf.pages);
  auto show = [&](const char* name, auto&& launch) {
    print_time(name, timer.median_ms(launch), bytes);
    std::fflush(stdout);
  };
  show("r8s2", [&] { return launch_ring<8, 2>(buf, s, false); });
  show("r8s3", [&] { return launch_ring<8, 3>(buf, s, false); });
  show("r4s2", [&] { return launch_ring<4, 2>(buf, s, false); });
  if (s.heads_kv % 8 == 0) {
    show("rows8s2", [&] { return launch_row_ring<8, 2, false>(buf, s); });
    show("rows8s2sync", [&] { return launch_row_ring<8, 2, true>(buf, s); });
    show("rows8s3", [&] { return launch_row_ring<8, 3, false>(buf, s); });
  }
  show("r8s2perm", [&] { return launch_ring<8, 2>(buf, s, true); });
  show("r4s2perm", [&] { return launch_ring<4, 2>(buf, s, true); });
  show("ldg", [&] {
    ldg_read_kernel<<<grid_of(s), kLdgWarps * 32>>>(buf.k, buf.v, s, buf.sink);
    return cudaGetLastError();
  });
  constexpr CUtensorMapL2promotion kPromote = CU_TENSOR_MAP_L2_PROMOTION_L2_256B;
  constexpr CUtensorMapL2promotion kNoPromote = CU_TENSOR_MAP_L2_PROMOTION_NONE;
  {
    const CUtensorMap k = cache_map(buf.k, s, 64, kPromote), v = cache_map(buf.v, s, 64, kPromote);
    show("tma64x4", [&] { return launch_tma<64, 4>(k, v, s, buf.sink); });
    show("tma64x6", [&] { return launch_tma<64, 6>(k, v, s, buf.sink); });
    const CUtensorMap kn = cache_map(buf.k, s, 64, kNoPromote),
                      vn = cache_map(buf.v, s, 64, kNoPromote);
    show("tma64x4np", [&] { return launch_tma<64, 4>(kn, vn, s, buf.sink); });
  }
  {
    const CUtensorMap k = cache_map(buf.k, s, 32, kPromote), v = cache_map(buf.v, s, 32, kPromote);
    show("tma32x8", [&] { return launch_tma<32, 8>(k, v, s, buf.sink); });
  }
  {
    const CUtensorMap k = cache_map(buf.k, s, 16, kPromote), v = cache_map(buf.v, s, 16, kPromote);
    show("tma16x8", [&] { return launch_tma<16, 8>(k, v, s, buf.sink); });
  }
  {
    const CUtensorMap k = cache_map(buf.k, s, 128, kPromote),
                      v = cache_map(buf.v, s, 128, kPromote);
    show("tma128x3", [&] { return launch_tma<128, 3>(k, v, s, buf.sink); });
  }
  std::printf("\n");
}

// (B, Hkv, Lk) rows of decode_ablation's grid.
const std::vector<Shape> kDefaultShapes = {
    {64, 8, 1024, 1},   {16, 8, 32768, 1}, {64, 8, 32768, 1}, {1, 8, 131072, 16},
    {16, 32, 32768, 1}, {16, 8, 4096, 1},  {16, 8, 1024, 1},  {1, 8, 4096, 16},
    {1, 8, 1024, 16},   {16, 8, 32768, 2}, {16, 32, 1024, 1}, {64, 32, 1024, 1},
    {64, 32, 4096, 1},
};

// One field of a --shapes entry: a decimal integer in [1, INT_MAX].
bool parse_field(const std::string& text, long* value) {
  if (text.empty() || text[0] == '-' || text[0] == '+') return false;
  char* end = nullptr;
  errno = 0;
  *value = std::strtol(text.c_str(), &end, 10);
  return errno == 0 && *end == '\0' && *value >= 1 && *value <= INT_MAX;
}

std::vector<std::string> split_on(const std::string& text, char sep) {
  std::vector<std::string> parts;
  size_t from = 0;
  for (size_t at; (at = text.find(sep, from)) != std::string::npos; from = at + 1)
    parts.push_back(text.substr(from, at - from));
  parts.push_back(text.substr(from));
  return parts;
}

// Parses "B,Hkv,Lk,splits;..." (empty entries ignored) into `shapes`;
// returns what is wrong, or an empty string. Lk is a multiple of 128 so that
// 16-key pages and every TMA box (up to 128 keys) tile a sequence exactly.
std::string parse_shapes(const std::string& text, std::vector<Shape>* shapes) {
  static const char* const kFields[4] = {"B", "Hkv", "Lk", "splits"};
  shapes->clear();
  for (const std::string& entry : split_on(text, ';')) {
    if (entry.empty()) continue;
    const std::string where = "entry \"" + entry + "\": ";
    const std::vector<std::string> fields = split_on(entry, ',');
    if (fields.size() != 4)
      return where + std::to_string(fields.size()) + " fields, not the 4 of B,Hkv,Lk,splits";
    long v[4];
    for (int f = 0; f < 4; ++f) {
      if (!parse_field(fields[f], &v[f]))
        return where + kFields[f] + " = \"" + fields[f] + "\" is not an integer in [1, 2^31)";
    }
    const Shape s{int(v[0]), int(v[1]), int(v[2]), int(v[3])};
    if (s.keys % 128 != 0) return where + "Lk = " + fields[2] + " is not a multiple of 128";
    // B and Hkv are the grid's z and y dimensions.
    if (s.batch > 65535) return where + "B = " + fields[0] + " is over 65535";
    if (s.heads_kv > 65535) return where + "Hkv = " + fields[1] + " is over 65535";
    shapes->push_back(s);
  }
  if (shapes->empty()) return "no shape in \"" + text + "\"";
  return "";
}

void measure_references(const Buffers& buf, ColdTimer& timer, int sms) {
  const float copy_ms = timer.median_ms([&] {
    return cudaMemcpyAsync(buf.v, buf.k, kReferenceBytes, cudaMemcpyDeviceToDevice);
  });
  std::printf("copy 1 GiB: %.1f us, %.3f TB/s read+write\n", copy_ms * 1e3,
              2.0 * kReferenceBytes / copy_ms / 1e9);
  const float read_ms = timer.median_ms([&] {
    linear_read_kernel<<<sms * 4, 512>>>(reinterpret_cast<const uint4*>(buf.k),
                                         kReferenceBytes / sizeof(uint4), buf.sink);
    return cudaGetLastError();
  });
  std::printf("linear read 1 GiB: %.1f us, %.3f TB/s\n", read_ms * 1e3,
              kReferenceBytes / read_ms / 1e9);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<Shape> shapes = kDefaultShapes;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--shapes" && i + 1 < argc) {
      const std::string error = parse_shapes(argv[++i], &shapes);
      if (!error.empty()) {
        std::fprintf(stderr, "kv_read_bench: --shapes: %s\n", error.c_str());
        return 2;
      }
    } else {
      std::fprintf(stderr, "usage: kv_read_bench [--shapes \"B,Hkv,Lk,splits;...\"]\n");
      return 2;
    }
  }
  const cudaDeviceProp prop = fastattn::bench::sm90_device_or_exit("kv_read_bench");
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);

  Buffers buf;
  CHECK_CUDA(cudaMalloc(&buf.k, kBufferBytes));
  CHECK_CUDA(cudaMalloc(&buf.v, kBufferBytes));
  // A shape fits the buffers only with B * Lk * Hkv * 256 <= kBufferBytes,
  // so it has at most kBufferBytes / 4096 pages of 16 keys.
  CHECK_CUDA(cudaMalloc(&buf.pages, kBufferBytes / (kTileKeys * kRowBytes) * sizeof(int)));
  CHECK_CUDA(cudaMalloc(&buf.sink, 64));
  CHECK_CUDA(cudaMemset(buf.k, 1, kBufferBytes));
  CHECK_CUDA(cudaMemset(buf.v, 2, kBufferBytes));
  allow_kernel_smem();
  {
    ColdTimer timer;
    measure_references(buf, timer, prop.multiProcessorCount);
    std::printf("%-22s %9s | %s\n", "shape", "MiB", "us (TB/s) per mechanism");
    for (const Shape& s : shapes) measure_shape(s, buf, timer);
  }
  CHECK_CUDA(cudaFree(buf.k));
  CHECK_CUDA(cudaFree(buf.v));
  CHECK_CUDA(cudaFree(buf.pages));
  CHECK_CUDA(cudaFree(buf.sink));
  return 0;
}
