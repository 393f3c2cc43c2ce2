// The layout rule every CUDA kernel here shares: rows move as whole 16-byte
// chunks (8 elements), so data pointers must be 16-byte aligned and strides
// multiples of 8 elements.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <sstream>

#include "api/status.h"

namespace fastattn::cuda {

// `who` names the path in the message ("the CUDA backend", ...).
inline Status check_chunked(const char* who, const char* name, const void* data,
                            std::initializer_list<int64_t> strides) {
  bool ok = reinterpret_cast<uintptr_t>(data) % 16 == 0;
  for (int64_t s : strides) ok = ok && s % 8 == 0;
  if (ok) return Status::ok();
  std::ostringstream m;
  m << name << ": " << who << " needs a 16-byte aligned data pointer and strides that are "
    << "multiples of 8 elements (got strides";
  for (int64_t s : strides) m << " " << s;
  m << ")";
  return Status::unsupported(m.str());
}

}  // namespace fastattn::cuda
