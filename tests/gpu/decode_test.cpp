// The CUDA decode path (fa_plan_decode / fa_run_decode) and the GPU merge,
// judged against the CPU backends running the same calls: FlashAttention's
// rule against the float64 reference (FA_BACKEND_CPU_REFERENCE), with the
// fp32 CPU backend as the plain implementation that sets the tolerance.
// Also: split equals no split, paged equals contiguous (bitwise), append +
// rotary equals doing them separately, graph replay equals eager (with new
// lengths between replays), refusals that leave outputs untouched.
// Skipped where no GPU is present.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "check/device_copy.h"
#include "check/problem.h"
#include "common/scalar_convert.h"
#include "fastattn/fastattn.h"

namespace {

using fastattn::check::gpu_present;

constexpr float kInf = std::numeric_limits<float>::infinity();

struct Spec {
  std::string name;
  fa_dtype dtype = FA_DTYPE_FLOAT16;
  int64_t batch = 2, lq = 1, hq = 8, hkv = 2, d = 128;
  std::vector<int32_t> cache_lens = {300, 1000};  // keys before the append, per sequence
  int64_t page_size = 0;                          // 0: contiguous cache
  bool append = false;
  fa_rotary_style rotary = FA_ROTARY_NONE;
  int32_t rotary_dim = 0;
  fa_mask mask{};
  float softcap = 0.f;
  int32_t splits = 0;
  int64_t max_seqlen_k = 0;  // the planning bound; 0: the cache's capacity
  bool lse = true;
  // options.cuda_path: 0 picks the tensor-core kernel on sm80 and newer;
  // FA_CUDA_PATH_SM75 forces the CUDA-core one.
  int32_t path = FA_CUDA_PATH_AUTO;
};

std::string describe(const Spec& s) {
  std::ostringstream o;
  o << s.name << " [" << (s.dtype == FA_DTYPE_FLOAT16 ? "fp16" : "bf16") << " B=" << s.batch
    << " Lq=" << s.lq << " Hq=" << s.hq << " Hkv=" << s.hkv << " D=" << s.d
    << " page=" << s.page_size << " splits=" << s.splits
    << (s.path == FA_CUDA_PATH_SM75 ? " cuda-cores" : "") << "]";
  return o.str();
}

float to_float(fa_dtype t, uint16_t x) {
  return t == FA_DTYPE_FLOAT16 ? fastattn::fp16_to_float(x) : fastattn::bf16_to_float(x);
}
uint16_t from_float(fa_dtype t, float x) {
  return t == FA_DTYPE_FLOAT16 ? fastattn::float_to_fp16(x) : fastattn::float_to_bf16(x);
}
uint16_t nan_bits(fa_dtype t) { return t == FA_DTYPE_FLOAT16 ? 0x7e00 : 0x7fc0; }

fa_tensor view(void* data, fa_dtype dt, std::initializer_list<int64_t> shape) {
  fa_tensor t{};
  t.data = data;
  t.dtype = dt;
  t.ndim = static_cast<int32_t>(shape.size());
  int i = 0;
  for (int64_t s : shape) t.shape[i++] = s;
  int64_t stride = 1;
  for (int k = t.ndim - 1; k >= 0; --k) {
    t.strides[k] = stride;
    stride *= t.shape[k];
  }
  return t;
}

// Host inputs of one decode problem, drawn from a seed.
struct Problem {
  Spec s;
  int64_t capacity = 0, pages_per_seq = 0, num_pages = 0, max_position = 0;
  std::vector<uint16_t> q, k_cache, v_cache, k_new, v_new;
  std::vector<int32_t> page_table, cache_lens;
  std::vector<float> cos, sin;

  // Rows from each sequence's cached length on hold NaN (the appended rows
  // are written over them): a kernel that copies a key it must not use, and
  // counts it with a zero weight, gets NaN instead of a silent pass.
  void poison_rows_past_lengths() {
    const uint16_t nan = nan_bits(s.dtype);
    const int64_t row = s.hkv * s.d;
    for (int64_t b = 0; b < s.batch; ++b) {
      for (int64_t j = cache_lens[b]; j < capacity; ++j) {
        const int64_t at =
            s.page_size == 0
                ? (b * capacity + j) * row
                : (page_table[b * pages_per_seq + j / s.page_size] * s.page_size + j % s.page_size) * row;
        std::fill_n(k_cache.begin() + at, row, nan);
        std::fill_n(v_cache.begin() + at, row, nan);
      }
    }
  }

  // Page-table entries past the pages a sequence uses (its cached keys and
  // the appended ones) name no page, as a serving framework may leave them:
  // -1 and INT32_MAX in turn.
  void unmap_pages_past_lengths() {
    for (int64_t b = 0; b < s.batch; ++b) {
      const int64_t used = (cache_lens[b] + s.lq + s.page_size - 1) / s.page_size;
      for (int64_t pg = used; pg < pages_per_seq; ++pg) {
        page_table[b * pages_per_seq + pg] = pg % 2 == 0 ? -1 : std::numeric_limits<int32_t>::max();
      }
    }
  }

