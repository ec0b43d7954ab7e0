#include "runtime/model_loader.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/mapped_file.h"
#include "common/status.h"

namespace atomserve {

absl::StatusOr<LoadedModel> LoadModel(const std::string& path, const ProgressFn& progress,
                                      const AtomLoadOptions& atom_options) {
  const auto start = std::chrono::steady_clock::now();
  LoadedModel out;
  ATOMSERVE_ASSIGN_OR_RETURN(bool is_atom, IsAtomCheckpoint(path));
  if (is_atom) {
    ATOMSERVE_ASSIGN_OR_RETURN(AtomCheckpoint ck, LoadAtomCheckpoint(path, atom_options));
    ATOMSERVE_ASSIGN_OR_RETURN(out.model, LlamaModel::Create(ck.config, std::move(ck.weights), ck.recipe));
    ck.weights = ModelWeights();
    out.tokenizer = ck.tokenizer;
    out.atom = std::move(ck);
  } else {
    ATOMSERVE_ASSIGN_OR_RETURN(Checkpoint ckpt, LoadCheckpoint(path, progress));
    out.tokenizer = std::move(ckpt.tokenizer);
    ATOMSERVE_ASSIGN_OR_RETURN(out.model, LlamaModel::Create(std::move(ckpt)));
  }
  out.load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

absl::StatusOr<std::vector<int32_t>> TokenizeTextFile(const Tokenizer& tokenizer, const std::string& path,
                                                      int64_t max_tokens) {
  ATOMSERVE_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  std::vector<int32_t> ids = tokenizer.Encode(text, /*allow_special=*/false);
  if (ids.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no tokens"));
  if (max_tokens > 0 && static_cast<int64_t>(ids.size()) > max_tokens) ids.resize(max_tokens);
  return ids;
}

}  // namespace atomserve
