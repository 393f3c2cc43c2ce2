// `fastattn check`: runs the correctness matrix of the harness on one
// backend and reports failures; the last line is "N passed, M failed".
#pragma once

#include <cstdint>
#include <string>

#include <CLI/CLI.hpp>

namespace fastattn::tools {

struct check_cli {
  std::string device = "auto";
  bool quick = false;
  uint64_t seed = 1;
  std::string filter;
  bool verbose = false;
  bool json = false;
  int32_t threads = 0;
  int32_t cuda_path = 0;  // an fa_cuda_path
};

CLI::App* add_check_command(CLI::App& app, check_cli& cli);
int run_check_command(const check_cli& cli);

}  // namespace fastattn::tools
