// ChatTemplate: family detection and rendering. The ChatML goldens follow SmolLM2's Jinja
// template (quoted below from its GGUF metadata; the Python test renders the real file's
// template with jinja2 and compares); the Llama 3 goldens follow Meta's published prompt format
// ("<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>", content trimmed, BOS
// left to the tokenizer).
#include "model/chat_template.h"

#include <unistd.h>

#include <cstdlib>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/gguf.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;

// SmolLM2-135M-Instruct's tokenizer.chat_template (real newlines inside the string literals).
constexpr char kSmolLM2Template[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}";

// Meta Llama 3 Instruct's template (as its tokenizer_config.json has it).
constexpr char kLlama3Template[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

TEST(ChatTemplateTest, ChatMlWithSmolLM2DefaultSystemPrompt) {
  auto t = ChatTemplate::FromJinja(kSmolLM2Template);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->format(), ChatFormat::kChatMl);
  EXPECT_EQ(t->default_system_prompt(),
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  const std::vector<ChatMessage> conv = {{"user", "What is 2+2?"}};
  EXPECT_EQ(*t->Render(conv, true),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n");
  // A system message of the caller's replaces the default; content is not trimmed.
  const std::vector<ChatMessage> conv2 = {
      {"system", "Be brief."}, {"user", " hi "}, {"assistant", "Hello."}};
  EXPECT_EQ(*t->Render(conv2, false),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n hi <|im_end|>\n"
            "<|im_start|>assistant\nHello.<|im_end|>\n");
  // No messages: the loop (and the default system prompt inside it) never runs.
  EXPECT_EQ(*t->Render({}, true), "<|im_start|>assistant\n");
}

TEST(ChatTemplateTest, PlainChatMlHasNoDefaultSystemPrompt) {
  // The generic ChatML template (role and content from variables only).
  auto t = ChatTemplate::FromJinja(
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
      "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
      "{{ '<|im_start|>assistant\\n' }}{% endif %}");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->default_system_prompt(), "");
  const std::vector<ChatMessage> conv = {{"user", "Hi"}};
  EXPECT_EQ(*t->Render(conv, true), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplateTest, Llama3) {
  auto t = ChatTemplate::FromJinja(kLlama3Template);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->format(), ChatFormat::kLlama3);
  const std::vector<ChatMessage> conv = {{"system", "You are terse."},
                                         {"user", "  Capital of France?\n"}};
  EXPECT_EQ(*t->Render(conv, true),
            "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nCapital of France?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplateTest, UnknownTemplateNamesWhatItFound) {
  auto t = ChatTemplate::FromJinja("{% for m in messages %}[INST] {{ m['content'] }} [/INST]",
                                   "model.gguf: tokenizer.chat_template");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr("model.gguf: tokenizer.chat_template"));
  EXPECT_THAT(t.status().message(), HasSubstr("[INST]"));
  EXPECT_THAT(t.status().message(), HasSubstr("<|im_start|>"));
  EXPECT_THAT(ChatTemplate::FromJinja("").status().message(), HasSubstr("empty"));
  EXPECT_FALSE(ChatTemplate::FromName("vicuna").ok());
  EXPECT_EQ(ChatTemplate::FromName("llama3")->format(), ChatFormat::kLlama3);
}

TEST(ChatTemplateTest, EmptyRoleIsAnError) {
  auto t = ChatTemplate::FromName("chatml");
  const std::vector<ChatMessage> conv = {{"", "x"}};
  EXPECT_THAT(t->Render(conv, true).status().message(), HasSubstr("message 0 has an empty role"));
}

TEST(ChatTemplateTest, RealSmolLM2File) {
  const char* path = std::getenv("TESSERA_TEST_MODEL");
  if (path == nullptr || access(path, R_OK) != 0) {
    GTEST_SKIP() << "real model not found (set TESSERA_TEST_MODEL; scripts/fetch-model fetches "
                    "SmolLM2-135M-Instruct.Q4_1.gguf)";
  }
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  auto t = ChatTemplate::FromGguf(**f);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->format(), ChatFormat::kChatMl);
  EXPECT_EQ(t->default_system_prompt(),
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  EXPECT_EQ(*(*f)->GetString("tokenizer.chat_template"), kSmolLM2Template);
}

}  // namespace
}  // namespace tessera
