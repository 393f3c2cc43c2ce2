#include "host_tensor.h"

#include <cstring>

#include "common/scalar_convert.h"

namespace fastattn::tools {

int64_t dtype_size(fa_dtype dtype) {
  switch (dtype) {
    case FA_DTYPE_FLOAT32: return 4;
    case FA_DTYPE_FLOAT16:
    case FA_DTYPE_BFLOAT16: return 2;
    case FA_DTYPE_BOOL: return 1;
  }
  return 0;
}

const char* dtype_name(fa_dtype dtype) {
  switch (dtype) {
    case FA_DTYPE_FLOAT32: return "fp32";
    case FA_DTYPE_FLOAT16: return "fp16";
    case FA_DTYPE_BFLOAT16: return "bf16";
    case FA_DTYPE_BOOL: return "bool";
  }
  return "?";
}

host_tensor::host_tensor(fa_dtype dtype, int64_t count)
    : dtype_(dtype), count_(count), storage_(static_cast<size_t>(count * dtype_size(dtype))) {}

void host_tensor::fill_normal(std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  unsigned char* p = storage_.data();
  for (int64_t i = 0; i < count_; ++i) {
    const float x = normal(rng);
    switch (dtype_) {
      case FA_DTYPE_FLOAT32: std::memcpy(p + 4 * i, &x, 4); break;
      case FA_DTYPE_FLOAT16: {
        const uint16_t h = float_to_fp16(x);
        std::memcpy(p + 2 * i, &h, 2);
        break;
      }
      case FA_DTYPE_BFLOAT16: {
        const uint16_t h = float_to_bf16(x);
        std::memcpy(p + 2 * i, &h, 2);
        break;
      }
      case FA_DTYPE_BOOL: p[i] = x > 0.0f; break;  // not an attention input; masks are built elsewhere
    }
  }
}

float host_tensor::get(int64_t i) const {
  const unsigned char* p = storage_.data();
  if (dtype_ == FA_DTYPE_FLOAT32) {
    float x;
    std::memcpy(&x, p + 4 * i, 4);
    return x;
  }
  if (dtype_ == FA_DTYPE_BOOL) return p[i] != 0 ? 1.0f : 0.0f;
  uint16_t h;
  std::memcpy(&h, p + 2 * i, 2);
  return dtype_ == FA_DTYPE_FLOAT16 ? fp16_to_float(h) : bf16_to_float(h);
}

}  // namespace fastattn::tools
