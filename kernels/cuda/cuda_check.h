// Error checking for CUDA runtime calls.
//
// ATOMSERVE_CUDA_RETURN_IF_ERROR(expr) turns a failing cudaError_t into an
// absl::Status (kInternal) that names the call, file and line;
// ATOMSERVE_CUDA_CHECK aborts and is for tests and programmer-bug paths only.
#pragma once

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace atomserve::cuda {

inline absl::Status CudaStatus(cudaError_t err, const char* expr, const char* file, int line) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(file, ":", line, ": ", expr, " failed: ",
                                          cudaGetErrorName(err), " (", cudaGetErrorString(err), ")"));
}

// Number of usable CUDA devices; 0 when there is no driver or no device.
int DeviceCount();

}  // namespace atomserve::cuda

#define ATOMSERVE_CUDA_RETURN_IF_ERROR(expr)                                                 \
  do {                                                                                       \
    ::absl::Status _atomserve_cst = ::atomserve::cuda::CudaStatus((expr), #expr, __FILE__, __LINE__); \
    if (!_atomserve_cst.ok()) return _atomserve_cst;                                         \
  } while (0)

#define ATOMSERVE_CUDA_CHECK(expr)                                                           \
  do {                                                                                       \
    cudaError_t _atomserve_err = (expr);                                                     \
    if (_atomserve_err != cudaSuccess) {                                                     \
      std::fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #expr,             \
                   cudaGetErrorString(_atomserve_err));                                      \
      std::abort();                                                                          \
    }                                                                                        \
  } while (0)
