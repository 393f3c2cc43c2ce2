// Status values passed inside the library; converted to fa_status plus the
// thread-local message at the C ABI boundary.
#pragma once

#include <string>
#include <utility>

#include "fastattn/fastattn.h"

namespace fastattn {

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(fa_status code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return {}; }
  static Status invalid(std::string message) {
    return {FA_STATUS_INVALID_ARGUMENT, std::move(message)};
  }
  static Status unsupported(std::string message) {
    return {FA_STATUS_UNSUPPORTED, std::move(message)};
  }

  bool is_ok() const { return code_ == FA_STATUS_OK; }
  fa_status code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  fa_status code_ = FA_STATUS_OK;
  std::string message_;
};

#define FA_RETURN_IF_ERROR(expr)               \
  do {                                         \
    ::fastattn::Status status_ = (expr);       \
    if (!status_.is_ok()) return status_;      \
  } while (0)

}  // namespace fastattn
