// Engine tests: batched vs alone (fp32 and W4A4), prefix-cache hits vs cold,
// preemption vs none, and a randomized property test against a tiny pool.
#include "runtime/engine.h"

#include <gtest/gtest.h>

#include <map>
#include <random>

#include "runtime/atom_quantizer.h"
#include "tests/cpp/atom_random_model.h"

namespace atomserve {
namespace {

using testing::RandomIds;

struct Fixture {
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<Tokenizer> tokenizer;
};

Fixture MakeModel(const testing::RandomLlamaOptions& o) {
  Checkpoint ck = testing::RandomLlamaCheckpoint(o);
  Fixture f;
  TokenizerSpec spec = ck.tokenizer;
  spec.merges.clear();  // decode-only use: the ids map to "tok<i>"
  auto tok = Tokenizer::Create(spec);
  EXPECT_TRUE(tok.ok()) << tok.status();
  f.tokenizer = std::move(*tok);
  auto m = LlamaModel::Create(std::move(ck));
  EXPECT_TRUE(m.ok()) << m.status();
  f.model = std::move(*m);
  return f;
}

const Fixture& SmallModel() {
  static const Fixture* f = [] {
    testing::RandomLlamaOptions o;
    o.hidden = 64;
    o.intermediate = 128;
    o.heads = 4;
    o.kv_heads = 2;
    return new Fixture(MakeModel(o));
  }();
  return *f;
}

const Fixture& AtomModel() {
  static const Fixture* f = [] {
    Fixture* fx = new Fixture(MakeModel({}));
    quant::QuantRecipe r;
    r.keeper = 128;
    r.gptq = false;
    auto w = CalibrateAndQuantize(*fx->model, RandomIds(256, 300, 11), r, /*seq_len=*/128);
    EXPECT_TRUE(w.ok()) << w.status();
    auto m = LlamaModel::Create(fx->model->config(), std::move(*w), r);
    EXPECT_TRUE(m.ok()) << m.status();
    fx->model = std::move(*m);
    fx->model->set_kv_precision(KvPrecision::kInt4PreRope);
    return fx;
  }();
  return *f;
}

std::unique_ptr<Engine> NewEngine(const Fixture& f, EngineOptions o) {
  auto e = Engine::Create(*f.model, f.tokenizer.get(), o);
  EXPECT_TRUE(e.ok()) << e.status();
  return std::move(*e);
}

RequestParams Greedy(int64_t max_tokens, int n = 1) {
  RequestParams p;
  p.max_tokens = max_tokens;
  p.ignore_eos = true;
  p.n = n;
  return p;
}

void Drain(Engine& e) {
  for (int guard = 0; e.HasWork(); ++guard) {
    ASSERT_TRUE(e.Step().ok());
    ASSERT_LT(guard, 100000);
  }
}

// Runs every prompt through `e` together; returns completion tokens by request order.
std::vector<std::vector<std::vector<int32_t>>> RunBatch(Engine& e, const std::vector<std::vector<int32_t>>& prompts,
                                                        const RequestParams& p) {
  std::vector<RequestId> ids;
  for (const auto& pr : prompts) {
    auto id = e.Submit(pr, p);
    EXPECT_TRUE(id.ok()) << id.status();
    ids.push_back(*id);
  }
  Drain(e);
  std::vector<std::vector<std::vector<int32_t>>> out;
  for (RequestId id : ids) {
    const RequestOutput* o = e.output(id);
    EXPECT_TRUE(o && o->finished());
    out.emplace_back();
    for (const auto& c : o->completions) out.back().push_back(c.tokens);
  }
  return out;
}

std::vector<std::vector<int32_t>> Prompts(int count, uint64_t seed, int max_len = 40) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int32_t>> v;
  for (int i = 0; i < count; ++i) v.push_back(RandomIds(3 + rng() % (max_len - 2), 300, seed * 100 + i));
  return v;
}

void CheckBatchedMatchesAlone(const Fixture& f) {
  const auto prompts = Prompts(8, 3);
  EngineOptions big;
  big.num_pages = 256;
  big.tokens_per_page = 8;
  big.max_step_tokens = 48;  // forces chunked prefill mixed with decode
  auto batched = NewEngine(f, big);
  const auto got = RunBatch(*batched, prompts, Greedy(10));
  EXPECT_GT(batched->stats().max_batch_tokens, 10);
  for (size_t i = 0; i < prompts.size(); ++i) {
    EngineOptions alone = big;
    alone.max_running = 1;
    alone.enable_prefix_caching = false;
    alone.max_step_tokens = 1000;
    auto e = NewEngine(f, alone);
    const auto want = RunBatch(*e, {prompts[i]}, Greedy(10));
    EXPECT_EQ(got[i], want[0]) << "request " << i;
  }
}

TEST(EngineTest, BatchedGreedyMatchesAloneFp32) { CheckBatchedMatchesAlone(SmallModel()); }
TEST(EngineTest, BatchedGreedyMatchesAloneW4A4) { CheckBatchedMatchesAlone(AtomModel()); }

TEST(EngineTest, ForksMatchSingleGreedy) {
  const Fixture& f = SmallModel();
  EngineOptions o;
  o.num_pages = 128;
  o.tokens_per_page = 4;
  auto e = NewEngine(f, o);
  const auto prompts = Prompts(3, 5);
  const auto forked = RunBatch(*e, prompts, Greedy(9, 3));
  auto e2 = NewEngine(f, o);
  const auto single = RunBatch(*e2, prompts, Greedy(9, 1));
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_EQ(forked[i].size(), 3u);
    for (const auto& c : forked[i]) EXPECT_EQ(c, single[i][0]);
  }
  ASSERT_TRUE(e->kv().Validate().ok());
}

