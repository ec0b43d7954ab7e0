// The serving engine: continuous batching over the batched paged forward
// (LlamaModel::ForwardBatch) and the 4-bit paged KV store (kvstore::KvManager).
//
//   ATOMSERVE_ASSIGN_OR_RETURN(auto engine, Engine::Create(model, &tokenizer, options));
//   ATOMSERVE_ASSIGN_OR_RETURN(RequestId id, engine->Submit(prompt, params, on_event));
//   while (engine->HasWork()) ATOMSERVE_RETURN_IF_ERROR(engine->Step());
//   const RequestOutput* out = engine->output(id);
//
// A request has n completions ("sequences"). Each Step():
//   1. schedules the running sequences, oldest admitted first: a decode token
//      each, or the next prefill chunk, within max_step_tokens. When one
//      cannot get its pages, the most recently admitted running sequence is
//      preempted (its pages freed; it goes back to the front of the queue and
//      is recomputed later from prompt + generated tokens, mostly from the
//      prefix cache), down to the sequence itself;
//   2. admits waiting sequences (FIFO) while max_running, the token budget
//      and the pages (KvManager::PagesToAdmit <= available_pages) allow;
//   3. runs one ForwardBatch over all scheduled tokens, then samples the
//      sequences whose chunk ended at their last token. After the prompt of
//      an n > 1 request, the other n - 1 completions are Fork()ed from it
//      (sharing its pages) and each samples with seed + index.
// Progress: the oldest running sequence can always take every page from
// younger ones, and Submit() rejects (kResourceExhausted, with the reason) a
// request whose single sequence prompt + max_tokens could never fit the pool,
// so the engine never deadlocks.
//
// Finish reasons: "stop" (a stop token id, the tokenizer's eos ids unless
// ignore_eos, or a stop string: text cut before it), "length" (max_tokens or
// the model's max_position), "abort" (Cancel). Text streams through
// StopMatcher: never a split UTF-8 character, never a possible stop-string
// prefix.
//
// Determinism: greedy outputs do not depend on batching, chunking, preemption
// or prefix-cache hits as long as the kernels are row-independent (they are
// on the CPU backend: every linear computes a row with the same summation
// order whatever the batch; attention is per query row).
//
// Thread safety: none. One serving thread owns the engine and calls Submit,
// Cancel and Step; callbacks run on that thread inside Step/Cancel. A
// callback may call Cancel (applied when it returns to the engine, before the
// next sequence is sampled); it must not call Step or Submit.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "kvstore/kv_manager.h"
#include "runtime/llama_model.h"
#include "runtime/sampler.h"
#include "runtime/stop_matcher.h"
#include "runtime/tokenizer.h"

namespace atomserve {

using RequestId = int64_t;

struct RequestParams {
  SamplingParams sampling;  // completion i uses seed + i
  int64_t max_tokens = 16;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  int32_t n = 1;
  bool use_prefix_cache = true;
};

enum class FinishReason { kNone, kStop, kLength, kAbort };
// "", "stop", "length", "abort".
const char* FinishReasonName(FinishReason r);

// One streaming update of one completion.
struct StreamEvent {
  RequestId request = 0;
  int32_t index = 0;                // completion index in [0, n)
  std::vector<int32_t> new_tokens;  // tokens accepted since the last event
  std::string text;                 // text now safe to show (may be empty)
  FinishReason finish = FinishReason::kNone;  // kNone while running
};
using StreamCallback = std::function<void(const StreamEvent&)>;

struct CompletionOutput {
  std::vector<int32_t> tokens;  // generated ids (stop token excluded)
  std::string text;             // stop string excluded
  FinishReason finish = FinishReason::kNone;
  int32_t preemptions = 0;
};

struct RequestOutput {
  RequestId id = 0;
  int64_t prompt_tokens = 0;
  int64_t cached_prompt_tokens = 0;  // served by the prefix cache at first admission
  std::vector<CompletionOutput> completions;
  bool finished() const;
};

struct EngineOptions {
  int64_t num_pages = 0;          // KV pool pages; 0: from kv_budget_bytes
  int64_t kv_budget_bytes = 256ll << 20;
  int64_t tokens_per_page = kvstore::kDefaultTokensPerPage;
  kvstore::KvDtype kv_dtype = kvstore::KvDtype::kInt4;
  bool enable_prefix_caching = true;
  int64_t max_step_tokens = 256;  // token budget of one step (decode + prefill)
  int64_t max_running = 32;       // running sequences
  std::string model_identity;     // prefix-hash seed; default: the model name and precision
};

struct EngineStats {
  int64_t steps = 0;
  int64_t prefill_tokens = 0;   // prompt/recompute positions computed
  int64_t decode_tokens = 0;    // positions computed as decode (chunk of 1 after the prompt)
  int64_t generated_tokens = 0;
  int64_t preemptions = 0;
  int64_t max_batch_tokens = 0;
  double forward_seconds = 0.0;
};

class Engine {
 public:
  // model and tokenizer must outlive the engine; tokenizer may be null (no
  // text, no eos ids). Errors: kInvalidArgument for bad options.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const LlamaModel& model, const Tokenizer* tokenizer,
                                                        const EngineOptions& options);
  ~Engine();

  // Queues a request. Errors (nothing queued): kInvalidArgument for an empty
  // prompt, ids outside the vocabulary, bad sampling params, n < 1,
  // max_tokens < 0, a prompt reaching max_position; kResourceExhausted when
  // prompt + max_tokens could never fit the KV pool.
  absl::StatusOr<RequestId> Submit(std::vector<int32_t> prompt, const RequestParams& params,
                                   StreamCallback on_event = nullptr);
  // Aborts every unfinished completion of the request and frees its pages at
  // once. kNotFound for an unknown id; finished requests are left alone.
  absl::Status Cancel(RequestId id);
  // One scheduling + forward + sampling step. A no-op without work.
  absl::Status Step();
  bool HasWork() const { return !running_.empty() || !waiting_.empty(); }

  // Output so far (complete once finished()); null for an unknown id.
  const RequestOutput* output(RequestId id) const;
  // Drops a finished request's output. kFailedPrecondition while running.
  absl::Status Release(RequestId id);

  int64_t num_running() const { return static_cast<int64_t>(running_.size()); }
  int64_t num_waiting() const { return static_cast<int64_t>(waiting_.size()); }
  const EngineStats& stats() const { return stats_; }
  kvstore::KvManager& kv() { return *kv_; }
  const EngineOptions& options() const { return options_; }

 private:
  struct Request;
  struct Seq;
  Engine(const LlamaModel& model, const Tokenizer* tokenizer, const EngineOptions& options,
         std::unique_ptr<kvstore::KvManager> kv);

  void Preempt(Seq* s);
  void Finish(Seq* s, FinishReason reason);
  void Emit(Seq* s, bool final);
  void SampleAndAdvance(Seq* s, std::span<const float> logits);
  void ApplyPendingCancels();
  absl::Status AbortRequest(Request* r);

  const LlamaModel& model_;
  const Tokenizer* tokenizer_;
  EngineOptions options_;
  std::unique_ptr<kvstore::KvManager> kv_;
  absl::flat_hash_map<RequestId, std::unique_ptr<Request>> requests_;
  std::deque<Seq*> waiting_;  // not holding pages
  std::vector<Seq*> running_; // admission order, oldest first
  std::vector<RequestId> pending_cancels_;
  bool in_step_ = false;
  RequestId next_id_ = 1;
  int64_t admit_counter_ = 0;
  EngineStats stats_;
};

}  // namespace atomserve
