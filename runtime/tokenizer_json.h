// Reads Hugging Face tokenizer.json (and optionally tokenizer_config.json)
// into a TokenizerSpec.
//
// Supported: model.type "BPE" with byte-level pre-tokenization (ByteLevel,
// alone or in a Sequence after Digits(individual_digits) or after a Split
// with the Llama-3 pattern), merges as "a b" strings or [a, b] pairs, and
// added_tokens (special ones become kControl, others kUserDefined).
// Errors name `source` and the offending key (kInvalidArgument).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "runtime/checkpoint.h"

namespace atomserve {

absl::StatusOr<TokenizerSpec> TokenizerSpecFromJson(const std::string& tokenizer_json,
                                                    const std::string& tokenizer_config_json,
                                                    const std::string& source);

}  // namespace atomserve
