// A plain-text table with columns sized to their contents: the first
// columns (names) left-aligned, the rest (numbers) right-aligned.
#pragma once

#include <string>
#include <vector>

namespace fastattn::tools {

class text_table {
 public:
  text_table(std::vector<std::string> header, size_t left_aligned_columns);
  void add_row(std::vector<std::string> row);
  std::string str() const;

 private:
  std::vector<std::vector<std::string>> rows_;
  size_t left_aligned_;
};

// printf-style formatting into a std::string (GCC 12 has no <format>).
std::string strprintf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace fastattn::tools
