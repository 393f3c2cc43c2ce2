// Every mask kind and combination on both CPU backends, judged against an
// oracle written here from the definitions in fastattn.h: a bool per
// (sequence, head, query, key) computed from the mask's arguments and plain
// float64 attention over it. The oracle never calls the library's key ranges
// nor reads the compressed mask. Then the compressed mask itself: its
// counts, its size, and its pairs against the dense source.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "api/block_mask.h"
#include "check/problem.h"
#include "common/scalar_convert.h"
#include "fastattn/fastattn.h"
#include "fastattn/fastattn.hpp"

namespace fastattn {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

enum class Source { kNone, kDense, kBlocks };

// One problem: shapes, the mask's arguments, and the data sources.
struct Spec {
  std::string name;
  fa_dtype dtype = FA_DTYPE_FLOAT32;
  int64_t batch = 1, lq = 64, lk = 64, hq = 2, hkv = 1, d = 32;
  std::vector<int64_t> q_lens, k_lens;  // varlen when set (batch = their size)
  fa_mask_kind kind = FA_MASK_NONE;
  int64_t window_left = -1, window_right = -1, prefix = 0, chunk = 0;
  std::vector<int32_t> q_ids, k_ids;  // packed like the q / k rows
  Source source = Source::kNone;
  int64_t mask_batch = 1, mask_heads = 1, block_q = 128, block_k = 128;
  std::vector<uint8_t> mask_src;  // dense [Bm, Hm, Lq, Lk] or blocks [Bm, Hm, nq, nk]
  float softcap = 0.0f;
  int threads = 4;

