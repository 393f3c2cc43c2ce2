#include "bench_runner.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <memory>
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

using block_mask_ptr = std::unique_ptr<fa_block_mask, decltype(&fa_block_mask_destroy)>;

// An fa_block_mask of block x block blocks, broadcast over batch and heads,
// from a bool source that already lives on the run's side (`source`): the
// dense [rows, Lk] array, or the blocks [blocks_q, blocks_k] array of a
// rows x Lk plane.
block_mask_ptr create_block_mask(const bench_problem& p, void* source, bool dense, int64_t rows,
                                 int64_t blocks_q, int64_t blocks_k, const fa_run_options& options) {
  fa_block_mask_args a{};
  const int64_t lk = p.seqlen_k;
  if (dense) {
    a.dense = tensor4(source, FA_DTYPE_BOOL, {1, 1, rows, lk}, {rows * lk, rows * lk, lk, 1});
  } else {
    a.blocks = tensor4(source, FA_DTYPE_BOOL, {1, 1, blocks_q, blocks_k},
                       {blocks_q * blocks_k, blocks_q * blocks_k, blocks_k, 1});
    a.seqlen_q = rows;
    a.seqlen_k = lk;
  }
  a.block_q = p.block;
  a.block_k = p.block;
  fa_block_mask* mask = nullptr;
  check_status("fa_block_mask_create", fa_block_mask_create(&a, &options, &mask));
  return block_mask_ptr(mask, &fa_block_mask_destroy);
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
  // The mask's inputs on the call's side (null when the problem has none).
  const int32_t* q_segment_ids;
  const int32_t* k_segment_ids;
  const fa_block_mask* block_mask;
};

fa_mask make_mask(const bench_problem& p, const call_view& c) {
  fa_mask m{};
  m.kind = p.mask;
  if (p.mask == FA_MASK_SLIDING_WINDOW) {
    m.window_left = p.window_left;
    m.window_right = p.window_right;
  }
  if (p.mask == FA_MASK_PREFIX_LM) m.prefix_len = p.prefix_len;
  m.chunk_size = p.chunk_size;
  m.q_segment_ids = c.q_segment_ids;
  m.k_segment_ids = c.k_segment_ids;
  m.block_mask = c.block_mask;
  return m;
}

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
    a.mask = make_mask(p, c);
    a.softcap = p.softcap;
    return fa_paged_attention(&a, &options);
  }
  fa_attention_args a{};
  a.q = q;
  a.k = tensor4(c.k, p.dtype, {c.batch, p.seqlen_k, c.heads_kv, D}, {p.seqlen_k * kv_row, kv_row, D, 1});
  a.v = tensor4(c.v, p.dtype, {c.batch, p.seqlen_k, c.heads_kv, D}, {p.seqlen_k * kv_row, kv_row, D, 1});
  a.out = out;
  a.mask = make_mask(p, c);
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
// The mask's inputs follow the rows: segment ids from row Lq - n on, and a
// host block mask over just those rows (their dense bits), which keeps the
// check independent of how the run's block mask was built.
void sample_error(const bench_problem& p, const mask_inputs& m, host_problem& h, const bench_settings& s,
                  bench_result& r) {
  const int64_t n = std::min<int64_t>(p.seqlen_q, 16);
  const int64_t D = p.head_dim;
  const int64_t group = p.heads_q / p.heads_kv;
  r.error_rows = n;
  r.error_heads = {0};
  if (p.heads_q > 1) r.error_heads.push_back(p.heads_q - 1);
  fa_run_options ref_options{};
  ref_options.backend = FA_BACKEND_CPU_REFERENCE;
  ref_options.num_threads = s.num_threads;
  const int64_t first_row = p.seqlen_q - n;
  block_mask_ptr ref_mask(nullptr, &fa_block_mask_destroy);
  std::vector<unsigned char> ref_rows;
  if (p.mask_source == bench_problem::source::block_sparse || p.mask_source == bench_problem::source::dense) {
    ref_rows = dense_rows(p, m, first_row, p.seqlen_q);
    ref_mask = create_block_mask(p, ref_rows.data(), true, n, 0, 0, ref_options);
  }
  const bool docs = p.mask_source == bench_problem::source::documents;
  double max_err = 0.0;
  for (const int64_t head : r.error_heads) {
    const int64_t kv_head = head / group;
    host_tensor ref(p.dtype, n * D);
    const call_view view{h.q.element((first_row * p.heads_q + head) * D),
                         h.k.element(kv_head * D),
                         h.v.element(kv_head * D),
                         ref.data(),
                         1, n, 1, 1, D,
                         docs ? m.q_segment_ids.data() + first_row : nullptr,
                         docs ? m.k_segment_ids.data() : nullptr,
                         ref_mask.get()};
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

bench_result run_benchmark(const bench_problem& p, const mask_inputs& m, const bench_settings& s) {
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
    fa_run_options options{};
    options.backend = s.backend;
    options.num_threads = s.num_threads;

    // Documents: the same ids in every sequence, [B, Lq] and [B, Lk] on the run's side.
    std::vector<int32_t> q_ids, k_ids;
    for (int64_t b = 0; b < p.batch && !m.q_segment_ids.empty(); ++b) {
      q_ids.insert(q_ids.end(), m.q_segment_ids.begin(), m.q_segment_ids.end());
      k_ids.insert(k_ids.end(), m.k_segment_ids.begin(), m.k_segment_ids.end());
    }
    const int64_t q_id_bytes = static_cast<int64_t>(q_ids.size() * sizeof(int32_t));
    const int64_t k_id_bytes = static_cast<int64_t>(k_ids.size() * sizeof(int32_t));
    r.segment_id_bytes = q_id_bytes + k_id_bytes;
    device_mirror q_ids_on_side(on_gpu && q_id_bytes > 0, q_ids.data(), q_id_bytes);
    device_mirror k_ids_on_side(on_gpu && k_id_bytes > 0, k_ids.data(), k_id_bytes);

    // Block mask: compressed on the run's side from its source (blocks for
    // block_sparse, the dense Lq x Lk bools for dense), timed apart from attention.
    block_mask_ptr block_mask(nullptr, &fa_block_mask_destroy);
    if (p.mask_source == bench_problem::source::block_sparse || p.mask_source == bench_problem::source::dense) {
      progress("bench: building the block mask");
      const bool dense = p.mask_source == bench_problem::source::dense;
      void* host_source = const_cast<unsigned char*>(dense ? m.dense.data() : m.blocks.data());
      const int64_t source_bytes = static_cast<int64_t>(dense ? m.dense.size() : m.blocks.size());
      device_mirror source(on_gpu, host_source, source_bytes);
      call_timer create_timer(on_gpu);
      create_timer.start();
      block_mask = create_block_mask(p, source.data(), dense, p.seqlen_q, m.blocks_q, m.blocks_k, options);
      r.block_mask_create_ms = create_timer.stop_ms();
      r.block_mask = true;
      check_status("fa_block_mask_get_info", fa_block_mask_get_info(block_mask.get(), &r.block_mask_info));
    }

    const call_view full{q.data(), k.data(), v.data(), out.data(),
                         p.batch, p.seqlen_q, p.heads_q, p.heads_kv, p.heads_q * p.head_dim,
                         q_id_bytes > 0 ? static_cast<const int32_t*>(q_ids_on_side.data()) : nullptr,
                         k_id_bytes > 0 ? static_cast<const int32_t*>(k_ids_on_side.data()) : nullptr,
                         block_mask.get()};
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
  sample_error(p, m, h, s, r);
  return r;
}

}  // namespace fastattn::tools
