#include "bench_runner.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <stdexcept>

#include "device_memory.h"
#include "host_tensor.h"
#include "library_error.h"

namespace fastattn::tools {

namespace {

fa_tensor tensor4(void* data, fa_dtype dtype, const int64_t (&shape)[4], const int64_t (&strides)[4]) {
  fa_tensor t{};
  t.data = data;
  t.dtype = dtype;
  t.ndim = 4;
  for (int i = 0; i < 4; ++i) {
    t.shape[i] = shape[i];
    t.strides[i] = strides[i];
  }
  return t;
}

fa_mask make_mask(const bench_problem& p) {
  fa_mask m{};
  m.kind = p.mask;
  if (p.mask == FA_MASK_SLIDING_WINDOW) {
    m.window_left = p.window_left;
    m.window_right = p.window_right;
  }
  return m;
}

bool paged(const bench_problem& p) { return p.decode && p.page_size > 0; }

// The inputs and output of one problem on the host. K and V are
// [B, Lk, Hkv, D], or for a paged decode [B * pages_per_seq, page_size, Hkv, D]
// with the pages of all sequences shuffled over the cache.
struct host_problem {
  host_tensor q, k, v, out;
  int64_t pages_per_seq = 0;
  std::vector<int32_t> page_table;  // [B, pages_per_seq]
  std::vector<int32_t> seq_lens_k;  // [B]
};

int64_t kv_elements(const bench_problem& p, int64_t pages_per_seq) {
  const int64_t rows = paged(p) ? p.batch * pages_per_seq * p.page_size : p.batch * p.seqlen_k;
  return rows * p.heads_kv * p.head_dim;
}

host_problem make_host_problem(const bench_problem& p, uint64_t seed) {
  const int64_t pages_per_seq = paged(p) ? (p.seqlen_k + p.page_size - 1) / p.page_size : 0;
  if (paged(p) && (p.batch * pages_per_seq > INT32_MAX || p.seqlen_k > INT32_MAX)) {
    throw std::runtime_error("the paged cache needs more than 2^31 pages or keys (int32 page table)");
  }
  const int64_t q_elements = p.batch * p.seqlen_q * p.heads_q * p.head_dim;
  host_problem h{host_tensor(p.dtype, q_elements), host_tensor(p.dtype, kv_elements(p, pages_per_seq)),
                 host_tensor(p.dtype, kv_elements(p, pages_per_seq)), host_tensor(p.dtype, q_elements),
                 pages_per_seq, {}, {}};
  std::mt19937_64 rng(seed);
  h.q.fill_normal(rng);
  h.k.fill_normal(rng);
  h.v.fill_normal(rng);
  // All-ones bytes are NaN in every dtype: an element the library did not
  // write shows up as a NaN error instead of passing silently.
  std::memset(h.out.data(), 0xFF, static_cast<size_t>(h.out.bytes()));
  if (paged(p)) {
    h.page_table.resize(static_cast<size_t>(p.batch * pages_per_seq));
    std::iota(h.page_table.begin(), h.page_table.end(), 0);
    std::shuffle(h.page_table.begin(), h.page_table.end(), rng);
    h.seq_lens_k.assign(static_cast<size_t>(p.batch), static_cast<int32_t>(p.seqlen_k));
  }
  return h;
}

// Pointers and head counts of one call: the whole problem, or the view of a
// single query head used for the reference check. Strides are always those
// of the full buffers, so a view is just offset pointers and smaller shapes.
struct call_view {
  void* q;
  void* k;
  void* v;
  void* out;
  int64_t batch, seqlen_q, heads_q, heads_kv;
  int64_t out_row_stride;  // Hq*D for the full output, D for a view's own buffer
};

fa_status call_library(const bench_problem& p, const host_problem& h, const call_view& c,
                       const fa_run_options& options) {
  const int64_t D = p.head_dim;
  const int64_t q_row = p.heads_q * D;
  const int64_t kv_row = p.heads_kv * D;
  const fa_tensor q = tensor4(c.q, p.dtype, {c.batch, c.seqlen_q, c.heads_q, D},
                              {p.seqlen_q * q_row, q_row, D, 1});
  const fa_tensor out = tensor4(c.out, p.dtype, {c.batch, c.seqlen_q, c.heads_q, D},
                                {c.seqlen_q * c.out_row_stride, c.out_row_stride, D, 1});
  if (paged(p)) {
    fa_paged_attention_args a{};
    a.q = q;
    const int64_t num_pages = p.batch * h.pages_per_seq;
    a.k_cache = tensor4(c.k, p.dtype, {num_pages, p.page_size, c.heads_kv, D},
                        {p.page_size * kv_row, kv_row, D, 1});
    a.v_cache = tensor4(c.v, p.dtype, {num_pages, p.page_size, c.heads_kv, D},
                        {p.page_size * kv_row, kv_row, D, 1});
    a.page_table = h.page_table.data();
    a.page_table_stride = h.pages_per_seq;
    a.max_pages_per_seq = h.pages_per_seq;
    a.seq_lens_k = h.seq_lens_k.data();
    a.out = out;
    a.mask = make_mask(p);
    a.softcap = p.softcap;
    return fa_paged_attention(&a, &options);
  }
  fa_attention_args a{};
  a.q = q;
  a.k = tensor4(c.k, p.dtype, {c.batch, p.seqlen_k, c.heads_kv, D}, {p.seqlen_k * kv_row, kv_row, D, 1});
  a.v = tensor4(c.v, p.dtype, {c.batch, p.seqlen_k, c.heads_kv, D}, {p.seqlen_k * kv_row, kv_row, D, 1});
  a.out = out;
  a.mask = make_mask(p);
  a.softcap = p.softcap;
  return fa_attention_forward(&a, &options);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// For batch entry 0 and up to two query heads (first and last, so GQA covers
// two KV heads), the last n query rows are run on the float64 reference.
// Keeping all keys and the last rows keeps the bottom-right mask alignment
// of the full problem, so the view's rows are exactly the full problem's.
void sample_error(const bench_problem& p, host_problem& h, const bench_settings& s, bench_result& r) {
  const int64_t n = std::min<int64_t>(p.seqlen_q, 16);
  const int64_t D = p.head_dim;
  const int64_t group = p.heads_q / p.heads_kv;
  r.error_rows = n;
  r.error_heads = {0};
  if (p.heads_q > 1) r.error_heads.push_back(p.heads_q - 1);
  fa_run_options ref_options{};
  ref_options.backend = FA_BACKEND_CPU_REFERENCE;
  ref_options.num_threads = s.num_threads;
  double max_err = 0.0;
  for (const int64_t head : r.error_heads) {
    const int64_t kv_head = head / group;
    host_tensor ref(p.dtype, n * D);
    const int64_t first_row = p.seqlen_q - n;
    const call_view view{h.q.element((first_row * p.heads_q + head) * D),
                         h.k.element(kv_head * D),
                         h.v.element(kv_head * D),
                         ref.data(),
                         1, n, 1, 1, D};
    check_status("reference fa_attention (sampled rows)", call_library(p, h, view, ref_options));
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t d = 0; d < D; ++d) {
        const double got = h.out.get(((first_row + i) * p.heads_q + head) * D + d);
        const double err = std::fabs(got - static_cast<double>(ref.get(i * D + d)));
        // Written so that a NaN error sticks.
        if (!(err <= max_err)) max_err = err;
      }
    }
  }
  r.max_abs_error = max_err;
}

}  // namespace

