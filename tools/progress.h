// A single-line progress indicator on stderr for long runs.
// It stays silent for the first ~2 s (short runs print nothing), when stderr
// is not a terminal (logs and pipes get no carriage returns), and when the
// caller disables it (JSON output).
#pragma once

#include <chrono>
#include <string>

namespace fastattn::tools {

class progress_line {
 public:
  explicit progress_line(bool enabled);
  ~progress_line();
  progress_line(const progress_line&) = delete;
  progress_line& operator=(const progress_line&) = delete;

  // Replaces the line's text, e.g. "bench [3/10]".
  void update(const std::string& text);
  // Erases the line so that normal output starts on a clean line.
  void clear();

 private:
  bool enabled_;
  bool shown_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

}  // namespace fastattn::tools
