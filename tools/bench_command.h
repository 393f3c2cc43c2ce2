// `fastattn bench`: times one attention problem on a backend and prints a
// table (or a JSON line) with its throughput and a sampled error against the
// float64 reference.
#pragma once

#include <cstdint>
#include <string>

#include <CLI/CLI.hpp>

namespace fastattn::tools {

// What the command line said; -1 / "" mean "not given", and the defaults of
// the chosen device and problem kind fill them in.
struct bench_cli {
  int64_t batch = -1;
  int64_t seqlen = -1;
  int64_t seqlen_q = -1;
  int64_t seqlen_k = -1;
  int64_t heads_q = -1;
  int64_t heads_kv = -1;
  int64_t head_dim = -1;
  std::string dtype;
  std::string mask;
  int64_t window_left = -1;
  int64_t window_right = -1;
  bool window_given = false;
  int64_t prefix_len = -1;    // prefix-lm; default Lk / 4
  int64_t chunk_size = -1;    // chunked (default 1024), or a refinement of any mask
  int64_t doc_len = -1;       // documents; default 1024
  bool doc_bidirectional = false;
  double density = -1;        // block-sparse (default 0.1), dense (default 0.5)
  int64_t block = -1;         // block-sparse, dense: block size, default 128
  float softcap = 0.0f;
  std::string device = "auto";
  int32_t threads = 0;
  int64_t repeats = 10;
  int64_t warmup = 2;
  uint64_t seed = 1;
  bool decode = false;
  int64_t page_size = 16;
  bool json = false;
};

CLI::App* add_bench_command(CLI::App& app, bench_cli& cli);
int run_bench_command(const bench_cli& cli);

}  // namespace fastattn::tools
