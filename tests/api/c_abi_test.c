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
