// Progress reporting for long operations (checkpoint loading, evaluation).
//
// A ProgressFn receives (done, total, what). ConsoleProgress draws a one-line
// bar on a terminal (stderr) and prints sparse lines when stderr is not a TTY.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

namespace atomserve {

using ProgressFn = std::function<void(uint64_t done, uint64_t total, const std::string& what)>;

class ConsoleProgress {
 public:
  explicit ConsoleProgress(std::string label);
  ~ConsoleProgress();
  void Update(uint64_t done, uint64_t total, const std::string& what);
  ProgressFn AsFn();

 private:
  std::string label_;
  bool tty_;
  int last_percent_ = -1;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace atomserve