bench_result run_benchmark(const bench_problem& p, const bench_settings& s) {
  const auto progress = [&](const std::string& text) {
    if (s.on_progress) s.on_progress(text);
  };
  progress("bench: preparing inputs");
  host_problem h = make_host_problem(p, s.seed);
  const bool on_gpu = s.backend == FA_BACKEND_CUDA;
  bench_result r;
  {
    device_mirror q(on_gpu, h.q.data(), h.q.bytes());
    device_mirror k(on_gpu, h.k.data(), h.k.bytes());
    device_mirror v(on_gpu, h.v.data(), h.v.bytes());
    device_mirror out(on_gpu, h.out.data(), h.out.bytes());
    const call_view full{q.data(), k.data(), v.data(), out.data(),
                         p.batch, p.seqlen_q, p.heads_q, p.heads_kv, p.heads_q * p.head_dim};
    fa_run_options options{};
    options.backend = s.backend;
    options.num_threads = s.num_threads;
    const char* name = paged(p) ? "fa_paged_attention" : "fa_attention_forward";

    for (int64_t i = 0; i < s.warmup; ++i) {
      progress("bench warmup [" + std::to_string(i + 1) + "/" + std::to_string(s.warmup) + "]");
      check_status(name, call_library(p, h, full, options));
    }
    call_timer timer(on_gpu);
    for (int64_t i = 0; i < s.repeats; ++i) {
      progress("bench [" + std::to_string(i + 1) + "/" + std::to_string(s.repeats) + "]");
      timer.start();
      const fa_status status = call_library(p, h, full, options);
      const double ms = timer.stop_ms();
      check_status(name, status);
      r.times_ms.push_back(ms);
    }
    out.download();
  }
  r.median_ms = median(r.times_ms);
  r.min_ms = *std::min_element(r.times_ms.begin(), r.times_ms.end());
  progress("bench: checking sampled rows against the float64 reference");
  sample_error(p, h, s, r);
  return r;
}

}  // namespace fastattn::tools
