// Validators shared by the subcommands, with messages that name the allowed
// values (CLI11 prefixes them with the flag).
#pragma once

#include <CLI/CLI.hpp>

namespace fastattn::tools {

// A head dimension the library accepts: a multiple of 8 from 8 to 256.
inline CLI::Validator head_dim_validator() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        int64_t d = 0;
        if (!CLI::detail::lexical_cast(value, d) || d < 8 || d > FA_MAX_HEAD_DIM || d % 8 != 0) {
          return "got " + value + ", allowed: a multiple of 8 from 8 to " +
                 std::to_string(FA_MAX_HEAD_DIM);
        }
        return "";
      },
      "MULTIPLE OF 8 IN [8,256]");
}

// An integer of at least `min` (CLI11's PositiveNumber prints its range as a
// 300-digit double).
inline CLI::Validator integer_at_least(int64_t min) {
  return CLI::Validator(
      [min](std::string& value) -> std::string {
        int64_t x = 0;
        if (!CLI::detail::lexical_cast(value, x) || x < min) {
          return "got " + value + ", allowed: an integer >= " + std::to_string(min);
        }
        return "";
      },
      ">= " + std::to_string(min));
}

// A float of at least zero.
inline CLI::Validator non_negative_float() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        double x = 0;
        if (!CLI::detail::lexical_cast(value, x) || !(x >= 0)) return "got " + value + ", allowed: a number >= 0";
        return "";
      },
      ">= 0");
}

// A probability: a number in [0, 1].
inline CLI::Validator unit_interval() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        double x = 0;
        if (!CLI::detail::lexical_cast(value, x) || !(x >= 0 && x <= 1)) {
          return "got " + value + ", allowed: a number from 0 to 1";
        }
        return "";
      },
      "IN [0,1]");
}

}  // namespace fastattn::tools