  Problem(const Spec& spec, uint64_t seed) : s(spec) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal;
    auto fill = [&](std::vector<uint16_t>& v, int64_t n) {
      v.resize(n);
      for (auto& x : v) x = from_float(s.dtype, normal(rng));
    };
    cache_lens = s.cache_lens;
    int64_t longest = 0;
    for (int32_t l : cache_lens) longest = std::max<int64_t>(longest, l + s.lq);
    const int64_t unit = s.page_size > 0 ? s.page_size : 1;
    pages_per_seq = (longest + unit - 1) / unit + 1;  // one page of slack
    capacity = pages_per_seq * unit;
    fill(q, s.batch * s.lq * s.hq * s.d);
    if (s.page_size > 0) {
      num_pages = s.batch * pages_per_seq + 3;  // a few pages nobody uses
      std::vector<int32_t> perm(num_pages);
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), rng);
      page_table.assign(perm.begin(), perm.begin() + s.batch * pages_per_seq);
      fill(k_cache, num_pages * s.page_size * s.hkv * s.d);
      fill(v_cache, num_pages * s.page_size * s.hkv * s.d);
    } else {
      fill(k_cache, s.batch * capacity * s.hkv * s.d);
      fill(v_cache, s.batch * capacity * s.hkv * s.d);
    }
    poison_rows_past_lengths();
    if (s.page_size > 0) unmap_pages_past_lengths();
    if (s.append) {
      fill(k_new, s.batch * s.lq * s.hkv * s.d);
      fill(v_new, s.batch * s.lq * s.hkv * s.d);
    }
    if (s.rotary != FA_ROTARY_NONE) {
      max_position = capacity;
      const int64_t half = s.rotary_dim / 2;
      cos.resize(max_position * half);
      sin.resize(max_position * half);
      for (int64_t p = 0; p < max_position; ++p) {
        for (int64_t i = 0; i < half; ++i) {
          const double angle = p * std::pow(10000.0, -2.0 * i / s.rotary_dim);
          cos[p * half + i] = static_cast<float>(std::cos(angle));
          sin[p * half + i] = static_cast<float>(std::sin(angle));
        }
      }
    }
  }

  // The logical (paged or contiguous) cache as a contiguous one, same data.
  Problem contiguous() const {
    Problem c = *this;
    c.s.page_size = 0;
    c.capacity = pages_per_seq * s.page_size;
    c.page_table.clear();
    c.num_pages = 0;
    const int64_t row = s.hkv * s.d;
    const uint16_t nan = nan_bits(s.dtype);
    c.k_cache.assign(s.batch * c.capacity * row, nan);  // rows of unmapped pages
    c.v_cache.assign(s.batch * c.capacity * row, nan);
    for (int64_t b = 0; b < s.batch; ++b) {
      for (int64_t j = 0; j < c.capacity; ++j) {
        const int64_t page = page_table[b * pages_per_seq + j / s.page_size];
        if (page < 0 || page >= num_pages) continue;
        const int64_t src = (page * s.page_size + j % s.page_size) * row;
        const int64_t dst = (b * c.capacity + j) * row;
        std::copy_n(k_cache.begin() + src, row, c.k_cache.begin() + dst);
        std::copy_n(v_cache.begin() + src, row, c.v_cache.begin() + dst);
      }
    }
    return c;
  }
};

struct Outputs {
  fa_status status = FA_STATUS_OK;
  std::string error;
  int32_t splits = 0;
  std::vector<float> out, lse;
  std::vector<uint16_t> k_cache, v_cache;
};

// Buffers of a problem on one side (host copies or device copies).
class Placed {
 public:
  Placed(const Problem& p, bool gpu) : gpu_(gpu), path_(p.s.path) {
    const Spec& s = p.s;
    out_bytes_ = s.batch * s.lq * s.hq * s.d * 2;
    lse_bytes_ = s.batch * s.hq * s.lq * 4;
    q_ = put(p.q.data(), p.q.size() * 2);
    k_ = put(p.k_cache.data(), p.k_cache.size() * 2);
    v_ = put(p.v_cache.data(), p.v_cache.size() * 2);
    std::vector<unsigned char> poison(std::max(out_bytes_, lse_bytes_), 0xff);
    out_ = put(poison.data(), out_bytes_);
    lse_ = put(poison.data(), lse_bytes_);
    lens_ = put(p.cache_lens.data(), p.cache_lens.size() * 4);
    if (!p.page_table.empty()) pages_ = put(p.page_table.data(), p.page_table.size() * 4);
    if (!p.k_new.empty()) {
      kn_ = put(p.k_new.data(), p.k_new.size() * 2);
      vn_ = put(p.v_new.data(), p.v_new.size() * 2);
    }
    if (!p.cos.empty()) {
      cos_ = put(p.cos.data(), p.cos.size() * 4);
      sin_ = put(p.sin.data(), p.sin.size() * 4);
    }
    const Spec& sp = p.s;
    const fa_dtype dt = sp.dtype;
    a_.q = view(q_, dt, {sp.batch, sp.lq, sp.hq, sp.d});
    if (sp.page_size > 0) {
      a_.k_cache = view(k_, dt, {p.num_pages, sp.page_size, sp.hkv, sp.d});
      a_.v_cache = view(v_, dt, {p.num_pages, sp.page_size, sp.hkv, sp.d});
      a_.page_table = static_cast<const int32_t*>(pages_);
      a_.max_pages_per_seq = p.pages_per_seq;
      a_.page_table_stride = p.pages_per_seq;
    } else {
      a_.k_cache = view(k_, dt, {sp.batch, p.capacity, sp.hkv, sp.d});
      a_.v_cache = view(v_, dt, {sp.batch, p.capacity, sp.hkv, sp.d});
    }
    a_.cache_seqlens = static_cast<const int32_t*>(lens_);
    if (kn_ != nullptr) {
      a_.k_new = view(kn_, dt, {sp.batch, sp.lq, sp.hkv, sp.d});
      a_.v_new = view(vn_, dt, {sp.batch, sp.lq, sp.hkv, sp.d});
    }
    if (cos_ != nullptr) {
      a_.rotary_style = sp.rotary;
      a_.rotary_dim = sp.rotary_dim;
      a_.rotary_cos = view(cos_, FA_DTYPE_FLOAT32, {p.max_position, sp.rotary_dim / 2});
      a_.rotary_sin = view(sin_, FA_DTYPE_FLOAT32, {p.max_position, sp.rotary_dim / 2});
    }
    a_.out = view(out_, dt, {sp.batch, sp.lq, sp.hq, sp.d});
    if (sp.lse) a_.lse = view(lse_, FA_DTYPE_FLOAT32, {sp.batch, sp.hq, sp.lq});
    a_.mask = sp.mask;
    a_.softcap = sp.softcap;
    a_.num_splits = sp.splits;
    a_.max_seqlen_k = sp.max_seqlen_k;
    k_bytes_ = p.k_cache.size() * 2;
  }
  ~Placed() {
    for (void* x : owned_) {
      if (gpu_) {
        cudaFree(x);
      } else {
        std::free(x);
      }
    }
  }
  Placed(const Placed&) = delete;
  Placed& operator=(const Placed&) = delete;

  fa_decode_args& args() { return a_; }
  void* lens() { return lens_; }

  // Plans and runs on `backend` (stream for CUDA), returning what it wrote.
  Outputs run(fa_backend backend, cudaStream_t stream = nullptr) {
    Outputs r;
    fa_run_options opt{};
    opt.backend = backend;
    opt.cuda_stream = stream;
    if (backend == FA_BACKEND_CUDA) opt.cuda_path = path_;
    fa_decode_plan plan{};
    r.status = fa_plan_decode(&a_, &opt, &plan);
    if (r.status != FA_STATUS_OK) {
      r.error = fa_last_error();
      return r;
    }
    r.splits = plan.num_splits;
    void* workspace = nullptr;
    if (plan.workspace_bytes > 0) {
      EXPECT_EQ(cudaMalloc(&workspace, plan.workspace_bytes), cudaSuccess);
    }
    r.status = fa_run_decode(&a_, &plan, workspace, plan.workspace_bytes, &opt);
    if (r.status != FA_STATUS_OK) r.error = fa_last_error();
    if (gpu_) EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    if (workspace != nullptr) cudaFree(workspace);
    read(&r);
    return r;
  }

