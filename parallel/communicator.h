// Collective communication between the ranks of one worker group.
//
// The model calls AllReduceSum after each row-parallel layer. Implementations:
// SingleRankCommunicator (TP=1, a no-op that still checks arguments); NCCL on
// GPUs and a CPU collective library for GPU-less TP runs come with the tensor
// parallel work. Thread safety: one caller thread per communicator.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/status.h"

namespace atomserve {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // In-place sum over all ranks of a host float buffer.
  virtual absl::Status AllReduceSum(float* data, int64_t count) = 0;
};

class SingleRankCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  absl::Status AllReduceSum(float* data, int64_t count) override;
};

}  // namespace atomserve
