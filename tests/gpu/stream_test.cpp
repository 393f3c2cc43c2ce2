// CUDA backend behaviour beyond the numbers: repeatable results, CUDA graph
// capture and replay, placement of the data, and refusals that name the
// argument and leave the outputs untouched. Skipped where no GPU is present.
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check/device_copy.h"
#include "fastattn/fastattn.h"

namespace {

#define ASSERT_CUDA(x) ASSERT_EQ((x), cudaSuccess) << #x

constexpr int64_t kB = 2, kL = 700, kHq = 4, kHkv = 2, kD = 128;

fa_tensor tensor4(void* data, fa_dtype dt, int64_t b, int64_t l, int64_t h, int64_t d) {
  fa_tensor t{};
  t.data = data;
  t.dtype = dt;
  t.ndim = 4;
  const int64_t shape[4] = {b, l, h, d};
  const int64_t strides[4] = {l * h * d, h * d, d, 1};
  std::memcpy(t.shape, shape, sizeof shape);
  std::memcpy(t.strides, strides, sizeof strides);
  return t;
}

// Device q, k, v (random fp16), out and lse (poisoned with 0xff bytes: NaN).
class CudaCall : public testing::Test {
 protected:
  void SetUp() override {
    if (!fastattn::check::gpu_present()) GTEST_SKIP() << "no CUDA GPU";
    std::mt19937 rng(7);
    std::normal_distribution<float> normal;
    auto upload = [&](int64_t n, void** dev) {
      std::vector<__half> h(n);
      for (auto& x : h) x = __float2half(normal(rng));
      ASSERT_CUDA(cudaMalloc(dev, n * sizeof(__half)));
      ASSERT_CUDA(cudaMemcpy(*dev, h.data(), n * sizeof(__half), cudaMemcpyHostToDevice));
    };
    upload(q_elems(), &q_);
    upload(kv_elems(), &k_);
    upload(kv_elems(), &v_);
    ASSERT_CUDA(cudaMalloc(&out_, q_elems() * sizeof(__half)));
    ASSERT_CUDA(cudaMalloc(&lse_, lse_elems() * sizeof(float)));
    poison();
    args_.q = tensor4(q_, FA_DTYPE_FLOAT16, kB, kL, kHq, kD);
    args_.k = tensor4(k_, FA_DTYPE_FLOAT16, kB, kL, kHkv, kD);
    args_.v = tensor4(v_, FA_DTYPE_FLOAT16, kB, kL, kHkv, kD);
    args_.out = tensor4(out_, FA_DTYPE_FLOAT16, kB, kL, kHq, kD);
    args_.lse.data = lse_;
    args_.lse.dtype = FA_DTYPE_FLOAT32;
    args_.lse.ndim = 3;
    const int64_t ls[3] = {kB, kHq, kL}, lst[3] = {kHq * kL, kL, 1};
    std::memcpy(args_.lse.shape, ls, sizeof ls);
    std::memcpy(args_.lse.strides, lst, sizeof lst);
    args_.mask.kind = FA_MASK_CAUSAL;
    opt_.backend = FA_BACKEND_CUDA;
  }
  void TearDown() override {
    for (void* p : {q_, k_, v_, out_, lse_}) cudaFree(p);
  }

  static int64_t q_elems() { return kB * kL * kHq * kD; }
  static int64_t kv_elems() { return kB * kL * kHkv * kD; }
  static int64_t lse_elems() { return kB * kHq * kL; }
  void poison() {
    ASSERT_CUDA(cudaMemset(out_, 0xff, q_elems() * sizeof(__half)));
    ASSERT_CUDA(cudaMemset(lse_, 0xff, lse_elems() * sizeof(float)));
    ASSERT_CUDA(cudaDeviceSynchronize());
  }
  // out and lse bytes, after the device has finished.
  std::vector<unsigned char> outputs() {
    std::vector<unsigned char> h(q_elems() * sizeof(__half) + lse_elems() * sizeof(float));
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(h.data(), out_, q_elems() * sizeof(__half), cudaMemcpyDeviceToHost),
              cudaSuccess);
    EXPECT_EQ(cudaMemcpy(h.data() + q_elems() * sizeof(__half), lse_, lse_elems() * sizeof(float),
                         cudaMemcpyDeviceToHost),
              cudaSuccess);
    return h;
  }
  bool outputs_untouched() {
    for (unsigned char b : outputs()) {
      if (b != 0xff) return false;
    }
    return true;
  }
  // The call is refused with `code`, its message contains `needle`, the
  // support query agrees, and the outputs still hold the poison.
  void expect_refused(fa_status code, const std::string& needle) {
    poison();
    EXPECT_EQ(fa_attention_supported(&args_, &opt_), code) << fa_last_error();
    EXPECT_EQ(fa_attention_forward(&args_, &opt_), code);
    EXPECT_NE(std::string(fa_last_error()).find(needle), std::string::npos) << fa_last_error();
    EXPECT_TRUE(outputs_untouched());
  }

