// Block masks compressed on the GPU: the same arrays, bit for bit, as the
// host compression of the same source, and both true to the source itself
// (classes, bits, key lists). Refusals leave *mask untouched. Skipped where
// no GPU is present.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "api/block_mask.h"
#include "check/device_copy.h"
#include "fastattn/fastattn.h"

namespace {

using fastattn::BlockMaskView;
using fastattn::check::gpu_present;

#define ASSERT_CUDA(x) ASSERT_EQ((x), cudaSuccess) << #x

enum class Pattern {
  kRandom,  // each pair allowed with probability `p`
  kTiles,   // tiles of `grain` x `grain`: empty, full, or random at `p`
  kCausal,  // bottom-right aligned, shifted by the head so heads differ
  kBanded,  // |d - j| <= 40 + 30 * h, d = i + Lk - Lq
};

// Where the source's bytes lie: rows padded, planes padded, a leading byte
// offset (misaligning the base), heads as the outer dimension.
struct Layout {
  int64_t row_pad = 0, plane_pad = 0, offset = 0;
  bool heads_outer = false;
};

struct MaskCase {
  std::string name;
  int64_t bm, hm, lq, lk, bq, bk;
  Pattern pattern;
  double p = 0.5;
  int64_t grain = 128;
  Layout layout{};
  bool own_stream = false;  // options->cuda_stream set (else the default stream)
};

void PrintTo(const MaskCase& c, std::ostream* os) { *os << c.name; }

uint64_t mix(uint64_t x) {  // splitmix64: a cheap, seedable per-element draw
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

bool draw(uint64_t key, double p) {
  return static_cast<double>(mix(key) >> 11) * 0x1.0p-53 < p;
}

// A strided bool tensor on the host, [d0, d1, d2, d3] with the last dim contiguous.
struct HostSource {
  std::vector<uint8_t> bytes;
  int64_t offset = 0, d[4] = {}, s[3] = {};
  uint8_t at(int64_t b, int64_t h, int64_t i, int64_t j) const {
    return bytes[offset + b * s[0] + h * s[1] + i * s[2] + j];
  }
  uint8_t& at(int64_t b, int64_t h, int64_t i, int64_t j) {
    return bytes[offset + b * s[0] + h * s[1] + i * s[2] + j];
  }
  fa_tensor tensor(void* base) const {
    fa_tensor t{};
    t.data = static_cast<uint8_t*>(base) + offset;
    t.dtype = FA_DTYPE_BOOL;
    t.ndim = 4;
    for (int k = 0; k < 4; ++k) t.shape[k] = d[k];
    for (int k = 0; k < 3; ++k) t.strides[k] = s[k];
    t.strides[3] = 1;
    return t;
  }
};

// Padding bytes hold 0xA5 (nonzero), so a read outside the view shows up as
// a wrong bit or class.
HostSource allocate(int64_t d0, int64_t d1, int64_t d2, int64_t d3, const Layout& l) {
  HostSource s;
  const int64_t row = d3 + l.row_pad;
  const int64_t plane = d2 * row + l.plane_pad;
  s.offset = l.offset;
  s.d[0] = d0, s.d[1] = d1, s.d[2] = d2, s.d[3] = d3;
  s.s[2] = row;
  s.s[0] = l.heads_outer ? plane : plane * d1;
  s.s[1] = l.heads_outer ? plane * d0 : plane;
  s.bytes.assign(l.offset + plane * d0 * d1, 0xA5);
  return s;
}

bool pattern_value(const MaskCase& c, uint64_t seed, int64_t b, int64_t h, int64_t i, int64_t j) {
  const int64_t d = i + c.lk - c.lq;
  const uint64_t plane = ((seed * 131 + b) * 131 + h) * 0x100000001ull;
  switch (c.pattern) {
    case Pattern::kRandom:
      return draw(plane ^ (uint64_t(i) << 32 | uint64_t(j)), c.p);
    case Pattern::kTiles: {
      const uint64_t tile = mix(plane ^ (uint64_t(i / c.grain) << 32 | uint64_t(j / c.grain)));
      if (tile % 3 == 0) return false;
      if (tile % 3 == 1) return true;
      return draw(plane ^ (uint64_t(i) << 32 | uint64_t(j)) ^ 0x5555, c.p);
    }
    case Pattern::kCausal: return j <= d + 17 * h;
    case Pattern::kBanded: return j >= d - 40 - 30 * h && j <= d + 40 + 30 * h;
  }
  return false;
}

HostSource dense_source(const MaskCase& c, uint64_t seed) {
  HostSource s = allocate(c.bm, c.hm, c.lq, c.lk, c.layout);
  for (int64_t b = 0; b < c.bm; ++b)
    for (int64_t h = 0; h < c.hm; ++h)
      for (int64_t i = 0; i < c.lq; ++i)
        for (int64_t j = 0; j < c.lk; ++j) {
          // Nonzero values other than 1 must count as true.
          s.at(b, h, i, j) = pattern_value(c, seed, b, h, i, j) ? uint8_t(1 + (i + j) % 200) : 0;
        }
  return s;
}

// A mask's arrays and info, read back to the host.
struct Arrays {
  fa_block_mask_info info{};
  BlockMaskView view;  // pointers into the vectors below
  std::vector<int32_t> cls, list, count;
  std::vector<uint32_t> bits;
};

template <typename T>
void read_array(const T* p, size_t n, bool on_device, std::vector<T>* out) {
  out->resize(n);
  if (n == 0) return;
  if (on_device) {
    ASSERT_CUDA(cudaMemcpy(out->data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
  } else {
    std::memcpy(out->data(), p, n * sizeof(T));
  }
}

void read_mask(const fa_block_mask* m, Arrays* a) {
  ASSERT_EQ(fa_block_mask_get_info(m, &a->info), FA_STATUS_OK) << fa_last_error();
  const BlockMaskView& v = m->view;
  const size_t rows = size_t(v.batch * v.heads * v.blocks_q);
  const size_t blocks = rows * size_t(v.blocks_k);
  const size_t words = size_t(a->info.partial_blocks) << (v.block_q_log2 + v.block_k_log2 - 5);
  if (m->on_device) {
    ASSERT_CUDA(cudaDeviceSynchronize());  // the arrays are stream-ordered
  }
  read_array(v.cls, blocks, m->on_device, &a->cls);
  read_array(v.kv_list, blocks, m->on_device, &a->list);
  read_array(v.kv_count, rows, m->on_device, &a->count);
  read_array(v.bits, words, m->on_device, &a->bits);
  a->view = v;
  a->view.cls = a->cls.data();
  a->view.kv_list = a->list.data();
  a->view.kv_count = a->count.data();
  a->view.bits = a->bits.data();
}

void expect_same(const Arrays& dev, const Arrays& host) {
  const fa_block_mask_info& d = dev.info;
  const fa_block_mask_info& h = host.info;
  EXPECT_EQ(d.on_device, 1);
  EXPECT_EQ(h.on_device, 0);
  int current = -1;
  ASSERT_CUDA(cudaGetDevice(&current));
  EXPECT_EQ(d.device, current);
  EXPECT_EQ(d.batch, h.batch);
  EXPECT_EQ(d.heads, h.heads);
  EXPECT_EQ(d.seqlen_q, h.seqlen_q);
  EXPECT_EQ(d.seqlen_k, h.seqlen_k);
  EXPECT_EQ(d.block_q, h.block_q);
  EXPECT_EQ(d.block_k, h.block_k);
  EXPECT_EQ(d.empty_blocks, h.empty_blocks);
  EXPECT_EQ(d.full_blocks, h.full_blocks);
  EXPECT_EQ(d.partial_blocks, h.partial_blocks);
  EXPECT_EQ(d.state_bytes, h.state_bytes);
  EXPECT_TRUE(dev.cls == host.cls) << "cls differs";
  EXPECT_TRUE(dev.count == host.count) << "kv_count differs";
  EXPECT_TRUE(dev.bits == host.bits) << "bits differ";
  // Only the first kv_count[r] entries of a row are defined.
  if (dev.count != host.count) return;
  const int64_t bk = dev.view.blocks_k;
  for (size_t r = 0; r < dev.count.size(); ++r) {
    for (int32_t k = 0; k < dev.count[r]; ++k) {
      ASSERT_EQ(dev.list[r * bk + k], host.list[r * bk + k]) << "kv_list row " << r << " entry " << k;
    }
  }
}

// The compressed mask against its dense source: classes, bits of the pairs
// inside the plane, row lists, PARTIAL numbering and counts.
void expect_true_to_dense(const Arrays& a, const HostSource& s) {
  const BlockMaskView& v = a.view;
  const int64_t bq = int64_t{1} << v.block_q_log2, bk = int64_t{1} << v.block_k_log2;
  int64_t next_partial = 0, empty = 0, full = 0;
  for (int64_t b = 0; b < v.batch; ++b)
    for (int64_t h = 0; h < v.heads; ++h)
      for (int64_t qb = 0; qb < v.blocks_q; ++qb) {
        const int64_t r = v.row(b, h, qb);
        std::vector<int32_t> nonempty;
        for (int64_t kb = 0; kb < v.blocks_k; ++kb) {
          bool any = false, all = true;
          for (int64_t i = qb * bq; i < std::min(v.seqlen_q, (qb + 1) * bq); ++i)
            for (int64_t j = kb * bk; j < std::min(v.seqlen_k, (kb + 1) * bk); ++j) {
              const bool x = s.at(b, h, i, j) != 0;
              any |= x;
              all &= x;
            }
          const int32_t c = v.cls[r * v.blocks_k + kb];
          const int32_t want = !any ? BlockMaskView::kEmpty : all ? BlockMaskView::kFull : -3;
          if (want == -3) {
            ASSERT_EQ(c, next_partial) << "block (" << r << ", " << kb << "): PARTIAL index";
            ++next_partial;
            for (int64_t i = qb * bq; i < std::min(v.seqlen_q, (qb + 1) * bq); ++i)
              for (int64_t j = kb * bk; j < std::min(v.seqlen_k, (kb + 1) * bk); ++j) {
                ASSERT_EQ(v.allowed(b, h, i, j), s.at(b, h, i, j) != 0)
                    << "pair (" << b << ", " << h << ", " << i << ", " << j << ")";
              }
          } else {
            ASSERT_EQ(c, want) << "block (" << r << ", " << kb << ")";
            (want == BlockMaskView::kEmpty ? empty : full) += 1;
          }
          if (any) nonempty.push_back(int32_t(kb));
        }
        ASSERT_EQ(v.kv_count[r], int32_t(nonempty.size())) << "row " << r;
        for (size_t k = 0; k < nonempty.size(); ++k) {
          ASSERT_EQ(v.kv_list[r * v.blocks_k + int64_t(k)], nonempty[k]) << "row " << r;
        }
      }
  EXPECT_EQ(a.info.partial_blocks, next_partial);
  EXPECT_EQ(a.info.empty_blocks, empty);
  EXPECT_EQ(a.info.full_blocks, full);
  const uint64_t blocks = uint64_t(v.batch * v.heads * v.blocks_q * v.blocks_k);
  const uint64_t rows = uint64_t(v.batch * v.heads * v.blocks_q);
  EXPECT_EQ(a.info.state_bytes, 4 * (2 * blocks + rows) + uint64_t(next_partial) * bq * bk / 8);
}

struct MaskDeleter {
  void operator()(fa_block_mask* m) const { fa_block_mask_destroy(m); }
};
using MaskPtr = std::unique_ptr<fa_block_mask, MaskDeleter>;

// A mask from `args` (its source in host or device memory), built on `stream`,
// which is synchronised before the arrays are read.
MaskPtr create(const fa_block_mask_args& args, cudaStream_t stream) {
  fa_run_options opt{};
  opt.cuda_stream = stream;
  fa_block_mask* m = nullptr;
  const fa_status st = fa_block_mask_create(&args, &opt, &m);
  EXPECT_EQ(st, FA_STATUS_OK) << fa_last_error();
  if (stream != nullptr) {
    EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  }
  return MaskPtr(m);
}

class DeviceBlockMask : public testing::TestWithParam<MaskCase> {};

TEST_P(DeviceBlockMask, MatchesHostAndSource) {
  if (!gpu_present()) GTEST_SKIP() << "no CUDA GPU";
  const MaskCase& c = GetParam();
  const HostSource src = dense_source(c, 11);
  fastattn::check::DeviceCopy dev(src.bytes.data(), src.bytes.size());
  ASSERT_TRUE(dev.ok()) << dev.error();
  cudaStream_t stream = nullptr;
  if (c.own_stream) {
    ASSERT_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  }

  fa_block_mask_args args{};
  args.block_q = c.bq;
  args.block_k = c.bk;
  args.dense = src.tensor(dev.data());
  const MaskPtr on_gpu = create(args, stream);
  if (stream != nullptr) cudaStreamDestroy(stream);
  args.dense = src.tensor(const_cast<uint8_t*>(src.bytes.data()));
  const MaskPtr on_host = create(args, nullptr);
  ASSERT_NE(on_gpu, nullptr);
  ASSERT_NE(on_host, nullptr);
  Arrays d, h;
  ASSERT_NO_FATAL_FAILURE(read_mask(on_gpu.get(), &d));
  ASSERT_NO_FATAL_FAILURE(read_mask(on_host.get(), &h));
  expect_same(d, h);
  expect_true_to_dense(d, src);
}

std::vector<MaskCase> dense_cases() {
  std::vector<MaskCase> v;
  // Densities, unaligned rows (Lk = 520) and aligned ones (Lk = 1024).
  const double densities[] = {0.0, 0.02, 0.3, 0.9, 1.0};
  const char* density_names[] = {"0", "0_02", "0_3", "0_9", "1"};
  for (int k = 0; k < 5; ++k) {
    v.push_back({std::string("random_") + density_names[k] + "_300x520", 1, 1, 300, 520, 64, 128,
                 Pattern::kRandom, densities[k]});
    v.push_back({std::string("random_") + density_names[k] + "_512x1024", 1, 2, 512, 1024, 128,
                 64, Pattern::kRandom, densities[k]});
    v.push_back({std::string("tiles_") + density_names[k] + "_1000x2047", 2, 3, 1000, 2047, 64,
                 64, Pattern::kTiles, densities[k], 64});
  }
  // Every block shape, on tiles coarser and finer than the blocks.
  for (int64_t bq : {64, 128, 256})
    for (int64_t bk : {64, 128, 256}) {
      const std::string shape = std::to_string(bq) + "x" + std::to_string(bk);
      v.push_back({"tiles_blocks_" + shape, 2, 1, 333, 700, bq, bk, Pattern::kTiles, 0.1, 128});
      v.push_back({"tiles_aligned_blocks_" + shape, 1, 2, 640, 768, bq, bk, Pattern::kTiles, 0.5,
                   64});
    }
  // Structured masks, odd and large planes.
  v.push_back({"causal_77x131", 1, 1, 77, 131, 64, 64, Pattern::kCausal});
  v.push_back({"causal_4096", 1, 1, 4096, 4096, 128, 128, Pattern::kCausal});
  v.push_back({"causal_per_head_1000x2047", 1, 4, 1000, 2047, 128, 256, Pattern::kCausal});
  v.push_back({"banded_per_head_1000x2047", 1, 3, 1000, 2047, 64, 256, Pattern::kBanded});
  v.push_back({"banded_per_batch_head_77x131", 3, 2, 77, 131, 256, 64, Pattern::kBanded});
  v.push_back({"banded_4096_256", 1, 1, 4096, 4096, 256, 256, Pattern::kBanded});
  v.push_back({"random_0_3_4096_256", 1, 1, 4096, 4096, 256, 256, Pattern::kRandom, 0.3});
  v.push_back({"tiles_4096_per_batch", 2, 1, 4096, 4096, 128, 64, Pattern::kTiles, 0.05, 256});
  // Strided sources: padded rows (aligned and not), padded planes, heads
  // outermost, a misaligned base; and a stream of the caller's.
  Layout aligned_pad{64, 32, 0, false}, odd_pad{3, 5, 0, false}, transposed{16, 0, 0, true},
      shifted{0, 0, 1, false};
  v.push_back({"strided_rows_aligned", 2, 2, 500, 1024, 128, 128, Pattern::kTiles, 0.3, 64,
               aligned_pad});
  v.push_back({"strided_rows_odd", 2, 2, 500, 1000, 128, 128, Pattern::kTiles, 0.3, 64, odd_pad});
  v.push_back({"strided_heads_outer", 2, 3, 300, 512, 64, 128, Pattern::kBanded, 0.5, 64,
               transposed});
  v.push_back({"strided_base_plus_1", 1, 2, 256, 512, 64, 64, Pattern::kTiles, 0.5, 64, shifted});
  v.push_back({"own_stream", 2, 2, 1000, 2047, 128, 128, Pattern::kTiles, 0.2, 64, odd_pad, true});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Dense, DeviceBlockMask, testing::ValuesIn(dense_cases()),
                         [](const testing::TestParamInfo<MaskCase>& info) { return info.param.name; });

// A blocks source (one bool per block, strided): FULL or EMPTY only.
TEST(DeviceBlockMaskBlocks, MatchesHostAndSource) {
  if (!gpu_present()) GTEST_SKIP() << "no CUDA GPU";
  const int64_t bm = 2, hm = 3, lq = 1000, lk = 2047, bq = 128, bk = 64;
  const int64_t nq = (lq + bq - 1) / bq, nk = (lk + bk - 1) / bk;
  HostSource s = allocate(bm, hm, nq, nk, Layout{5, 3, 1, true});
  for (int64_t b = 0; b < bm; ++b)
    for (int64_t h = 0; h < hm; ++h)
      for (int64_t i = 0; i < nq; ++i)
        for (int64_t j = 0; j < nk; ++j) s.at(b, h, i, j) = draw(mix(b * 7 + h) ^ (i << 20 | j), 0.4) ? 3 : 0;
  fastattn::check::DeviceCopy dev(s.bytes.data(), s.bytes.size());
  ASSERT_TRUE(dev.ok()) << dev.error();

  fa_block_mask_args args{};
  args.block_q = bq;
  args.block_k = bk;
  args.seqlen_q = lq;
  args.seqlen_k = lk;
  args.blocks = s.tensor(dev.data());
  const MaskPtr on_gpu = create(args, nullptr);
  args.blocks = s.tensor(s.bytes.data());
  const MaskPtr on_host = create(args, nullptr);
  ASSERT_NE(on_gpu, nullptr);
  ASSERT_NE(on_host, nullptr);
  Arrays d, h;
  ASSERT_NO_FATAL_FAILURE(read_mask(on_gpu.get(), &d));
  ASSERT_NO_FATAL_FAILURE(read_mask(on_host.get(), &h));
  expect_same(d, h);
  EXPECT_EQ(d.info.partial_blocks, 0);
  EXPECT_EQ(d.info.state_bytes, uint64_t(4 * (2 * bm * hm * nq * nk + bm * hm * nq)));
  int64_t full = 0;
  for (int64_t b = 0; b < bm; ++b)
    for (int64_t hh = 0; hh < hm; ++hh)
      for (int64_t i = 0; i < nq; ++i) {
        const int64_t r = d.view.row(b, hh, i);
        int32_t listed = 0;
        for (int64_t j = 0; j < nk; ++j) {
          const bool on = s.at(b, hh, i, j) != 0;
          full += on;
          EXPECT_EQ(d.cls[r * nk + j], on ? BlockMaskView::kFull : BlockMaskView::kEmpty);
          if (on) {
            EXPECT_EQ(d.list[r * nk + listed++], j);
          }
        }
        EXPECT_EQ(d.count[r], listed);
      }
  EXPECT_EQ(d.info.full_blocks, full);
}

// Refused device sources name the argument and leave *mask as it was.
TEST(DeviceBlockMaskRefusals, LeaveMaskUntouched) {
  if (!gpu_present()) GTEST_SKIP() << "no CUDA GPU";
  const MaskCase c{"refusal", 1, 1, 256, 256, 128, 128, Pattern::kCausal};
  const HostSource src = dense_source(c, 3);
  fastattn::check::DeviceCopy dev(src.bytes.data(), src.bytes.size());
  ASSERT_TRUE(dev.ok()) << dev.error();
  fa_block_mask* const sentinel = reinterpret_cast<fa_block_mask*>(uintptr_t{0x5a5a5a50});
  fa_run_options opt{};

  struct Refusal {
    const char* what;
    fa_dtype dtype;
    int64_t block_q, block_k;
  };
  const Refusal refusals[] = {
      {"float16 source", FA_DTYPE_FLOAT16, 128, 128},
      {"float32 source", FA_DTYPE_FLOAT32, 128, 128},
      {"block_q 96", FA_DTYPE_BOOL, 96, 128},
      {"block_k 32", FA_DTYPE_BOOL, 128, 32},
      {"block_k 512", FA_DTYPE_BOOL, 128, 512},
      {"block_q -64", FA_DTYPE_BOOL, -64, 128},
  };
  for (const Refusal& r : refusals) {
    SCOPED_TRACE(r.what);
    fa_block_mask_args args{};
    args.dense = src.tensor(dev.data());
    args.dense.dtype = r.dtype;
    args.block_q = r.block_q;
    args.block_k = r.block_k;
    fa_block_mask* m = sentinel;
    EXPECT_EQ(fa_block_mask_create(&args, &opt, &m), FA_STATUS_INVALID_ARGUMENT);
    EXPECT_EQ(m, sentinel);
    EXPECT_STRNE(fa_last_error(), "");
  }
}

}  // namespace
