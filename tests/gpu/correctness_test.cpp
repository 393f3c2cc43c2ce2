// The correctness matrix on the CUDA backend, judged like the CPU backends:
// FlashAttention's rule against the float64 reference, poisoned outputs,
// writes outside the views caught. Skipped where no GPU is present.
#include <gtest/gtest.h>

#include <ostream>
#include <string>

#include "check/device_copy.h"
#include "check/harness.h"

namespace fastattn::check {
namespace {

struct MatrixParam {
  Case c;
  size_t index;
};

// gtest prints parameters in test listings; the description, not the bytes.
void PrintTo(const MatrixParam& p, std::ostream* os) { *os << describe(p.c); }

std::vector<MatrixParam> params() {
  std::vector<MatrixParam> out;
  const auto cases = matrix_for(FA_BACKEND_CUDA, /*quick=*/false);
  for (size_t i = 0; i < cases.size(); ++i) out.push_back({cases[i], i});
  return out;
}

std::string name(const testing::TestParamInfo<MatrixParam>& info) {
  std::string s = std::to_string(info.param.index) + "_" + describe(info.param.c);
  for (char& ch : s) {
    if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return s;
}

class CudaMatrix : public testing::TestWithParam<MatrixParam> {};

TEST_P(CudaMatrix, MatchesReference) {
  if (!gpu_present()) GTEST_SKIP() << "no CUDA GPU";
  fa_run_options opt{};
  opt.backend = FA_BACKEND_CUDA;
  const Outcome o = run_case(GetParam().c, opt, 5000 + GetParam().index);
  EXPECT_TRUE(o.passed) << describe(GetParam().c) << ": " << o.detail;
}

INSTANTIATE_TEST_SUITE_P(Full, CudaMatrix, testing::ValuesIn(params()), name);

// Every path the CUDA matrix leaves out must be refused, not run wrongly.
TEST(CudaMatrixCoverage, LeavesOutOnlyFloat32AndPagedCases) {
  for (const Case& c : correctness_matrix(false)) {
    if (backend_runs(c, FA_BACKEND_CUDA)) continue;
    EXPECT_TRUE(c.dtype == FA_DTYPE_FLOAT32 || c.page_size > 0) << describe(c);
  }
}

}  // namespace
}  // namespace fastattn::check
