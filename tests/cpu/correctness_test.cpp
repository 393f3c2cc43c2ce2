// The correctness matrix on both CPU backends. The fast backend against the
// float64 reference; the reference itself against the plain implementation
// (the harness refuses a reference that disagrees with it).
#include <gtest/gtest.h>

#include <string>

#include "check/harness.h"
#include "common/matrix_param.h"

namespace fastattn::check {
namespace {

class CpuMatrix : public testing::TestWithParam<MatrixParam> {};

TEST_P(CpuMatrix, FlashBackendMatchesReference) {
  fa_run_options opt{};
  opt.backend = FA_BACKEND_CPU;
  const Outcome o = run_case(GetParam().c, opt, 1000 + GetParam().index);
  EXPECT_TRUE(o.passed) << describe(GetParam().c) << ": " << o.detail;
}

TEST_P(CpuMatrix, ReferenceBackendMatchesPlainImplementation) {
  fa_run_options opt{};
  opt.backend = FA_BACKEND_CPU_REFERENCE;
  const Outcome o = run_case(GetParam().c, opt, 2000 + GetParam().index);
  EXPECT_TRUE(o.passed) << describe(GetParam().c) << ": " << o.detail;
}

INSTANTIATE_TEST_SUITE_P(Quick, CpuMatrix, testing::ValuesIn(indexed(correctness_matrix(/*quick=*/true))),
                         param_name);

// The large shapes of ANCHORS.md (4224 x 4224, 1023 x 1024), fast backend only.
TEST(CpuMatrixLarge, FlashBackendOnLargeShapes) {
  fa_run_options opt{};
  opt.backend = FA_BACKEND_CPU;
  const auto quick = correctness_matrix(true).size();
  const auto cases = correctness_matrix(false);
  int checked = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    if (cases[i].seqlen_q < 1000) continue;
    const Outcome o = run_case(cases[i], opt, 3000 + i);
    EXPECT_TRUE(o.passed) << describe(cases[i]) << ": " << o.detail;
    ++checked;
  }
  EXPECT_GT(cases.size(), quick);
  EXPECT_GE(checked, 3);
}

}  // namespace
}  // namespace fastattn::check
