// The atomserve subcommands. Each returns a process exit code: 0 success,
// 1 runtime failure (message on stderr), 2 usage error.
#pragma once

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cli/args.h"
#include "common/progress.h"
#include "kernels/quant/w4a4_format.h"
#include "runtime/llama_model.h"

namespace atomserve::cli {

struct Subcommand {
  Command spec;
  int (*run)(const ParsedArgs& args);
};

Subcommand GenerateCommand();
Subcommand InfoCommand();
Subcommand QuantizeCommand();
// "eval ppl": a two-word command (main.cc matches both words).
Subcommand EvalPplCommand();
// "bench engine" (bench.cc).
Subcommand BenchEngineCommand();

// Options shared by `quantize` and `eval ppl` (defined in quantize.cc):
// --calib, --calib-tokens, --seq-len, --keeper, --no-gptq, --weight-clip,
// --act-clip.
Command& AddRecipeOptions(Command& c);
// kInvalidArgument naming the bad option.
absl::StatusOr<quant::QuantRecipe> RecipeFromArgs(const ParsedArgs& args);
struct CalibrationArgs {
  std::string file;
  int64_t tokens = 0;
  int64_t seq_len = 0;
};
absl::StatusOr<CalibrationArgs> CalibrationFromArgs(const ParsedArgs& args);

// --kv4 / --kv4-pre-rope (generate, eval ppl).
KvPrecision KvPrecisionFromArgs(const ParsedArgs& args);

// A ConsoleProgress that starts its clock at the first update, for a phase
// that begins inside a longer call.
class LazyProgress {
 public:
  explicit LazyProgress(std::string label) : label_(std::move(label)) {}
  ProgressFn AsFn() {
    return [this](uint64_t done, uint64_t total, const std::string& what) {
      if (!bar_) bar_.emplace(label_);
      bar_->Update(done, total, what);
    };
  }

 private:
  std::string label_;
  std::optional<ConsoleProgress> bar_;
};

// Prints "atomserve: <message>" and returns the exit code for the status.
int Fail(const absl::Status& status);

}  // namespace atomserve::cli