TEST(EngineTest, PrefixHitMatchesColdRun) {
  const Fixture& f = SmallModel();
  std::vector<int32_t> prefix = RandomIds(37, 300, 77);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 4; ++i) {
    auto p = prefix;
    auto tail = RandomIds(1 + i * 3, 300, 200 + i);
    p.insert(p.end(), tail.begin(), tail.end());
    prompts.push_back(p);
  }
  prompts.push_back(prefix);  // fully cached but the last token
  EngineOptions o;
  o.num_pages = 128;
  o.tokens_per_page = 4;
  auto warm = NewEngine(f, o);
  RunBatch(*warm, {prefix}, Greedy(4));
  std::vector<std::vector<std::vector<int32_t>>> hot;
  for (const auto& p : prompts) {
    auto id = warm->Submit(p, Greedy(8));
    ASSERT_TRUE(id.ok());
    Drain(*warm);
    EXPECT_GE(warm->output(*id)->cached_prompt_tokens, 32);
    hot.push_back({warm->output(*id)->completions[0].tokens});
  }
  EXPECT_GT(warm->kv().stats().prefix.hit_tokens, 0);
  EngineOptions cold_o = o;
  cold_o.enable_prefix_caching = false;
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto cold = NewEngine(f, cold_o);
    EXPECT_EQ(hot[i], RunBatch(*cold, {prompts[i]}, Greedy(8))[0]) << "prompt " << i;
  }
}

TEST(EngineTest, PreemptionKeepsOutputs) {
  const Fixture& f = SmallModel();
  const auto prompts = Prompts(6, 9, 20);
  EngineOptions tiny;
  tiny.num_pages = 14;
  tiny.tokens_per_page = 4;
  tiny.max_step_tokens = 64;
  auto e = NewEngine(f, tiny);
  const auto got = RunBatch(*e, prompts, Greedy(24, 2));
  EXPECT_GT(e->stats().preemptions, 0);
  EngineOptions big = tiny;
  big.num_pages = 512;
  auto ref = NewEngine(f, big);
  const auto want = RunBatch(*ref, prompts, Greedy(24, 2));
  EXPECT_EQ(ref->stats().preemptions, 0);
  EXPECT_EQ(got, want);
  ASSERT_TRUE(e->kv().Validate().ok());
  e->kv().EvictAllCached();
  EXPECT_EQ(e->kv().available_pages(), tiny.num_pages);
}