  void read(Outputs* r) {
    const fa_dtype dt = a_.q.dtype;
    std::vector<uint16_t> o(out_bytes_ / 2);
    get(o.data(), out_, out_bytes_);
    r->out.resize(o.size());
    for (size_t i = 0; i < o.size(); ++i) r->out[i] = to_float(dt, o[i]);
    r->lse.resize(lse_bytes_ / 4);
    get(r->lse.data(), lse_, lse_bytes_);
    r->k_cache.resize(k_bytes_ / 2);
    r->v_cache.resize(k_bytes_ / 2);
    get(r->k_cache.data(), k_, k_bytes_);
    get(r->v_cache.data(), v_, k_bytes_);
  }

  void poison() {
    std::vector<unsigned char> bytes(std::max(out_bytes_, lse_bytes_), 0xff);
    set(out_, bytes.data(), out_bytes_);
    set(lse_, bytes.data(), lse_bytes_);
  }

  void set(void* dst, const void* src, size_t n) {
    if (gpu_) {
      EXPECT_EQ(cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice), cudaSuccess);
    } else {
      std::memcpy(dst, src, n);
    }
  }

 private:
  void* put(const void* src, size_t n) {
    void* p = nullptr;
    if (gpu_) {
      EXPECT_EQ(cudaMalloc(&p, n), cudaSuccess);
    } else {
      p = std::malloc(n);
    }
    owned_.push_back(p);
    set(p, src, n);
    return p;
  }
  void get(void* dst, const void* src, size_t n) {
    if (gpu_) {
      EXPECT_EQ(cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost), cudaSuccess);
    } else {
      std::memcpy(dst, src, n);
    }
  }

  bool gpu_;
  int32_t path_;
  size_t out_bytes_ = 0, lse_bytes_ = 0, k_bytes_ = 0;
  void *q_ = nullptr, *k_ = nullptr, *v_ = nullptr, *out_ = nullptr, *lse_ = nullptr;
  void *lens_ = nullptr, *pages_ = nullptr, *kn_ = nullptr, *vn_ = nullptr;
  void *cos_ = nullptr, *sin_ = nullptr;
  std::vector<void*> owned_;
  fa_decode_args a_{};
};

double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isinf(b[i]) && a[i] == b[i]) continue;
    if (std::isnan(a[i]) || std::isnan(b[i])) return kInf;
    m = std::max(m, double(std::fabs(a[i] - b[i])));
  }
  return m;
}

// Query head h of token i, rotated at its position when the call rotates.
std::vector<float> query_row(const Problem& p, int64_t b, int64_t i, int64_t h) {
  const Spec& s = p.s;
  const uint16_t* x = &p.q[((b * s.lq + i) * s.hq + h) * s.d];
  std::vector<float> q(s.d);
  for (int64_t e = 0; e < s.d; ++e) q[e] = to_float(s.dtype, x[e]);
  if (s.rotary == FA_ROTARY_NONE) return q;
  const int64_t pos = p.cache_lens[b] + i, half = s.rotary_dim / 2;
  std::vector<float> r = q;
  for (int64_t e = 0; e < s.rotary_dim; ++e) {
    const bool first = s.rotary == FA_ROTARY_HALF ? e < half : e % 2 == 0;
    const int64_t pair = s.rotary == FA_ROTARY_HALF ? (first ? e : e - half) : e / 2;
    const int64_t partner = s.rotary == FA_ROTARY_HALF ? (first ? e + half : e - half)
                                                       : (first ? e + 1 : e - 1);
    const double c = p.cos[pos * half + pair], sn = p.sin[pos * half + pair];
    const double v = first ? q[e] * c - q[partner] * sn : q[e] * c + q[partner] * sn;
    r[e] = to_float(s.dtype, from_float(s.dtype, static_cast<float>(v)));
  }
  return r;
}

// FlashAttention's O_lp: attention computed plainly in the dtype (scores and
// probabilities rounded to it, as a matmul-softmax-matmul in fp16/bf16
// would), over the cache the reference call left behind.
void plain_low_precision(const Problem& p, const Outputs& ref, std::vector<float>* out,
                         std::vector<float>* lse) {
  const Spec& s = p.s;
  const fa_dtype dt = s.dtype;
  auto round = [&](double x) { return to_float(dt, from_float(dt, static_cast<float>(x))); };
  const float scale = 1.f / std::sqrt(float(s.d));
  out->assign(s.batch * s.lq * s.hq * s.d, 0.f);
  lse->assign(s.batch * s.hq * s.lq, -kInf);
  const int64_t row = s.hkv * s.d;
  for (int64_t b = 0; b < s.batch; ++b) {
    const int64_t keys = p.cache_lens[b] + (s.append ? s.lq : 0);
    auto key_at = [&](int64_t j) {
      if (s.page_size == 0) return (b * p.capacity + j) * row;
      const int64_t page = p.page_table[b * p.pages_per_seq + j / s.page_size];
      return (page * s.page_size + j % s.page_size) * row;
    };
    for (int64_t i = 0; i < s.lq; ++i) {
      const int64_t diag = i + keys - s.lq;
      int64_t lo = 0, hi = keys;
      if (s.mask.kind == FA_MASK_CAUSAL) hi = std::min(keys, diag + 1);
      if (s.mask.kind == FA_MASK_SLIDING_WINDOW) {
        if (s.mask.window_left >= 0) lo = std::max<int64_t>(0, diag - s.mask.window_left);
        if (s.mask.window_right >= 0) hi = std::min(keys, diag + s.mask.window_right + 1);
      }
      if (s.mask.kind == FA_MASK_PREFIX_LM) hi = std::min(keys, std::max(diag + 1, s.mask.prefix_len));
      if (s.mask.chunk_size > 0) {  // diag >= 0 here: queries are the last Lq keys
        const int64_t c0 = diag / s.mask.chunk_size * s.mask.chunk_size;
        lo = std::max(lo, c0);
        hi = std::min(hi, c0 + s.mask.chunk_size);
      }
      for (int64_t h = 0; h < s.hq; ++h) {
        const int64_t kh = h / (s.hq / s.hkv);
        const std::vector<float> q = query_row(p, b, i, h);
        std::vector<float> sc;
        float mx = -kInf;
        for (int64_t j = lo; j < hi; ++j) {
          const uint16_t* k = &ref.k_cache[key_at(j) + kh * s.d];
          float dot = 0.f;
          for (int64_t e = 0; e < s.d; ++e) dot += q[e] * to_float(dt, k[e]);
          float x = dot * scale;
          if (s.softcap > 0.f) x = s.softcap * std::tanh(x / s.softcap);
          sc.push_back(round(x));
          mx = std::max(mx, sc.back());
        }
        if (sc.empty()) continue;
        double sum = 0;
        for (float x : sc) sum += std::exp(double(x) - mx);
        std::vector<float> acc(s.d, 0.f);
        for (int64_t j = lo; j < hi; ++j) {
          const float pr = round(std::exp(double(sc[j - lo]) - mx) / sum);
          const uint16_t* v = &ref.v_cache[key_at(j) + kh * s.d];
          for (int64_t e = 0; e < s.d; ++e) acc[e] += pr * to_float(dt, v[e]);
        }
        for (int64_t e = 0; e < s.d; ++e) (*out)[((b * s.lq + i) * s.hq + h) * s.d + e] = round(acc[e]);
        (*lse)[(b * s.hq + h) * s.lq + i] = static_cast<float>(mx + std::log(sum));
      }
    }
  }
}

