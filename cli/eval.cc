// `atomserve eval ppl`: perplexity of a model (fp32, a W4A4 checkpoint, or a
// quantization variant built on the fly) over a text file.
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/commands.h"
#include "common/progress.h"
#include "common/status.h"
#include "runtime/atom_quantizer.h"
#include "runtime/model_loader.h"
#include "runtime/model_path.h"
#include "runtime/perplexity.h"

namespace atomserve::cli {
namespace {

// What runs, for the report: the scheme and whether the linears are the
// integer W4A4 reference or fp32 matmuls (fp32 itself, or fake quantization).
struct Variant {
  std::unique_ptr<LlamaModel> model;
  TokenizerSpec tokenizer;
  std::string scheme;  // fp32, w8a8, naive-w4a4, atom-rtn, atom-gptq
  std::string recipe;  // Atom recipe, when any
  std::string path;    // "integer" or "float"
};

std::string AtomScheme(const quant::QuantRecipe& r) { return r.gptq ? "atom-gptq" : "atom-rtn"; }

// Replaces a W4A4 model by its float twin (same quantized values, fp32 math).
absl::Status ToFakeQuant(Variant& v) {
  const quant::QuantRecipe recipe = v.model->recipe();
  ATOMSERVE_ASSIGN_OR_RETURN(ModelWeights w, DequantizeModelWeights(v.model->weights()));
  ActivationHook hook = AtomFakeQuantHook(v.model->weights(), recipe);
  const ModelConfig config = v.model->config();
  v.model.reset();
  ATOMSERVE_ASSIGN_OR_RETURN(v.model, LlamaModel::Create(config, std::move(w), std::nullopt));
  v.model->set_activation_hook(std::move(hook));
  v.path = "float";
  return absl::OkStatus();
}

absl::StatusOr<Variant> FromAtomFile(const ParsedArgs& args, LoadedModel loaded) {
  Variant v;
  const quant::QuantRecipe recipe = loaded.atom->recipe;
  const std::string scheme = args.Get("quant");
  if (!scheme.empty() && scheme != AtomScheme(recipe)) {
    return absl::InvalidArgumentError(absl::StrCat(args.Get("model"), " holds ", AtomScheme(recipe), " (",
                                                   RecipeString(recipe), "), not ", scheme));
  }
  for (const char* opt : {"calib", "keeper", "no-gptq", "weight-clip", "act-clip"}) {
    if (args.Has(opt))
      return absl::InvalidArgumentError(absl::StrCat("--", opt, " does not apply: the checkpoint fixes the recipe"));
  }
  v.model = std::move(loaded.model);
  v.tokenizer = std::move(loaded.tokenizer);
  v.scheme = AtomScheme(recipe);
  v.recipe = RecipeString(recipe);
  v.path = "integer";
  return v;
}

absl::Status QuantizeOnTheFly(const ParsedArgs& args, const std::string& scheme, Variant& v) {
  ATOMSERVE_ASSIGN_OR_RETURN(quant::QuantRecipe recipe, RecipeFromArgs(args));
  recipe.gptq = scheme == "atom-gptq";
  if (!args.Has("calib")) return absl::InvalidArgumentError(absl::StrCat("--quant ", scheme, " needs --calib FILE"));
  ATOMSERVE_ASSIGN_OR_RETURN(CalibrationArgs calib, CalibrationFromArgs(args));
  ATOMSERVE_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, Tokenizer::Create(v.tokenizer));
  ATOMSERVE_ASSIGN_OR_RETURN(std::vector<int32_t> ids, TokenizeTextFile(*tokenizer, calib.file, calib.tokens));
  absl::StatusOr<ModelWeights> w;
  {
    ConsoleProgress calib_bar("calibrating");
    LazyProgress quant_bar("quantizing");
    w = CalibrateAndQuantize(*v.model, ids, recipe, calib.seq_len, calib_bar.AsFn(), quant_bar.AsFn());
  }
  if (!w.ok()) return w.status();
  const ModelConfig config = v.model->config();
  v.model.reset();
  ATOMSERVE_ASSIGN_OR_RETURN(v.model, LlamaModel::Create(config, std::move(*w), recipe));
  v.recipe = RecipeString(recipe);
  v.path = "integer";
  return absl::OkStatus();
}

absl::Status PerRowVariant(int bits, Variant& v) {
  // Plain round-to-nearest, no clipping: the baseline the Atom recipe improves on.
  ATOMSERVE_ASSIGN_OR_RETURN(ActivationHook hook, PerRowFakeQuantHook(bits, 1.0f));
  ModelWeights w = v.model->weights();
  ATOMSERVE_RETURN_IF_ERROR(FakeQuantizeLinearsPerRow(w, bits, 1.0f));
  const ModelConfig config = v.model->config();
  v.model.reset();
  ATOMSERVE_ASSIGN_OR_RETURN(v.model, LlamaModel::Create(config, std::move(w), std::nullopt));
  v.model->set_activation_hook(std::move(hook));
  return absl::OkStatus();
}

absl::StatusOr<Variant> FromFloatModel(const ParsedArgs& args, LoadedModel loaded) {
  Variant v;
  v.model = std::move(loaded.model);
  v.tokenizer = std::move(loaded.tokenizer);
  v.scheme = args.Has("quant") ? args.Get("quant") : "fp32";
  v.path = "float";
  if (v.scheme == "fp32") return v;
  if (v.scheme == "w8a8") {
    ATOMSERVE_RETURN_IF_ERROR(PerRowVariant(8, v));
  } else if (v.scheme == "naive-w4a4") {
    ATOMSERVE_RETURN_IF_ERROR(PerRowVariant(4, v));
  } else {  // atom-rtn or atom-gptq (BuildVariant checked the name)
    ATOMSERVE_RETURN_IF_ERROR(QuantizeOnTheFly(args, v.scheme, v));
  }
  return v;
}

absl::StatusOr<Variant> BuildVariant(const ParsedArgs& args, const std::string& path) {
  const std::string scheme = args.Get("quant");
  if (!scheme.empty() && scheme != "fp32" && scheme != "w8a8" && scheme != "naive-w4a4" &&
      scheme != "atom-rtn" && scheme != "atom-gptq") {
    return absl::InvalidArgumentError(
        absl::StrCat("--quant: unknown scheme '", scheme, "' (fp32, w8a8, naive-w4a4, atom-rtn, atom-gptq)"));
  }
  absl::StatusOr<LoadedModel> loaded;
  {
    ConsoleProgress progress("loading");
    loaded = LoadModel(path, progress.AsFn());
  }
  if (!loaded.ok()) return loaded.status();
  absl::StatusOr<Variant> v = loaded->atom ? FromAtomFile(args, std::move(*loaded))
                                           : FromFloatModel(args, std::move(*loaded));
  if (!v.ok()) return v.status();
  if (args.Has("fake-quant")) {
    if (!v->model->quantized())
      return absl::InvalidArgumentError("--fake-quant applies to the Atom schemes (a W4A4 model)");
    ATOMSERVE_RETURN_IF_ERROR(ToFakeQuant(*v));
  }
  v->model->set_kv_precision(KvPrecisionFromArgs(args));
  return v;
}

void Report(const ParsedArgs& args, const Variant& v, const PerplexityResult& r, const PerplexityOptions& o) {
  const std::string kv = KvPrecisionName(v.model->kv_precision());
  if (args.Has("json")) {
    std::printf(
        "{\"perplexity\": %.6f, \"nll_sum\": %.6f, \"scored_tokens\": %lld, \"windows\": %lld, \"ctx\": %lld, "
        "\"seconds\": %.3f, \"scheme\": \"%s\", \"path\": \"%s\", \"kv\": \"%s\", \"recipe\": \"%s\"}\n",
        r.perplexity, r.nll_sum, static_cast<long long>(r.scored_tokens), static_cast<long long>(r.windows),
        static_cast<long long>(o.ctx), r.seconds, v.scheme.c_str(), v.path.c_str(), kv.c_str(), v.recipe.c_str());
    return;
  }
  std::printf("perplexity %.4f  (%s, %s linears, kv %s%s%s; %lld tokens scored in %lld windows of %lld; %.1fs)\n",
              r.perplexity, v.scheme.c_str(), v.path.c_str(), kv.c_str(), v.recipe.empty() ? "" : "; ",
              v.recipe.c_str(), static_cast<long long>(r.scored_tokens), static_cast<long long>(r.windows),
              static_cast<long long>(o.ctx), r.seconds);
}

absl::Status EvalPpl(const ParsedArgs& args, const std::string& path) {
  PerplexityOptions options;
  ATOMSERVE_ASSIGN_OR_RETURN(options.ctx, args.GetInt("ctx"));
  ATOMSERVE_ASSIGN_OR_RETURN(options.max_tokens, args.GetInt("max-tokens"));
  ATOMSERVE_ASSIGN_OR_RETURN(Variant v, BuildVariant(args, path));
  ATOMSERVE_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, Tokenizer::Create(v.tokenizer));
  ATOMSERVE_ASSIGN_OR_RETURN(std::vector<int32_t> ids,
                             TokenizeTextFile(*tokenizer, args.Get("text"), options.max_tokens));
  absl::StatusOr<PerplexityResult> r;
  {
    ConsoleProgress progress("evaluating");
    r = EvaluatePerplexity(*v.model, ids, options, progress.AsFn());
  }
  if (!r.ok()) return r.status();
  Report(args, v, *r, options);
  return absl::OkStatus();
}

