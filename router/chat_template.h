// Chat templates: turn a list of messages into the prompt text a model was
// trained on.
//
// Three formats are built in: ChatML (SmolLM2, Qwen), Llama-2 ([INST] ...
// [/INST]) and Llama-3 (<|start_header_id|> ...). Detect() picks one from a
// checkpoint's Jinja template by its marker tokens, so no Jinja engine runs on
// user-controlled input. ChatML's default system prompt, when the checkpoint's
// template inserts one, is extracted from the template text.
//
//   ChatTemplate t = ChatTemplate::Detect(spec.chat_template);
//   std::string prompt = t.Render({{"user", "Hi"}}, /*add_generation_prompt=*/true);
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace atomserve {

struct ChatMessage {
  std::string role;     // "system", "user", "assistant"
  std::string content;
};

enum class ChatFormat { kChatML, kLlama2, kLlama3 };

class ChatTemplate {
 public:
  explicit ChatTemplate(ChatFormat format, std::string default_system = "")
      : format_(format), default_system_(std::move(default_system)) {}

  // Chooses the format from a Jinja template's text; ChatML when empty or
  // unrecognised.
  static ChatTemplate Detect(std::string_view jinja_source);
  // By name: "chatml", "llama2", "llama3". kInvalidArgument otherwise.
  static absl::StatusOr<ChatTemplate> FromName(std::string_view name);

  ChatFormat format() const { return format_; }
  std::string_view name() const;
  const std::string& default_system() const { return default_system_; }

  // Errors: kInvalidArgument for an unknown role or an empty message list.
  absl::StatusOr<std::string> Render(const std::vector<ChatMessage>& messages,
                                     bool add_generation_prompt) const;

 private:
  ChatFormat format_;
  std::string default_system_;
};

}  // namespace atomserve
