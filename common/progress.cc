#include "common/progress.h"

#include <unistd.h>

#include <cstdio>

namespace atomserve {

ConsoleProgress::ConsoleProgress(std::string label)
    : label_(std::move(label)), tty_(::isatty(2)), start_(std::chrono::steady_clock::now()) {}

ConsoleProgress::~ConsoleProgress() {
  if (tty_ && last_percent_ >= 0 && !finished_) std::fputc('\n', stderr);
}

void ConsoleProgress::Update(uint64_t done, uint64_t total, const std::string& what) {
  int percent = total ? static_cast<int>(done * 100 / total) : 100;
  if (percent == last_percent_) return;
  // Without a terminal, print every 25% to keep logs short.
  if (!tty_ && percent != 100 && percent / 25 == last_percent_ / 25 && last_percent_ >= 0) return;
  last_percent_ = percent;
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (tty_) {
    int filled = percent / 4;
    std::fprintf(stderr, "\r%s [%.*s%*s] %3d%% %.1fs %-28.28s", label_.c_str(), filled,
                 "#########################", 25 - filled, "", percent, secs, what.c_str());
    if (percent == 100) {
      std::fputc('\n', stderr);
      finished_ = true;
    }
  } else {
    std::fprintf(stderr, "%s %3d%% (%.1fs) %s\n", label_.c_str(), percent, secs, what.c_str());
  }
  std::fflush(stderr);
}

ProgressFn ConsoleProgress::AsFn() {
  return [this](uint64_t d, uint64_t t, const std::string& w) { Update(d, t, w); };
}

}  // namespace atomserve