// GPU result judged by FlashAttention's rule against the float64 CPU
// reference, with the plain low-precision attention setting the tolerance;
// cache contents after the append must match the reference's to one unit of
// the dtype.
void expect_matches_reference(const Problem& p, Outputs* gpu_out = nullptr) {
  Placed ref_side(p, false), gpu_side(p, true);
  const Outputs ref = ref_side.run(FA_BACKEND_CPU_REFERENCE);
  const Outputs gpu = gpu_side.run(FA_BACKEND_CUDA);
  ASSERT_EQ(ref.status, FA_STATUS_OK) << ref.error;
  Outputs lp;
  plain_low_precision(p, ref, &lp.out, &lp.lse);
  ASSERT_EQ(gpu.status, FA_STATUS_OK) << describe(p.s) << ": " << gpu.error;
  for (float x : gpu.out) ASSERT_FALSE(std::isnan(x)) << describe(p.s) << ": NaN or unwritten";
  const fastattn::check::Result ref_flat{{ref.out}, {ref.lse}};
  const double tol =
      2 * max_diff(lp.out, ref.out) + fastattn::check::rounding_atol(ref_flat, false);
  EXPECT_LE(max_diff(gpu.out, ref.out), tol) << describe(p.s) << " splits " << gpu.splits;
  if (p.s.lse) {
    for (float x : gpu.lse) ASSERT_FALSE(std::isnan(x)) << describe(p.s) << ": LSE NaN";
    const double lse_tol =
        2 * max_diff(lp.lse, ref.lse) + fastattn::check::rounding_atol(ref_flat, true);
    EXPECT_LE(max_diff(gpu.lse, ref.lse), lse_tol) << describe(p.s) << " splits " << gpu.splits;
    for (size_t i = 0; i < ref.lse.size(); ++i) {
      if (ref.lse[i] == -kInf) EXPECT_EQ(gpu.lse[i], -kInf) << describe(p.s) << " row " << i;
    }
  }
  if (p.s.append) {
    int64_t off_by_more = 0;
    for (size_t i = 0; i < ref.k_cache.size(); ++i) {
      const float a = to_float(p.s.dtype, gpu.k_cache[i]), b = to_float(p.s.dtype, ref.k_cache[i]);
      const float ulp = std::fabs(b) * (p.s.dtype == FA_DTYPE_FLOAT16 ? 1.f / 1024 : 1.f / 128);
      if (std::fabs(a - b) > ulp + 1e-6f) ++off_by_more;
    }
    EXPECT_EQ(off_by_more, 0) << describe(p.s) << ": appended keys differ from the reference";
    EXPECT_EQ(gpu.v_cache, ref.v_cache) << describe(p.s) << ": appended values differ";
  }
  if (gpu_out != nullptr) *gpu_out = gpu;
}

fa_mask causal() {
  fa_mask m{};
  m.kind = FA_MASK_CAUSAL;
  return m;
}
fa_mask window(int64_t left, int64_t right) {
  fa_mask m{};
  m.kind = FA_MASK_SLIDING_WINDOW;
  m.window_left = left;
  m.window_right = right;
  return m;
}

