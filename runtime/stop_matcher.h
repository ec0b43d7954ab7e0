// Incremental detokenized text with stop strings, shared by the single-request
// generator (runtime/generator.cc) and the engine (runtime/engine.cc).
//
// Append() takes the bytes of each new token; text is handed to the callback
// only when it is safe to show: it ends on a complete UTF-8 character
// (CompleteUtf8Prefix) and is not a possible prefix of a stop string. When a
// stop string appears, the text is cut before it, everything before it is
// flushed, and Append() returns true. Finish() flushes what is held back.
//
// Thread safety: none (one matcher per output stream).
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

namespace atomserve {

// Length of the longest prefix of `s` that ends on a complete UTF-8 character
// (an incomplete trailing sequence is held back; invalid bytes pass through).
size_t CompleteUtf8Prefix(const std::string& s);

class StopMatcher {
 public:
  using Callback = std::function<void(const std::string& piece)>;
  StopMatcher(std::vector<std::string> stops, Callback cb) : stops_(std::move(stops)), cb_(std::move(cb)) {}

  // Appends bytes; returns true when a stop string was found (text is then
  // truncated before it).
  bool Append(const std::string& bytes);
  void Finish() { Flush(text_.size()); }
  const std::string& text() const { return text_; }
  size_t emitted() const { return emitted_; }

 private:
  size_t SafeLength() const;
  void Flush(size_t upto);

  std::vector<std::string> stops_;
  Callback cb_;
  std::string text_;
  size_t emitted_ = 0;
};

}  // namespace atomserve
