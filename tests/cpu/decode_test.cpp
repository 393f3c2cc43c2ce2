// fa_plan_decode / fa_run_decode on the CPU backends: decode over a paged or
// contiguous cache equals attention over the same keys (FlashAttention's
// rule against the float64 reference; the reference backend bit for bit),
// and the append with rotary embedding equals rotating and writing the cache
// by hand.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "check/problem.h"
#include "common/scalar_convert.h"
#include "cpu/test_data.h"
#include "fastattn/fastattn.hpp"

namespace fastattn {
namespace {

using testing_data::random_normal;

constexpr float kInf = std::numeric_limits<float>::infinity();

// Host memory of one dtype. Starts with every bit set: NaN in every dtype,
// so an element nobody wrote is caught, and a copy compares bytewise.
class HostBuffer {
 public:
  HostBuffer() = default;
  HostBuffer(fa_dtype dtype, int64_t elements)
      : dtype_(dtype), bytes_(std::max<int64_t>(elements, 1) * (dtype == FA_DTYPE_FLOAT32 ? 4 : 2), 0xff) {}
  void* data() { return bytes_.data(); }
  void* at(int64_t element) { return bytes_.data() + element * element_size(); }
  void set(int64_t i, float x) { store_from_float(bytes_.data(), i, dtype(), x); }
  float get(int64_t i) const { return load_as_float(bytes_.data(), i, dtype()); }
  int64_t elements() const { return int64_t(bytes_.size()) / element_size(); }
  bool operator==(const HostBuffer& o) const { return bytes_ == o.bytes_; }

 private:
  int element_size() const { return dtype_ == FA_DTYPE_FLOAT32 ? 4 : 2; }
  DType dtype() const { return static_cast<DType>(static_cast<int>(dtype_)); }
  fa_dtype dtype_ = FA_DTYPE_FLOAT32;
  std::vector<unsigned char> bytes_;
};

struct Scenario {
  fa_dtype dtype = FA_DTYPE_FLOAT32;
  int64_t lq = 1, hq = 8, hkv = 2, d = 64;
  int64_t page_size = 0;      // 0: contiguous cache [B, capacity, Hkv, D]
  std::vector<int32_t> lens;  // cache_seqlens: keys before the append
  bool append = false;
  fa_rotary_style rotary = FA_ROTARY_NONE;
  int32_t rotary_dim = 0;
  fa_mask mask{};
  float softcap = 0.0f;
  uint64_t seed = 0;  // of the random inputs
};

std::string describe(const Scenario& s) {
  std::ostringstream m;
  m << (s.dtype == FA_DTYPE_FLOAT32 ? "fp32" : s.dtype == FA_DTYPE_FLOAT16 ? "fp16" : "bf16")
    << " Lq" << s.lq << " Hq" << s.hq << " Hkv" << s.hkv << " D" << s.d << " "
    << (s.page_size ? "page" + std::to_string(s.page_size) : std::string("contiguous"));
  if (s.append) m << " append";
  if (s.rotary == FA_ROTARY_HALF) m << " rotary_half" << s.rotary_dim;
  if (s.rotary == FA_ROTARY_INTERLEAVED) m << " rotary_interleaved" << s.rotary_dim;
  if (s.mask.kind == FA_MASK_CAUSAL) m << " causal";
  if (s.mask.kind == FA_MASK_SLIDING_WINDOW) {
    m << " window" << s.mask.window_left << "_" << s.mask.window_right;
  }
  if (s.softcap > 0) m << " softcap";
  return m.str();
}

// One scenario's inputs: logical values (rounded to the dtype) and the
// buffers the library reads and writes.
struct Inputs {
  Scenario s;
  int64_t batch = 0, new_tokens = 0, capacity = 0;
  int64_t max_pages = 0, table_stride = 0, num_pages = 0, batch_stride = 0;
  std::vector<int32_t> table;
  std::vector<float> q, k_new, v_new;    // [B, Lq, Hq | Hkv, D]
  std::vector<std::vector<float>> k, v;  // per sequence, the cached keys [lens[b], Hkv, D]
  int64_t max_position = 0;
  std::vector<float> cos, sin;           // [max_position, rotary_dim / 2]
  HostBuffer q_buf, kv_new_buf, k_cache, v_cache, out, lse;

