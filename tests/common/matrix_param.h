// Cases of the correctness matrix as gtest parameters: each keeps its index
// (which seeds its inputs) and is named and printed by its description.
#pragma once

#include <gtest/gtest.h>

#include <cctype>
#include <ostream>
#include <string>
#include <vector>

#include "check/harness.h"

namespace fastattn::check {

struct MatrixParam {
  Case c;
  size_t index;
};

// gtest prints parameters in test listings; the description, not the bytes.
inline void PrintTo(const MatrixParam& p, std::ostream* os) { *os << describe(p.c); }

inline std::vector<MatrixParam> indexed(const std::vector<Case>& cases) {
  std::vector<MatrixParam> out;
  for (size_t i = 0; i < cases.size(); ++i) out.push_back({cases[i], i});
  return out;
}

inline std::string param_name(const testing::TestParamInfo<MatrixParam>& info) {
  std::string s = std::to_string(info.param.index) + "_" + describe(info.param.c);
  for (char& ch : s) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return s;
}

}  // namespace fastattn::check
