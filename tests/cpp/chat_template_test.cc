#include "router/chat_template.h"

#include <gtest/gtest.h>

namespace atomserve {
namespace {

// SmolLM2-135M-Instruct's template, as stored in its GGUF metadata.
constexpr const char* kSmolLM2Template =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}";

TEST(ChatTemplateTest, SmolLM2AddsItsDefaultSystemPrompt) {
  ChatTemplate t = ChatTemplate::Detect(kSmolLM2Template);
  EXPECT_EQ(t.format(), ChatFormat::kChatML);
  auto out = t.Render({{"user", "Hi"}}, true);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  auto with_system = t.Render({{"system", "Be brief."}, {"user", "Hi"}}, false);
  ASSERT_TRUE(with_system.ok());
  EXPECT_EQ(*with_system, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
}

TEST(ChatTemplateTest, Llama3Format) {
  ChatTemplate t = ChatTemplate::Detect("{{ '<|start_header_id|>' + message['role'] }}");
  auto out = t.Render({{"system", "S"}, {"user", "U"}}, true);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplateTest, Llama2FormatFoldsSystemIntoFirstTurn) {
  auto t = ChatTemplate::FromName("llama2");
  ASSERT_TRUE(t.ok());
  auto out = t->Render({{"system", "S"}, {"user", "U1"}, {"assistant", "A1"}, {"user", "U2"}}, true);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU1 [/INST] A1 </s><s>[INST] U2 [/INST]");
}

TEST(ChatTemplateTest, RejectsUnknownRolesAndNames) {
  ChatTemplate t(ChatFormat::kChatML);
  EXPECT_EQ(t.Render({{"tool", "x"}}, true).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.Render({}, true).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(ChatTemplate::FromName("vicuna").ok());
}

}  // namespace
}  // namespace atomserve
