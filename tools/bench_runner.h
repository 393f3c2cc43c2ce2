// Runs one benchmark problem through the public C ABI: builds the inputs,
// times repeated calls and checks a sample of the output against the float64
// reference backend.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "bench_problem.h"

namespace fastattn::tools {

struct bench_settings {
  fa_backend backend = FA_BACKEND_CPU;
  int32_t num_threads = 0;  // 0 = all
  int64_t warmup = 2;
  int64_t repeats = 10;
  uint64_t seed = 1;
  // Called with short status texts ("bench [3/10]") while it runs.
  std::function<void(const std::string&)> on_progress;
};

struct bench_result {
  std::vector<double> times_ms;  // one per repeat, in call order
  double median_ms = 0;
  double min_ms = 0;
  // max |out - reference| over the sampled rows and heads.
  double max_abs_error = 0;
  int64_t error_rows = 0;              // last rows of batch entry 0
  std::vector<int64_t> error_heads;    // query heads sampled
  // Mask state: the segment ids passed as inputs (documents), and the
  // fa_block_mask built on the run's side (block_sparse, dense).
  int64_t segment_id_bytes = 0;
  bool block_mask = false;
  fa_block_mask_info block_mask_info{};
  double block_mask_create_ms = 0;     // fa_block_mask_create, source already on the run's side
};

// m: make_mask_inputs(p). Throws library_error when the library refuses or
// fails, std::bad_alloc or std::runtime_error for memory and CUDA failures.
bench_result run_benchmark(const bench_problem& p, const mask_inputs& m, const bench_settings& s);

}  // namespace fastattn::tools