  // Captures a call in a CUDA graph on a new stream and replays it twice.
  void replay_equals_eager();

  void *q_ = nullptr, *k_ = nullptr, *v_ = nullptr, *out_ = nullptr, *lse_ = nullptr;
  fa_attention_args args_{};
  fa_run_options opt_{};
};

// Each kernel family: the automatic choice (sm90 on Hopper) and the forced
// older paths.
constexpr int32_t kPaths[] = {FA_CUDA_PATH_AUTO, FA_CUDA_PATH_SM80, FA_CUDA_PATH_SM75,
                              FA_CUDA_PATH_SM70};

TEST_F(CudaCall, RepeatedRunsAreBitwiseEqual) {
  for (int32_t path : kPaths) {
    opt_.cuda_path = path;
    poison();
    ASSERT_EQ(fa_attention_forward(&args_, &opt_), FA_STATUS_OK) << fa_last_error();
    const auto first = outputs();
    poison();
    ASSERT_EQ(fa_attention_forward(&args_, &opt_), FA_STATUS_OK) << fa_last_error();
    EXPECT_EQ(outputs(), first) << "path " << path;
  }
}

// Global-mode capture fails on any synchronising or allocating call, so a
// successful capture also shows the entry point does neither.
TEST_F(CudaCall, GraphReplayEqualsEager) {
  for (int32_t path : kPaths) {
    opt_.cuda_path = path;
    opt_.cuda_stream = nullptr;
    replay_equals_eager();
  }
}

TEST_F(CudaCall, OlderPathsRefuseBfloat16) {
  for (fa_tensor* t : {&args_.q, &args_.k, &args_.v, &args_.out}) t->dtype = FA_DTYPE_BFLOAT16;
  opt_.cuda_path = FA_CUDA_PATH_SM75;
  expect_refused(FA_STATUS_UNSUPPORTED, "q: dtype bfloat16 is not supported on the sm75 path");
  opt_.cuda_path = FA_CUDA_PATH_SM70;
  expect_refused(FA_STATUS_UNSUPPORTED, "q: dtype bfloat16 is not supported on the sm70 path");
}

TEST_F(CudaCall, RefusesUnknownPath) {
  opt_.cuda_path = 72;
  expect_refused(FA_STATUS_INVALID_ARGUMENT, "options.cuda_path: 72 is unknown");
}