std::vector<Spec> decode_matrix() {
  std::vector<Spec> v;
  auto add = [&](Spec s) { v.push_back(s); };
  for (fa_dtype dt : {FA_DTYPE_FLOAT16, FA_DTYPE_BFLOAT16}) {
    for (int64_t d : {64, 80, 128, 256}) {
      Spec s;
      s.dtype = dt;
      s.d = d;
      s.name = "gqa";
      add(s);
      s.name = "gqa-paged16";
      s.page_size = 16;
      add(s);
    }
    Spec s;
    s.dtype = dt;
    s.name = "mha";
    s.hq = s.hkv = 4;
    add(s);
    s.name = "mqa";
    s.hq = 8;
    s.hkv = 1;
    add(s);
    s = Spec{};
    s.dtype = dt;
    s.name = "spec-verify-lq16-causal";
    s.lq = 16;
    s.mask = causal();
    s.page_size = 5;
    add(s);
  }
  // Page 0, a contiguous cache far longer than the sequences: the tiles
  // copied before the lengths are read hold the NaN past each length.
  for (int64_t page : {0, 1, 5, 16, 256}) {
    Spec s;
    s.name = page == 0 ? "contiguous-short-sequences" : "paged";
    s.page_size = page;
    s.cache_lens = {0, 1, 257, 4000};
    s.batch = 4;
    add(s);
  }
  {
    Spec s;
    s.name = "long-split";
    s.batch = 1;
    s.cache_lens = {70000};
    s.page_size = 16;
    add(s);
    s.name = "long-forced-splits-37";
    s.splits = 37;
    add(s);
    s.name = "split-1";
    s.splits = 1;
    add(s);
  }
  // Few (sequence, KV head) blocks at D = 128: on an H100 the planner takes
  // the fewest splits merged in clusters of 4 to 8 that make 64 blocks
  // (prefer_cluster_read_splits), 8 at batch 1 and 4 at batch 2, where the
  // short second sequence leaves splits without keys.
  for (int64_t page : {0, 16}) {
    Spec s;
    s.name = page == 0 ? "cluster-read-batch1" : "cluster-read-batch1-paged16";
    s.batch = 1;
    s.hq = 32;
    s.hkv = 8;
    s.cache_lens = {20000};
    s.page_size = page;
    add(s);
    s.name = page == 0 ? "cluster-read-batch2" : "cluster-read-batch2-paged16";
    s.batch = 2;
    s.cache_lens = {20000, 700};
    add(s);
    // 32 KV heads in 4 splits of 8250 keys: on an H100 the 32 clusters of
    // four 8-warp blocks do not all fit, so they merge through the merge
    // kernel; contiguous, 4-warp blocks run them one an SM
    // (clusters_keep_eight_warps), paged, 8-warp ones.
    s.name = page == 0 ? "clusters-do-not-fit" : "clusters-do-not-fit-paged16";
    s.batch = 1;
    s.hkv = 32;
    s.cache_lens = {33000};
    s.splits = 4;
    add(s);
  }
  // Splits of 4K keys or more on half an H100's SMs or more (8 KV heads):
  // merged in clusters by 8-warp blocks (3 splits), and run by 4-warp
  // blocks where the planner modelled 8 (settle_decode_warps): 9 splits
  // merged by the merge kernel, and one split.
  for (int64_t page : {0, 16}) {
    Spec s;
    s.name = page == 0 ? "long-splits-four-warps" : "long-splits-four-warps-paged16";
    s.batch = 3;
    s.lq = 2;
    s.hq = 8;
    s.hkv = 8;
    s.d = 64;
    s.cache_lens = {12300, 9000, 5000};
    s.page_size = page;
    s.splits = 3;
    add(s);
    s.name += "-splits9";
    s.batch = 1;
    s.lq = 4;
    s.cache_lens = {36900};
    s.splits = 9;
    add(s);
    s.name = page == 0 ? "long-one-split-four-warps" : "long-one-split-four-warps-paged16";
    s.batch = 9;
    s.lq = 1;
    s.cache_lens = {4100, 3000, 4099, 1, 0, 4100, 2048, 4097, 4100};
    s.splits = 1;
    add(s);
    // One split of kOneBlockPerSmKeys keys or more at D = 128: on an H100,
    // contiguous, one block an SM (settle_decode_occupancy); paged, two.
    s.name = page == 0 ? "long-one-split-one-block-an-sm" : "long-one-split-one-block-an-sm-paged16";
    s.d = 128;
    s.cache_lens = {8200, 3000, 8199, 1, 0, 8200, 4096, 8193, 8200};
    add(s);
  }
  {
    Spec s;
    s.name = "empty-sequences";
    s.batch = 3;
    s.cache_lens = {0, 0, 5};
    add(s);  // no keys at all: out 0, LSE -inf
  }
  {
    Spec s;
    s.name = "lq3-window";
    s.lq = 3;
    s.mask = window(100, 0);
    s.cache_lens = {50, 2000};
    s.page_size = 16;
    add(s);
    s.name = "lq3-window-both-sides-splits";
    s.mask = window(30, 1);
    s.splits = 9;
    add(s);
    s.name = "lq4-causal-softcap";
    s.lq = 4;
    s.mask = causal();
    s.softcap = 30.f;
    s.splits = 0;
    add(s);
    s.name = "no-lse";
    s.lse = false;
    add(s);
  }
  {
    Spec s;
    s.name = "lq4-prefix-lm-splits";
    s.lq = 4;
    s.mask = causal();
    s.mask.kind = FA_MASK_PREFIX_LM;
    s.mask.prefix_len = 1500;  // past the end of the short sequence, inside the long one
    s.cache_lens = {50, 3000};
    s.page_size = 5;
    s.splits = 7;
    add(s);
    s.name = "lq4-chunked-causal";
    s.mask = causal();
    s.mask.chunk_size = 256;  // the queries straddle a chunk boundary in the first sequence
    s.cache_lens = {254, 3000};
    s.splits = 0;
    add(s);
    s.name = "lq1-chunked-window";
    s.lq = 1;
    s.mask = window(100, -1);
    s.mask.chunk_size = 1000;
    s.cache_lens = {1000, 70};
    add(s);
  }
  for (fa_rotary_style style : {FA_ROTARY_HALF, FA_ROTARY_INTERLEAVED}) {
    for (int32_t rd : {128, 64}) {
      Spec s;
      s.name = style == FA_ROTARY_HALF ? "append-rotary-half" : "append-rotary-interleaved";
      s.append = true;
      s.rotary = style;
      s.rotary_dim = rd;
      s.lq = 2;
      s.mask = causal();
      s.page_size = 16;
      s.cache_lens = {0, 777};
      add(s);
    }
  }
  {
    Spec s;
    s.name = "append-no-rotary-bf16";
    s.dtype = FA_DTYPE_BFLOAT16;
    s.append = true;
    s.cache_lens = {15, 16};
    s.page_size = 16;
    add(s);
  }
  // The planning bound decides where the first tiles are copied before the
  // lengths are read: exact, and shorter than every sequence (the splits'
  // tiles then lie elsewhere and are copied again).
  for (int64_t page : {0, 16}) {
    for (int64_t bound : {4000, 100}) {
      Spec s;
      s.name = std::string(bound == 100 ? "planned-short" : "planned-exact") +
               (page == 0 ? "-contiguous" : "-paged16");
      s.page_size = page;
      s.cache_lens = {4000, 1200, 257};
      s.batch = 3;
      s.max_seqlen_k = bound;
      add(s);
      s.name += "-splits5";
      s.splits = 5;
      add(s);
    }
  }
  // Everything again on the CUDA-core kernel (what sm70 and sm75 run).
  const size_t auto_specs = v.size();
  for (size_t i = 0; i < auto_specs; ++i) {
    Spec s = v[i];
    s.name += "-cuda-cores";
    s.path = FA_CUDA_PATH_SM75;
    add(s);
  }
  return v;
}

class CudaDecode : public testing::TestWithParam<Spec> {};

TEST_P(CudaDecode, MatchesReference) {
  if (!gpu_present()) GTEST_SKIP() << "no CUDA GPU";
  expect_matches_reference(Problem(GetParam(), 91));
}

INSTANTIATE_TEST_SUITE_P(Matrix, CudaDecode, testing::ValuesIn(decode_matrix()),
                         [](const testing::TestParamInfo<Spec>& info) {
                           std::string n = info.param.name + "_" + std::to_string(info.index);
                           for (char& c : n) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return n;
                         });

