// `atomserve bench engine`: engine throughput on the CPU for several numbers
// of concurrent requests, with concurrency 1 (same process) as the baseline,
// and the KV capacity table.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/commands.h"
#include "common/status.h"
#include "kvstore/capacity.h"
#include "runtime/engine.h"
#include "runtime/model_loader.h"
#include "runtime/model_path.h"

namespace atomserve::cli {
namespace {

struct BenchRow {
  int64_t concurrency = 0;
  int64_t prefill_tokens = 0, decode_tokens = 0, generated = 0, steps = 0, preemptions = 0;
  double prefill_s = 0, decode_s = 0, wall_s = 0;
  double prefill_tps() const { return prefill_tokens / std::max(prefill_s, 1e-9); }
  double decode_tps() const { return decode_tokens / std::max(decode_s, 1e-9); }
  double total_tps() const { return (prefill_tokens + decode_tokens) / std::max(wall_s, 1e-9); }
  double gen_tps() const { return generated / std::max(wall_s, 1e-9); }
};

absl::StatusOr<BenchRow> RunLevel(const LlamaModel& model, const Tokenizer& tok, const EngineOptions& eo,
                                  int64_t concurrency, int64_t prompt_tokens, int64_t max_tokens) {
  ATOMSERVE_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, Engine::Create(model, &tok, eo));
  std::mt19937_64 rng(1234);
  std::uniform_int_distribution<int32_t> d(100, static_cast<int32_t>(model.config().vocab_size - 1));
  RequestParams p;
  p.max_tokens = max_tokens;
  p.ignore_eos = true;
  for (int64_t i = 0; i < concurrency; ++i) {
    std::vector<int32_t> ids(prompt_tokens);
    for (int32_t& id : ids) id = d(rng);  // distinct prompts: no prefix-cache hits
    ATOMSERVE_RETURN_IF_ERROR(engine->Submit(std::move(ids), p).status());
  }
  BenchRow row;
  row.concurrency = concurrency;
  const auto t0 = std::chrono::steady_clock::now();
  while (engine->HasWork()) {
    const int64_t before = engine->stats().prefill_tokens;
    const auto s0 = std::chrono::steady_clock::now();
    ATOMSERVE_RETURN_IF_ERROR(engine->Step());
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count();
    // Steps that computed any prefill tokens count as prefill time.
    (engine->stats().prefill_tokens > before ? row.prefill_s : row.decode_s) += dt;
  }
  row.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const EngineStats& st = engine->stats();
  row.prefill_tokens = st.prefill_tokens;
  row.decode_tokens = st.decode_tokens;
  row.generated = st.generated_tokens;
  row.steps = st.steps;
  row.preemptions = st.preemptions;
  return row;
}

int RunBenchEngine(const ParsedArgs& args) {
  if (args.Has("threads")) ::setenv("ATOMSERVE_THREADS", args.Get("threads").c_str(), 1);
  std::vector<int64_t> levels;
  for (absl::string_view part : absl::StrSplit(args.Get("concurrency"), ',', absl::SkipEmpty())) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(part, &v) || v < 1)
      return Fail(absl::InvalidArgumentError(absl::StrCat("--concurrency: bad value '", std::string(part), "'")));
    levels.push_back(v);
  }
  auto prompt_tokens = args.GetInt("prompt-tokens");
  if (!prompt_tokens.ok()) return Fail(prompt_tokens.status());
  auto max_tokens = args.GetInt("max-tokens");
  if (!max_tokens.ok()) return Fail(max_tokens.status());
  auto step_tokens = args.GetInt("max-step-tokens");
  if (!step_tokens.ok()) return Fail(step_tokens.status());
  auto kv_mb = args.GetInt("kv-mb");
  if (!kv_mb.ok()) return Fail(kv_mb.status());
  if (*prompt_tokens < 1 || *max_tokens < 1) return Fail(absl::InvalidArgumentError("token counts must be >= 1"));
  auto path = args.Has("model") ? absl::StatusOr<std::string>(args.Get("model")) : DefaultModelPath();
  if (!path.ok()) return Fail(path.status());
  auto loaded = LoadModel(*path);
  if (!loaded.ok()) return Fail(loaded.status());
  if (args.Has("kv4-pre-rope")) loaded->model->set_kv_precision(KvPrecision::kInt4PreRope);
  auto tok = Tokenizer::Create(loaded->tokenizer);
  if (!tok.ok()) return Fail(tok.status());
  const LlamaModel& model = *loaded->model;
  EngineOptions eo;
  eo.kv_budget_bytes = *kv_mb << 20;
  eo.max_step_tokens = *step_tokens;
  eo.max_running = *std::max_element(levels.begin(), levels.end());
  const char* threads = std::getenv("ATOMSERVE_THREADS");
  std::printf("model %s (%s, %s linears), prompt %lld tokens, %lld generated per request, step budget %lld tokens, "
              "threads %s\n\n",
              path->c_str(), model.config().name.c_str(), model.quantized() ? "W4A4" : "fp32",
              static_cast<long long>(*prompt_tokens), static_cast<long long>(*max_tokens),
              static_cast<long long>(*step_tokens), threads ? threads : "all");
  std::printf("| concurrency | prefill tok/s | decode tok/s | total tok/s | generated tok/s | total vs c=1 | "
              "decode vs c=1 | steps | wall s |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  std::vector<BenchRow> rows;
  for (int64_t c : levels) {
    auto row = RunLevel(model, **tok, eo, c, *prompt_tokens, *max_tokens);
    if (!row.ok()) return Fail(row.status());
    rows.push_back(*row);
    const BenchRow& base = rows.front();
    std::printf("| %lld | %.1f | %.1f | %.1f | %.1f | %.2fx | %.2fx | %lld | %.2f |\n", static_cast<long long>(c),
                row->prefill_tps(), row->decode_tps(), row->total_tps(), row->gen_tps(),
                row->total_tps() / base.total_tps(), row->decode_tps() / base.decode_tps(),
                static_cast<long long>(row->steps), row->wall_s);
    std::fflush(stdout);
  }
  const ModelConfig& mc = model.config();
  std::vector<kvstore::ModelKvShape> shapes = {{mc.name, mc.num_layers, mc.num_kv_heads, mc.head_dim}};
  std::printf("\nKV capacity for a %lld MiB budget (the engine pool above):\n\n%s",
              static_cast<long long>(*kv_mb), kvstore::CapacityTableMarkdown(shapes, eo.kv_budget_bytes).c_str());
  std::printf("\nKV capacity for 16 GiB:\n\n%s",
              kvstore::CapacityTableMarkdown(kvstore::ReferenceModelShapes(), 16ll << 30).c_str());
  return 0;
}

}  // namespace