  bool varlen() const { return !q_lens.empty(); }
  int64_t len_q(int64_t b) const { return varlen() ? q_lens[b] : lq; }
  int64_t len_k(int64_t b) const { return varlen() ? k_lens[b] : lk; }
  int64_t first_q(int64_t b) const {
    int64_t r = 0;
    for (int64_t x = 0; x < b; ++x) r += len_q(x);
    return r;
  }
  int64_t first_k(int64_t b) const {
    int64_t r = 0;
    for (int64_t x = 0; x < b; ++x) r += len_k(x);
    return r;
  }
  int64_t blocks_q() const { return (lq + block_q - 1) / block_q; }
  int64_t blocks_k() const { return (lk + block_k - 1) / block_k; }
};

int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// The definitions of fastattn.h, one clause each.
bool oracle_allows(const Spec& s, int64_t b, int64_t h, int64_t i, int64_t j) {
  const int64_t lq = s.len_q(b), lk = s.len_k(b), d = i + lk - lq;
  bool ok = true;
  switch (s.kind) {
    case FA_MASK_NONE: break;
    case FA_MASK_CAUSAL: ok = j <= d; break;
    case FA_MASK_SLIDING_WINDOW:
      ok = (s.window_left < 0 || j >= d - s.window_left) &&
           (s.window_right < 0 || j <= d + s.window_right);
      break;
    case FA_MASK_PREFIX_LM: ok = j <= d || j < s.prefix; break;
  }
  if (s.chunk > 0) ok = ok && floor_div(j, s.chunk) == floor_div(d, s.chunk);
  if (!s.q_ids.empty()) ok = ok && s.q_ids[s.first_q(b) + i] == s.k_ids[s.first_k(b) + j];
  const int64_t bm = s.mask_batch == 1 ? 0 : b, hm = s.mask_heads == 1 ? 0 : h;
  if (s.source == Source::kDense) {
    ok = ok && s.mask_src[((bm * s.mask_heads + hm) * s.lq + i) * s.lk + j] != 0;
  } else if (s.source == Source::kBlocks) {
    const int64_t cell = ((bm * s.mask_heads + hm) * s.blocks_q() + i / s.block_q) * s.blocks_k() +
                         j / s.block_k;
    ok = ok && s.mask_src[cell] != 0;
  }
  return ok;
}

struct Data {
  std::vector<float> q, k, v;  // packed rows [total, H, D], values rounded to the dtype
};

Data make_data(const Spec& s, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Data x;
  const int64_t tq = s.first_q(s.batch), tk = s.first_k(s.batch);
  auto fill = [&](std::vector<float>* v, int64_t n) {
    v->resize(n);
    for (float& e : *v) e = check::round_to_dtype(normal(rng), s.dtype);
  };
  fill(&x.q, tq * s.hq * s.d);
  fill(&x.k, tk * s.hkv * s.d);
  fill(&x.v, tk * s.hkv * s.d);
  return x;
}

float scale_of(const Spec& s) { return static_cast<float>(1.0 / std::sqrt(double(s.d))); }

// Plain attention over the oracle's pairs: in float64, or (`low`) unfused in
// float32 with scores, P and O rounded to the dtype, as FlashAttention's
// rule measures the precision's own error.
check::Result oracle(const Spec& s, const Data& x, bool low) {
  check::Result r;
  const int64_t g = s.hq / s.hkv, d = s.d;
  for (int64_t b = 0; b < s.batch; ++b) {
    const int64_t lq = s.len_q(b), lk = s.len_k(b), q0 = s.first_q(b), k0 = s.first_k(b);
    r.out.emplace_back(lq * s.hq * d, 0.0f);
    r.lse.emplace_back(s.hq * lq, kNegInf);
    std::vector<double> sc(lk);
    std::vector<float> scf(lk);
    std::vector<char> ok(lk);
    for (int64_t h = 0; h < s.hq; ++h) {
      const int64_t hk = h / g;
      for (int64_t i = 0; i < lq; ++i) {
        const float* q = &x.q[((q0 + i) * s.hq + h) * d];
        bool any = false;
        for (int64_t j = 0; j < lk; ++j) {
          ok[j] = oracle_allows(s, b, h, i, j);
          any = any || ok[j];
        }
        if (!any) continue;  // no key: output 0, LSE -inf
        float* o = &r.out[b][(i * s.hq + h) * d];
        if (!low) {
          double mx = -std::numeric_limits<double>::infinity();
          for (int64_t j = 0; j < lk; ++j) {
            if (!ok[j]) continue;
            const float* k = &x.k[((k0 + j) * s.hkv + hk) * d];
            double dot = 0;
            for (int64_t e = 0; e < d; ++e) dot += double(q[e]) * k[e];
            double v = dot / std::sqrt(double(d));
            if (s.softcap > 0) v = s.softcap * std::tanh(v / s.softcap);
            sc[j] = v;
            mx = std::max(mx, v);
          }
          double sum = 0;
          std::vector<double> acc(d, 0.0);
          for (int64_t j = 0; j < lk; ++j) {
            if (!ok[j]) continue;
            const double p = std::exp(sc[j] - mx);
            sum += p;
            const float* v = &x.v[((k0 + j) * s.hkv + hk) * d];
            for (int64_t e = 0; e < d; ++e) acc[e] += p * v[e];
          }
          r.lse[b][h * lq + i] = float(mx + std::log(sum));
          for (int64_t e = 0; e < d; ++e) o[e] = float(acc[e] / sum);
          continue;
        }
        const float scale = scale_of(s);
        float mx = kNegInf;
        for (int64_t j = 0; j < lk; ++j) {
          if (!ok[j]) continue;
          const float* k = &x.k[((k0 + j) * s.hkv + hk) * d];
          float dot = 0;
          for (int64_t e = 0; e < d; ++e) dot += q[e] * k[e];
          float v = dot * scale;
          if (s.softcap > 0) v = s.softcap * std::tanh(v / s.softcap);
          scf[j] = check::round_to_dtype(v, s.dtype);
          mx = std::max(mx, scf[j]);
        }
        float sum = 0;
        for (int64_t j = 0; j < lk; ++j) {
          if (!ok[j]) continue;
          scf[j] = std::exp(scf[j] - mx);
          sum += scf[j];
        }
        r.lse[b][h * lq + i] = mx + std::log(sum);
        for (int64_t j = 0; j < lk; ++j) {
          if (!ok[j]) continue;
          const float p = check::round_to_dtype(scf[j] / sum, s.dtype);
          const float* v = &x.v[((k0 + j) * s.hkv + hk) * d];
          for (int64_t e = 0; e < d; ++e) o[e] += p * v[e];
        }
        for (int64_t e = 0; e < d; ++e) o[e] = check::round_to_dtype(o[e], s.dtype);
      }
    }
  }
  return r;
}

std::vector<uint8_t> to_bytes(const std::vector<float>& v, fa_dtype t) {
  const DType dt = static_cast<DType>(static_cast<int>(t));
  std::vector<uint8_t> bytes(v.size() * dtype_size(dt));
  for (size_t i = 0; i < v.size(); ++i) store_from_float(bytes.data(), int64_t(i), dt, v[i]);
  return bytes;
}

// Runs the library on `backend`; outputs poisoned with NaN first.
testing::AssertionResult run_library(const Spec& s, const Data& x, fa_backend backend,
                                     check::Result* got) {
  const int64_t tq = s.first_q(s.batch), tk = s.first_k(s.batch);
  std::vector<uint8_t> q = to_bytes(x.q, s.dtype), k = to_bytes(x.k, s.dtype),
                       v = to_bytes(x.v, s.dtype);
  std::vector<uint8_t> out(q.size(), 0xFF);  // NaN in every dtype
  std::vector<float> lse(s.hq * tq, std::numeric_limits<float>::quiet_NaN());
  std::vector<int32_t> cu_q{0}, cu_k{0};
  fa_attention_args a{};
  if (s.varlen()) {
    for (int64_t b = 0; b < s.batch; ++b) {
      cu_q.push_back(static_cast<int32_t>(cu_q.back() + s.q_lens[b]));
      cu_k.push_back(static_cast<int32_t>(cu_k.back() + s.k_lens[b]));
    }
    a.q = tensor(q.data(), s.dtype, {tq, s.hq, s.d});
    a.k = tensor(k.data(), s.dtype, {tk, s.hkv, s.d});
    a.v = tensor(v.data(), s.dtype, {tk, s.hkv, s.d});
    a.out = tensor(out.data(), s.dtype, {tq, s.hq, s.d});
    a.lse = tensor(lse.data(), FA_DTYPE_FLOAT32, {s.hq, tq});
    a.cu_seqlens_q = cu_q.data();
    a.cu_seqlens_k = cu_k.data();
    a.num_seqs = s.batch;
  } else {
    a.q = tensor(q.data(), s.dtype, {s.batch, s.lq, s.hq, s.d});
    a.k = tensor(k.data(), s.dtype, {s.batch, s.lk, s.hkv, s.d});
    a.v = tensor(v.data(), s.dtype, {s.batch, s.lk, s.hkv, s.d});
    a.out = tensor(out.data(), s.dtype, {s.batch, s.lq, s.hq, s.d});
    a.lse = tensor(lse.data(), FA_DTYPE_FLOAT32, {s.batch, s.hq, s.lq});
  }
  a.mask.kind = s.kind;
  a.mask.window_left = s.window_left;
  a.mask.window_right = s.window_right;
  a.mask.prefix_len = s.prefix;
  a.mask.chunk_size = s.chunk;
  if (!s.q_ids.empty()) {
    a.mask.q_segment_ids = s.q_ids.data();
    a.mask.k_segment_ids = s.k_ids.data();
  }
  a.softcap = s.softcap;
  BlockMask bm;
  std::vector<uint8_t> src = s.mask_src;
  if (s.source == Source::kDense) {
    const Result r = BlockMask::from_dense(
        tensor(src.data(), FA_DTYPE_BOOL, {s.mask_batch, s.mask_heads, s.lq, s.lk}), &bm,
        s.block_q, s.block_k);
    if (!r) return testing::AssertionFailure() << "fa_block_mask_create: " << r.message();
  } else if (s.source == Source::kBlocks) {
    const Result r = BlockMask::from_blocks(
        tensor(src.data(), FA_DTYPE_BOOL, {s.mask_batch, s.mask_heads, s.blocks_q(), s.blocks_k()}),
        s.lq, s.lk, &bm, s.block_q, s.block_k);
    if (!r) return testing::AssertionFailure() << "fa_block_mask_create: " << r.message();
  }
  if (bm) {
    // The source may be freed once the mask is built.
    std::fill(src.begin(), src.end(), 0xAB);
    a.mask = mask::with_block_mask(a.mask, bm.get());
  }
  fa_run_options o{};
  o.backend = backend;
  o.num_threads = s.threads;
  if (fa_attention_forward(&a, &o) != FA_STATUS_OK) {
    return testing::AssertionFailure() << "fa_attention_forward: " << fa_last_error();
  }
  const DType dt = static_cast<DType>(static_cast<int>(s.dtype));
  got->out.clear();
  got->lse.clear();
  for (int64_t b = 0; b < s.batch; ++b) {
    const int64_t lq = s.len_q(b), q0 = s.first_q(b);
    got->out.emplace_back(lq * s.hq * s.d);
    got->lse.emplace_back(s.hq * lq);
    for (int64_t e = 0; e < lq * s.hq * s.d; ++e) {
      got->out[b][e] = load_as_float(out.data(), q0 * s.hq * s.d + e, dt);
    }
    for (int64_t h = 0; h < s.hq; ++h)
      for (int64_t i = 0; i < lq; ++i) {
        got->lse[b][h * lq + i] =
            s.varlen() ? lse[h * tq + q0 + i] : lse[(b * s.hq + h) * s.lq + i];
      }
  }
  return testing::AssertionSuccess();
}

// FlashAttention's rule against the float64 oracle, plus the exact rows
// that see no key (output 0, LSE -inf) and no NaN anywhere.
testing::AssertionResult judge(const Spec& s, const check::Result& got, const check::Result& ref,
                               const check::Result& low) {
  int64_t empty_rows = 0;
  for (size_t b = 0; b < ref.lse.size(); ++b) {
    const int64_t lq = s.len_q(b);
    for (int64_t h = 0; h < s.hq; ++h)
      for (int64_t i = 0; i < lq; ++i) {
        const float* o = &got.out[b][(i * s.hq + h) * s.d];
        const float l = got.lse[b][h * lq + i];
        for (int64_t e = 0; e < s.d; ++e) {
          if (std::isnan(o[e])) {
            return testing::AssertionFailure() << "NaN output at seq " << b << " head " << h
                                               << " row " << i;
          }
        }
        if (std::isnan(l)) {
          return testing::AssertionFailure() << "NaN LSE at seq " << b << " head " << h << " row " << i;
        }
        if (ref.lse[b][h * lq + i] != kNegInf) continue;
        ++empty_rows;
        if (l != kNegInf) {
          return testing::AssertionFailure() << "row with no key: LSE " << l << ", not -inf (seq "
                                             << b << " head " << h << " row " << i << ")";
        }
        for (int64_t e = 0; e < s.d; ++e) {
          if (o[e] != 0.0f) {
            return testing::AssertionFailure() << "row with no key: output " << o[e]
                                               << ", not 0 (seq " << b << " head " << h << " row "
                                               << i << ")";
          }
        }
      }
  }
  const double err = check::max_abs_diff(got, ref, false);
  double tol = 2 * check::max_abs_diff(low, ref, false) + check::rounding_atol(ref, false);
  // float32: the unfused loop can round luckier than the kernel's exp2
  // polynomial (2e-7 relative) on a small problem; 131 x 77 with chunk 64
  // missed the rule by 5 ulps of 2.4 on an ordinary 64-key row. Allow 8 ulps
  // of the largest output, no more.
  if (s.dtype == FA_DTYPE_FLOAT32) {
    double largest = 0;
    for (const auto& seq : ref.out)
      for (float v : seq) largest = std::max(largest, double(std::fabs(v)));
    tol = std::max(tol, 8 * largest * std::numeric_limits<float>::epsilon());
  }
  const double lse_err = check::max_abs_diff(got, ref, true);
  const double lse_tol = 2 * check::max_abs_diff(low, ref, true) + check::rounding_atol(ref, true);
  if (!(err <= tol) || !(lse_err <= lse_tol)) {
    return testing::AssertionFailure() << "output error " << err << " (tolerance " << tol
                                       << "), LSE error " << lse_err << " (tolerance " << lse_tol
                                       << "), " << empty_rows << " rows with no key";
  }
  return testing::AssertionSuccess();
}

void check_spec(const Spec& s, uint64_t seed) {
  SCOPED_TRACE(s.name);
  const Data x = make_data(s, seed);
  const check::Result ref = oracle(s, x, false);
  const check::Result low = oracle(s, x, true);
  for (fa_backend backend : {FA_BACKEND_CPU_REFERENCE, FA_BACKEND_CPU}) {
    SCOPED_TRACE(backend == FA_BACKEND_CPU ? "FA_BACKEND_CPU" : "FA_BACKEND_CPU_REFERENCE");
    check::Result got;
    ASSERT_TRUE(run_library(s, x, backend, &got));
    EXPECT_TRUE(judge(s, got, ref, low));
  }
}

// ------------------------------------------------------------ mask sources

// Ids of documents over n tokens: mixed lengths (1, short, long), as even
// numbers so that an odd id can fall between two documents.
std::vector<int32_t> document_ids(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int64_t lengths[] = {1, 1, 2, 3, 7, 13, 29, 64, 90};
  std::vector<int32_t> ids;
  int32_t doc = 0;
  while (static_cast<int64_t>(ids.size()) < n) {
    const int64_t len = lengths[rng() % 9];
    for (int64_t t = 0; t < len && static_cast<int64_t>(ids.size()) < n; ++t) ids.push_back(2 * doc);
    ++doc;
  }
  return ids;
}

// Documents of one sequence: key ids, and query ids taken from the key at
// the query's position (bottom-right). `unmatched`: the queries of one
// document get an id no key has, so their rows see nothing.
void add_documents(Spec* s, int64_t lq, int64_t lk, uint64_t seed, bool unmatched) {
  const std::vector<int32_t> k = document_ids(lk, seed);
  const int32_t lost = k[lk / 2];
  for (int64_t j = 0; j < lk; ++j) s->k_ids.push_back(k[j]);
  for (int64_t i = 0; i < lq; ++i) {
    int64_t p = i + lk - lq;
    p = p < 0 ? 0 : (p >= lk ? lk - 1 : p);
    s->q_ids.push_back(unmatched && k[p] == lost ? k[p] + 1 : k[p]);
  }
}

// Dense source [Bm, Hm, Lq, Lk]: every pair true with probability `density`.
void dense_random(Spec* s, double density, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::bernoulli_distribution on(density);
  s->source = Source::kDense;
  s->mask_src.resize(s->mask_batch * s->mask_heads * s->lq * s->lk);
  for (auto& e : s->mask_src) e = on(rng) ? 1 : 0;
}

// Dense source whose mask blocks are each all false, all true or random at
// `density`: every class of block appears.
void dense_mixed(Spec* s, double density, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::bernoulli_distribution on(density);
  s->source = Source::kDense;
  const int64_t nq = s->blocks_q(), nk = s->blocks_k();
  std::vector<int> kind(s->mask_batch * s->mask_heads * nq * nk);
  for (int& e : kind) e = static_cast<int>(rng() % 3);
  s->mask_src.resize(s->mask_batch * s->mask_heads * s->lq * s->lk);
  for (int64_t p = 0; p < s->mask_batch * s->mask_heads; ++p)
    for (int64_t i = 0; i < s->lq; ++i)
      for (int64_t j = 0; j < s->lk; ++j) {
        const int c = kind[(p * nq + i / s->block_q) * nk + j / s->block_k];
        s->mask_src[(p * s->lq + i) * s->lk + j] = c == 0 ? 0 : (c == 1 ? 1 : on(rng));
      }
}

void blocks_random(Spec* s, double density, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::bernoulli_distribution on(density);
  s->source = Source::kBlocks;
  s->mask_src.resize(s->mask_batch * s->mask_heads * s->blocks_q() * s->blocks_k());
  for (auto& e : s->mask_src) e = on(rng) ? 1 : 0;
}

Spec shape(std::string name, int64_t lq, int64_t lk, int64_t hq = 2, int64_t hkv = 1,
           int64_t batch = 1) {
  Spec s;
  s.name = std::move(name);
  s.lq = lq;
  s.lk = lk;
  s.hq = hq;
  s.hkv = hkv;
  s.batch = batch;
  return s;
}

// ------------------------------------------------------------------- kinds

TEST(MaskKinds, PrefixLm) {
  const int64_t prefixes[] = {0, 1, 37, 100, 131, 300};
  uint64_t seed = 1;
  for (int64_t prefix : prefixes) {
    for (auto [lq, lk] : {std::pair<int64_t, int64_t>{200, 200}, {77, 131}, {200, 64}}) {
      Spec s = shape("prefix_lm " + std::to_string(prefix) + " " + std::to_string(lq) + "x" +
                         std::to_string(lk),
                     lq, lk, 4, 2, 2);
      s.kind = FA_MASK_PREFIX_LM;
      s.prefix = prefix;
      check_spec(s, seed++);
    }
  }
}

TEST(MaskKinds, ChunkedCausalAndBidirectional) {
  uint64_t seed = 100;
  for (bool causal : {true, false}) {
    for (int64_t chunk : {1, 16, 50, 64, 1000}) {
      for (auto [lq, lk] : {std::pair<int64_t, int64_t>{200, 200}, {77, 131}, {131, 77}}) {
        Spec s = shape(std::string(causal ? "chunked causal " : "chunked ") +
                           std::to_string(chunk) + " " + std::to_string(lq) + "x" +
                           std::to_string(lk),
                       lq, lk, 3, 1);
        s.kind = causal ? FA_MASK_CAUSAL : FA_MASK_NONE;
        s.chunk = chunk;
        check_spec(s, seed++);
      }
    }
  }
}

TEST(MaskKinds, ChunkWithSlidingWindowAndPrefix) {
  Spec s = shape("window (40, 8) + chunk 32", 150, 190, 2, 2);
  s.kind = FA_MASK_SLIDING_WINDOW;
  s.window_left = 40;
  s.window_right = 8;
  s.chunk = 32;
  check_spec(s, 200);
  Spec p = shape("prefix 50 + chunk 64", 150, 190, 2, 1);
  p.kind = FA_MASK_PREFIX_LM;
  p.prefix = 50;
  p.chunk = 64;
  check_spec(p, 201);
}

TEST(MaskKinds, DocumentsPadded) {
  uint64_t seed = 300;
  for (bool causal : {true, false}) {
    for (bool unmatched : {false, true}) {
      for (auto [lq, lk] : {std::pair<int64_t, int64_t>{150, 150}, {77, 131}, {200, 64}}) {
        Spec s = shape(std::string("documents ") + (causal ? "causal " : "") +
                           (unmatched ? "unmatched " : "") + std::to_string(lq) + "x" +
                           std::to_string(lk),
                       lq, lk, 4, 2, 2);
        s.kind = causal ? FA_MASK_CAUSAL : FA_MASK_NONE;
        for (int64_t b = 0; b < s.batch; ++b) add_documents(&s, lq, lk, seed * 7 + b, unmatched);
        check_spec(s, seed++);
      }
    }
  }
}

TEST(MaskKinds, DocumentsVarlen) {
  uint64_t seed = 400;
  for (bool causal : {true, false}) {
    Spec s = shape(std::string("documents varlen ") + (causal ? "causal" : ""), 0, 0, 4, 1);
    s.q_lens = {70, 1, 130, 5};
    s.k_lens = {90, 5, 130, 1};
    s.batch = 4;
    s.lq = 130;
    s.lk = 130;
    s.kind = causal ? FA_MASK_CAUSAL : FA_MASK_NONE;
    for (int64_t b = 0; b < s.batch; ++b) add_documents(&s, s.q_lens[b], s.k_lens[b], seed + b, b == 2);
    check_spec(s, seed);
  }
  // Every document one token long: each query sees at most its own key.
  Spec one = shape("documents of length 1", 0, 0, 2, 1);
  one.q_lens = {40, 67};
  one.k_lens = {40, 67};
  one.batch = 2;
  one.kind = FA_MASK_CAUSAL;
  for (int64_t b = 0; b < 2; ++b)
    for (int32_t t = 0; t < one.q_lens[b]; ++t) {
      one.q_ids.push_back(t);
      one.k_ids.push_back(t);
    }
  check_spec(one, 410);
}

TEST(MaskKinds, DocumentsWithPrefixAndChunk) {
  Spec s = shape("documents + prefix 20", 140, 140, 2, 1, 2);
  s.kind = FA_MASK_PREFIX_LM;
  s.prefix = 20;
  for (int64_t b = 0; b < 2; ++b) add_documents(&s, 140, 140, 500 + b, false);
  check_spec(s, 500);
  Spec c = shape("documents + chunk 24", 140, 140, 2, 1, 2);
  c.kind = FA_MASK_CAUSAL;
  c.chunk = 24;
  for (int64_t b = 0; b < 2; ++b) add_documents(&c, 140, 140, 510 + b, false);
  check_spec(c, 510);
}

TEST(MaskKinds, WholeRowEmpty) {
  // Every query's document is missing from the keys.
  Spec s = shape("documents, no query matched", 70, 90, 2, 1);
  for (int64_t j = 0; j < 90; ++j) s.k_ids.push_back(0);
  for (int64_t i = 0; i < 70; ++i) s.q_ids.push_back(1);
  check_spec(s, 600);
  Spec z = shape("dense mask all false", 77, 131, 2, 1);
  dense_random(&z, 0.0, 601);
  check_spec(z, 601);
}

// ------------------------------------------------------------- block masks

TEST(BlockMasks, BlockSparseFromBlocks) {
  uint64_t seed = 700;
  for (int64_t blk : {64, 128, 256}) {
    for (bool causal : {false, true}) {
      Spec s = shape("blocks " + std::to_string(blk) + (causal ? " causal" : ""), 300, 260, 4, 2, 2);
      s.block_q = blk;
      s.block_k = blk;
      s.mask_heads = 4;
      s.kind = causal ? FA_MASK_CAUSAL : FA_MASK_NONE;
      blocks_random(&s, 0.5, seed);
      check_spec(s, seed++);
    }
  }
}

TEST(BlockMasks, DenseRandomDensities) {
  uint64_t seed = 800;
  for (double density : {0.0, 0.03, 0.3, 0.9, 1.0}) {
    for (auto [lq, lk] : {std::pair<int64_t, int64_t>{77, 131}, {200, 64}, {129, 257}}) {
      Spec s = shape("dense " + std::to_string(density) + " " + std::to_string(lq) + "x" +
                         std::to_string(lk),
                     lq, lk, 2, 1);
      s.block_q = seed % 2 ? 64 : 128;
      s.block_k = seed % 3 ? 128 : 256;
      dense_random(&s, density, seed);
      check_spec(s, seed++);
    }
  }
}

TEST(BlockMasks, MixedBlocksWithCausalAndSoftcap) {
  Spec s = shape("mixed blocks + causal", 256, 320, 4, 2);
  s.block_q = 64;
  s.block_k = 64;
  s.mask_heads = 4;
  s.kind = FA_MASK_CAUSAL;
  dense_mixed(&s, 0.3, 900);
  check_spec(s, 900);
  Spec c = s;
  c.name = "mixed blocks + causal + softcap";
  c.softcap = 5.0f;
  check_spec(c, 901);
  Spec w = shape("mixed blocks + window + chunk", 200, 200, 2, 1);
  w.kind = FA_MASK_SLIDING_WINDOW;
  w.window_left = 100;
  w.window_right = 30;
  w.chunk = 96;
  dense_mixed(&w, 0.5, 902);
  check_spec(w, 902);
}

TEST(BlockMasks, BroadcastPerHeadPerBatch) {
  uint64_t seed = 1000;
  for (int64_t bm : {1, 2}) {
    for (int64_t hm : {1, 6}) {
      // GQA with 3 query heads a KV head: a tile's rows interleave heads
      // and cross query blocks at odd places.
      Spec s = shape("mask [" + std::to_string(bm) + ", " + std::to_string(hm) + "]", 77, 131, 6,
                     2, 2);
      s.mask_batch = bm;
      s.mask_heads = hm;
      s.block_q = 64;
      s.block_k = 64;
      dense_mixed(&s, 0.4, seed);
      check_spec(s, seed++);
    }
  }
}

TEST(BlockMasks, WithDocuments) {
  Spec s = shape("block mask + documents", 200, 200, 2, 1, 2);
  s.kind = FA_MASK_CAUSAL;
  s.mask_batch = 2;
  for (int64_t b = 0; b < 2; ++b) add_documents(&s, 200, 200, 1100 + b, false);
  dense_mixed(&s, 0.5, 1100);
  check_spec(s, 1100);
}

TEST(BlockMasks, HalfPrecision) {
  uint64_t seed = 1200;
  for (fa_dtype t : {FA_DTYPE_BFLOAT16, FA_DTYPE_FLOAT16}) {
    Spec s = shape(std::string("mixed blocks ") + (t == FA_DTYPE_BFLOAT16 ? "bf16" : "fp16"), 200,
                   264, 4, 2);
    s.dtype = t;
    s.d = 64;
    s.mask_heads = 4;
    s.kind = FA_MASK_CAUSAL;
    dense_mixed(&s, 0.3, seed);
    check_spec(s, seed++);
    Spec doc = shape(std::string("documents ") + (t == FA_DTYPE_BFLOAT16 ? "bf16" : "fp16"), 150,
                     150, 2, 1, 2);
    doc.dtype = t;
    doc.kind = FA_MASK_CAUSAL;
    for (int64_t b = 0; b < 2; ++b) add_documents(&doc, 150, 150, seed + b, true);
    check_spec(doc, seed++);
  }
}

// Few tiles for many threads: the tile kernel splits each tile's keys and
// merges the partial states.
TEST(CpuPaths, KeySplits) {
  Spec s = shape("key splits + blocks", 64, 2048, 2, 2);
  s.threads = 8;
  s.block_q = 64;
  s.block_k = 64;
  s.mask_heads = 2;
  blocks_random(&s, 0.3, 1300);
  check_spec(s, 1300);
  Spec d = shape("key splits + dense mixed + causal", 100, 2048, 2, 2);
  d.threads = 8;
  d.kind = FA_MASK_CAUSAL;
  dense_mixed(&d, 0.2, 1301);
  check_spec(d, 1301);
  Spec doc = shape("key splits + documents", 64, 2048, 2, 2);
  doc.threads = 8;
  add_documents(&doc, 64, 2048, 1302, false);
  check_spec(doc, 1302);
  Spec c = shape("key splits + prefix + chunk", 64, 2048, 2, 2);
  c.threads = 8;
  c.kind = FA_MASK_PREFIX_LM;
  c.prefix = 700;
  c.chunk = 512;
  check_spec(c, 1303);
}

// At most kDecodeMaxRows rows a KV head: the decode-shaped kernel, with its
// own key chunks and merge.
TEST(CpuPaths, FewRows) {
  Spec s = shape("few rows + per-head dense", 3, 1000, 2, 1, 2);
  s.mask_heads = 2;
  s.mask_batch = 2;
  s.block_q = 64;
  s.block_k = 64;
  dense_mixed(&s, 0.3, 1400);
  check_spec(s, 1400);
  Spec b = shape("few rows + blocks + causal", 4, 700, 2, 1);
  b.kind = FA_MASK_CAUSAL;
  b.block_k = 64;
  blocks_random(&b, 0.4, 1401);
  check_spec(b, 1401);
  Spec doc = shape("few rows + documents", 4, 1000, 2, 1, 2);
  doc.kind = FA_MASK_CAUSAL;
  for (int64_t b2 = 0; b2 < 2; ++b2) add_documents(&doc, 4, 1000, 1402 + b2, b2 == 1);
  check_spec(doc, 1402);
  Spec c = shape("few rows + prefix + chunk", 3, 1000, 2, 1);
  c.kind = FA_MASK_PREFIX_LM;
  c.prefix = 300;
  c.chunk = 128;
  check_spec(c, 1403);
  Spec v = shape("few rows varlen + documents", 0, 0, 2, 1);
  v.q_lens = {2, 4, 1};
  v.k_lens = {600, 3, 900};
  v.batch = 3;
  v.lq = 4;
  v.lk = 900;
  v.kind = FA_MASK_CAUSAL;
  for (int64_t b2 = 0; b2 < 3; ++b2) add_documents(&v, v.q_lens[b2], v.k_lens[b2], 1404 + b2, false);
  check_spec(v, 1404);
}

// ------------------------------------------------- KV cache (paged, decode)

// Prefix-LM and chunked masks over a paged cache and a decode step, against
// the oracle with each sequence's own key count.
TEST(CachePaths, PrefixAndChunkOverPagedAndDecode) {
  const int64_t B = 2, Lq = 5, Hq = 4, Hkv = 2, D = 32, page = 16, pages_per_seq = 20;
  const std::vector<int64_t> keys = {203, 77};
  for (int variant = 0; variant < 3; ++variant) {
    Spec s = shape("cache", Lq, 0, Hq, Hkv);
    s.d = D;
    s.batch = B;
    s.q_lens = {Lq, Lq};
    s.k_lens = keys;
    if (variant == 0) {
      s.kind = FA_MASK_PREFIX_LM;
      s.prefix = 60;
      s.name = "prefix 60";
    } else if (variant == 1) {
      s.kind = FA_MASK_CAUSAL;
      s.chunk = 64;
      s.name = "chunked causal 64";
    } else {
      s.chunk = 50;
      s.name = "chunked 50";
    }
    SCOPED_TRACE(s.name);
    const Data x = make_data(s, 1500 + variant);
    const check::Result ref = oracle(s, x, false);
    const check::Result low = oracle(s, x, true);
    fa_mask m{};
    m.kind = s.kind;
    m.prefix_len = s.prefix;
    m.chunk_size = s.chunk;
    for (fa_backend backend : {FA_BACKEND_CPU_REFERENCE, FA_BACKEND_CPU}) {
      // Pages of sequence b in reverse order; contiguous cache [B, cap, Hkv, D].
      const int64_t num_pages = B * pages_per_seq, cap = page * pages_per_seq;
      std::vector<float> kp(num_pages * page * Hkv * D, 0.0f), vp(kp.size(), 0.0f);
      std::vector<float> kc(B * cap * Hkv * D, 0.0f), vc(kc.size(), 0.0f);
      std::vector<int32_t> table(B * pages_per_seq), seq_lens(B);
      for (int64_t b = 0; b < B; ++b) {
        seq_lens[b] = static_cast<int32_t>(keys[b]);
        for (int64_t p = 0; p < pages_per_seq; ++p) {
          table[b * pages_per_seq + p] = static_cast<int32_t>((b + 1) * pages_per_seq - 1 - p);
        }
        for (int64_t j = 0; j < keys[b]; ++j)
          for (int64_t e = 0; e < Hkv * D; ++e) {
            const int64_t src = (s.first_k(b) + j) * Hkv * D + e;
            const int64_t pg = table[b * pages_per_seq + j / page];
            kp[(pg * page + j % page) * Hkv * D + e] = x.k[src];
            vp[(pg * page + j % page) * Hkv * D + e] = x.v[src];
            kc[(b * cap + j) * Hkv * D + e] = x.k[src];
            vc[(b * cap + j) * Hkv * D + e] = x.v[src];
          }
      }
      std::vector<float> q = x.q;
      for (int path = 0; path < 2; ++path) {
        SCOPED_TRACE(path == 0 ? "paged attention" : "decode");
        std::vector<float> out(q.size(), std::numeric_limits<float>::quiet_NaN());
        std::vector<float> lse(B * Hq * Lq, std::numeric_limits<float>::quiet_NaN());
        RunOptions o;
        o.backend = backend;
        o.num_threads = 4;
        if (path == 0) {
          PagedAttention pa(tensor(q.data(), FA_DTYPE_FLOAT32, {B, Lq, Hq, D}),
                            tensor(kp.data(), FA_DTYPE_FLOAT32, {num_pages, page, Hkv, D}),
                            tensor(vp.data(), FA_DTYPE_FLOAT32, {num_pages, page, Hkv, D}),
                            tensor(out.data(), FA_DTYPE_FLOAT32, {B, Lq, Hq, D}));
          pa.pages(table.data(), pages_per_seq, pages_per_seq, seq_lens.data())
              .lse(tensor(lse.data(), FA_DTYPE_FLOAT32, {B, Hq, Lq}))
              .mask(m);
          const Result r = pa.run(o);
          ASSERT_TRUE(r) << r.message();
        } else {
          Decode step(tensor(q.data(), FA_DTYPE_FLOAT32, {B, Lq, Hq, D}),
                      tensor(kc.data(), FA_DTYPE_FLOAT32, {B, cap, Hkv, D}),
                      tensor(vc.data(), FA_DTYPE_FLOAT32, {B, cap, Hkv, D}),
                      tensor(out.data(), FA_DTYPE_FLOAT32, {B, Lq, Hq, D}));
          step.cache_seqlens(seq_lens.data())
              .lse(tensor(lse.data(), FA_DTYPE_FLOAT32, {B, Hq, Lq}))
              .mask(m);
          fa_decode_plan plan{};
          const Result pr = step.plan(&plan, o);
          ASSERT_TRUE(pr) << pr.message();
          const Result r = step.run(plan, nullptr, 0, o);
          ASSERT_TRUE(r) << r.message();
        }
        check::Result got;
        for (int64_t b = 0; b < B; ++b) {
          got.out.emplace_back(out.begin() + b * Lq * Hq * D, out.begin() + (b + 1) * Lq * Hq * D);
          got.lse.emplace_back(lse.begin() + b * Hq * Lq, lse.begin() + (b + 1) * Hq * Lq);
        }
        EXPECT_TRUE(judge(s, got, ref, low));
      }
    }
  }
}

// ------------------------------------------------------- compressed masks

struct Counts {
  int64_t empty = 0, full = 0, partial = 0;
};

// Classes of a dense source's blocks counted straight from the bytes.
Counts count_blocks(const Spec& s) {
  Counts c;
  for (int64_t p = 0; p < s.mask_batch * s.mask_heads; ++p)
    for (int64_t qb = 0; qb < s.blocks_q(); ++qb)
      for (int64_t kb = 0; kb < s.blocks_k(); ++kb) {
        int64_t on = 0, all = 0;
        for (int64_t i = qb * s.block_q; i < std::min(s.lq, (qb + 1) * s.block_q); ++i)
          for (int64_t j = kb * s.block_k; j < std::min(s.lk, (kb + 1) * s.block_k); ++j) {
            on += s.mask_src[(p * s.lq + i) * s.lk + j] != 0;
            ++all;
          }
        if (on == 0) ++c.empty; else if (on == all) ++c.full; else ++c.partial;
      }
  return c;
}

TEST(CompressedMask, CountsAndPairsMatchTheDenseSource) {
  uint64_t seed = 1600;
  for (double density : {0.0, 0.03, 0.5, 1.0}) {
    for (int64_t blk : {64, 128, 256}) {
      Spec s = shape("compress", 300, 333, 2, 1);
      s.mask_batch = 2;
      s.mask_heads = 3;
      s.block_q = blk;
      s.block_k = blk == 64 ? 256 : 64;
      dense_mixed(&s, density, seed++);
      SCOPED_TRACE(testing::Message() << "density " << density << " block " << s.block_q << "x"
                                      << s.block_k);
      BlockMask bm;
      const Result r = BlockMask::from_dense(
          tensor(s.mask_src.data(), FA_DTYPE_BOOL, {2, 3, s.lq, s.lk}), &bm, s.block_q, s.block_k);
      ASSERT_TRUE(r) << r.message();
      const fa_block_mask_info info = bm.info();
      const Counts c = count_blocks(s);
      EXPECT_EQ(info.batch, 2);
      EXPECT_EQ(info.heads, 3);
      EXPECT_EQ(info.seqlen_q, s.lq);
      EXPECT_EQ(info.seqlen_k, s.lk);
      EXPECT_EQ(info.block_q, s.block_q);
      EXPECT_EQ(info.block_k, s.block_k);
      EXPECT_EQ(info.empty_blocks, c.empty);
      EXPECT_EQ(info.full_blocks, c.full);
      EXPECT_EQ(info.partial_blocks, c.partial);
      EXPECT_EQ(info.on_device, 0);
      const BlockMaskView& v = bm.get()->view;
      int64_t mismatches = 0;
      for (int64_t b = 0; b < 2; ++b)
        for (int64_t h = 0; h < 3; ++h)
          for (int64_t i = 0; i < s.lq; ++i)
            for (int64_t j = 0; j < s.lk; ++j) {
              mismatches += v.allowed(b, h, i, j) != (s.mask_src[((b * 3 + h) * s.lq + i) * s.lk + j] != 0);
            }
      EXPECT_EQ(mismatches, 0);
      // Each row's list holds exactly its non-empty key blocks, ascending.
      for (int64_t row = 0; row < 2 * 3 * v.blocks_q; ++row) {
        int64_t n = 0;
        for (int64_t kb = 0; kb < v.blocks_k; ++kb) {
          if (v.cls[row * v.blocks_k + kb] == BlockMaskView::kEmpty) continue;
          ASSERT_LT(n, v.kv_count[row]);
          EXPECT_EQ(v.kv_list[row * v.blocks_k + n], kb);
          ++n;
        }
        EXPECT_EQ(n, v.kv_count[row]);
      }
    }
  }
}

TEST(CompressedMask, BlocksSourceHasNoPartialBlocks) {
  Spec s = shape("blocks", 300, 200, 2, 1);
  s.block_q = 128;
  s.block_k = 64;
  s.mask_heads = 2;
  blocks_random(&s, 0.5, 1700);
  BlockMask bm;
  const Result r = BlockMask::from_blocks(
      tensor(s.mask_src.data(), FA_DTYPE_BOOL, {1, 2, s.blocks_q(), s.blocks_k()}), s.lq, s.lk, &bm,
      s.block_q, s.block_k);
  ASSERT_TRUE(r) << r.message();
  const fa_block_mask_info info = bm.info();
  int64_t on = 0;
  for (uint8_t e : s.mask_src) on += e != 0;
  EXPECT_EQ(info.partial_blocks, 0);
  EXPECT_EQ(info.full_blocks, on);
  EXPECT_EQ(info.empty_blocks, static_cast<int64_t>(s.mask_src.size()) - on);
  const BlockMaskView& v = bm.get()->view;
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t i = 0; i < s.lq; ++i)
      for (int64_t j = 0; j < s.lk; ++j) {
        ASSERT_EQ(v.allowed(0, h, i, j), oracle_allows(s, 0, h, i, j)) << h << " " << i << " " << j;
      }
}

