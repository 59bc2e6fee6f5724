// Chat formatting against llama.cpp's built-in templates (tests/golden/chat.json, written by
// scripts/make_reference.py --chat).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer.h"

namespace leanlm {
namespace {

TEST(Chat, FormatsMatchLlamaCpp) {
  const char* src = std::getenv("LEANLM_SOURCE_DIR");
  std::ifstream in(std::string(src ? src : ".") + "/tests/golden/chat.json");
  ASSERT_TRUE(in) << "missing tests/golden/chat.json";
  const nlohmann::json ref = nlohmann::json::parse(in);
  std::vector<ChatMessage> msgs;
  for (const auto& m : ref["messages"]) msgs.push_back({m["role"], m["content"]});
  const std::pair<const char*, ChatFormat> formats[] = {
      {"gemma", ChatFormat::Gemma}, {"llama3", ChatFormat::Llama3}, {"chatml", ChatFormat::ChatML},
      {"llama2", ChatFormat::Llama2}};
  for (const auto& [name, f] : formats) {
    ASSERT_TRUE(ref["formats"].contains(name)) << name;
    EXPECT_EQ(format_chat(f, msgs, true), ref["formats"][name]["text"].get<std::string>())
        << name << " (llama.cpp template " << ref["formats"][name]["llama_cpp_template"] << ")";
    EXPECT_STREQ(chat_format_name(f), name);
  }
}

}  // namespace
}  // namespace leanlm
