// Checks of fa_tensor descriptors, each returning a message that names the
// argument and the allowed values.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>

#include "api/params.h"
#include "api/status.h"

namespace fastattn {

const char* dtype_name(fa_dtype t);
DType to_dtype(fa_dtype t);

// `name` must describe a tensor of `ndim` dims with non-null data, a known
// dtype, non-negative sizes and strides, the last dim contiguous, and element
// offsets that fit in int64.
Status check_tensor(const char* name, const fa_tensor& t, int ndim);

// Shape must equal `expected` (in order); `dims` names the dims for messages,
// e.g. "[B, Lq, Hq, D]".
Status check_shape(const char* name, const fa_tensor& t, std::initializer_list<int64_t> expected,
                   const char* dims);

Status check_dtype(const char* name, const fa_tensor& t, fa_dtype expected);

std::string shape_string(const fa_tensor& t);

}  // namespace fastattn
