#include "check_command.h"

#include <exception>
#include <iostream>

#include "check/harness.h"
#include "cli_validators.h"
#include "device_choice.h"
#include "json_line.h"
#include "progress.h"
#include "text_table.h"

namespace fastattn::tools {

namespace {

std::string outcome_numbers(const check::Outcome& o) {
  std::string s = strprintf("err %.3g (tol %.3g)", o.max_error, o.tolerance);
  if (o.lse_tolerance > 0) s += strprintf(", lse err %.3g (tol %.3g)", o.lse_max_error, o.lse_tolerance);
  return s;
}

void print_json(const check::Case& c, const check::Outcome& o, uint64_t seed) {
  json_line j;
  j.text("command", "check").text("case", check::describe(c)).boolean("passed", o.passed);
  j.boolean("skipped", o.skipped);
  j.integer("seed", static_cast<int64_t>(seed));
  j.number("max_error", o.max_error).number("tolerance", o.tolerance);
  j.number("lse_max_error", o.lse_max_error).number("lse_tolerance", o.lse_tolerance);
  j.text("detail", o.detail);
  std::cout << j.str() << "\n";
}

}  // namespace

CLI::App* add_check_command(CLI::App& app, check_cli& cli) {
  CLI::App* cmd = app.add_subcommand(
      "check",
      "Run the correctness matrix against the float64 reference (FlashAttention's tolerance rule).\n"
      "Exits 0 when every selected case passes.");
  cmd->add_option("--device", cli.device, "Backend to check (auto: cuda when available, else cpu)")
      ->capture_default_str()
      ->check(CLI::IsMember(kDeviceNames));
  cmd->add_flag("--quick", cli.quick, "Leave the large shapes out");
  cmd->add_option("--seed", cli.seed, "Base seed; case i of the full matrix uses seed + i")->capture_default_str();
  cmd->add_option("--filter", cli.filter, "Only cases whose description contains this text");
  cmd->add_option("--threads", cli.threads, "CPU worker threads, 0 = all available")
      ->capture_default_str()
      ->check(integer_at_least(0));
  cmd->add_option("--cuda-path", cli.cuda_path,
                  "CUDA kernel family: 0 = by device, 70 (Volta), 75 (Turing), 80 (Ampere and newer), "
                  "90 (Hopper); "
                  "70 and 75 run the bfloat16 cases in float16, as they take no bfloat16")
      ->capture_default_str()
      ->check(CLI::IsMember({0, 70, 75, 80, 90}));
  cmd->add_flag("-v,--verbose", cli.verbose, "Print every case, not only the failures");
  cmd->add_flag("--json", cli.json, "One JSON line per case; the summary line goes to stderr");
  return cmd;
}

int run_check_command(const check_cli& cli) {
  fa_backend backend;
  try {
    backend = resolve_device(cli.device);
  } catch (const std::exception& e) {
    std::cerr << "fastattn check: " << e.what() << "\n";
    return 1;
  }
  fa_run_options options{};
  options.backend = backend;
  options.num_threads = cli.threads;

  options.cuda_path = cli.cuda_path;

  std::vector<check::Case> matrix = check::matrix_for(backend, cli.quick);
  if (cli.cuda_path == FA_CUDA_PATH_SM70 || cli.cuda_path == FA_CUDA_PATH_SM75) {
    for (check::Case& c : matrix) {
      if (c.dtype == FA_DTYPE_BFLOAT16) c.dtype = FA_DTYPE_FLOAT16;
    }
  }
  // Indices into the full matrix, so that a case keeps its seed under --filter
  // and a failure reproduces with `--filter <its description> --seed <seed>`.
  std::vector<size_t> selected;
  for (size_t i = 0; i < matrix.size(); ++i) {
    if (cli.filter.empty() || check::describe(matrix[i]).find(cli.filter) != std::string::npos) {
      selected.push_back(i);
    }
  }
  if (!cli.json) {
    std::cout << "checking " << selected.size() << " of " << matrix.size() << " cases on " << device_label(backend)
              << (cli.cuda_path ? strprintf(", path sm%d", cli.cuda_path) : std::string()) << ", seed " << cli.seed
              << (cli.quick ? ", quick" : "") << "\n";
  }

  progress_line progress(!cli.json);
  int64_t passed = 0, failed = 0, skipped = 0;
  for (size_t n = 0; n < selected.size(); ++n) {
    const check::Case& c = matrix[selected[n]];
    const std::string name = check::describe(c);
    progress.update(strprintf("check [%zu/%zu] ", n + 1, selected.size()) + name);
    const uint64_t seed = cli.seed + selected[n];
    check::Outcome outcome;
    try {
      outcome = check::run_case(c, options, seed);
    } catch (const std::exception& e) {
      outcome.passed = false;
      outcome.detail = std::string("exception: ") + e.what();
    }
    outcome.skipped ? ++skipped : outcome.passed ? ++passed : ++failed;
    if (cli.json) {
      print_json(c, outcome, seed);
      continue;
    }
    // A forced path's refusal is printed every time: a skip is never silent.
    if (!outcome.passed || cli.verbose) {
      progress.clear();
      // The harness's detail already states the errors and tolerances when it has them.
      std::cout << (outcome.skipped ? "skip  " : outcome.passed ? "ok    " : "FAIL  ") << name << ": "
                << (outcome.detail.empty() ? outcome_numbers(outcome) : outcome.detail);
      if (!outcome.passed && !outcome.skipped) std::cout << " [seed " << seed << "]";
      std::cout << "\n" << std::flush;
    }
  }
  progress.clear();
  if (selected.empty()) std::cerr << "fastattn check: no case matches --filter '" << cli.filter << "'\n";
  std::string summary = std::to_string(passed) + " passed, " + std::to_string(failed) + " failed";
  if (skipped > 0) summary += ", " + std::to_string(skipped) + " skipped (refused by the forced path)";
  // Under --json stdout holds only JSON; the summary keeps its exact form on stderr.
  if (cli.json) {
    std::cout << json_line()
                     .text("command", "check")
                     .integer("passed", passed)
                     .integer("failed", failed)
                     .integer("skipped", skipped)
                     .str()
              << "\n";
    std::cerr << summary << "\n";
  } else {
    std::cout << summary << "\n";
  }
  return failed == 0 && passed > 0 ? 0 : 1;
}

}  // namespace fastattn::tools
