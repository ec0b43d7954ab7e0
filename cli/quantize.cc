// `atomserve quantize`: calibrate an fp32 model on a text file, quantize it
// with the Atom W4A4 recipe and write a checkpoint that `generate` and
// `eval ppl` load directly.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_format.h"
#include "cli/commands.h"
#include "common/mapped_file.h"
#include "common/progress.h"
#include "common/status.h"
#include "runtime/atom_checkpoint.h"
#include "runtime/atom_quantizer.h"
#include "runtime/model_loader.h"
#include "runtime/model_path.h"

namespace atomserve::cli {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

absl::StatusOr<AtomCalibrationInfo> CalibrationInfo(const std::string& path, const CalibrationStats& stats,
                                                    int64_t seq_len) {
  AtomCalibrationInfo info;
  ATOMSERVE_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  info.file = std::filesystem::path(path).filename().string();
  info.file_bytes = text.size();
  info.file_fnv1a64 = Fnv1a64(text.data(), text.size());
  info.tokens = stats.tokens;
  info.sequences = stats.sequences;
  info.seq_len = seq_len;
  return info;
}

// Loads the fp32 source and fills everything but the weights and timings.
absl::StatusOr<std::unique_ptr<LlamaModel>> LoadSource(const std::string& path, AtomCheckpoint* out) {
  absl::StatusOr<Checkpoint> ckpt;
  {
    ConsoleProgress progress("loading");
    ckpt = LoadCheckpoint(path, progress.AsFn());
  }
  if (!ckpt.ok()) return ckpt.status();
  out->config = ckpt->config;
  out->tokenizer = ckpt->tokenizer;
  out->source.file = std::filesystem::path(path).filename().string();
  ATOMSERVE_ASSIGN_OR_RETURN(out->source.bytes, PathBytes(path));
  ATOMSERVE_ASSIGN_OR_RETURN(ModelWeights w, TakeModelWeights(*ckpt));
  out->source.tensors_fnv1a64 = HashModelWeights(w);
  return LlamaModel::Create(ckpt->config, std::move(w), std::nullopt);
}

absl::Status Quantize(const ParsedArgs& args, const std::string& model_path) {
  const auto start = std::chrono::steady_clock::now();
  ATOMSERVE_ASSIGN_OR_RETURN(quant::QuantRecipe recipe, RecipeFromArgs(args));
  ATOMSERVE_ASSIGN_OR_RETURN(CalibrationArgs calib, CalibrationFromArgs(args));
  AtomCheckpoint ck;
  ck.recipe = recipe;
  ATOMSERVE_ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> fp32, LoadSource(model_path, &ck));
  ATOMSERVE_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, Tokenizer::Create(ck.tokenizer));
  ATOMSERVE_ASSIGN_OR_RETURN(std::vector<int32_t> ids, TokenizeTextFile(*tokenizer, calib.file, calib.tokens));
  if (static_cast<int64_t>(ids.size()) < calib.tokens) {
    std::fprintf(stderr, "atomserve: warning: %s has only %zu tokens (--calib-tokens %lld)\n", calib.file.c_str(),
                 ids.size(), static_cast<long long>(calib.tokens));
  }
  std::fprintf(stderr, "atomserve: calibrating on %zu tokens of %s (%s)\n", ids.size(), calib.file.c_str(),
               RecipeString(recipe).c_str());

  CalibrationStats stats;
  absl::StatusOr<ModelWeights> w;
  {
    ConsoleProgress calib_bar("calibrating");
    LazyProgress quant_bar("quantizing");
    w = CalibrateAndQuantize(*fp32, ids, recipe, calib.seq_len, calib_bar.AsFn(), quant_bar.AsFn(), &stats);
  }
  if (!w.ok()) return w.status();
  ck.weights = std::move(*w);
  ATOMSERVE_ASSIGN_OR_RETURN(ck.calibration, CalibrationInfo(calib.file, stats, calib.seq_len));
  ck.quantize_seconds = SecondsSince(start);

  const std::string out = args.Get("out");
  const auto write_start = std::chrono::steady_clock::now();
  ATOMSERVE_RETURN_IF_ERROR(SaveAtomCheckpoint(ck, out));
  const double write_seconds = SecondsSince(write_start);

  // Read it back: proves the file loads, and measures what every start costs.
  const auto load_start = std::chrono::steady_clock::now();
  ATOMSERVE_ASSIGN_OR_RETURN(LoadedModel loaded, LoadModel(out));
  const double load_seconds = SecondsSince(load_start);
  ATOMSERVE_ASSIGN_OR_RETURN(uint64_t bytes, PathBytes(out));
  std::fprintf(stderr,
               "atomserve: wrote %s (%.1f MB) in %.2fs; quantizing took %.1fs, loading it back %.2fs (%.0fx faster)\n",
               out.c_str(), bytes / 1e6, write_seconds, ck.quantize_seconds, load_seconds,
               ck.quantize_seconds / std::max(load_seconds, 1e-9));
  std::printf(
      "{\"out\": \"%s\", \"bytes\": %llu, \"recipe\": \"%s\", \"calibration_tokens\": %lld, "
      "\"quantize_seconds\": %.3f, \"write_seconds\": %.3f, \"load_seconds\": %.3f}\n",
      out.c_str(), static_cast<unsigned long long>(bytes), RecipeString(recipe).c_str(),
      static_cast<long long>(stats.tokens), ck.quantize_seconds, write_seconds, load_seconds);
  return absl::OkStatus();
}

