#include "runtime/engine.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace atomserve {

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kNone: return "";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kAbort: return "abort";
  }
  return "?";
}

bool RequestOutput::finished() const {
  for (const CompletionOutput& c : completions) {
    if (c.finish == FinishReason::kNone) return false;
  }
  return true;
}

struct Engine::Seq {
  Request* req = nullptr;
  int32_t index = 0;
  std::vector<int32_t> tokens;  // prompt + generated: what a recompute feeds
  kvstore::SeqId kv = -1;       // -1: holds no pages
  int64_t preempted_step = -1;
  std::optional<Sampler> sampler;
  std::optional<StopMatcher> matcher;
  std::string pending_text;
  std::vector<int32_t> pending_tokens;
  FinishReason finish = FinishReason::kNone;
};

struct Engine::Request {
  RequestId id = 0;
  RequestParams params;
  StreamCallback cb;
  std::vector<int32_t> stop_ids;
  RequestOutput output;
  std::vector<std::unique_ptr<Seq>> seqs;  // n; 1..n-1 start at the fork
  bool forked = false;
  bool first_admission = true;
};

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const LlamaModel& model, const Tokenizer* tokenizer,
                                                       const EngineOptions& options) {
  if (options.max_step_tokens < 1) return absl::InvalidArgumentError("max_step_tokens must be >= 1");
  if (options.max_running < 1) return absl::InvalidArgumentError("max_running must be >= 1");
  const ModelConfig& c = model.config();
  kvstore::KvManagerOptions kv;
  kv.geometry = {c.num_layers, c.num_kv_heads, c.head_dim, options.tokens_per_page, options.kv_dtype};
  if (const char* err = kvstore::KvGeometryError(kv.geometry)) return absl::InvalidArgumentError(err);
  const kvstore::PageLayout layout = kvstore::PageLayout::Compute(kv.geometry);
  kv.num_pages = options.num_pages > 0 ? options.num_pages : options.kv_budget_bytes / layout.page_bytes;
  if (kv.num_pages < 1) return absl::InvalidArgumentError("the KV budget holds no page");
  kv.model_identity = options.model_identity.empty()
                          ? absl::StrCat(c.name, "|", model.quantized() ? "w4a4" : "fp32", "|",
                                         KvPrecisionName(model.kv_precision()))
                          : options.model_identity;
  kv.enable_prefix_caching = options.enable_prefix_caching;
  ATOMSERVE_ASSIGN_OR_RETURN(std::unique_ptr<kvstore::KvManager> manager, kvstore::KvManager::Create(kv));
  return std::unique_ptr<Engine>(new Engine(model, tokenizer, options, std::move(manager)));
}

Engine::Engine(const LlamaModel& model, const Tokenizer* tokenizer, const EngineOptions& options,
               std::unique_ptr<kvstore::KvManager> kv)
    : model_(model), tokenizer_(tokenizer), options_(options), kv_(std::move(kv)) {}

Engine::~Engine() = default;

absl::StatusOr<RequestId> Engine::Submit(std::vector<int32_t> prompt, const RequestParams& params,
                                         StreamCallback on_event) {
  const ModelConfig& c = model_.config();
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
  for (int32_t id : prompt) {
    if (id < 0 || id >= c.vocab_size)
      return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is outside the vocabulary [0, ",
                                                     c.vocab_size, ")"));
  }
  ATOMSERVE_RETURN_IF_ERROR(params.sampling.Validate());
  if (params.n < 1) return absl::InvalidArgumentError("n must be >= 1");
  if (params.max_tokens < 0) return absl::InvalidArgumentError("max_tokens must be >= 0");
  const int64_t len = static_cast<int64_t>(prompt.size());
  if (len >= c.max_position)
    return absl::InvalidArgumentError(absl::StrCat("the prompt has ", len, " tokens; the context holds ",
                                                   c.max_position));
  const int64_t T = kv_->tokens_per_page();
  const int64_t total = std::min<int64_t>(len + params.max_tokens, c.max_position);
  const int64_t pages = (total + T - 1) / T;
  if (pages > kv_->pool().num_pages())
    return absl::ResourceExhaustedError(absl::StrCat("the request needs ", pages, " KV pages (", total,
                                                     " tokens) but the pool has ", kv_->pool().num_pages()));

  auto r = std::make_unique<Request>();
  r->id = next_id_++;
  r->params = params;
  r->cb = std::move(on_event);
  r->stop_ids = params.stop_token_ids;
  if (!params.ignore_eos && tokenizer_)
    r->stop_ids.insert(r->stop_ids.end(), tokenizer_->stop_ids().begin(), tokenizer_->stop_ids().end());
  r->output.id = r->id;
  r->output.prompt_tokens = len;
  r->output.completions.resize(params.n);
  for (int32_t i = 0; i < params.n; ++i) {
    auto s = std::make_unique<Seq>();
    s->req = r.get();
    s->index = i;
    SamplingParams sp = params.sampling;
    sp.seed += static_cast<uint64_t>(i);
    s->sampler.emplace(sp);
    Seq* raw = s.get();
    s->matcher.emplace(params.stop, [raw](const std::string& piece) { raw->pending_text += piece; });
    r->seqs.push_back(std::move(s));
  }
  r->seqs[0]->tokens = std::move(prompt);
  Request* req = r.get();
  requests_[r->id] = std::move(r);
  if (params.max_tokens == 0) {
    for (auto& s : req->seqs) Finish(s.get(), FinishReason::kLength);
  } else {
    waiting_.push_back(req->seqs[0].get());
  }
  return req->id;
}

