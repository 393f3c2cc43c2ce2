// Flash attention on the CPU: plans the work, runs it on OpenMP threads and
// merges split partial states exactly.
//
// Work items are tiles of kBr flattened rows of one KV-head group (every
// query head of the group, so K/V are read once per group). Tiles are
// ordered longest first (causal tiles near the end see the most keys) and
// handed out dynamically. When there are fewer tiles than about two per
// thread, each tile's key range is split and the partial (O, LSE) states
// are merged by log-sum-exp, which is exact up to fp32 rounding.
//
// Decode shapes (at most kDecodeMaxRows rows per group) use the decode
// kernel, one item per (sequence, key chunk) covering all KV heads.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "cpu/backend.h"
#include "cpu/flash_tile.h"

namespace fastattn::cpu {
namespace {

struct FreeDeleter {
  void operator()(float* x) const { std::free(x); }
};
using Buffer = std::unique_ptr<float[], FreeDeleter>;

Buffer alloc_floats(int64_t n) {
  const size_t bytes = (static_cast<size_t>(n) * sizeof(float) + 63) / 64 * 64;
  return Buffer(static_cast<float*>(std::aligned_alloc(64, bytes > 0 ? bytes : 64)));
}

int thread_count(const AttentionParams& p) {
  return p.num_threads > 0 ? p.num_threads : omp_get_max_threads();
}

// Keys seen by query rows [i0, i1] of sequence b: ranges only move right
// as i grows, so the first and the last row bound the union.
void key_union(const AttentionParams& p, int64_t b, int64_t i0, int64_t i1, int64_t lq,
               int64_t lk, int64_t* begin, int64_t* end) {
  int64_t b0 = 0, e0 = 0, b1 = 0, e1 = 0;
  p.key_range(b, i0, lq, lk, &b0, &e0);
  p.key_range(b, i1, lq, lk, &b1, &e1);
  *begin = b0;
  *end = std::max(e1, b0);
}

struct Task {
  TileTask tile;
  int64_t cost = 0;
};

// States of `nsplit` consecutive split tasks of one set of rows -> output.
void merge_splits(const AttentionParams& p, const TileTask& t, int max_rows, const float* o,
                  int64_t o_step, const float* lse, int64_t lse_step, int nsplit, float* acc) {
  TileRows rows;
  prepare_rows(p, t, max_rows, &rows);
  const int64_t dp = padded_head_dim(p.head_dim);
  float m_natural[kBr], l[kBr];
  for (int tr = 0; tr < rows.rows; ++tr) {
    float mx = -std::numeric_limits<float>::infinity();
    for (int s = 0; s < nsplit; ++s) mx = std::max(mx, lse[s * lse_step + tr]);
    float* a = acc + tr * dp;
    std::memset(a, 0, sizeof(float) * dp);
    l[tr] = 0.0f;
    m_natural[tr] = 0.0f;
    if (mx == -std::numeric_limits<float>::infinity()) continue;
    for (int s = 0; s < nsplit; ++s) {
      const float w = std::exp(lse[s * lse_step + tr] - mx);
      if (w == 0.0f) continue;
      const float* os = o + s * o_step + tr * dp;
      for (int64_t x = 0; x < p.head_dim; ++x) a[x] += w * os[x];
      l[tr] += w;
    }
    m_natural[tr] = mx;
  }
  finish_rows(p, t, rows, acc, dp, nullptr, l, m_natural);
}

// Environment switch for measuring the AVX512-BF16 path against the
// convert-to-fp32 path on the same machine.
bool bf16_dot_enabled() {
  static const bool enabled = [] {
    const char* off = std::getenv("FASTATTN_CPU_NO_BF16_DOT");
    return bf16_dot_available() && !(off && off[0] == '1');
  }();
  return enabled;
}

void run_tiles(const AttentionParams& p) {
  const int threads = thread_count(p);
  const int64_t g = p.group_size();
  const int64_t dp = padded_head_dim(p.head_dim);

  std::vector<Task> tiles;
  for (int64_t b = 0; b < p.batch; ++b) {
    int64_t first = 0, lq = 0;
    p.q_span(b, &first, &lq);
    const int64_t lk = p.k_len(b), total = lq * g;
    // Head-major: consecutive tiles (and the threads running them side by
    // side) share one head's K/V in cache.
    for (int64_t hk = 0; hk < p.heads_kv; ++hk) {
      for (int64_t row0 = 0; row0 < total; row0 += kBr) {
        const int64_t rows = std::min<int64_t>(kBr, total - row0);
        int64_t kb = 0, ke = 0;
        key_union(p, b, row0 / g, (row0 + rows - 1) / g, lq, lk, &kb, &ke);
        Task t;
        t.tile.b = b;
        t.tile.hk = hk;
        t.tile.row0 = row0;
        t.tile.key_begin = kb;
        t.tile.key_end = ke;
        t.cost = rows * (ke - kb + kBc);  // + kBc: the per-tile Q pack and epilogue
        tiles.push_back(t);
      }
    }
  }
  if (tiles.empty()) return;

  // Too few tiles for the threads (long-context prefill of one sequence,
  // chunked prefill): split key ranges, at least 4 blocks per split.
  int nsplit = 1;
  if (static_cast<int64_t>(tiles.size()) < 2 * threads) {
    int64_t longest = 0;
    for (const Task& t : tiles) longest = std::max(longest, t.tile.key_end - t.tile.key_begin);
    const int64_t want = (2 * threads + static_cast<int64_t>(tiles.size()) - 1) /
                         static_cast<int64_t>(tiles.size());
    nsplit = static_cast<int>(std::max<int64_t>(1, std::min(want, longest / (4 * kBc))));
  }

  std::vector<Task> tasks;
  Buffer split_o, split_lse;
  if (nsplit > 1) {
    split_o = alloc_floats(static_cast<int64_t>(tiles.size()) * nsplit * kBr * dp);
    split_lse = alloc_floats(static_cast<int64_t>(tiles.size()) * nsplit * kBr);
  }
  for (size_t it = 0; it < tiles.size(); ++it) {
    const Task& t = tiles[it];
    const int64_t len = t.tile.key_end - t.tile.key_begin;
    const int64_t chunk = ((len + nsplit - 1) / nsplit + kBc - 1) / kBc * kBc;
    for (int s = 0; s < nsplit; ++s) {
      Task st = t;
      if (nsplit > 1) {
        st.tile.key_begin = std::min(t.tile.key_end, t.tile.key_begin + s * chunk);
        st.tile.key_end = std::min(t.tile.key_end, st.tile.key_begin + chunk);
        const int64_t index = static_cast<int64_t>(it) * nsplit + s;
        st.tile.split_o = split_o.get() + index * kBr * dp;
        st.tile.split_lse = split_lse.get() + index * kBr;
        st.cost = t.cost / nsplit;
      }
      tasks.push_back(st);
    }
  }
  std::stable_sort(tasks.begin(), tasks.end(),
                   [](const Task& a, const Task& b) { return a.cost > b.cost; });

  const bool bf16_dot = p.dtype == DType::kBFloat16 && bf16_dot_enabled();
  const int64_t ntasks = static_cast<int64_t>(tasks.size());
#pragma omp parallel num_threads(threads)
  {
    // + kBc * kBr: the int32 pairs of a PARTIAL mask block.
    const int64_t floats = dp * kBr + 2 * kBc * dp + kBc * kBr + kBr * dp + kBc * kBr;
    Buffer scratch = alloc_floats(floats);
    Workspace ws;
    ws.qt = scratch.get();
    ws.k = ws.qt + dp * kBr;
    ws.v = ws.k + kBc * dp;
    ws.s = ws.v + kBc * dp;
    ws.o = ws.s + kBc * kBr;
    ws.allow = reinterpret_cast<int32_t*>(ws.o + kBr * dp);
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < ntasks; ++i) {
      if (bf16_dot) {
        tile_kernel_bf16_dot(p, tasks[i].tile, &ws);
      } else {
        tile_kernel(p, tasks[i].tile, &ws);
      }
    }
  }
  if (nsplit == 1) return;