Subcommand BenchEngineCommand() {
  Command c("bench engine", "engine throughput for 1, 8, 32 concurrent requests",
            "Runs the continuous-batching engine (4-bit paged KV) on the CPU with N concurrent\n"
            "requests of random prompts (distinct, so no prefix-cache hits), greedy, ignoring eos,\n"
            "for each N of --concurrency in one process; ratios are against the first level.\n"
            "Prefill tok/s counts the steps that computed prompt tokens (decode tokens mixed into\n"
            "them included in their time); decode tok/s the pure-decode steps. Then prints the KV\n"
            "capacity table (4-bit vs fp16 pages).");
  c.Option({"model", "PATH", "GGUF file, safetensors directory, or W4A4 checkpoint (default SmolLM2-135M)"})
      .Option({"concurrency", "LIST", "comma-separated concurrent request counts", "1,8,32"})
      .Option({"prompt-tokens", "N", "prompt tokens per request", "64"})
      .Option({"max-tokens", "N", "tokens generated per request", "32"})
      .Option({"max-step-tokens", "N", "token budget of one engine step", "512"})
      .Option({"kv-mb", "N", "KV pool size in MiB", "256"})
      .Option({"kv4-pre-rope", "", "store K before RoPE (Atom's placement)"})
      .Option({"threads", "N", "CPU threads (default: all cores, or $ATOMSERVE_THREADS)"});
  return {std::move(c), &RunBenchEngine};
}

}  // namespace atomserve::cli
