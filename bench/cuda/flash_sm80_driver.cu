// Test and benchmark driver for the sm80 forward kernel, independent of the
// library's API layer: builds AttentionParams with device pointers, checks
// against a float64 CPU reference and times the FlashAttention-2 shape grid.
//
//   flash_sm80_driver --test                 correctness cases (exit 1 on failure)
//   flash_sm80_driver --bench [--json FILE]  TFLOP/s, FLOPs = 4 B L^2 H D (halved causal)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "api/params.h"
#include "cuda/flash_launch.h"
#include "check_cuda.cuh"
#include "device_random.cuh"

using fastattn::AttentionParams;
using fastattn::DType;
using fastattn::MaskParams;

namespace {

using fastattn::bench::fill_normal;

void fill(DType dt, void* p, int64_t n, uint32_t seed) {
  if (dt == DType::kFloat16) fill_normal<<<1024, 256>>>(static_cast<__half*>(p), n, seed);
  else fill_normal<<<1024, 256>>>(static_cast<__nv_bfloat16*>(p), n, seed);
  CHECK_CUDA(cudaGetLastError());
}

float to_float(DType dt, uint16_t u) {
  uint32_t w;
  if (dt == DType::kBFloat16) { w = uint32_t(u) << 16; float f; std::memcpy(&f, &w, 4); return f; }
  __half_raw r; r.x = u; return __half2float(__half(r));
}
float round_to(DType dt, float x) {
  if (dt == DType::kBFloat16) return __bfloat162float(__float2bfloat16_rn(x));
  return __half2float(__float2half_rn(x));
}

// ---- correctness cases
struct Case {
  const char* name;
  DType dtype;
  int batch, lq, lk, hq, hkv, d;
  int64_t left = MaskParams::kUnbounded, right = MaskParams::kUnbounded;
  float softcap = 0.f, scale = 0.f;  // scale 0 = 1/sqrt(d)
  bool bhsd = false;                 // (batch, head, row, dim) instead of (batch, row, head, dim)
  int pitch_extra = 0;               // elements after each head row that must stay untouched
  std::vector<int> varlen_q, varlen_k;  // non-empty: varlen, per-sequence lengths
};

struct Tensor {  // element offset = b * sb + row * sr + h * sh + dim (row absolute when varlen)
  int64_t sb = 0, sr = 0, sh = 0, size = 0;
};
Tensor make_layout(const Case& c, int rows, int heads, int pitch, bool varlen) {
  Tensor t;
  if (varlen || !c.bhsd) {
    t.sh = pitch; t.sr = int64_t(heads) * pitch; t.sb = varlen ? 0 : rows * t.sr;
  } else {
    t.sr = pitch; t.sh = int64_t(rows) * pitch; t.sb = heads * t.sh;
  }
  t.size = (varlen ? 1 : c.batch) * int64_t(rows) * heads * pitch;
  return t;
}

bool run_case(const Case& c, uint32_t seed) {
  const bool varlen = !c.varlen_q.empty();
  const int nseq = varlen ? int(c.varlen_q.size()) : c.batch;
  std::vector<int> cuq(nseq + 1, 0), cuk(nseq + 1, 0);
  int maxq = c.lq, maxk = c.lk;
  if (varlen) {
    maxq = maxk = 0;
    for (int i = 0; i < nseq; ++i) {
      cuq[i + 1] = cuq[i] + c.varlen_q[i]; cuk[i + 1] = cuk[i] + c.varlen_k[i];
      maxq = std::max(maxq, c.varlen_q[i]); maxk = std::max(maxk, c.varlen_k[i]);
    }
  }
  const int rows_q = varlen ? cuq[nseq] : c.lq, rows_k = varlen ? cuk[nseq] : c.lk;
  const int pitch = (c.d + 7) / 8 * 8 + c.pitch_extra;
  const Tensor tq = make_layout(c, rows_q, c.hq, pitch, varlen);
  const Tensor tk = make_layout(c, rows_k, c.hkv, pitch, varlen);
  const Tensor to = tq;
  const int64_t lse_size = int64_t(varlen ? 1 : nseq) * c.hq * rows_q;

  void *dq, *dk, *dv, *dout; float* dlse; int *dcuq = nullptr, *dcuk = nullptr;
  CHECK_CUDA(cudaMalloc(&dq, tq.size * 2)); CHECK_CUDA(cudaMalloc(&dk, tk.size * 2));
  CHECK_CUDA(cudaMalloc(&dv, tk.size * 2)); CHECK_CUDA(cudaMalloc(&dout, to.size * 2));
  CHECK_CUDA(cudaMalloc(&dlse, lse_size * 4));
  fill(c.dtype, dq, tq.size, seed); fill(c.dtype, dk, tk.size, seed + 1); fill(c.dtype, dv, tk.size, seed + 2);
  CHECK_CUDA(cudaMemset(dout, 0x7f, to.size * 2));  // 0x7f7f: NaN in fp16, 3.4e38 in bf16
  CHECK_CUDA(cudaMemset(dlse, 0xff, lse_size * 4));  // NaN
  if (varlen) {
    CHECK_CUDA(cudaMalloc(&dcuq, (nseq + 1) * 4)); CHECK_CUDA(cudaMalloc(&dcuk, (nseq + 1) * 4));
    CHECK_CUDA(cudaMemcpy(dcuq, cuq.data(), (nseq + 1) * 4, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(dcuk, cuk.data(), (nseq + 1) * 4, cudaMemcpyHostToDevice));
  }
  AttentionParams p;
  p.dtype = c.dtype; p.batch = nseq; p.seqlen_q = maxq; p.seqlen_k = maxk;
  p.heads_q = c.hq; p.heads_kv = c.hkv; p.head_dim = c.d;
  p.q = dq; p.q_batch_stride = tq.sb; p.q_row_stride = tq.sr; p.q_head_stride = tq.sh;
  p.out = dout; p.out_batch_stride = to.sb; p.out_row_stride = to.sr; p.out_head_stride = to.sh;
  p.lse = dlse;  // (batch, head, row); varlen (head, total_row)
  p.lse_row_stride = 1; p.lse_head_stride = rows_q; p.lse_batch_stride = varlen ? 0 : int64_t(c.hq) * rows_q;
  p.kv.k = dk; p.kv.v = dv;
  p.kv.k_batch_stride = p.kv.v_batch_stride = tk.sb;
  p.kv.k_row_stride = p.kv.v_row_stride = tk.sr;
  p.kv.k_head_stride = p.kv.v_head_stride = tk.sh;
  p.cu_seqlens_q = dcuq; p.cu_seqlens_k = dcuk;
  p.mask.left = c.left; p.mask.right = c.right;
  p.scale = c.scale > 0 ? c.scale : 1.f / std::sqrt(float(c.d));
  p.softcap = c.softcap;

  cudaError_t err = fastattn::cuda::flash_attention_sm80(p, nullptr);
  CHECK_CUDA(err);
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<uint16_t> hq(tq.size), hk(tk.size), hv(tk.size), ho(to.size), ho2(to.size);
  std::vector<float> hlse(lse_size);
  CHECK_CUDA(cudaMemcpy(hq.data(), dq, tq.size * 2, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(hk.data(), dk, tk.size * 2, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(hv.data(), dv, tk.size * 2, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(ho.data(), dout, to.size * 2, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(hlse.data(), dlse, lse_size * 4, cudaMemcpyDeviceToHost));
  // Second run: must be bitwise identical (no races, no order dependence).
  CHECK_CUDA(fastattn::cuda::flash_attention_sm80(p, nullptr));
  CHECK_CUDA(cudaMemcpy(ho2.data(), dout, to.size * 2, cudaMemcpyDeviceToHost));
  const bool deterministic = ho == ho2;

  // float64 reference and the naive low-precision one (scores and P rounded
  // to the input type, fp32 softmax), per (sequence, head) on host threads.
  const int group = c.hq / c.hkv;
  std::vector<double> err_fast(nseq * c.hq, 0), err_naive(nseq * c.hq, 0), err_lse(nseq * c.hq, 0);
  std::vector<long> bad(nseq * c.hq, 0);
  auto work = [&](int job) {
    const int b = job / c.hq, h = job % c.hq, kvh = h / group;
    const int lq = varlen ? c.varlen_q[b] : c.lq, lk = varlen ? c.varlen_k[b] : c.lk;
    const int fq = varlen ? cuq[b] : 0, fk = varlen ? cuk[b] : 0;
    const int64_t bb = varlen ? 0 : b;
    std::vector<double> s(lk), o(c.d);
    std::vector<float> s32(lk), o32(c.d);
    for (int i = 0; i < lq; ++i) {
      int64_t kb, ke;
      p.mask.key_range(i, lq, lk, &kb, &ke);
      const int64_t qo = bb * tq.sb + (fq + i) * tq.sr + h * tq.sh;
      double m = -INFINITY; float m32 = -INFINITY;
      for (int64_t j = kb; j < ke; ++j) {
        const int64_t ko = bb * tk.sb + (fk + j) * tk.sr + kvh * tk.sh;
        double acc = 0; float acc32 = 0;
        for (int x = 0; x < c.d; ++x) {
          const float a = to_float(c.dtype, hq[qo + x]), bk = to_float(c.dtype, hk[ko + x]);
          acc += double(a) * bk; acc32 += a * bk;
        }
        acc *= p.scale;
        float t32 = round_to(c.dtype, acc32) * p.scale;
        if (c.softcap > 0) { acc = c.softcap * std::tanh(acc / c.softcap); t32 = c.softcap * std::tanh(t32 / c.softcap); }
        s[j] = acc; s32[j] = t32; m = std::max(m, acc); m32 = std::max(m32, t32);
      }
      double l = 0; float l32 = 0;
      std::fill(o.begin(), o.end(), 0.0); std::fill(o32.begin(), o32.end(), 0.f);
      for (int64_t j = kb; j < ke; ++j) { s[j] = std::exp(s[j] - m); l += s[j]; s32[j] = std::exp(s32[j] - m32); l32 += s32[j]; }
      for (int64_t j = kb; j < ke; ++j) {
        const int64_t vo = bb * tk.sb + (fk + j) * tk.sr + kvh * tk.sh;
        const float pr = round_to(c.dtype, s32[j] / l32);
        for (int x = 0; x < c.d; ++x) {
          const float vv = to_float(c.dtype, hv[vo + x]);
          o[x] += s[j] * vv; o32[x] += pr * vv;
        }
      }
      const int64_t oo = bb * to.sb + (fq + i) * to.sr + h * to.sh;
      for (int x = 0; x < pitch; ++x) {
        if (x >= c.d) { if (ho[oo + x] != 0x7f7f) ++bad[job]; continue; }  // padding untouched
        const double ref = ke > kb ? o[x] / l : 0.0;
        const double got = to_float(c.dtype, ho[oo + x]);
        if (!std::isfinite(got)) { ++bad[job]; continue; }
        if (ke == kb && got != 0.0) ++bad[job];
        err_fast[job] = std::max(err_fast[job], std::abs(got - ref));
        const double naive = ke > kb ? round_to(c.dtype, o32[x]) : 0.0;
        err_naive[job] = std::max(err_naive[job], std::abs(naive - ref));
      }
      const float got_lse = hlse[bb * p.lse_batch_stride + h * p.lse_head_stride + (fq + i)];
      if (ke == kb) {
        if (!(std::isinf(got_lse) && got_lse < 0)) ++bad[job];
      } else if (!std::isfinite(got_lse)) {
        ++bad[job];
      } else {
        err_lse[job] = std::max(err_lse[job], std::abs(double(got_lse) - (m + std::log(l))));
      }
    }
  };
  const int jobs = nseq * c.hq;
  const int nthreads = std::max(1u, std::min(std::thread::hardware_concurrency(), 32u));
  std::vector<std::thread> pool;
  for (int w = 0; w < nthreads; ++w)
    pool.emplace_back([&, w] { for (int j = w; j < jobs; j += nthreads) work(j); });
  for (auto& th : pool) th.join();
  double ef = 0, en = 0, el = 0; long nbad = 0;
  for (int j = 0; j < jobs; ++j) {
    ef = std::max(ef, err_fast[j]); en = std::max(en, err_naive[j]); el = std::max(el, err_lse[j]);
    nbad += bad[j];
  }
  const double abs_limit = c.dtype == DType::kBFloat16 ? 1e-2 : 2e-3;
  const bool ok = nbad == 0 && deterministic && ef <= 2 * en + 1e-5 && ef < abs_limit && el < 1e-3;
  std::printf("%-4s %-30s %s d=%3d max|O-ref|=%.3e naive=%.3e lse=%.2e bad=%ld det=%d\n",
              ok ? "ok" : "FAIL", c.name, c.dtype == DType::kBFloat16 ? "bf16" : "fp16", c.d, ef, en,
              el, nbad, int(deterministic));
  cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(dout); cudaFree(dlse);
  if (dcuq) { cudaFree(dcuq); cudaFree(dcuk); }
  return ok;
}

int run_tests() {
  const DType F = DType::kFloat16, B = DType::kBFloat16;
  constexpr int64_t U = MaskParams::kUnbounded;
  std::vector<Case> cases;
  auto add = [&](Case c) { cases.push_back(c); };
  add({"plain", F, 2, 256, 256, 4, 4, 64});
  add({"plain", B, 2, 256, 256, 4, 4, 64});
  add({"gqa causal odd len", B, 2, 300, 300, 4, 2, 128, U, 0});
  add({"gqa causal odd len", F, 2, 300, 300, 4, 2, 128, U, 0});
  add({"causal lk>lq", F, 2, 200, 333, 2, 2, 80, U, 0});
  add({"causal lq>lk empty rows", B, 2, 333, 150, 2, 1, 96, U, 0});
  add({"window(64,16)", F, 1, 257, 257, 2, 2, 256, 64, 16});
  add({"window(64,16)", B, 1, 257, 257, 2, 2, 256, 64, 16});
  Case c72{"d72 padded, bhsd, pitch+8", B, 2, 190, 190, 3, 3, 72};
  c72.bhsd = true; c72.pitch_extra = 8; add(c72);
  Case cap{"softcap 30 causal scale .2", F, 1, 257, 257, 2, 2, 128, U, 0, 30.f, 0.2f}; add(cap);
  Case capb = cap; capb.dtype = B; add(capb);
  Case vl{"varlen causal gqa", B, 0, 0, 0, 6, 2, 64, U, 0};
  vl.varlen_q = {1, 77, 300, 129, 0}; vl.varlen_k = {5, 77, 250, 400, 3}; add(vl);
  Case vlf = vl; vlf.dtype = F; vlf.d = 128; vlf.left = U; vlf.right = U; vlf.name = "varlen none"; add(vlf);
  add({"diagonal window(0,0)", F, 1, 200, 200, 2, 2, 128, 0, 0});
  add({"decode lq=1 mqa", B, 3, 1, 1000, 4, 1, 256});
  add({"d40 window(32,inf)", F, 1, 300, 300, 2, 2, 40, 32, U});
  add({"causal 1k multi-tile", B, 1, 1024, 1024, 2, 2, 128, U, 0});
  add({"causal 1k multi-tile", F, 1, 1024, 1024, 2, 2, 64, U, 0});
  add({"window(5,3) both sides", F, 2, 200, 200, 2, 2, 64, 5, 3});
  add({"d96 plain", F, 1, 160, 700, 2, 2, 96});
  add({"d80 plain", B, 1, 160, 700, 2, 2, 80});
  add({"d256 causal", F, 1, 400, 400, 2, 2, 256, U, 0});
  int fails = 0;
  uint32_t seed = 1234;
  for (const Case& c : cases) fails += !run_case(c, seed += 17);
  std::printf("%d of %zu cases failed\n", fails, cases.size());
  return fails ? 1 : 0;
}

// ---- benchmark: the FlashAttention-2 grid (hidden 2048, B * L = 16384)
int run_bench(const char* json_path) {
  FILE* json = json_path ? std::fopen(json_path, "w") : nullptr;
  const int64_t total = 16384LL * 2048;
  void *q, *k, *v, *o; float* lse;
  CHECK_CUDA(cudaMalloc(&q, total * 2)); CHECK_CUDA(cudaMalloc(&k, total * 2));
  CHECK_CUDA(cudaMalloc(&v, total * 2)); CHECK_CUDA(cudaMalloc(&o, total * 2));
  CHECK_CUDA(cudaMalloc(&lse, 16384LL * 32 * 4));
  cudaEvent_t e0, e1;
  CHECK_CUDA(cudaEventCreate(&e0)); CHECK_CUDA(cudaEventCreate(&e1));
  std::printf("%-5s %4s %6s %3s %3s %6s %9s %9s\n", "dtype", "d", "L", "B", "H", "causal", "ms", "TFLOP/s");
  for (DType dt : {DType::kFloat16, DType::kBFloat16}) {
    fill(dt, q, total, 1); fill(dt, k, total, 2); fill(dt, v, total, 3);
    for (int d : {64, 128})
      for (bool causal : {false, true})
        for (int L : {512, 1024, 2048, 4096, 8192, 16384}) {
          const int H = 2048 / d, Bn = 16384 / L;
          AttentionParams p;
          p.dtype = dt; p.batch = Bn; p.seqlen_q = p.seqlen_k = L; p.heads_q = p.heads_kv = H; p.head_dim = d;
          p.q = q; p.out = o; p.kv.k = k; p.kv.v = v;
          p.q_row_stride = p.out_row_stride = p.kv.k_row_stride = p.kv.v_row_stride = int64_t(H) * d;
          p.q_head_stride = p.out_head_stride = p.kv.k_head_stride = p.kv.v_head_stride = d;
          p.q_batch_stride = p.out_batch_stride = p.kv.k_batch_stride = p.kv.v_batch_stride = int64_t(L) * H * d;
          p.lse = lse; p.lse_row_stride = 1; p.lse_head_stride = L; p.lse_batch_stride = int64_t(H) * L;
          if (causal) p.mask.right = 0;
          p.scale = 1.f / std::sqrt(float(d));
          for (int w = 0; w < 3; ++w) CHECK_CUDA(fastattn::cuda::flash_attention_sm80(p, nullptr));
          std::vector<float> ms;
          for (int r = 0; r < 20; ++r) {
            CHECK_CUDA(cudaEventRecord(e0));
            CHECK_CUDA(fastattn::cuda::flash_attention_sm80(p, nullptr));
            CHECK_CUDA(cudaEventRecord(e1));
            CHECK_CUDA(cudaEventSynchronize(e1));
            float t; CHECK_CUDA(cudaEventElapsedTime(&t, e0, e1)); ms.push_back(t);
          }
          std::sort(ms.begin(), ms.end());
          const double med = ms[ms.size() / 2];
          const double flops = 4.0 * Bn * double(L) * L * H * d / (causal ? 2 : 1);
          const double tf = flops / (med * 1e-3) / 1e12;
          const char* dn = dt == DType::kBFloat16 ? "bf16" : "fp16";
          std::printf("%-5s %4d %6d %3d %3d %6d %9.3f %9.1f\n", dn, d, L, Bn, H, int(causal), med, tf);
          if (json)
            std::fprintf(json, "{\"impl\":\"fastattn\",\"dtype\":\"%s\",\"d\":%d,\"L\":%d,\"B\":%d,\"H\":%d,"
                         "\"causal\":%d,\"ms\":%.5f,\"tflops\":%.2f}\n", dn, d, L, Bn, H, int(causal), med, tf);
        }
  }
  if (json) std::fclose(json);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, sm_%d%d, %d SMs\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);
  const char* json = nullptr;
  bool test = false, bench = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--test")) test = true;
    else if (!std::strcmp(argv[i], "--bench")) bench = true;
    else if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
  }
  int rc = 0;
  if (test) rc |= run_tests();
  if (bench) rc |= run_bench(json);
  if (!test && !bench) std::printf("usage: %s [--test] [--bench [--json FILE]]\n", argv[0]);
  return rc;
}