  const int64_t ntiles = static_cast<int64_t>(tiles.size());
#pragma omp parallel num_threads(threads)
  {
    Buffer acc = alloc_floats(kBr * dp);
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < ntiles; ++it) {
      const int64_t index = it * nsplit;
      merge_splits(p, tiles[it].tile, kBr, split_o.get() + index * kBr * dp, kBr * dp,
                   split_lse.get() + index * kBr, kBr, nsplit, acc.get());
    }
  }
}

void run_decode(const AttentionParams& p) {
  const int threads = thread_count(p);
  const int64_t dp = padded_head_dim(p.head_dim);
  const int64_t states = p.heads_kv * kDecodeMaxRows;  // split buffer rows per task

  struct Range {
    int64_t begin, end;
  };
  std::vector<Range> ranges(p.batch);
  int64_t total_keys = 0;
  for (int64_t b = 0; b < p.batch; ++b) {
    int64_t first = 0, lq = 0;
    p.q_span(b, &first, &lq);
    const int64_t lk = p.k_len(b);
    if (lq == 0) {
      ranges[b] = {0, 0};
      continue;
    }
    key_union(p, b, 0, lq - 1, lq, lk, &ranges[b].begin, &ranges[b].end);
    total_keys += ranges[b].end - ranges[b].begin;
  }
  // About four chunks per thread balance uneven sequences; below 256 keys a
  // chunk's merge and setup would cost more than the parallelism gains.
  const int64_t chunk =
      std::max<int64_t>(256, (total_keys + 4 * threads - 1) / (4 * threads) + 15) / 16 * 16;

  struct DecodeTask {
    int64_t b, key_begin, key_end, split_index;
  };
  std::vector<DecodeTask> tasks;
  std::vector<int64_t> first_split(p.batch, -1), nsplits(p.batch, 1);
  int64_t split_count = 0;
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t len = ranges[b].end - ranges[b].begin;
    const int64_t ns = std::max<int64_t>(1, (len + chunk - 1) / chunk);
    nsplits[b] = ns;
    if (ns == 1) {
      tasks.push_back({b, ranges[b].begin, ranges[b].end, -1});
      continue;
    }
    first_split[b] = split_count;
    for (int64_t s = 0; s < ns; ++s) {
      const int64_t kb = ranges[b].begin + s * chunk;
      tasks.push_back({b, kb, std::min(ranges[b].end, kb + chunk), split_count++});
    }
  }
  std::stable_sort(tasks.begin(), tasks.end(), [](const DecodeTask& a, const DecodeTask& b) {
    return a.key_end - a.key_begin > b.key_end - b.key_begin;
  });
  Buffer split_o, split_lse;
  if (split_count > 0) {
    split_o = alloc_floats(split_count * states * dp);
    split_lse = alloc_floats(split_count * states);
  }

  const int64_t ntasks = static_cast<int64_t>(tasks.size());
