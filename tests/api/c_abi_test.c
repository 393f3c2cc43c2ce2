/* The public header compiles as C and the ABI is callable from C. */
#include <math.h>
#include <string.h>

#include "fastattn/fastattn.h"

static fa_tensor contiguous(float* data, int64_t b, int64_t l, int64_t h, int64_t d) {
  fa_tensor t;
  memset(&t, 0, sizeof t);
  t.data = data;
  t.dtype = FA_DTYPE_FLOAT32;
  t.ndim = 4;
  t.shape[0] = b;
  t.shape[1] = l;
  t.shape[2] = h;
  t.shape[3] = d;
  t.strides[3] = 1;
  t.strides[2] = d;
  t.strides[1] = h * d;
  t.strides[0] = l * h * d;
  return t;
}

/* Returns 0 when a causal call from C succeeds and row 0 equals v's row 0. */
int fastattn_c_abi_smoke(void) {
  float q[3 * 8], k[3 * 8], v[3 * 8], out[3 * 8];
  int i;
  for (i = 0; i < 24; ++i) {
    q[i] = (float)sin(i + 1.0);
    k[i] = (float)cos(i * 0.5);
    v[i] = (float)(i % 7) - 3.0f;
    out[i] = NAN;
  }
  fa_attention_args a;
  memset(&a, 0, sizeof a);
  a.q = contiguous(q, 1, 3, 1, 8);
  a.k = contiguous(k, 1, 3, 1, 8);
  a.v = contiguous(v, 1, 3, 1, 8);
  a.out = contiguous(out, 1, 3, 1, 8);
  a.mask.kind = FA_MASK_CAUSAL;
  if (fa_attention_forward(&a, NULL) != FA_STATUS_OK) return 1;
  for (i = 0; i < 8; ++i) {
    if (fabsf(out[i] - v[i]) > 1e-6f) return 2;
  }
  return fa_last_error()[0] == '\0' ? 0 : 3;
}

/* Returns 0 when a decode step planned and run from C appends its token and
 * attends: every value row is 1, so every output is 1. */
int fastattn_c_abi_decode_smoke(void) {
  float q[8], k_cache[4 * 8], v_cache[4 * 8], k_new[8], v_new[8], out[8];
  int32_t lens[1] = {2};
  int i;
  for (i = 0; i < 32; ++i) {
    k_cache[i] = (float)cos(i * 0.3);
    v_cache[i] = i < 16 ? 1.0f : NAN; /* rows 2 and 3 are free */
  }
  for (i = 0; i < 8; ++i) {
    q[i] = (float)sin(i + 1.0);
    k_new[i] = 0.5f;
    v_new[i] = 1.0f;
    out[i] = NAN;
  }
  fa_decode_args a;
  memset(&a, 0, sizeof a);
  a.q = contiguous(q, 1, 1, 1, 8);
  a.k_cache = contiguous(k_cache, 1, 4, 1, 8);
  a.v_cache = contiguous(v_cache, 1, 4, 1, 8);
  a.cache_seqlens = lens;
  a.k_new = contiguous(k_new, 1, 1, 1, 8);
  a.v_new = contiguous(v_new, 1, 1, 1, 8);
  a.out = contiguous(out, 1, 1, 1, 8);
  fa_decode_plan plan;
  if (fa_plan_decode(&a, NULL, &plan) != FA_STATUS_OK) return 1;
  if (plan.workspace_bytes != 0) return 2;
  if (fa_run_decode(&a, &plan, NULL, 0, NULL) != FA_STATUS_OK) return 3;
  if (k_cache[16] != 0.5f || v_cache[16] != 1.0f || !isnan(v_cache[24])) return 4;
  for (i = 0; i < 8; ++i) {
    if (fabsf(out[i] - 1.0f) > 1e-6f) return 5;
  }
  return 0;
}
