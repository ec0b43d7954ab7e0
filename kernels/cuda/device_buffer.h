// DeviceBuffer<T>: an owning, move-only array in CUDA device memory.
//
//   ATOMSERVE_ASSIGN_OR_RETURN(auto buf, DeviceBuffer<float>::Create(n));
//   ATOMSERVE_RETURN_IF_ERROR(buf.CopyFromHost(host.data(), n, stream));
//   Kernel<<<grid, block, 0, stream>>>(buf.data());
//
// Allocation is cudaMalloc (256-byte aligned, so every buffer is safe for
// 16-byte vector access); the destructor frees with cudaFree and ignores its
// error (destructors cannot report one; a sticky device error will surface on
// the next checked call). A zero-element buffer holds nullptr.
// Errors: kInternal from the CUDA runtime (out of memory included), naming the
// call. Thread safety: like a std::vector; copies are ordered on `stream`.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/cuda_check.h"

namespace atomserve::cuda {

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { Reset(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      Reset();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }

  // count elements, uninitialized.
  static absl::StatusOr<DeviceBuffer> Create(size_t count) {
    DeviceBuffer buf;
    if (count > 0) {
      void* p = nullptr;
      ATOMSERVE_CUDA_RETURN_IF_ERROR(cudaMalloc(&p, count * sizeof(T)));
      buf.data_ = static_cast<T*>(p);
      buf.size_ = count;
    }
    return buf;
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return size_; }
  size_t bytes() const { return size_ * sizeof(T); }
  bool empty() const { return size_ == 0; }

  // Copies count elements (count <= size()) from host memory; asynchronous
  // with respect to the host only when src is pinned.
  absl::Status CopyFromHost(const T* src, size_t count, cudaStream_t stream) {
    if (count > size_) return absl::InvalidArgumentError("DeviceBuffer::CopyFromHost: count exceeds size");
    if (count == 0) return absl::OkStatus();
    ATOMSERVE_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(data_, src, count * sizeof(T), cudaMemcpyHostToDevice, stream));
    return absl::OkStatus();
  }
  // Copies count elements to host memory and waits for the stream.
  absl::Status CopyToHost(T* dst, size_t count, cudaStream_t stream) const {
    if (count > size_) return absl::InvalidArgumentError("DeviceBuffer::CopyToHost: count exceeds size");
    if (count == 0) return absl::OkStatus();
    ATOMSERVE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, data_, count * sizeof(T), cudaMemcpyDeviceToHost, stream));
    ATOMSERVE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
    return absl::OkStatus();
  }
  // Sets every byte to `byte` (e.g. 0xff: NaN poison for float/half/bf16).
  absl::Status Fill(uint8_t byte, cudaStream_t stream) {
    if (size_ == 0) return absl::OkStatus();
    ATOMSERVE_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(data_, byte, bytes(), stream));
    return absl::OkStatus();
  }

 private:
  void Reset() {
    if (data_ != nullptr) (void)cudaFree(data_);
    data_ = nullptr;
    size_ = 0;
  }

  T* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace atomserve::cuda