  // Element offset of row j (KV head 0) of sequence b in the cache.
  int64_t cache_row(int64_t b, int64_t j) const {
    const int64_t row = s.hkv * s.d;
    if (s.page_size == 0) return b * batch_stride + j * row;
    return (table[b * table_stride + j / s.page_size] * s.page_size + j % s.page_size) * row;
  }
};

std::vector<float> rounded_normal(int64_t n, uint64_t seed, fa_dtype t) {
  std::vector<float> x = random_normal(n, seed);
  for (float& e : x) e = check::round_to_dtype(e, t);
  return x;
}

Inputs make_inputs(const Scenario& s, uint64_t seed) {
  Inputs in;
  in.s = s;
  in.batch = int64_t(s.lens.size());
  in.new_tokens = s.append ? s.lq : 0;
  const int64_t b_count = in.batch, row = s.hkv * s.d;
  int64_t need = 1;
  for (int32_t len : s.lens) need = std::max<int64_t>(need, len + in.new_tokens);
  if (s.page_size > 0) {
    // A spare page per sequence and spare pages nobody uses; table entries
    // past the pages in use are -1 and must never be read.
    in.max_pages = (need + s.page_size - 1) / s.page_size + 1;
    in.capacity = in.max_pages * s.page_size;
    in.table_stride = in.max_pages + 1;
    in.num_pages = b_count * in.max_pages + 2;
    std::vector<int32_t> ids(in.num_pages);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), std::mt19937_64(seed));
    in.table.assign(b_count * in.table_stride, -1);
    for (int64_t b = 0, next = 0; b < b_count; ++b) {
      const int64_t used = (s.lens[b] + in.new_tokens + s.page_size - 1) / s.page_size;
      for (int64_t pg = 0; pg < used; ++pg) in.table[b * in.table_stride + pg] = ids[next++];
    }
    in.k_cache = HostBuffer(s.dtype, in.num_pages * s.page_size * row);
  } else {
    in.capacity = need;  // the longest sequence fills its cache to the last row
    in.batch_stride = in.capacity * row + 24;
    in.k_cache = HostBuffer(s.dtype, b_count * in.batch_stride);
  }
  in.v_cache = in.k_cache;

  in.q = rounded_normal(b_count * s.lq * s.hq * s.d, seed + 1, s.dtype);
  in.q_buf = HostBuffer(s.dtype, int64_t(in.q.size()));
  for (size_t i = 0; i < in.q.size(); ++i) in.q_buf.set(int64_t(i), in.q[i]);
  for (int64_t b = 0; b < b_count; ++b) {
    in.k.push_back(rounded_normal(s.lens[b] * row, seed + 100 + b, s.dtype));
    in.v.push_back(rounded_normal(s.lens[b] * row, seed + 200 + b, s.dtype));
    for (int64_t j = 0; j < s.lens[b]; ++j) {
      for (int64_t e = 0; e < row; ++e) {
        in.k_cache.set(in.cache_row(b, j) + e, in.k[b][j * row + e]);
        in.v_cache.set(in.cache_row(b, j) + e, in.v[b][j * row + e]);
      }
    }
  }
  // k_new and v_new: the two halves of a fused [B, Lq, 2 * Hkv, D] projection.
  in.k_new = rounded_normal(b_count * s.lq * row, seed + 3, s.dtype);
  in.v_new = rounded_normal(b_count * s.lq * row, seed + 4, s.dtype);
  in.kv_new_buf = HostBuffer(s.dtype, b_count * s.lq * 2 * row);
  for (int64_t r = 0; r < b_count * s.lq; ++r) {
    for (int64_t e = 0; e < row; ++e) {
      in.kv_new_buf.set(2 * r * row + e, in.k_new[r * row + e]);
      in.kv_new_buf.set((2 * r + 1) * row + e, in.v_new[r * row + e]);
    }
  }
  // Llama's tables: angle pos * 10000^(-2i / rotary_dim).
  in.max_position = need + 2;
  const int64_t half = std::max(s.rotary_dim / 2, 1);
  for (int64_t pos = 0; pos < in.max_position; ++pos) {
    for (int64_t i = 0; i < half; ++i) {
      const double angle = double(pos) * std::pow(10000.0, -2.0 * double(i) / double(2 * half));
      in.cos.push_back(float(std::cos(angle)));
      in.sin.push_back(float(std::sin(angle)));
    }
  }
  in.out = HostBuffer(s.dtype, b_count * s.lq * s.hq * s.d);
  in.lse = HostBuffer(FA_DTYPE_FLOAT32, b_count * s.hq * s.lq);
  return in;
}

