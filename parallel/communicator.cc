#include "parallel/communicator.h"

namespace atomserve {

absl::Status SingleRankCommunicator::AllReduceSum(float* data, int64_t count) {
  if (count < 0 || (count > 0 && data == nullptr))
    return absl::InvalidArgumentError("AllReduceSum: null buffer or negative count");
  return absl::OkStatus();  // the sum over one rank is the buffer itself
}

}  // namespace atomserve