TEST(CudaDecodeProperties, PagedEqualsContiguousBitwise) {
  if (!gpu_present()) GTEST_SKIP() << "no CUDA GPU";
  for (int64_t page : {1, 5, 16, 256}) {
    Spec s;
    s.batch = 3;
    s.cache_lens = {1, 300, 5000};
    s.page_size = page;
    s.splits = 3;
    const Problem paged(s, 17);
    const Problem contiguous = paged.contiguous();
    Placed a(paged, true), b(contiguous, true);
    const Outputs x = a.run(FA_BACKEND_CUDA), y = b.run(FA_BACKEND_CUDA);
    ASSERT_EQ(x.status, FA_STATUS_OK) << x.error;
    ASSERT_EQ(y.status, FA_STATUS_OK) << y.error;
    EXPECT_EQ(0, std::memcmp(x.out.data(), y.out.data(), x.out.size() * 4)) << "page " << page;
    EXPECT_EQ(0, std::memcmp(x.lse.data(), y.lse.data(), x.lse.size() * 4)) << "page " << page;
  }
}

TEST(CudaDecodeProperties, SplitEqualsNoSplit) {
  if (!gpu_present()) GTEST_SKIP() << "no CUDA GPU";
  Spec s;
  s.batch = 2;
  s.cache_lens = {9000, 20000};
  s.page_size = 16;
  s.splits = 1;
  const Problem p(s, 23);
  Placed one(p, true);
  const Outputs base = one.run(FA_BACKEND_CUDA);
  ASSERT_EQ(base.status, FA_STATUS_OK) << base.error;
  // On sm90, 2 to 8 splits merge inside a thread-block cluster, more in the
  // merge kernel; FA_CUDA_PATH_SM80 merges every count in the kernel.
  for (int32_t path : {FA_CUDA_PATH_AUTO, FA_CUDA_PATH_SM80}) {
    for (int32_t splits : {0, 2, 7, 8, 9, 64, 256}) {
      Problem q = p;
      q.s.splits = splits;
      q.s.path = path;
      Placed many(q, true);
      const Outputs got = many.run(FA_BACKEND_CUDA);
      ASSERT_EQ(got.status, FA_STATUS_OK) << got.error;
      // Only the order of the float32 sums differs.
      EXPECT_LE(max_diff(got.out, base.out), 2e-3)
          << "path " << path << " splits " << splits << " (ran " << got.splits << ")";
      EXPECT_LE(max_diff(got.lse, base.lse), 1e-4) << "path " << path << " splits " << splits;
    }
  }
}

// Rotating and appending in the call equals writing the rotated keys into
// the cache first and passing the rotated queries.
TEST(CudaDecodeProperties, AppendRotaryEqualsSeparate) {
  if (!gpu_present()) GTEST_SKIP() << "no CUDA GPU";
  for (fa_rotary_style style : {FA_ROTARY_HALF, FA_ROTARY_INTERLEAVED}) {
    Spec s;
    s.append = true;
    s.rotary = style;
    s.rotary_dim = 96;
    s.lq = 3;
    s.mask = causal();
    s.page_size = 5;
    s.cache_lens = {40, 333};
    const Problem fused(s, 31);
    Placed f(fused, true);
    const Outputs a = f.run(FA_BACKEND_CUDA);
    ASSERT_EQ(a.status, FA_STATUS_OK) << a.error;

    // The separate path: rotate on the host in double, round, write.
    Problem sep = fused;
    sep.s.append = false;
    sep.s.rotary = FA_ROTARY_NONE;
    sep.s.rotary_dim = 0;
    sep.k_new.clear();
    sep.v_new.clear();
    sep.cos.clear();
    sep.sin.clear();
    const int64_t half = s.rotary_dim / 2, D = s.d;
    auto rotate = [&](const uint16_t* x, uint16_t* y, int64_t pos) {
      for (int64_t e = 0; e < D; ++e) {
        double val = to_float(s.dtype, x[e]);
        if (e < s.rotary_dim) {
          int64_t pair, partner;
          bool first;
          if (style == FA_ROTARY_HALF) {
            first = e < half;
            pair = first ? e : e - half;
            partner = first ? e + half : e - half;
          } else {
            first = e % 2 == 0;
            pair = e / 2;
            partner = first ? e + 1 : e - 1;
          }
          const double c = fused.cos[pos * half + pair], sn = fused.sin[pos * half + pair];
          const double other = to_float(s.dtype, x[partner]);
          val = first ? val * c - other * sn : val * c + other * sn;
        }
        y[e] = from_float(s.dtype, static_cast<float>(val));
      }
    };
    for (int64_t b = 0; b < s.batch; ++b) {
      sep.cache_lens[b] = fused.cache_lens[b] + static_cast<int32_t>(s.lq);
      for (int64_t i = 0; i < s.lq; ++i) {
        const int64_t pos = fused.cache_lens[b] + i;
        for (int64_t h = 0; h < s.hq; ++h) {
          const int64_t at = ((b * s.lq + i) * s.hq + h) * D;
          rotate(&fused.q[at], &sep.q[at], pos);
        }
        const int64_t page = fused.page_table[b * fused.pages_per_seq + pos / s.page_size];
        for (int64_t h = 0; h < s.hkv; ++h) {
          const int64_t src = ((b * s.lq + i) * s.hkv + h) * D;
          const int64_t dst = ((page * s.page_size + pos % s.page_size) * s.hkv + h) * D;
          rotate(&fused.k_new[src], &sep.k_cache[dst], pos);
          std::copy_n(&fused.v_new[src], D, &sep.v_cache[dst]);
        }
      }
    }
    Placed g(sep, true);
    const Outputs b = g.run(FA_BACKEND_CUDA);
    ASSERT_EQ(b.status, FA_STATUS_OK) << b.error;
    // float vs double rotation may round one element to the neighbouring
    // value; everything downstream then differs by rounding only.
    int64_t cache_mismatch = 0;
    for (size_t i = 0; i < a.k_cache.size(); ++i) {
      const float x = to_float(s.dtype, a.k_cache[i]), y = to_float(s.dtype, b.k_cache[i]);
      if (std::fabs(x - y) > std::fabs(y) / 1024 + 1e-6f) ++cache_mismatch;
    }
    EXPECT_EQ(cache_mismatch, 0);
    EXPECT_EQ(a.v_cache, b.v_cache);
    EXPECT_LE(max_diff(a.out, b.out), 4e-3) << "style " << style;
    EXPECT_LE(max_diff(a.lse, b.lse), 4e-3) << "style " << style;
  }
}