// The decode step over `in`'s buffers with queries `q_data` (a [B, Lq, Hq, D]
// buffer); `append` adds k_new / v_new and the scenario's rotary.
Decode decode_step(Inputs& in, void* q_data, bool append) {
  const Scenario& s = in.s;
  const int64_t b = in.batch, row = s.hkv * s.d;
  fa_tensor k_cache, v_cache;
  if (s.page_size > 0) {
    k_cache = tensor(in.k_cache.data(), s.dtype, {in.num_pages, s.page_size, s.hkv, s.d});
    v_cache = tensor(in.v_cache.data(), s.dtype, {in.num_pages, s.page_size, s.hkv, s.d});
  } else {
    k_cache = tensor(in.k_cache.data(), s.dtype, {b, in.capacity, s.hkv, s.d},
                     {in.batch_stride, row, s.d, 1});
    v_cache = tensor(in.v_cache.data(), s.dtype, {b, in.capacity, s.hkv, s.d},
                     {in.batch_stride, row, s.d, 1});
  }
  Decode step(tensor(q_data, s.dtype, {b, s.lq, s.hq, s.d}), k_cache, v_cache,
              tensor(in.out.data(), s.dtype, {b, s.lq, s.hq, s.d}));
  step.cache_seqlens(s.lens.data())
      .lse(tensor(in.lse.data(), FA_DTYPE_FLOAT32, {b, s.hq, s.lq}))
      .mask(s.mask)
      .softcap(s.softcap);
  if (s.page_size > 0) step.paged(in.table.data(), in.max_pages, in.table_stride);
  if (append) {
    const std::initializer_list<int64_t> strides = {s.lq * 2 * row, 2 * row, s.d, 1};
    step.append(tensor(in.kv_new_buf.at(0), s.dtype, {b, s.lq, s.hkv, s.d}, strides),
                tensor(in.kv_new_buf.at(row), s.dtype, {b, s.lq, s.hkv, s.d}, strides));
    if (s.rotary != FA_ROTARY_NONE) {
      const int64_t half = s.rotary_dim / 2;
      step.rotary(s.rotary, s.rotary_dim,
                  tensor(in.cos.data(), FA_DTYPE_FLOAT32, {in.max_position, half}),
                  tensor(in.sin.data(), FA_DTYPE_FLOAT32, {in.max_position, half}));
    }
  }
  return step;
}

Result plan_and_run(const Decode& step, fa_backend backend) {
  RunOptions opt;
  opt.backend = backend;
  fa_decode_plan plan;
  if (Result r = step.plan(&plan, opt); !r) return r;
  return step.run(plan, nullptr, 0, opt);
}

// The rotation of fastattn.h, written out independently of the library: in
// double, rounded once to the dtype. x is [B, Lq, heads, D].
std::vector<float> rotated(const Inputs& in, const std::vector<float>& x, int64_t heads) {
  const Scenario& s = in.s;
  std::vector<float> y = x;
  if (s.rotary == FA_ROTARY_NONE) return y;
  const int64_t half = s.rotary_dim / 2;
  for (int64_t b = 0; b < in.batch; ++b) {
    for (int64_t i = 0; i < s.lq; ++i) {
      const int64_t pos = s.lens[b] + i;
      for (int64_t h = 0; h < heads; ++h) {
        const float* src = &x[((b * s.lq + i) * heads + h) * s.d];
        float* dst = &y[((b * s.lq + i) * heads + h) * s.d];
        for (int64_t p = 0; p < half; ++p) {
          const int64_t i1 = s.rotary == FA_ROTARY_HALF ? p : 2 * p;
          const int64_t i2 = s.rotary == FA_ROTARY_HALF ? p + half : 2 * p + 1;
          const double c = in.cos[pos * half + p], sn = in.sin[pos * half + p];
          dst[i1] = check::round_to_dtype(float(double(src[i1]) * c - double(src[i2]) * sn), s.dtype);
          dst[i2] = check::round_to_dtype(float(double(src[i2]) * c + double(src[i1]) * sn), s.dtype);
        }
      }
    }
  }
  return y;
}