int RunEvalPpl(const ParsedArgs& args) {
  if (!args.Has("text")) return Fail(absl::InvalidArgumentError("--text FILE is required"));
  if (args.Has("threads")) ::setenv("ATOMSERVE_THREADS", args.Get("threads").c_str(), 1);
  absl::StatusOr<std::string> path = args.Has("model") ? absl::StatusOr<std::string>(args.Get("model"))
                                                        : DefaultModelPath();
  if (!path.ok()) return Fail(path.status());
  absl::Status st = EvalPpl(args, *path);
  return st.ok() ? 0 : Fail(st);
}

}  // namespace

Subcommand EvalPplCommand() {
  Command c("eval ppl", "perplexity of a model over a text file",
            "Cuts the tokenized text into non-overlapping windows of --ctx tokens (no BOS), runs each\n"
            "from an empty cache and reports exp(mean NLL) over every predicted token (the first\n"
            "token of a window is not predicted); a final partial window is dropped.\n"
            "A W4A4 checkpoint runs on the integer reference (add --fake-quant for its float twin).\n"
            "From an fp32 model, --quant builds a variant on the fly: w8a8 and naive-w4a4 are\n"
            "per-channel/per-token fake quantization (round-to-nearest, no clipping); atom-rtn and\n"
            "atom-gptq calibrate on --calib and run the integer W4A4 reference.");
  c.Option({"model", "PATH", "GGUF file, safetensors directory or W4A4 checkpoint (default: SmolLM2-135M-Instruct)"})
      .Option({"text", "FILE", "evaluation text (plain prose)"})
      .Option({"quant", "SCHEME", "fp32, w8a8, naive-w4a4, atom-rtn, atom-gptq"})
      .Option({"fake-quant", "", "run an Atom model as float matmuls over its dequantized values"})
      .Option({"kv4", "", "4-bit KV cache, per token per head, K quantized after RoPE"})
      .Option({"kv4-pre-rope", "", "4-bit KV cache with K quantized before RoPE (Atom's placement)"})
      .Option({"ctx", "N", "window length in tokens", "512"})
      .Option({"max-tokens", "N", "evaluate at most the first N tokens; 0 = all", "0"})
      .Option({"json", "", "print the result as one JSON line"});
  AddRecipeOptions(c).Option({"threads", "N", "CPU threads (default: all cores, or $ATOMSERVE_THREADS)"});
  return {std::move(c), &RunEvalPpl};
}

}  // namespace atomserve::cli