// A captured decode step replays like the eager call, and picks up new
// sequence lengths written to the device between replays.
TEST(CudaDecodeProperties, GraphReplayEqualsEager) {
  if (!gpu_present()) GTEST_SKIP() << "no CUDA GPU";
  Spec s;
  s.batch = 2;
  s.append = true;
  s.rotary = FA_ROTARY_HALF;
  s.rotary_dim = 128;
  s.cache_lens = {3000, 12000};
  s.page_size = 16;
  s.mask = causal();
  const Problem p(s, 41);
  Placed eager_side(p, true);
  const Outputs eager = eager_side.run(FA_BACKEND_CUDA);
  ASSERT_EQ(eager.status, FA_STATUS_OK) << eager.error;
  ASSERT_GT(eager.splits, 1) << "the test wants split-KV in the graph";

  Placed side(p, true);
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  fa_run_options opt{};
  opt.backend = FA_BACKEND_CUDA;
  opt.cuda_stream = stream;
  fa_decode_plan plan{};
  ASSERT_EQ(fa_plan_decode(&side.args(), &opt, &plan), FA_STATUS_OK) << fa_last_error();
  void* workspace = nullptr;
  ASSERT_EQ(cudaMalloc(&workspace, plan.workspace_bytes), cudaSuccess);
  cudaGraph_t graph;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
  const fa_status st = fa_run_decode(&side.args(), &plan, workspace, plan.workspace_bytes, &opt);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_EQ(st, FA_STATUS_OK) << fa_last_error();
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int replay = 0; replay < 2; ++replay) {
    side.poison();
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    Outputs got;
    side.read(&got);
    EXPECT_EQ(got.out, eager.out) << "replay " << replay;
    EXPECT_EQ(got.lse, eager.lse) << "replay " << replay;
    EXPECT_EQ(got.k_cache, eager.k_cache) << "replay " << replay;
  }
  // Next step: one token later in both sequences.
  Problem next = p;
  for (auto& l : next.cache_lens) l += 1;
  side.set(side.lens(), next.cache_lens.data(), next.cache_lens.size() * 4);
  side.poison();
  ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  Outputs replayed;
  side.read(&replayed);
  // Eager on the same state: the cache after the first append, new lengths.
  Problem state = next;
  state.k_cache = eager.k_cache;
  state.v_cache = eager.v_cache;
  Placed eager_next(state, true);
  const Outputs expect = eager_next.run(FA_BACKEND_CUDA);
  ASSERT_EQ(expect.status, FA_STATUS_OK) << expect.error;
  EXPECT_EQ(replayed.out, expect.out);
  EXPECT_EQ(replayed.lse, expect.lse);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaFree(workspace);
  cudaStreamDestroy(stream);
}

// Decode over the whole sequence equals prefill's last rows (GPU both).
TEST(CudaDecodeProperties, EqualsPrefillLastRows) {
  if (!gpu_present()) GTEST_SKIP() << "no CUDA GPU";
  Spec s;
  s.batch = 2;
  s.lq = 4;
  s.cache_lens = {2044, 2044};  // 2048 keys after the append
  s.append = true;
  s.mask = causal();
  const Problem p(s, 53);
  Placed dec(p, true);
  const Outputs d = dec.run(FA_BACKEND_CUDA);
  ASSERT_EQ(d.status, FA_STATUS_OK) << d.error;
  // Prefill: q rows = the 4 new tokens, K/V = the cache after the append.
  const int64_t lk = 2048;
  void *kd, *vd, *qd, *od, *ld;
  const size_t kv_bytes = s.batch * lk * s.hkv * s.d * 2;
  std::vector<uint16_t> kc(s.batch * lk * s.hkv * s.d), vc(kc.size());
  for (int64_t b = 0; b < s.batch; ++b) {
    const int64_t row = s.hkv * s.d;
    std::copy_n(d.k_cache.begin() + b * p.capacity * row, lk * row, kc.begin() + b * lk * row);
    std::copy_n(d.v_cache.begin() + b * p.capacity * row, lk * row, vc.begin() + b * lk * row);
  }
  ASSERT_EQ(cudaMalloc(&kd, kv_bytes), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&vd, kv_bytes), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&qd, p.q.size() * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&od, p.q.size() * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&ld, s.batch * s.hq * s.lq * 4), cudaSuccess);
  cudaMemcpy(kd, kc.data(), kv_bytes, cudaMemcpyHostToDevice);
  cudaMemcpy(vd, vc.data(), kv_bytes, cudaMemcpyHostToDevice);
  cudaMemcpy(qd, p.q.data(), p.q.size() * 2, cudaMemcpyHostToDevice);
  fa_attention_args a{};
  a.q = view(qd, s.dtype, {s.batch, s.lq, s.hq, s.d});
  a.k = view(kd, s.dtype, {s.batch, lk, s.hkv, s.d});
  a.v = view(vd, s.dtype, {s.batch, lk, s.hkv, s.d});
  a.out = view(od, s.dtype, {s.batch, s.lq, s.hq, s.d});
  a.lse = view(ld, FA_DTYPE_FLOAT32, {s.batch, s.hq, s.lq});
  a.mask = causal();
  fa_run_options opt{};
  opt.backend = FA_BACKEND_CUDA;
  ASSERT_EQ(fa_attention_forward(&a, &opt), FA_STATUS_OK) << fa_last_error();
  std::vector<uint16_t> o(p.q.size());
  std::vector<float> lse(s.batch * s.hq * s.lq);
  cudaMemcpy(o.data(), od, o.size() * 2, cudaMemcpyDeviceToHost);
  cudaMemcpy(lse.data(), ld, lse.size() * 4, cudaMemcpyDeviceToHost);
  std::vector<float> of(o.size());
  for (size_t i = 0; i < o.size(); ++i) of[i] = to_float(s.dtype, o[i]);
  EXPECT_LE(max_diff(d.out, of), 2e-3);
  EXPECT_LE(max_diff(d.lse, lse), 1e-4);
  for (void* x : {kd, vd, qd, od, ld}) cudaFree(x);
}

