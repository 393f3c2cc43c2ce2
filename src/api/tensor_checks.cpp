#include "api/tensor_checks.h"

#include <limits>
#include <sstream>

namespace fastattn {

const char* dtype_name(fa_dtype t) {
  switch (t) {
    case FA_DTYPE_FLOAT32: return "float32";
    case FA_DTYPE_FLOAT16: return "float16";
    case FA_DTYPE_BFLOAT16: return "bfloat16";
    case FA_DTYPE_BOOL: return "bool";
  }
  return "unknown";
}

DType to_dtype(fa_dtype t) { return static_cast<DType>(static_cast<int>(t)); }

std::string shape_string(const fa_tensor& t) {
  std::ostringstream s;
  s << '[';
  for (int i = 0; i < t.ndim && i < 4; ++i) s << (i ? ", " : "") << t.shape[i];
  s << ']';
  return s.str();
}

Status check_tensor(const char* name, const fa_tensor& t, int ndim) {
  std::ostringstream m;
  if (t.data == nullptr) {
    m << name << ": data is NULL; a tensor is required here";
    return Status::invalid(m.str());
  }
  if (t.dtype == FA_DTYPE_BOOL) {
    m << name << ": dtype is FA_DTYPE_BOOL, which is for masks only (fa_block_mask_args); "
      << "allowed: FA_DTYPE_FLOAT32, FA_DTYPE_FLOAT16, FA_DTYPE_BFLOAT16";
    return Status::invalid(m.str());
  }
  if (t.dtype != FA_DTYPE_FLOAT32 && t.dtype != FA_DTYPE_FLOAT16 && t.dtype != FA_DTYPE_BFLOAT16) {
    m << name << ": dtype " << static_cast<int>(t.dtype)
      << " is unknown; allowed: FA_DTYPE_FLOAT32, FA_DTYPE_FLOAT16, FA_DTYPE_BFLOAT16";
    return Status::invalid(m.str());
  }
  if (t.ndim != ndim) {
    m << name << ": ndim is " << t.ndim << "; expected " << ndim;
    return Status::invalid(m.str());
  }
  int64_t max_offset = 0;
  for (int i = 0; i < ndim; ++i) {
    if (t.shape[i] < 0) {
      m << name << ": shape[" << i << "] is " << t.shape[i] << "; sizes must be >= 0";
      return Status::invalid(m.str());
    }
    if (t.strides[i] < 0) {
      m << name << ": strides[" << i << "] is " << t.strides[i] << "; strides must be >= 0";
      return Status::invalid(m.str());
    }
    int64_t extent = 0;
    if (t.shape[i] > 0 &&
        (__builtin_mul_overflow(t.shape[i] - 1, t.strides[i], &extent) ||
         __builtin_add_overflow(max_offset, extent, &max_offset) ||
         max_offset > std::numeric_limits<int64_t>::max() / 8)) {
      m << name << ": shape " << shape_string(t) << " with its strides reaches past the "
        << "int64 byte offsets the library indexes with";
      return Status::invalid(m.str());
    }
  }
  if (t.strides[ndim - 1] != 1 && t.shape[ndim - 1] > 1) {
    m << name << ": strides[" << ndim - 1 << "] is " << t.strides[ndim - 1]
      << "; the last (head) dimension must be contiguous (stride 1)";
    return Status::invalid(m.str());
  }
  return Status::ok();
}

Status check_shape(const char* name, const fa_tensor& t, std::initializer_list<int64_t> expected,
                   const char* dims) {
  int i = 0;
  bool same = static_cast<int>(expected.size()) == t.ndim;
  for (int64_t e : expected) {
    if (!same) break;
    if (t.shape[i++] != e) same = false;
  }
  if (same) return Status::ok();
  std::ostringstream m;
  m << name << ": shape is " << shape_string(t) << "; expected " << dims << " = [";
  i = 0;
  for (int64_t e : expected) m << (i++ ? ", " : "") << e;
  m << ']';
  return Status::invalid(m.str());
}

Status check_dtype(const char* name, const fa_tensor& t, fa_dtype expected) {
  if (t.dtype == expected) return Status::ok();
  std::ostringstream m;
  m << name << ": dtype is " << dtype_name(t.dtype) << "; expected " << dtype_name(expected);
  return Status::invalid(m.str());
}

}  // namespace fastattn