// The attention problem the step must solve: queries `q` over the cached
// keys followed by the appended ones (`k_new` as stored: rotated).
check::Problem expected_problem(const Inputs& in, const std::vector<float>& q,
                                const std::vector<float>& k_new) {
  const Scenario& s = in.s;
  check::Problem p;
  p.c.dtype = s.dtype;
  p.c.batch = in.batch;
  p.c.heads_q = s.hq;
  p.c.heads_kv = s.hkv;
  p.c.head_dim = s.d;
  p.c.mask = s.mask.kind;
  p.c.window_left = s.mask.window_left;
  p.c.window_right = s.mask.window_right;
  p.c.softcap = s.softcap;
  p.scale = float(1.0 / std::sqrt(double(s.d)));
  const int64_t qrow = s.lq * s.hq * s.d, krow = s.lq * s.hkv * s.d;
  for (int64_t b = 0; b < in.batch; ++b) {
    check::Sequence sq;
    sq.lq = s.lq;
    sq.lk = s.lens[b] + in.new_tokens;
    sq.q.assign(q.begin() + b * qrow, q.begin() + (b + 1) * qrow);
    sq.k = in.k[b];
    sq.v = in.v[b];
    if (in.new_tokens > 0) {
      sq.k.insert(sq.k.end(), k_new.begin() + b * krow, k_new.begin() + (b + 1) * krow);
      sq.v.insert(sq.v.end(), in.v_new.begin() + b * krow, in.v_new.begin() + (b + 1) * krow);
    }
    p.seqs.push_back(std::move(sq));
  }
  return p;
}

// What the step wrote, per sequence (out [Lq, Hq, D], lse [Hq, Lq]); fails
// on any element still poisoned.
testing::AssertionResult read_result(const Inputs& in, check::Result* got) {
  const Scenario& s = in.s;
  got->out.assign(in.batch, {});
  got->lse.assign(in.batch, {});
  for (int64_t b = 0; b < in.batch; ++b) {
    for (int64_t x = 0; x < s.lq * s.hq * s.d; ++x) {
      const float v = in.out.get(b * s.lq * s.hq * s.d + x);
      if (std::isnan(v)) return testing::AssertionFailure() << "out NaN or unwritten at " << x;
      got->out[b].push_back(v);
    }
    for (int64_t x = 0; x < s.hq * s.lq; ++x) {
      const float v = in.lse.get(b * s.hq * s.lq + x);
      if (std::isnan(v)) return testing::AssertionFailure() << "lse NaN or unwritten at " << x;
      got->lse[b].push_back(v);
    }
  }
  return testing::AssertionSuccess();
}

// FlashAttention's rule (src/check/harness.h): max|O - ref| <= 2 max|O_lp -
// ref| + atol for outputs and LSE; rows that see no key exactly 0 and -inf.
testing::AssertionResult judge(const check::Problem& p, const check::Result& got) {
  check::Result ref;
  std::string error;
  if (!check::reference_result(p, &ref, &error)) return testing::AssertionFailure() << error;
  const check::Result lp = check::low_precision_result(p, p.c.dtype);
  const int64_t hq = p.c.heads_q, d = p.c.head_dim;
  for (size_t b = 0; b < p.seqs.size(); ++b) {
    const int64_t lq = p.seqs[b].lq;
    for (int64_t h = 0; h < hq; ++h) {
      for (int64_t i = 0; i < lq; ++i) {
        if (!std::isinf(ref.lse[b][h * lq + i])) continue;
        if (got.lse[b][h * lq + i] != -kInf) {
          return testing::AssertionFailure() << "row without keys: LSE " << got.lse[b][h * lq + i]
                                             << " (seq " << b << " head " << h << " row " << i << ")";
        }
        for (int64_t e = 0; e < d; ++e) {
          if (got.out[b][(i * hq + h) * d + e] != 0.0f) {
            return testing::AssertionFailure() << "row without keys is not 0 (seq " << b << ")";
          }
        }
      }
    }
  }
  const double err = check::max_abs_diff(got, ref, false);
  const double lse_err = check::max_abs_diff(got, ref, true);
  const double tol = 2 * check::max_abs_diff(lp, ref, false) + check::rounding_atol(ref, false);
  const double lse_tol =
      2 * check::max_abs_diff(lp, ref, true) + check::rounding_atol(ref, true);
  if (err <= tol && lse_err <= lse_tol) return testing::AssertionSuccess();
  return testing::AssertionFailure() << "max|O-ref| " << err << " (tol " << tol << "), max|LSE-ref| "
                                     << lse_err << " (tol " << lse_tol << ")";
}

