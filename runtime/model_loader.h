// Opens any model the CLI accepts: an Atom W4A4 checkpoint (".atom",
// recognized by its magic, atom_checkpoint.h) runs on the integer W4A4 path;
// anything else goes through LoadCheckpoint (GGUF file, safetensors
// directory) and runs in fp32.
//
//   ATOMSERVE_ASSIGN_OR_RETURN(LoadedModel m, LoadModel(path, progress));
//   Generate(*m.model, *tokenizer_from(m.tokenizer), ...);
//
// Thread safety: independent calls are thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/progress.h"
#include "runtime/atom_checkpoint.h"
#include "runtime/llama_model.h"
#include "runtime/tokenizer.h"

namespace atomserve {

struct LoadedModel {
  std::unique_ptr<LlamaModel> model;
  TokenizerSpec tokenizer;
  // For a W4A4 checkpoint: its metadata (recipe, source, calibration; the
  // weights moved into model).
  std::optional<AtomCheckpoint> atom;
  double load_seconds = 0.0;
};

// Errors: those of LoadAtomCheckpoint / LoadCheckpoint / LlamaModel::Create.
absl::StatusOr<LoadedModel> LoadModel(const std::string& path, const ProgressFn& progress = nullptr,
                                      const AtomLoadOptions& atom_options = {});

// The text of a file tokenized without special-token parsing (plain prose),
// cut to max_tokens when > 0. Errors: kNotFound; kInvalidArgument when it
// yields no tokens.
absl::StatusOr<std::vector<int32_t>> TokenizeTextFile(const Tokenizer& tokenizer, const std::string& path,
                                                      int64_t max_tokens);

}  // namespace atomserve
