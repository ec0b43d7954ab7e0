// Private helpers shared by the kernels/quant sources. Not part of the API.
#pragma once

#include <cstdint>
#include <functional>

#include "common/thread_pool.h"

namespace atomserve::quant::internal {

// Runs fn(begin, end) over [0, n): split across pool, or inline when pool is
// nullptr. min_chunk keeps tiny work items from being scattered over threads.
inline void ParallelRows(ThreadPool* pool, int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                         int64_t min_chunk = 1) {
  if (n <= 0) return;
  if (pool == nullptr) {
    fn(0, n);
    return;
  }
  pool->ParallelFor(n, fn, min_chunk);
}

}  // namespace atomserve::quant::internal
