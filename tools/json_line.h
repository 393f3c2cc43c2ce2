// One JSON object on one line, written by hand: the program's machine output
// is flat key/value records, which does not justify a JSON dependency.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace fastattn::tools {

class json_line {
 public:
  json_line& text(std::string_view key, std::string_view value);
  json_line& integer(std::string_view key, int64_t value);
  // Non-finite numbers become null (JSON has no NaN or infinity).
  json_line& number(std::string_view key, double value);
  json_line& boolean(std::string_view key, bool value);
  // The finished object, without a trailing newline.
  std::string str() const { return body_ + "}"; }

 private:
  void key(std::string_view k);
  std::string body_ = "{";
};

std::string json_escape(std::string_view s);

}  // namespace fastattn::tools