TEST(EngineTest, RejectsWhatNeverFitsAndBadParams) {
  const Fixture& f = SmallModel();
  EngineOptions o;
  o.num_pages = 4;
  o.tokens_per_page = 4;
  auto e = NewEngine(f, o);
  auto r = e->Submit(RandomIds(10, 300, 1), Greedy(10));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(r.status().message().empty());
  EXPECT_EQ(e->Submit({}, Greedy(1)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(e->Submit({5, 999}, Greedy(1)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(e->Submit({5}, Greedy(1, 0)).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(EngineTest, StopStringsAndStreaming) {
  const Fixture& f = SmallModel();
  EngineOptions o;
  o.num_pages = 64;
  auto e = NewEngine(f, o);
  // Find what greedy generates, then stop on the text of its 3rd token.
  const auto prompt = RandomIds(12, 300, 4);
  const auto base = RunBatch(*e, {prompt}, Greedy(6))[0][0];
  ASSERT_EQ(base.size(), 6u);
  RequestParams p = Greedy(6);
  p.stop = {f.tokenizer->DecodeToken(base[2])};
  std::string streamed;
  FinishReason fin = FinishReason::kNone;
  auto id = e->Submit(prompt, p, [&](const StreamEvent& ev) {
    streamed += ev.text;
    if (ev.finish != FinishReason::kNone) fin = ev.finish;
  });
  ASSERT_TRUE(id.ok());
  Drain(*e);
  const auto& c = e->output(*id)->completions[0];
  EXPECT_EQ(c.finish, FinishReason::kStop);
  EXPECT_EQ(fin, FinishReason::kStop);
  EXPECT_EQ(streamed, c.text);
  EXPECT_EQ(c.text.find(p.stop[0]), std::string::npos);
}

// Randomized mixes against a tiny pool: every request finishes (stop, length,
// abort) or is rejected with a reason; the pool returns to full.
TEST(EngineTest, RandomMixesProperty) {
  const Fixture& f = SmallModel();
  std::mt19937_64 rng(2024);
  int preempted_runs = 0, aborted = 0, rejected = 0, finished = 0;
  const int kRuns = 1500;
  for (int run = 0; run < kRuns; ++run) {
    EngineOptions o;
    o.tokens_per_page = 1 + rng() % 6;
    o.num_pages = 6 + rng() % 30;
    o.max_step_tokens = 1 + rng() % 48;
    o.max_running = 1 + rng() % 8;
    o.enable_prefix_caching = rng() % 4 != 0;
    auto e = NewEngine(f, o);
    std::vector<std::vector<int32_t>> prefixes = {RandomIds(1 + rng() % 20, 300, rng()),
                                                  RandomIds(1 + rng() % 20, 300, rng())};
    std::map<RequestId, std::string> streamed;
    std::map<RequestId, int> cancel_at;
    std::vector<RequestId> ids;
    const int requests = 1 + rng() % 10;
    int step = 0;
    auto submit = [&] {
      std::vector<int32_t> p = prefixes[rng() % 2];
      if (rng() % 3 == 0) p.clear();
      auto tail = RandomIds(rng() % 12 + (p.empty() ? 1 : 0), 300, rng());
      p.insert(p.end(), tail.begin(), tail.end());
      RequestParams rp;
      rp.max_tokens = rng() % 16;
      rp.n = 1 + rng() % 3;
      rp.ignore_eos = rng() % 2;
      rp.sampling.temperature = rng() % 2 ? 0.0f : 0.8f;
      rp.sampling.seed = rng();
      if (rng() % 4 == 0) rp.stop = {"tok1"};
      Engine* eng = e.get();
      const bool cancel_in_cb = rng() % 8 == 0;
      auto id = e->Submit(p, rp, [&streamed, eng, cancel_in_cb](const StreamEvent& ev) {
        streamed[ev.request] += ev.text;
        if (cancel_in_cb && !ev.new_tokens.empty()) ASSERT_TRUE(eng->Cancel(ev.request).ok());
      });
      if (!id.ok()) {
        EXPECT_EQ(id.status().code(), absl::StatusCode::kResourceExhausted) << id.status();
        EXPECT_FALSE(id.status().message().empty());
        ++rejected;
        return;
      }
      ids.push_back(*id);
      if (rng() % 4 == 0) cancel_at[*id] = step + rng() % 12;
    };
    for (int i = 0; i < requests; ++i) submit();
    for (int guard = 0; e->HasWork(); ++guard) {
      ASSERT_TRUE(e->Step().ok());
      ++step;
      if (step < 60 && rng() % 5 == 0) submit();
      for (auto& [id, at] : cancel_at) {
        if (at == step) ASSERT_TRUE(e->Cancel(id).ok());
      }
      if (rng() % 7 == 0) ASSERT_TRUE(e->kv().Validate().ok());
      ASSERT_LT(guard, 20000) << "no progress: running " << e->num_running() << " waiting " << e->num_waiting()
                              << " avail " << e->kv().available_pages() << " pages " << o.num_pages << " T "
                              << o.tokens_per_page << " budget " << o.max_step_tokens << " maxrun " << o.max_running
                              << " preempt " << e->stats().preemptions << " gen " << e->stats().generated_tokens
                              << " seqs " << e->kv().num_sequences();
    }
    if (e->stats().preemptions > 0) ++preempted_runs;
    for (RequestId id : ids) {
      const RequestOutput* out = e->output(id);
      ASSERT_TRUE(out != nullptr && out->finished());
      std::string all;
      for (const auto& c : out->completions) {
        ASSERT_NE(c.finish, FinishReason::kNone);
        if (c.finish == FinishReason::kAbort) ++aborted; else ++finished;
        all += c.text;
      }
      if (out->completions.size() == 1) EXPECT_EQ(streamed[id], all);
      ASSERT_TRUE(e->Release(id).ok());
    }
    ASSERT_TRUE(e->kv().Validate().ok());
    EXPECT_EQ(e->kv().num_sequences(), 0);
    e->kv().EvictAllCached();
    EXPECT_EQ(e->kv().available_pages(), o.num_pages) << "run " << run;
  }
  EXPECT_GT(preempted_runs, 0);
  EXPECT_GT(aborted, 0);
  EXPECT_GT(finished, 0);
  EXPECT_GT(rejected, 0);
}

}  // namespace
}  // namespace atomserve
