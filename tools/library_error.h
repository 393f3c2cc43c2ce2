// A failed library call, carried up to the command as one message:
// "<status string>: <fa_last_error()>".
#pragma once

#include <stdexcept>
#include <string>

#include "fastattn/fastattn.h"

namespace fastattn::tools {

class library_error : public std::runtime_error {
 public:
  library_error(const std::string& call, fa_status status)
      : std::runtime_error(call + " failed: " + fa_status_string(status) + ": " + fa_last_error()) {}
};

inline void check_status(const char* call, fa_status status) {
  if (status != FA_STATUS_OK) throw library_error(call, status);
}

}  // namespace fastattn::tools