void CudaCall::replay_equals_eager() {
  poison();
  ASSERT_EQ(fa_attention_forward(&args_, &opt_), FA_STATUS_OK) << fa_last_error();
  const auto eager = outputs();
  cudaStream_t stream;
  ASSERT_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  opt_.cuda_stream = stream;
  poison();
  cudaGraph_t graph;
  ASSERT_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  const fa_status st = fa_attention_forward(&args_, &opt_);
  ASSERT_CUDA(cudaStreamEndCapture(stream, &graph));
  ASSERT_EQ(st, FA_STATUS_OK) << fa_last_error();
  EXPECT_TRUE(outputs_untouched()) << "capture must not run the kernel";
  cudaGraphExec_t exec;
  ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  for (int replay = 0; replay < 2; ++replay) {
    poison();
    ASSERT_CUDA(cudaGraphLaunch(exec, stream));
    ASSERT_CUDA(cudaStreamSynchronize(stream));
    EXPECT_EQ(outputs(), eager) << "replay " << replay;
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

TEST_F(CudaCall, AutoRunsDeviceDataOnTheGpu) {
  ASSERT_EQ(fa_attention_forward(&args_, &opt_), FA_STATUS_OK) << fa_last_error();
  const auto cuda = outputs();
  poison();
  opt_.backend = FA_BACKEND_AUTO;
  ASSERT_EQ(fa_attention_forward(&args_, &opt_), FA_STATUS_OK) << fa_last_error();
  EXPECT_EQ(outputs(), cuda);
}

TEST_F(CudaCall, RefusesFloat32) {
  for (fa_tensor* t : {&args_.q, &args_.k, &args_.v, &args_.out}) t->dtype = FA_DTYPE_FLOAT32;
  expect_refused(FA_STATUS_UNSUPPORTED, "q: dtype float32");
}

TEST_F(CudaCall, RefusesMisalignedData) {
  args_.q.data = static_cast<__half*>(q_) + 4;  // 8 bytes past a 16-byte boundary
  args_.q.shape[1] = kL - 1;
  args_.out.shape[1] = kL - 1;
  args_.lse.shape[2] = kL - 1;
  expect_refused(FA_STATUS_UNSUPPORTED, "q: the CUDA backend needs a 16-byte aligned");
}

TEST_F(CudaCall, RefusesHostDataOnCuda) {
  std::vector<__half> host(q_elems());
  args_.q.data = host.data();
  expect_refused(FA_STATUS_INVALID_ARGUMENT, "q: is in pageable host memory");
}

TEST_F(CudaCall, RefusesMixedPlacement) {
  std::vector<__half> host(kv_elems());
  args_.k.data = host.data();
  opt_.backend = FA_BACKEND_AUTO;
  expect_refused(FA_STATUS_INVALID_ARGUMENT, "k: is in pageable host memory");
}

TEST_F(CudaCall, RefusesDeviceDataOnCpu) {
  opt_.backend = FA_BACKEND_CPU;
  expect_refused(FA_STATUS_INVALID_ARGUMENT, "q: is in GPU memory");
}

TEST_F(CudaCall, VarlenNeedsMaxSeqlenOnTheGpu) {
  int32_t* cu = nullptr;
  const int32_t host_cu[3] = {0, 300, 700};
  ASSERT_CUDA(cudaMalloc(&cu, sizeof host_cu));
  ASSERT_CUDA(cudaMemcpy(cu, host_cu, sizeof host_cu, cudaMemcpyHostToDevice));
  for (fa_tensor* t : {&args_.q, &args_.k, &args_.v, &args_.out}) {
    t->ndim = 3;
    t->shape[0] = kL;
    t->shape[1] = t == &args_.k || t == &args_.v ? kHkv : kHq;
    t->shape[2] = kD;
    t->strides[0] = t->shape[1] * kD;
    t->strides[1] = kD;
    t->strides[2] = 1;
  }
  args_.lse = {};
  args_.cu_seqlens_q = cu;
  args_.cu_seqlens_k = cu;
  args_.num_seqs = 2;
  expect_refused(FA_STATUS_INVALID_ARGUMENT, "max_seqlen_q");
  args_.max_seqlen_q = 400;
  args_.max_seqlen_k = 400;
  EXPECT_EQ(fa_attention_forward(&args_, &opt_), FA_STATUS_OK) << fa_last_error();
  // Host offsets cannot be read by the kernel.
  args_.cu_seqlens_q = host_cu;
  expect_refused(FA_STATUS_INVALID_ARGUMENT, "cu_seqlens_q: is in pageable host memory");
  cudaFree(cu);
}

// fa_paged_attention keeps its host-side page table; on the GPU the paged
// cache is read by the decode entry points.
TEST_F(CudaCall, PagedAttentionPointsAtTheDecodePath) {
  fa_paged_attention_args paged{};
  paged.q = args_.q;
  paged.out = args_.out;
  EXPECT_EQ(fa_paged_attention(&paged, &opt_), FA_STATUS_UNSUPPORTED);
  EXPECT_NE(std::string(fa_last_error()).find("fa_plan_decode"), std::string::npos)
      << fa_last_error();
  EXPECT_TRUE(outputs_untouched());
}

}  // namespace
