// The `fastattn` program: `bench` and `check` over the library's C ABI.
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "bench_command.h"
#include "check_command.h"
#include "fastattn/fastattn.h"

namespace {

// Exit status of a command line that could not be parsed.
constexpr int kUsageError = 2;

// One line naming the flag and what it allows, instead of CLI11's default of
// the message plus a "Run with --help" line.
int report_parse_error(const CLI::App& app, const CLI::ParseError& e) {
  if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) {
    return app.exit(e);  // --help, --version
  }
  std::cerr << "fastattn: " << e.what() << " (see --help)\n";
  return kUsageError;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fastattn: exact fused attention for LLM inference", "fastattn"};
  app.set_version_flag("--version", std::string("fastattn ") + fa_version_string());
  app.require_subcommand(0, 1);

  fastattn::tools::bench_cli bench;
  CLI::App* bench_cmd = fastattn::tools::add_bench_command(app, bench);
  fastattn::tools::check_cli check;
  CLI::App* check_cmd = fastattn::tools::add_check_command(app, check);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return report_parse_error(app, e);
  }
  if (bench_cmd->parsed()) return fastattn::tools::run_bench_command(bench);
  if (check_cmd->parsed()) return fastattn::tools::run_check_command(check);
  std::cerr << app.help();
  return 1;
}