#pragma omp parallel num_threads(threads)
  {
    Buffer state = alloc_floats(decode_state_floats(p));
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < ntasks; ++i) {
      const DecodeTask& t = tasks[i];
      float* so = t.split_index < 0 ? nullptr : split_o.get() + t.split_index * states * dp;
      float* sl = t.split_index < 0 ? nullptr : split_lse.get() + t.split_index * states;
      decode_kernel(p, t.b, t.key_begin, t.key_end, state.get(), so, sl);
    }
  }
  if (split_count == 0) return;

  // Split states of sequence b: per task (hk, r) rows of nr = Lq * g.
#pragma omp parallel num_threads(threads)
  {
    Buffer acc = alloc_floats(kDecodeMaxRows * dp);
#pragma omp for schedule(dynamic, 1) collapse(2)
    for (int64_t b = 0; b < p.batch; ++b) {
      for (int64_t hk = 0; hk < p.heads_kv; ++hk) {
        if (first_split[b] < 0) continue;
        int64_t first = 0, lq = 0;
        p.q_span(b, &first, &lq);
        const int64_t nr = lq * p.group_size();
        TileTask t;
        t.b = b;
        t.hk = hk;
        t.key_begin = ranges[b].begin;
        t.key_end = ranges[b].end;
        const int64_t base = first_split[b];
        merge_splits(p, t, kDecodeMaxRows, split_o.get() + (base * states + hk * nr) * dp,
                     states * dp, split_lse.get() + base * states + hk * nr, states,
                     static_cast<int>(nsplits[b]), acc.get());
      }
    }
  }
}

}  // namespace

void flash_attention(const AttentionParams& p) {
  if (p.batch == 0 || p.heads_q == 0) return;
  // Few rows per KV head (decode, short speculative verification): the
  // tile kernel would leave most vector lanes empty.
  if (p.seqlen_q * p.group_size() <= kDecodeMaxRows) {
    run_decode(p);
  } else {
    run_tiles(p);
  }
}

const char* simd_target_name() {
  static const std::string name =
      std::string(hwy_target_name()) + (bf16_dot_enabled() ? "+avx512bf16" : "");
  return name.c_str();
}

}  // namespace fastattn::cpu
