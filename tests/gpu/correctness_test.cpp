// The correctness matrix on the CUDA backend, judged like the CPU backends:
// FlashAttention's rule against the float64 reference, poisoned outputs,
// writes outside the views caught. Skipped where no GPU is present.
#include <gtest/gtest.h>

#include <string>

#include "check/device_copy.h"
#include "check/harness.h"
#include "common/matrix_param.h"

namespace fastattn::check {
namespace {

class CudaMatrix : public testing::TestWithParam<MatrixParam> {};

TEST_P(CudaMatrix, MatchesReference) {
  if (!gpu_present()) GTEST_SKIP() << "no CUDA GPU";
  fa_run_options opt{};
  opt.backend = FA_BACKEND_CUDA;
  const Outcome o = run_case(GetParam().c, opt, 5000 + GetParam().index);
  EXPECT_TRUE(o.passed) << describe(GetParam().c) << ": " << o.detail;
}

INSTANTIATE_TEST_SUITE_P(Full, CudaMatrix, testing::ValuesIn(indexed(matrix_for(FA_BACKEND_CUDA, /*quick=*/false))),
                         param_name);

// Every path the CUDA matrix leaves out must be refused, not run wrongly.
TEST(CudaMatrixCoverage, LeavesOutOnlyFloat32AndPagedCases) {
  for (const Case& c : correctness_matrix(false)) {
    if (backend_runs(c, FA_BACKEND_CUDA)) continue;
    EXPECT_TRUE(c.dtype == FA_DTYPE_FLOAT32 || c.page_size > 0) << describe(c);
  }
}

}  // namespace
}  // namespace fastattn::check