int RunQuantize(const ParsedArgs& args) {
  if (!args.Has("calib")) return Fail(absl::InvalidArgumentError("--calib FILE is required"));
  if (!args.Has("out")) return Fail(absl::InvalidArgumentError("--out FILE is required"));
  if (args.Has("threads")) ::setenv("ATOMSERVE_THREADS", args.Get("threads").c_str(), 1);
  absl::StatusOr<std::string> path = args.Has("model") ? absl::StatusOr<std::string>(args.Get("model"))
                                                        : DefaultModelPath();
  if (!path.ok()) return Fail(path.status());
  absl::Status st = Quantize(args, *path);
  return st.ok() ? 0 : Fail(st);
}

}  // namespace

absl::StatusOr<quant::QuantRecipe> RecipeFromArgs(const ParsedArgs& args) {
  quant::QuantRecipe r;
  ATOMSERVE_ASSIGN_OR_RETURN(int64_t keeper, args.GetInt("keeper"));
  ATOMSERVE_ASSIGN_OR_RETURN(double weight_clip, args.GetDouble("weight-clip"));
  ATOMSERVE_ASSIGN_OR_RETURN(double act_clip, args.GetDouble("act-clip"));
  r.keeper = static_cast<int>(keeper);
  r.weight_clip = static_cast<float>(weight_clip);
  r.act_clip = static_cast<float>(act_clip);
  r.gptq = !args.Has("no-gptq");
  ATOMSERVE_RETURN_IF_ERROR(r.Validate());
  return r;
}

absl::StatusOr<CalibrationArgs> CalibrationFromArgs(const ParsedArgs& args) {
  CalibrationArgs c;
  c.file = args.Get("calib");
  ATOMSERVE_ASSIGN_OR_RETURN(c.tokens, args.GetInt("calib-tokens"));
  ATOMSERVE_ASSIGN_OR_RETURN(c.seq_len, args.GetInt("seq-len"));
  if (c.tokens < 1 || c.seq_len < 1) return absl::InvalidArgumentError("--calib-tokens and --seq-len must be >= 1");
  return c;
}

KvPrecision KvPrecisionFromArgs(const ParsedArgs& args) {
  if (args.Has("kv4-pre-rope")) return KvPrecision::kInt4PreRope;
  return args.Has("kv4") ? KvPrecision::kInt4PostRope : KvPrecision::kFp32;
}

Command& AddRecipeOptions(Command& c) {
  return c.Option({"calib", "FILE", "calibration text (plain prose)"})
      .Option({"calib-tokens", "N", "calibration tokens (the first N of the file)", "16384"})
      .Option({"seq-len", "N", "tokens per calibration sequence", "512"})
      .Option({"keeper", "N", "INT8 outlier channels per layer input (multiple of 16)", "128"})
      .Option({"no-gptq", "", "round-to-nearest weights instead of GPTQ"})
      .Option({"weight-clip", "C", "INT4 weight clip ratio in (0, 1]", "0.85"})
      .Option({"act-clip", "C", "INT4 activation clip ratio in (0, 1]", "0.9"});
}

Subcommand QuantizeCommand() {
  Command c("quantize", "quantize a model to Atom W4A4",
            "Runs the fp32 model over calibration text, reorders each linear layer's input\n"
            "channels by salience (the `keeper` most salient stay INT8), quantizes weights to INT4\n"
            "(group 128, GPTQ by default) and writes a versioned, checksummed W4A4 checkpoint.\n"
            "`atomserve generate --model OUT` and `atomserve eval ppl --model OUT` load it.");
  c.Option({"model", "PATH", "fp32 source: GGUF file or safetensors directory (default: SmolLM2-135M-Instruct)"})
      .Option({"out", "FILE", "the W4A4 checkpoint to write (e.g. model.atom)"});
  AddRecipeOptions(c).Option({"threads", "N", "CPU threads (default: all cores, or $ATOMSERVE_THREADS)"});
  return {std::move(c), &RunQuantize};
}

}  // namespace atomserve::cli