// Refusals name the argument and leave every output (and the cache) as it was.
TEST(CudaDecodeProperties, RefusalsLeaveOutputsUntouched) {
  if (!gpu_present()) GTEST_SKIP() << "no CUDA GPU";
  Spec s;
  s.append = true;
  s.cache_lens = {10, 20};
  s.page_size = 16;
  const Problem p(s, 61);
  fa_run_options opt{};
  opt.backend = FA_BACKEND_CUDA;
  auto untouched = [&](Placed& side) {
    Outputs r;
    side.read(&r);
    for (float x : r.out) {
      if (!std::isnan(x)) return false;
    }
    return r.k_cache == p.k_cache && r.v_cache == p.v_cache;
  };
  {  // Lq beyond the decode path
    Spec big = s;
    big.lq = 17;
    Placed side(Problem(big, 61), true);
    fa_decode_plan plan{};
    EXPECT_EQ(fa_plan_decode(&side.args(), &opt, &plan), FA_STATUS_UNSUPPORTED);
    EXPECT_NE(std::string(fa_last_error()).find("q: Lq = 17"), std::string::npos) << fa_last_error();
  }
  {  // a plan made for another problem
    Placed side(p, true);
    fa_decode_plan plan{};
    ASSERT_EQ(fa_plan_decode(&side.args(), &opt, &plan), FA_STATUS_OK) << fa_last_error();
    side.args().q.shape[2] = 4;  // Hq 8 -> 4
    side.args().out.shape[2] = 4;
    side.args().lse.shape[1] = 4;
    EXPECT_EQ(fa_run_decode(&side.args(), &plan, nullptr, 0, &opt), FA_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(std::string(fa_last_error()).find("plan"), std::string::npos) << fa_last_error();
    EXPECT_TRUE(untouched(side));
  }
  {  // too small a workspace (more splits than a cluster merges)
    Spec sp = s;
    sp.splits = 16;
    const Problem q(sp, 61);
    Placed side(q, true);
    fa_decode_plan plan{};
    ASSERT_EQ(fa_plan_decode(&side.args(), &opt, &plan), FA_STATUS_OK) << fa_last_error();
    ASSERT_GT(plan.workspace_bytes, 0u);
    void* ws = nullptr;
    ASSERT_EQ(cudaMalloc(&ws, plan.workspace_bytes), cudaSuccess);
    EXPECT_EQ(fa_run_decode(&side.args(), &plan, ws, plan.workspace_bytes - 1, &opt),
              FA_STATUS_INVALID_ARGUMENT);
    EXPECT_NE(std::string(fa_last_error()).find("workspace"), std::string::npos) << fa_last_error();
    EXPECT_TRUE(untouched(side));
    cudaFree(ws);
  }
  {  // float32 has no CUDA path
    std::vector<float> host(8);
    Placed side(p, true);
    for (fa_tensor* t : {&side.args().q, &side.args().k_cache, &side.args().v_cache,
                         &side.args().out, &side.args().k_new, &side.args().v_new}) {
      t->dtype = FA_DTYPE_FLOAT32;
    }
    fa_decode_plan plan{};
    EXPECT_EQ(fa_plan_decode(&side.args(), &opt, &plan), FA_STATUS_UNSUPPORTED) << fa_last_error();
    EXPECT_NE(std::string(fa_last_error()).find("float32"), std::string::npos) << fa_last_error();
  }
}

// fa_merge_states on the GPU equals the CPU merge.
TEST(CudaMerge, EqualsCpuMerge) {
  if (!gpu_present()) GTEST_SKIP() << "no CUDA GPU";
  const int64_t B = 2, L = 3, H = 5, D = 72;
  const int n = 5;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<std::vector<float>> o(n), l(n);
  for (int s = 0; s < n; ++s) {
    o[s].resize(B * L * H * D);
    l[s].resize(B * H * L);
    for (auto& x : o[s]) x = normal(rng);
    for (auto& x : l[s]) x = 4 * normal(rng);
  }
  for (int s = 0; s < n; ++s) l[s][7] = -kInf;  // a row no state saw: 0 and -inf
  l[2][3] = 40.f;                             // one state dominates a row
  std::vector<fa_tensor> outs(n), lses(n);
  std::vector<void*> dev;
  auto up = [&](const void* src, size_t bytes) {
    void* d = nullptr;
    EXPECT_EQ(cudaMalloc(&d, bytes), cudaSuccess);
    cudaMemcpy(d, src, bytes, cudaMemcpyHostToDevice);
    dev.push_back(d);
    return d;
  };
  for (int s = 0; s < n; ++s) {
    outs[s] = view(up(o[s].data(), o[s].size() * 4), FA_DTYPE_FLOAT32, {B, L, H, D});
    lses[s] = view(up(l[s].data(), l[s].size() * 4), FA_DTYPE_FLOAT32, {B, H, L});
  }
  std::vector<uint16_t> poison(B * L * H * D, 0xffff);
  std::vector<float> lpoison(B * H * L, std::nanf(""));
  void* od = up(poison.data(), poison.size() * 2);
  void* ld = up(lpoison.data(), lpoison.size() * 4);
  fa_merge_args m{};
  m.num_states = n;
  m.outs = outs.data();
  m.lses = lses.data();
  m.out = view(od, FA_DTYPE_BFLOAT16, {B, L, H, D});
  m.lse = view(ld, FA_DTYPE_FLOAT32, {B, H, L});
  fa_run_options opt{};
  opt.backend = FA_BACKEND_CUDA;
  ASSERT_EQ(fa_merge_states(&m, &opt), FA_STATUS_OK) << fa_last_error();
  std::vector<uint16_t> got(poison.size());
  std::vector<float> got_lse(lpoison.size());
  cudaMemcpy(got.data(), od, got.size() * 2, cudaMemcpyDeviceToHost);
  cudaMemcpy(got_lse.data(), ld, got_lse.size() * 4, cudaMemcpyDeviceToHost);

  // The CPU merge of the same states (host copies).
  std::vector<fa_tensor> houts(n), hlses(n);
  for (int s = 0; s < n; ++s) {
    houts[s] = view(o[s].data(), FA_DTYPE_FLOAT32, {B, L, H, D});
    hlses[s] = view(l[s].data(), FA_DTYPE_FLOAT32, {B, H, L});
  }
  std::vector<uint16_t> want(poison.size());
  std::vector<float> want_lse(lpoison.size());
  fa_merge_args h = m;
  h.outs = houts.data();
  h.lses = hlses.data();
  h.out = view(want.data(), FA_DTYPE_BFLOAT16, {B, L, H, D});
  h.lse = view(want_lse.data(), FA_DTYPE_FLOAT32, {B, H, L});
  opt.backend = FA_BACKEND_CPU;
  ASSERT_EQ(fa_merge_states(&h, &opt), FA_STATUS_OK) << fa_last_error();
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const float a = fastattn::bf16_to_float(got[i]), b = fastattn::bf16_to_float(want[i]);
    ASSERT_FALSE(std::isnan(a)) << i;
    worst = std::max(worst, double(std::fabs(a - b)) / (std::fabs(b) + 1e-3));
  }
  EXPECT_LE(worst, 1.0 / 128) << "within one bf16 rounding";
  for (size_t i = 0; i < got_lse.size(); ++i) {
    if (std::isinf(want_lse[i])) {
      EXPECT_EQ(got_lse[i], want_lse[i]) << i;
    } else {
      EXPECT_NEAR(got_lse[i], want_lse[i], 1e-5 * (1 + std::fabs(want_lse[i]))) << i;
    }
  }
  for (void* d : dev) cudaFree(d);
}

}  // namespace