// At 128 x 128 blocks with at most 10% PARTIAL, the state is at most 1/64
// of the dense bool mask (fastattn.h promises about 1/78).
TEST(CompressedMask, SmallStateWhenFewBlocksArePartial) {
  const int64_t L = 2048, nb = L / 128;
  std::vector<uint8_t> dense(L * L, 0);
  std::mt19937_64 rng(1800);
  int64_t partial = 0;
  for (int64_t qb = 0; qb < nb; ++qb)
    for (int64_t kb = 0; kb < nb; ++kb) {
      const int64_t r = static_cast<int64_t>(rng() % 100);
      const int c = r < 10 ? 2 : (r < 55 ? 1 : 0);  // 10% PARTIAL, 45% FULL
      partial += c == 2;
      for (int64_t i = qb * 128; i < qb * 128 + 128; ++i)
        for (int64_t j = kb * 128; j < kb * 128 + 128; ++j) {
          dense[i * L + j] = c == 1 ? 1 : (c == 2 ? ((i + j) % 3 == 0) : 0);
        }
    }
  ASSERT_LE(partial * 10, nb * nb);
  BlockMask bm;
  const Result r = BlockMask::from_dense(tensor(dense.data(), FA_DTYPE_BOOL, {1, 1, L, L}), &bm);
  ASSERT_TRUE(r) << r.message();
  const fa_block_mask_info info = bm.info();
  EXPECT_EQ(info.partial_blocks, partial);
  EXPECT_EQ(info.block_q, 128);
  EXPECT_LE(info.state_bytes, static_cast<uint64_t>(L * L / 64));
}

TEST(CompressedMask, MoveOnlyOwner) {
  std::vector<uint8_t> dense(100 * 70, 1);
  BlockMask a;
  ASSERT_TRUE(BlockMask::from_dense(tensor(dense.data(), FA_DTYPE_BOOL, {1, 1, 100, 70}), &a));
  const fa_block_mask* raw = a.get();
  BlockMask b(std::move(a));
  EXPECT_EQ(a.get(), nullptr);
  EXPECT_EQ(b.get(), raw);
  BlockMask c;
  c = std::move(b);
  EXPECT_EQ(c.get(), raw);
  EXPECT_EQ(c.info().full_blocks, 1);
  EXPECT_EQ(BlockMask().info().seqlen_q, 0);
}

}  // namespace
}  // namespace fastattn
