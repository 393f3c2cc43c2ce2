// Host buffers of fp32 / fp16 / bf16 elements for the benchmark's inputs and
// outputs: filled with random normal values rounded to the dtype, read back
// as float.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "fastattn/fastattn.h"

namespace fastattn::tools {

int64_t dtype_size(fa_dtype dtype);
const char* dtype_name(fa_dtype dtype);  // "fp32", "fp16", "bf16"

class host_tensor {
 public:
  host_tensor(fa_dtype dtype, int64_t count);

  // Standard normal values; the rounding to the dtype happens here, so every
  // consumer (library, reference) sees exactly the same inputs.
  void fill_normal(std::mt19937_64& rng);
  float get(int64_t i) const;

  fa_dtype dtype() const { return dtype_; }
  int64_t count() const { return count_; }
  int64_t bytes() const { return count_ * dtype_size(dtype_); }
  void* data() { return storage_.data(); }
  const void* data() const { return storage_.data(); }
  // Address of element i, for views into the buffer.
  void* element(int64_t i) { return storage_.data() + i * dtype_size(dtype_); }

 private:
  fa_dtype dtype_;
  int64_t count_;
  std::vector<unsigned char> storage_;
};

}  // namespace fastattn::tools
