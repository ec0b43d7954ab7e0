// `atomserve generate`: load a model, apply its chat template, stream text.
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/commands.h"
#include "common/progress.h"
#include "common/status.h"
#include "router/chat_template.h"
#include "runtime/generator.h"
#include "runtime/model_loader.h"
#include "runtime/model_path.h"

namespace atomserve::cli {
namespace {

absl::StatusOr<std::string> ResolveModel(const ParsedArgs& args) {
  if (args.Has("model")) return args.Get("model");
  return DefaultModelPath();
}

absl::StatusOr<GenerateOptions> OptionsFrom(const ParsedArgs& args) {
  GenerateOptions o;
  ATOMSERVE_ASSIGN_OR_RETURN(o.max_tokens, args.GetInt("max-tokens"));
  ATOMSERVE_ASSIGN_OR_RETURN(double temperature, args.GetDouble("temperature"));
  ATOMSERVE_ASSIGN_OR_RETURN(int64_t top_k, args.GetInt("top-k"));
  ATOMSERVE_ASSIGN_OR_RETURN(double top_p, args.GetDouble("top-p"));
  ATOMSERVE_ASSIGN_OR_RETURN(int64_t seed, args.GetInt("seed"));
  o.sampling.temperature = static_cast<float>(temperature);
  o.sampling.top_k = static_cast<int32_t>(top_k);
  o.sampling.top_p = static_cast<float>(top_p);
  o.sampling.seed = static_cast<uint64_t>(seed);
  o.stop = args.GetAll("stop");
  o.ignore_eos = args.Has("ignore-eos");
  ATOMSERVE_RETURN_IF_ERROR(o.sampling.Validate());
  return o;
}

absl::StatusOr<std::string> BuildPrompt(const ParsedArgs& args, const TokenizerSpec& spec) {
  const std::string user = args.Get("prompt");
  if (args.Has("raw")) return user;
  ChatTemplate tmpl = ChatTemplate::Detect(spec.chat_template);
  if (args.Has("chat-template")) {
    ATOMSERVE_ASSIGN_OR_RETURN(tmpl, ChatTemplate::FromName(args.Get("chat-template")));
  } else if (spec.chat_template.empty()) {
    return user;  // a base model without a chat format: complete the text
  }
  std::vector<ChatMessage> messages;
  if (args.Has("system")) messages.push_back({"system", args.Get("system")});
  messages.push_back({"user", user});
  return tmpl.Render(messages, /*add_generation_prompt=*/true);
}

int RunGenerate(const ParsedArgs& args) {
  if (!args.Has("prompt")) return Fail(absl::InvalidArgumentError("--prompt is required"));
  if (args.Has("threads")) ::setenv("ATOMSERVE_THREADS", args.Get("threads").c_str(), 1);
  auto options = OptionsFrom(args);
  if (!options.ok()) return Fail(options.status());
  auto path = ResolveModel(args);
  if (!path.ok()) return Fail(path.status());

  std::fprintf(stderr, "atomserve: loading %s\n", path->c_str());
  absl::StatusOr<LoadedModel> loaded;
  {
    ConsoleProgress progress("loading");
    loaded = LoadModel(*path, progress.AsFn());
  }
  if (!loaded.ok()) return Fail(loaded.status());
  if (loaded->atom) {
    std::fprintf(stderr, "atomserve: W4A4 model (%s) loaded in %.2fs\n", RecipeString(loaded->atom->recipe).c_str(),
                 loaded->load_seconds);
  }
  loaded->model->set_kv_precision(KvPrecisionFromArgs(args));
  auto tokenizer = Tokenizer::Create(loaded->tokenizer);
  if (!tokenizer.ok()) return Fail(tokenizer.status());
  auto prompt_text = BuildPrompt(args, loaded->tokenizer);
  if (!prompt_text.ok()) return Fail(prompt_text.status());
  const std::unique_ptr<LlamaModel>& model = loaded->model;

  std::vector<int32_t> ids;
  if ((*tokenizer)->add_bos() && (*tokenizer)->bos_id() >= 0) ids.push_back((*tokenizer)->bos_id());
  for (int32_t id : (*tokenizer)->Encode(*prompt_text)) ids.push_back(id);

  auto result = Generate(*model, **tokenizer, ids, *options, [](const std::string& piece) {
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
  });
  std::fputc('\n', stdout);
  std::fflush(stdout);  // the statistics on stderr come after the text
  if (!result.ok()) return Fail(result.status());
  const double prefill_tps = result->prompt_tokens / std::max(result->prefill_seconds, 1e-9);
  const double decode_tps = result->tokens.size() / std::max(result->decode_seconds, 1e-9);
  std::fprintf(stderr,
               "atomserve: prompt %lld tokens in %.2fs (%.1f tok/s); generated %zu tokens in %.2fs "
               "(%.1f tok/s); finish_reason=%s\n",
               static_cast<long long>(result->prompt_tokens), result->prefill_seconds, prefill_tps,
               result->tokens.size(), result->decode_seconds, decode_tps, result->finish_reason.c_str());
  return 0;
}

}  // namespace

Subcommand GenerateCommand() {
  Command c("generate", "generate text from a prompt",
            "Loads a model (GGUF file or Hugging Face safetensors directory), wraps the prompt in\n"
            "the model's chat template (ChatML for SmolLM2; Llama-2 and Llama-3 formats are\n"
            "detected from the checkpoint) and streams the completion to stdout. Statistics go\n"
            "to stderr. Without --model, the default model SmolLM2-135M-Instruct is used. A W4A4\n"
            "checkpoint written by `atomserve quantize` runs on the Atom integer path.");
  c.Option({"model", "PATH", "GGUF file, safetensors directory, or W4A4 checkpoint (atomserve quantize)"})
      .Option({"prompt", "TEXT", "the user message (or raw text with --raw)"})
      .Option({"system", "TEXT", "system message (chat models)"})
      .Option({"raw", "", "do not apply a chat template; complete the text as given"})
      .Option({"chat-template", "NAME", "force a chat format: chatml, llama2, llama3"})
      .Option({"max-tokens", "N", "maximum tokens to generate", "128"})
      .Option({"temperature", "T", "sampling temperature; 0 is greedy", "0"})
      .Option({"top-k", "K", "sample among the K most likely tokens; 0 disables", "0"})
      .Option({"top-p", "P", "nucleus sampling mass in (0, 1]", "1"})
      .Option({"seed", "N", "random seed for sampling", "0"})
      .Option({"stop", "TEXT", "stop when this text is generated", "", true})
      .Option({"ignore-eos", "", "keep generating past end-of-sequence tokens"})
      .Option({"kv4", "", "4-bit KV cache, per token per head, K quantized after RoPE"})
      .Option({"kv4-pre-rope", "", "4-bit KV cache with K quantized before RoPE (Atom's placement)"})
      .Option({"threads", "N", "CPU threads (default: all cores, or $ATOMSERVE_THREADS)"});
  return {std::move(c), &RunGenerate};
}

}  // namespace atomserve::cli