// The reference backend computes what check::reference_result does, in the
// same order: its output is the reference rounded to the dtype, bit for bit.
testing::AssertionResult equals_rounded_reference(const check::Problem& p, const check::Result& got) {
  check::Result ref;
  std::string error;
  if (!check::reference_result(p, &ref, &error)) return testing::AssertionFailure() << error;
  for (size_t b = 0; b < p.seqs.size(); ++b) {
    for (size_t i = 0; i < ref.out[b].size(); ++i) {
      const float want = check::round_to_dtype(ref.out[b][i], p.c.dtype);
      if (std::memcmp(&want, &got.out[b][i], 4) != 0) {
        return testing::AssertionFailure() << "out differs at seq " << b << " element " << i << ": "
                                           << got.out[b][i] << " vs " << want;
      }
    }
    for (size_t i = 0; i < ref.lse[b].size(); ++i) {
      if (std::memcmp(&ref.lse[b][i], &got.lse[b][i], 4) != 0) {
        return testing::AssertionFailure() << "lse differs at seq " << b << " element " << i;
      }
    }
  }
  return testing::AssertionSuccess();
}

std::string test_name(const std::string& description, size_t index) {
  std::string s = std::to_string(index) + "_" + description;
  for (char& c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return s;
}

const fa_dtype kDtypes[] = {FA_DTYPE_FLOAT16, FA_DTYPE_BFLOAT16, FA_DTYPE_FLOAT32};
const int64_t kPageSizes[] = {1, 5, 16, 256, 0};
const int64_t kHeadDims[] = {64, 128, 80};
const int64_t kQueries[] = {1, 3, 16};

fa_mask window(int64_t left, int64_t right) { return fastattn::mask::sliding_window(left, right); }

// (a) Every page size and contiguous, every dtype; head dims, head layouts,
// query counts and masks rotate through the cases. Sequence 1 has no key at
// all (output 0, LSE -inf); sequence 2 fewer keys than queries.
std::vector<Scenario> attention_scenarios() {
  const fa_mask masks[] = {mask::none(), mask::causal(), window(6, 0), window(3, 2)};
  const int32_t longest[] = {37, 150, 700};  // 700: the flash backend splits the keys
  std::vector<Scenario> out;
  for (int l = 0; l < 5; ++l) {
    for (int t = 0; t < 3; ++t) {
      // Each dtype meets every head dim and query count over the layouts.
      const int i = 3 * l + t;
      Scenario s;
      s.dtype = kDtypes[t];
      s.page_size = kPageSizes[l];
      s.d = kHeadDims[(l + t) % 3];
      s.lq = kQueries[(2 * l + t) % 3];
      s.hq = i % 2 ? 4 : 8;
      s.hkv = i % 2 ? 4 : 2;
      s.mask = masks[i % 4];
      s.softcap = i % 5 == 2 ? 12.0f : 0.0f;
      const int32_t n = longest[l % 3];
      s.lens = {n, 0, int32_t(std::max<int64_t>(s.lq - 1, 1)), n / 3 + 1};
      s.seed = 5000 + 10 * i;
      out.push_back(s);
    }
  }
  return out;
}

class DecodeMatchesAttention : public testing::TestWithParam<Scenario> {};

TEST_P(DecodeMatchesAttention, FlashWithinToleranceReferenceExact) {
  const Scenario& s = GetParam();
  Inputs in = make_inputs(s, s.seed);
  const check::Problem p = expected_problem(in, in.q, {});
  const HostBuffer k_before = in.k_cache, v_before = in.v_cache, q_before = in.q_buf;

  const Result r = plan_and_run(decode_step(in, in.q_buf.data(), false), FA_BACKEND_CPU);
  ASSERT_TRUE(r.ok()) << r.message();
  check::Result got;
  ASSERT_TRUE(read_result(in, &got));
  EXPECT_TRUE(judge(p, got)) << describe(s);
  EXPECT_TRUE(in.k_cache == k_before && in.v_cache == v_before && in.q_buf == q_before)
      << "an input changed";

  in.out = HostBuffer(s.dtype, in.out.elements());
  in.lse = HostBuffer(FA_DTYPE_FLOAT32, in.lse.elements());
  const Result rr = plan_and_run(decode_step(in, in.q_buf.data(), false), FA_BACKEND_CPU_REFERENCE);
  ASSERT_TRUE(rr.ok()) << rr.message();
  ASSERT_TRUE(read_result(in, &got));
  EXPECT_TRUE(equals_rounded_reference(p, got)) << describe(s);
}

INSTANTIATE_TEST_SUITE_P(Cases, DecodeMatchesAttention, testing::ValuesIn(attention_scenarios()),
                         [](const testing::TestParamInfo<Scenario>& info) {
                           return test_name(describe(info.param), info.index);
                         });

// (b) Append with rotary (both styles, the whole head or part of it) and
// without; sequence 1 starts empty, the longest fills its cache exactly
// when contiguous.
std::vector<Scenario> append_scenarios() {
  const fa_rotary_style styles[] = {FA_ROTARY_HALF, FA_ROTARY_INTERLEAVED, FA_ROTARY_NONE};
  const fa_mask masks[] = {mask::causal(), mask::none(), window(4, 0)};
  std::vector<Scenario> out;
  for (int l = 0; l < 5; ++l) {
    for (int r = 0; r < 3; ++r) {
      // Each rotary style meets every dtype, head dim and query count.
      const int i = 3 * l + r;
      Scenario s;
      s.dtype = kDtypes[(l + r) % 3];
      s.page_size = kPageSizes[l];
      s.d = kHeadDims[(2 * l + r) % 3];
      s.lq = kQueries[(l + 2 * r) % 3];
      s.hq = i % 2 ? 4 : 8;
      s.hkv = i % 2 ? 4 : 2;
      s.append = true;
      s.rotary = styles[r];
      if (s.rotary != FA_ROTARY_NONE) {
        s.rotary_dim = int32_t(l % 2 ? s.d : (s.d == 80 ? 32 : s.d / 2));
      }
      s.mask = masks[i % 3];
      s.softcap = i % 4 == 3 ? 20.0f : 0.0f;
      s.lens = {int32_t(40 + 7 * i), 0, 17, 3};
      s.seed = 7000 + 10 * i;
      out.push_back(s);
    }
  }
  return out;
}

class DecodeAppend : public testing::TestWithParam<Scenario> {};

TEST_P(DecodeAppend, EqualsRotatingAndWritingTheCacheByHand) {
  const Scenario& s = GetParam();
  Inputs fused = make_inputs(s, s.seed);
  Inputs by_hand = fused;
  const HostBuffer q_before = fused.q_buf, kv_new_before = fused.kv_new_buf;

  const Result r = plan_and_run(decode_step(fused, fused.q_buf.data(), true), FA_BACKEND_CPU);
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_TRUE(fused.q_buf == q_before && fused.kv_new_buf == kv_new_before) << "an input changed";

  // By hand: rotate q and k_new, write k_new / v_new rows, attend without append.
  const std::vector<float> q_rot = rotated(by_hand, by_hand.q, s.hq);
  const std::vector<float> k_rot = rotated(by_hand, by_hand.k_new, s.hkv);
  const int64_t row = s.hkv * s.d;
  for (int64_t b = 0; b < by_hand.batch; ++b) {
    for (int64_t i = 0; i < s.lq; ++i) {
      const int64_t dst = by_hand.cache_row(b, s.lens[b] + i), src = (b * s.lq + i) * row;
      for (int64_t e = 0; e < row; ++e) {
        by_hand.k_cache.set(dst + e, k_rot[src + e]);
        by_hand.v_cache.set(dst + e, by_hand.v_new[src + e]);
      }
    }
  }
  HostBuffer q_rot_buf(s.dtype, int64_t(q_rot.size()));
  for (size_t i = 0; i < q_rot.size(); ++i) q_rot_buf.set(int64_t(i), q_rot[i]);
  Scenario plain = s;
  for (int64_t b = 0; b < by_hand.batch; ++b) plain.lens[b] += int32_t(s.lq);
  by_hand.s = plain;
  const Result rh = plan_and_run(decode_step(by_hand, q_rot_buf.data(), false), FA_BACKEND_CPU);
  ASSERT_TRUE(rh.ok()) << rh.message();

  EXPECT_TRUE(fused.k_cache == by_hand.k_cache) << "k_cache differs";
  EXPECT_TRUE(fused.v_cache == by_hand.v_cache) << "v_cache differs";
  EXPECT_TRUE(fused.out == by_hand.out) << "out differs";
  EXPECT_TRUE(fused.lse == by_hand.lse) << "lse differs";

  check::Result got;
  ASSERT_TRUE(read_result(fused, &got));
  EXPECT_TRUE(judge(expected_problem(fused, q_rot, k_rot), got)) << describe(s);
}

INSTANTIATE_TEST_SUITE_P(Cases, DecodeAppend, testing::ValuesIn(append_scenarios()),
                         [](const testing::TestParamInfo<Scenario>& info) {
                           return test_name(describe(info.param), info.index);
                         });

// The pairing conventions on a quarter turn (cos 0, sin 1), where
// (x1, x2) -> (-x2, x1) exactly: half pairs (i, i + dim/2), interleaved
// pairs (2i, 2i + 1); elements past rotary_dim untouched.
TEST(DecodeRotary, QuarterTurnPairsAsDocumented) {
  for (fa_rotary_style style : {FA_ROTARY_HALF, FA_ROTARY_INTERLEAVED}) {
    constexpr int64_t kD = 8, kDim = 4;
    std::vector<float> q(kD), kn(kD), vn(kD, 1.0f), out(kD, NAN);
    for (int64_t e = 0; e < kD; ++e) q[e] = kn[e] = float(e + 1);
    std::vector<float> k_cache(4 * kD, NAN), v_cache(4 * kD, NAN);
    std::vector<float> cos = {1, 1, 0, 0}, sin = {0, 0, 1, 1};  // position 1: a quarter turn
    const int32_t len = 1;  // one cached key (zeros), the new one goes to position 1
    std::fill_n(k_cache.begin(), kD, 0.0f);
    std::fill_n(v_cache.begin(), kD, 0.0f);
    const auto r = Decode(tensor(q.data(), FA_DTYPE_FLOAT32, {1, 1, 1, kD}),
                          tensor(k_cache.data(), FA_DTYPE_FLOAT32, {1, 4, 1, kD}),
                          tensor(v_cache.data(), FA_DTYPE_FLOAT32, {1, 4, 1, kD}),
                          tensor(out.data(), FA_DTYPE_FLOAT32, {1, 1, 1, kD}))
                       .cache_seqlens(&len)
                       .append(tensor(kn.data(), FA_DTYPE_FLOAT32, {1, 1, 1, kD}),
                               tensor(vn.data(), FA_DTYPE_FLOAT32, {1, 1, 1, kD}))
                       .rotary(style, kDim, tensor(cos.data(), FA_DTYPE_FLOAT32, {2, 2}),
                               tensor(sin.data(), FA_DTYPE_FLOAT32, {2, 2}));
    fa_decode_plan plan;
    ASSERT_TRUE(r.plan(&plan).ok());
    ASSERT_TRUE(r.run(plan).ok());
    const std::vector<float> want = style == FA_ROTARY_HALF
                                        ? std::vector<float>{-3, -4, 1, 2, 5, 6, 7, 8}
                                        : std::vector<float>{-2, 1, -4, 3, 5, 6, 7, 8};
    const std::vector<float> stored(k_cache.begin() + kD, k_cache.begin() + 2 * kD);
    EXPECT_EQ(stored, want) << "style " << style;
    for (float x : out) EXPECT_TRUE(std::isfinite(x));
  }
}

// (e) Plans on the CPU: no workspace; the requested split count; the
// fingerprint of fastattn.h; valid across lengths and pointers; refused for
// another problem with nothing written.
TEST(DecodePlan, CpuPlanAndItsChecks) {
  Scenario s;
  s.dtype = FA_DTYPE_BFLOAT16;
  s.lq = 3;
  s.page_size = 16;
  s.lens = {50, 9};
  s.append = true;
  s.rotary = FA_ROTARY_HALF;
  s.rotary_dim = 64;
  Inputs in = make_inputs(s, 99);
  Decode step = decode_step(in, in.q_buf.data(), true);

  fa_decode_plan plan;
  std::memset(&plan, 0x5a, sizeof plan);
  RunOptions opt;
  opt.backend = FA_BACKEND_CPU;
  ASSERT_TRUE(step.plan(&plan, opt).ok());
  EXPECT_EQ(plan.backend, FA_BACKEND_CPU);
  EXPECT_EQ(plan.num_splits, 1);
  EXPECT_EQ(plan.workspace_bytes, 0u);
  const int64_t problem[8] = {2, 3, 8, 2, 64, FA_DTYPE_BFLOAT16, -1, in.capacity};
  for (int f = 0; f < 8; ++f) EXPECT_EQ(plan.problem[f], problem[f]) << "problem[" << f << "]";
  for (int64_t x : plan.reserved) EXPECT_EQ(x, 0);

  fa_decode_plan split;
  ASSERT_TRUE(Decode(step).num_splits(4).max_seqlen_k(8).plan(&split, opt).ok());
  EXPECT_EQ(split.num_splits, 4);

  fa_decode_plan reference;
  RunOptions ref_opt;
  ref_opt.backend = FA_BACKEND_CPU_REFERENCE;
  ASSERT_TRUE(step.plan(&reference, ref_opt).ok());
  EXPECT_EQ(reference.backend, FA_BACKEND_CPU_REFERENCE);

  // Refusals touch nothing: not the output, not the cache.
  const HostBuffer k_before = in.k_cache, v_before = in.v_cache, out_before = in.out;
  fa_decode_plan other = plan;
  other.problem[1] = 4;
  Result r = step.run(other, nullptr, 0, opt);
  EXPECT_EQ(r.code(), FA_STATUS_INVALID_ARGUMENT);
  EXPECT_NE(r.message().find("Lq: 4 in the plan, 3 here"), std::string::npos) << r.message();
  r = step.run(reference, nullptr, 0, opt);
  EXPECT_EQ(r.code(), FA_STATUS_INVALID_ARGUMENT);
  EXPECT_NE(r.message().find("FA_BACKEND_CPU_REFERENCE"), std::string::npos) << r.message();
  EXPECT_TRUE(in.k_cache == k_before && in.v_cache == v_before && in.out == out_before);

  // One plan, many steps: lengths grow, the queries move, max_seqlen_k is
  // only a planning hint (split's bound of 8 keys is exceeded here).
  ASSERT_TRUE(step.run(plan, nullptr, 0, opt).ok());
  ASSERT_TRUE(Decode(step).num_splits(4).max_seqlen_k(8).run(split, nullptr, 0, opt).ok());
  const HostBuffer first_out = in.out;
  std::vector<int32_t> grown = {s.lens[0] + 1, s.lens[1] + 2};  // within the rotary tables
  HostBuffer q2 = in.q_buf;
  Decode next = decode_step(in, q2.data(), true);
  next.cache_seqlens(grown.data());
  const Result grown_run = next.run(plan, nullptr, 0, opt);
  ASSERT_TRUE(grown_run.ok()) << grown_run.message();
  EXPECT_FALSE(in.out == first_out);
}

}  // namespace
}  // namespace fastattn