void Engine::Emit(Seq* s, bool final) {
  Request* r = s->req;
  if (!r->cb || (!final && s->pending_text.empty() && s->pending_tokens.empty())) return;
  StreamEvent e;
  e.request = r->id;
  e.index = s->index;
  e.new_tokens = std::move(s->pending_tokens);
  e.text = std::move(s->pending_text);
  e.finish = final ? s->finish : FinishReason::kNone;
  s->pending_tokens.clear();
  s->pending_text.clear();
  r->cb(e);
}

void Engine::Finish(Seq* s, FinishReason reason) {
  if (s->finish != FinishReason::kNone) return;
  if (s->kv >= 0) {
    ATOMSERVE_CHECK(kv_->Free(s->kv).ok());
    s->kv = -1;
  }
  running_.erase(std::remove(running_.begin(), running_.end(), s), running_.end());
  waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), s), waiting_.end());
  s->finish = reason;
  CompletionOutput& out = s->req->output.completions[s->index];
  if (reason != FinishReason::kAbort) {
    s->matcher->Finish();
    out.text = s->matcher->text();
  } else {
    out.text = s->matcher->text().substr(0, s->matcher->emitted());
  }
  out.finish = reason;
  Emit(s, true);
}

void Engine::Preempt(Seq* s) {
  ATOMSERVE_CHECK(kv_->Free(s->kv).ok());
  s->kv = -1;
  running_.erase(std::remove(running_.begin(), running_.end(), s), running_.end());
  waiting_.push_front(s);
  s->preempted_step = stats_.steps;
  s->req->output.completions[s->index].preemptions++;
  stats_.preemptions++;
}

absl::Status Engine::AbortRequest(Request* r) {
  for (auto& s : r->seqs) Finish(s.get(), FinishReason::kAbort);
  return absl::OkStatus();
}

absl::Status Engine::Cancel(RequestId id) {
  auto it = requests_.find(id);
  if (it == requests_.end()) return absl::NotFoundError(absl::StrCat("no request ", id));
  if (in_step_) {
    pending_cancels_.push_back(id);
    return absl::OkStatus();
  }
  return AbortRequest(it->second.get());
}

void Engine::ApplyPendingCancels() {
  std::vector<RequestId> ids;
  ids.swap(pending_cancels_);
  for (RequestId id : ids) {
    auto it = requests_.find(id);
    if (it != requests_.end()) (void)AbortRequest(it->second.get());
  }
}

void Engine::SampleAndAdvance(Seq* s, std::span<const float> logits) {
  Request* r = s->req;
  const int32_t tok = s->sampler->Sample(logits);
  if (std::find(r->stop_ids.begin(), r->stop_ids.end(), tok) != r->stop_ids.end()) {
    Finish(s, FinishReason::kStop);
    return;
  }
  CompletionOutput& out = r->output.completions[s->index];
  s->tokens.push_back(tok);
  out.tokens.push_back(tok);
  s->pending_tokens.push_back(tok);
  stats_.generated_tokens++;
  const int32_t one[1] = {tok};
  ATOMSERVE_CHECK(kv_->AppendTokens(s->kv, one).ok());
  const bool stop = tokenizer_ && s->matcher->Append(tokenizer_->DecodeToken(tok));
  if (stop) {
    Finish(s, FinishReason::kStop);
  } else if (static_cast<int64_t>(out.tokens.size()) >= r->params.max_tokens ||
             static_cast<int64_t>(s->tokens.size()) >= model_.config().max_position) {
    Finish(s, FinishReason::kLength);
  } else {
    Emit(s, false);
  }
}

