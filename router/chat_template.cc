#include "router/chat_template.h"

#include "absl/strings/str_cat.h"

namespace atomserve {
namespace {

bool Contains(std::string_view s, std::string_view needle) {
  return s.find(needle) != std::string_view::npos;
}

// SmolLM2's template inserts "<|im_start|>system\n...<|im_end|>" as a literal
// when the first message is not a system message; pull that text out.
std::string ExtractChatMLDefaultSystem(std::string_view src) {
  constexpr std::string_view kOpen = "<|im_start|>system\n";
  size_t start = src.find(kOpen);
  if (start == std::string_view::npos) return "";
  start += kOpen.size();
  size_t end = src.find("<|im_end|>", start);
  if (end == std::string_view::npos) return "";
  std::string_view text = src.substr(start, end - start);
  // A Jinja expression here means the system text comes from the messages.
  if (Contains(text, "{{") || Contains(text, "'")) return "";
  return std::string(text);
}

absl::Status CheckRole(const ChatMessage& m) {
  if (m.role == "system" || m.role == "user" || m.role == "assistant") return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("unknown message role '", m.role, "' (expected system, user or assistant)"));
}

}  // namespace

ChatTemplate ChatTemplate::Detect(std::string_view src) {
  if (Contains(src, "<|start_header_id|>")) return ChatTemplate(ChatFormat::kLlama3);
  if (Contains(src, "[INST]")) return ChatTemplate(ChatFormat::kLlama2);
  return ChatTemplate(ChatFormat::kChatML, ExtractChatMLDefaultSystem(src));
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromName(std::string_view name) {
  if (name == "chatml") return ChatTemplate(ChatFormat::kChatML);
  if (name == "llama2") return ChatTemplate(ChatFormat::kLlama2);
  if (name == "llama3") return ChatTemplate(ChatFormat::kLlama3);
  return absl::InvalidArgumentError(
      absl::StrCat("unknown chat template '", std::string(name), "' (expected chatml, llama2 or llama3)"));
}

std::string_view ChatTemplate::name() const {
  switch (format_) {
    case ChatFormat::kChatML: return "chatml";
    case ChatFormat::kLlama2: return "llama2";
    case ChatFormat::kLlama3: return "llama3";
  }
  return "chatml";
}

absl::StatusOr<std::string> ChatTemplate::Render(const std::vector<ChatMessage>& messages,
                                                 bool add_generation_prompt) const {
  if (messages.empty()) return absl::InvalidArgumentError("messages must not be empty");
  for (const ChatMessage& m : messages) {
    if (auto st = CheckRole(m); !st.ok()) return st;
  }
  std::string out;
  switch (format_) {
    case ChatFormat::kChatML: {
      if (messages.front().role != "system" && !default_system_.empty())
        absl::StrAppend(&out, "<|im_start|>system\n", default_system_, "<|im_end|>\n");
      for (const ChatMessage& m : messages)
        absl::StrAppend(&out, "<|im_start|>", m.role, "\n", m.content, "<|im_end|>\n");
      if (add_generation_prompt) absl::StrAppend(&out, "<|im_start|>assistant\n");
      break;
    }
    case ChatFormat::kLlama3: {
      out = "<|begin_of_text|>";
      for (const ChatMessage& m : messages)
        absl::StrAppend(&out, "<|start_header_id|>", m.role, "<|end_header_id|>\n\n", m.content,
                        "<|eot_id|>");
      if (add_generation_prompt) absl::StrAppend(&out, "<|start_header_id|>assistant<|end_header_id|>\n\n");
      break;
    }
    case ChatFormat::kLlama2: {
      // <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] ...
      size_t i = 0;
      std::string system;
      if (messages[0].role == "system") {
        system = messages[0].content;
        i = 1;
      }
      bool first_user = true;
      for (; i < messages.size(); ++i) {
        const ChatMessage& m = messages[i];
        if (m.role == "user") {
          std::string content = m.content;
          if (first_user && !system.empty())
            content = absl::StrCat("<<SYS>>\n", system, "\n<</SYS>>\n\n", content);
          absl::StrAppend(&out, "<s>[INST] ", content, " [/INST]");
          first_user = false;
        } else if (m.role == "assistant") {
          absl::StrAppend(&out, " ", m.content, " </s>");
        } else {
          return absl::InvalidArgumentError("llama2 format allows a system message only first");
        }
      }
      (void)add_generation_prompt;  // the prompt already ends with [/INST]
      break;
    }
  }
  return out;
}

}  // namespace atomserve
