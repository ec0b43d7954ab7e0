#include "runtime/generator.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace atomserve {
namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

// Streams generated text, holding back what might still be cut.
class StopMatcher {
 public:
  StopMatcher(const std::vector<std::string>& stops, const TextCallback& cb) : stops_(stops), cb_(cb) {}

  // Appends bytes; returns true when a stop string was found (text is then
  // truncated before it).
  bool Append(const std::string& bytes) {
    text_ += bytes;
    for (const std::string& s : stops_) {
      if (s.empty()) continue;
      // A new match can only start near the end of the text.
      size_t from = text_.size() >= bytes.size() + s.size() ? text_.size() - bytes.size() - s.size() + 1 : 0;
      size_t pos = text_.find(s, from);
      if (pos != std::string::npos) {
        text_.resize(pos);
        Flush(text_.size());
        return true;
      }
    }
    Flush(SafeLength());
    return false;
  }

  void Finish() { Flush(text_.size()); }
  const std::string& text() const { return text_; }

 private:
  // Bytes that can be shown: complete UTF-8, and not a possible stop prefix.
  size_t SafeLength() const {
    size_t safe = CompleteUtf8Prefix(text_);
    for (const std::string& s : stops_) {
      for (size_t len = std::min(s.size() - 1, text_.size()); len > 0; --len) {
        if (text_.compare(text_.size() - len, len, s, 0, len) == 0) {
          safe = std::min(safe, text_.size() - len);
          break;
        }
      }
    }
    return std::max(safe, emitted_);
  }

  void Flush(size_t upto) {
    if (upto > emitted_ && cb_) cb_(text_.substr(emitted_, upto - emitted_));
    emitted_ = std::max(emitted_, upto);
  }

  const std::vector<std::string>& stops_;
  const TextCallback& cb_;
  std::string text_;
  size_t emitted_ = 0;
};

}  // namespace

size_t CompleteUtf8Prefix(const std::string& s) {
  // Look at most 3 bytes back for the lead byte of an unfinished sequence.
  const size_t n = s.size();
  for (size_t back = 1; back <= std::min<size_t>(3, n); ++back) {
    const unsigned char c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte
    size_t need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    return need > back ? n - back : n;
  }
  return n;
}

absl::StatusOr<GenerateResult> Generate(const LlamaModel& model, const Tokenizer& tokenizer,
                                        const std::vector<int32_t>& prompt,
                                        const GenerateOptions& options, const TextCallback& on_text) {
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
  ATOMSERVE_RETURN_IF_ERROR(options.sampling.Validate());
  if (options.max_tokens < 0) return absl::InvalidArgumentError("max_tokens must be >= 0");
  const int64_t context = options.context_length > 0 ? options.context_length : model.config().max_position;
  if (static_cast<int64_t>(prompt.size()) >= context)
    return absl::InvalidArgumentError(absl::StrCat("the prompt has ", prompt.size(),
                                                   " tokens; the context holds ", context));
  std::vector<int32_t> stop_ids = options.stop_token_ids;
  if (!options.ignore_eos) stop_ids.insert(stop_ids.end(), tokenizer.stop_ids().begin(), tokenizer.stop_ids().end());

  GenerateResult result;
  result.prompt_tokens = static_cast<int64_t>(prompt.size());
  const int64_t capacity = std::min<int64_t>(context, prompt.size() + options.max_tokens);
  DenseKvCache cache = model.NewCache(capacity);
  std::vector<float> logits;

  auto t0 = std::chrono::steady_clock::now();
  const int64_t chunk = std::max<int64_t>(1, options.prefill_chunk);
  for (size_t begin = 0; begin < prompt.size(); begin += chunk) {
    size_t end = std::min(prompt.size(), begin + chunk);
    ATOMSERVE_RETURN_IF_ERROR(model.Forward(std::span(prompt).subspan(begin, end - begin), cache, &logits));
  }
  result.prefill_seconds = Seconds(t0);

  auto t1 = std::chrono::steady_clock::now();
  Sampler sampler(options.sampling);
  StopMatcher matcher(options.stop, on_text);
  result.finish_reason = "length";
  while (static_cast<int64_t>(result.tokens.size()) < options.max_tokens) {
    const int32_t next = sampler.Sample(logits);
    if (std::find(stop_ids.begin(), stop_ids.end(), next) != stop_ids.end()) {
      result.finish_reason = "stop";
      break;
    }
    result.tokens.push_back(next);
    if (matcher.Append(tokenizer.DecodeToken(next))) {
      result.finish_reason = "stop";
      break;
    }
    if (static_cast<int64_t>(result.tokens.size()) >= options.max_tokens || cache.length() >= capacity) break;
    const int32_t one[1] = {next};
    ATOMSERVE_RETURN_IF_ERROR(model.Forward(one, cache, &logits));
  }
  matcher.Finish();
  result.text = matcher.text();
  result.decode_seconds = Seconds(t1);
  return result;
}

}  // namespace atomserve
