#include "progress.h"

#include <unistd.h>

#include <cstdio>

namespace fastattn::tools {

namespace {
constexpr auto kQuietPeriod = std::chrono::seconds(2);
// Redrawing more often than this only costs terminal time.
constexpr auto kRedrawInterval = std::chrono::milliseconds(100);
}  // namespace

progress_line::progress_line(bool enabled)
    : enabled_(enabled && isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

progress_line::~progress_line() { clear(); }

void progress_line::update(const std::string& text) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - start_ < kQuietPeriod) return;
  if (shown_ && now - last_draw_ < kRedrawInterval) return;
  // "\x1b[K" erases what a longer previous text left to the right.
  std::fprintf(stderr, "\r%s\x1b[K", text.c_str());
  std::fflush(stderr);
  shown_ = true;
  last_draw_ = now;
}

void progress_line::clear() {
  if (!shown_) return;
  std::fputs("\r\x1b[K", stderr);
  std::fflush(stderr);
  shown_ = false;
}

}  // namespace fastattn::tools
