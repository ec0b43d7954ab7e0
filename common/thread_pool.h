// A fixed pool of worker threads for data-parallel CPU kernels.
//
// ParallelFor(n, fn) splits [0, n) into contiguous chunks, runs fn(begin, end)
// on the pool and the calling thread, and returns when all chunks are done.
// Calls from different threads are serialized (one parallel region at a
// time); nested calls from inside fn run inline on the caller.
//
//   ThreadPool& pool = ThreadPool::Default();
//   pool.ParallelFor(rows, [&](int64_t b, int64_t e) { for (...) ...; });
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace atomserve {

class ThreadPool {
 public:
  // num_threads counts the calling thread; 0 means hardware concurrency.
  explicit ThreadPool(int num_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs fn over [0, n) in chunks of at least min_chunk items.
  void ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                   int64_t min_chunk = 1);

  // Process-wide pool sized by ATOMSERVE_THREADS or hardware concurrency.
  static ThreadPool& Default();

 private:
  void WorkerLoop(int index);

  std::vector<std::thread> workers_;
  std::mutex region_mu_;  // serializes parallel regions
  std::mutex mu_;
  std::condition_variable start_cv_;
  std::condition_variable done_cv_;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  int64_t chunk_ = 0;
  int64_t next_ = 0;
  int pending_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
};

}  // namespace atomserve