absl::Status Engine::Step() {
  if (!HasWork()) return absl::OkStatus();
  in_step_ = true;
  struct Scheduled {
    Seq* seq;
    int64_t start, count;
  };
  std::vector<Scheduled> sched;
  int64_t budget = options_.max_step_tokens;

  // 1. Running sequences, oldest first; preempt the youngest for pages.
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    Seq* s = running_[i];
    ATOMSERVE_ASSIGN_OR_RETURN(kvstore::SequenceView view, kv_->sequence(s->kv));
    const int64_t start = view.num_computed;
    const int64_t chunk = std::min<int64_t>(static_cast<int64_t>(view.tokens.size()) - start, budget);
    if (chunk <= 0) continue;
    bool self = false;
    while (true) {
      ATOMSERVE_ASSIGN_OR_RETURN(int64_t need, kv_->PagesNeeded(s->kv, chunk));
      if (need <= kv_->available_pages()) break;
      Seq* victim = running_.back();
      Preempt(victim);
      if (victim == s) {
        self = true;
        break;
      }
    }
    if (self) break;
    ATOMSERVE_RETURN_IF_ERROR(kv_->Reserve(s->kv, chunk));
    sched.push_back({s, start, chunk});
    budget -= chunk;
  }

  // 2. Admission, FIFO, while the budget, max_running and the pages allow.
  while (!waiting_.empty() && budget > 0 && static_cast<int64_t>(running_.size()) < options_.max_running) {
    Seq* s = waiting_.front();
    if (s->preempted_step == stats_.steps) break;
    kvstore::AddSequenceOptions ao;
    ao.use_prefix_cache = s->req->params.use_prefix_cache;
    const int64_t len = static_cast<int64_t>(s->tokens.size());
    const int64_t cached = kv_->CachedPrefixTokens(s->tokens, ao);
    const int64_t want = std::min<int64_t>(len - cached, budget);
    if (kv_->PagesToAdmit(s->tokens, want, ao) > kv_->available_pages()) break;
    ATOMSERVE_ASSIGN_OR_RETURN(kvstore::SeqId id, kv_->AddSequence(s->tokens, ao));
    ATOMSERVE_ASSIGN_OR_RETURN(kvstore::SequenceView view, kv_->sequence(id));
    const int64_t start = view.num_computed;
    const int64_t chunk = std::min<int64_t>(len - start, budget);
    if (s->req->first_admission) {
      s->req->output.cached_prompt_tokens = view.cached_prefix_tokens;
      s->req->first_admission = false;
    }
    absl::Status st = kv_->Reserve(id, chunk);
    if (!st.ok()) {
      ATOMSERVE_CHECK(kv_->Free(id).ok());
      if (st.code() == absl::StatusCode::kResourceExhausted) break;
      return st;
    }
    s->kv = id;
    waiting_.pop_front();
    running_.push_back(s);
    sched.push_back({s, start, chunk});
    budget -= chunk;
  }

  if (sched.empty()) {
    stats_.steps++;
    in_step_ = false;
    ApplyPendingCancels();
    if (running_.empty() && !waiting_.empty() && waiting_.front()->preempted_step != stats_.steps - 1)
      return absl::InternalError("engine: no sequence could be scheduled");
    return absl::OkStatus();
  }

  // 3. One batched forward over every scheduled token.
  BatchStep step;
  for (const Scheduled& sc : sched) {
    Seq* s = sc.seq;
    step.ids.insert(step.ids.end(), s->tokens.begin() + sc.start, s->tokens.begin() + sc.start + sc.count);
    const bool last = sc.start + sc.count == static_cast<int64_t>(s->tokens.size());
    step.seqs.push_back({s->kv, sc.start, sc.count, last});
    const int64_t prompt = s->req->output.prompt_tokens;
    if (sc.count == 1 && sc.start >= prompt) {
      stats_.decode_tokens++;
    } else {
      stats_.prefill_tokens += sc.count;
    }
  }
  stats_.max_batch_tokens = std::max(stats_.max_batch_tokens, step.num_tokens());
  std::vector<float> logits;
  const auto t0 = std::chrono::steady_clock::now();
  absl::Status st = model_.ForwardBatch(step, *kv_, &logits);
  stats_.forward_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!st.ok()) {
    in_step_ = false;
    return st;
  }

  // 4. Sampling for the sequences whose chunk reached their last token.
  const int64_t vocab = model_.config().vocab_size;
  int64_t row = 0;
  for (size_t i = 0; i < sched.size(); ++i) {
    if (!step.seqs[i].want_logits) continue;
    std::span<const float> lg(logits.data() + row * vocab, vocab);
    ++row;
    Seq* s = sched[i].seq;
    if (s->finish != FinishReason::kNone) continue;  // cancelled by a callback
    Request* r = s->req;
    std::vector<Seq*> targets = {s};
    if (s->index == 0 && !r->forked) {
      r->forked = true;
      for (size_t c = 1; c < r->seqs.size(); ++c) {
        Seq* child = r->seqs[c].get();
        if (child->finish != FinishReason::kNone) continue;
        ATOMSERVE_ASSIGN_OR_RETURN(child->kv, kv_->Fork(s->kv));
        child->tokens = s->tokens;
        running_.push_back(child);
        targets.push_back(child);
      }
    }
    for (Seq* t : targets) {
      if (t->finish != FinishReason::kNone) continue;
      SampleAndAdvance(t, lg);
      in_step_ = false;
      ApplyPendingCancels();
      in_step_ = true;
    }
  }
  stats_.steps++;
  in_step_ = false;
  ApplyPendingCancels();
  return absl::OkStatus();
}

const RequestOutput* Engine::output(RequestId id) const {
  auto it = requests_.find(id);
  return it == requests_.end() ? nullptr : &it->second->output;
}

absl::Status Engine::Release(RequestId id) {
  auto it = requests_.find(id);
  if (it == requests_.end()) return absl::NotFoundError(absl::StrCat("no request ", id));
  if (!it->second->output.finished())
    return absl::FailedPreconditionError(absl::StrCat("request ", id, " is still running"));
  requests_.erase(it);
  return absl::OkStatus();
}

}  // namespace atomserve
