// Chat formats, chosen from the model's metadata (chat template text, then architecture).
#include "tokenizer/tokenizer.h"

namespace leanlm {

ChatFormat detect_chat_format(const Tokenizer& tok, const std::string& arch) {
  const std::string& t = tok.chat_template();
  if (t.find("<start_of_turn>") != std::string::npos) return ChatFormat::Gemma;
  if (t.find("<|start_header_id|>") != std::string::npos) return ChatFormat::Llama3;
  if (t.find("<|im_start|>") != std::string::npos) return ChatFormat::ChatML;
  if (t.find("[INST]") != std::string::npos) return ChatFormat::Llama2;
  if (arch.rfind("gemma", 0) == 0) return ChatFormat::Gemma;
  if (tok.find("<|start_header_id|>") >= 0) return ChatFormat::Llama3;
  if (tok.find("<|im_start|>") >= 0) return ChatFormat::ChatML;
  return ChatFormat::Llama2;
}

const char* chat_format_name(ChatFormat f) {
  switch (f) {
    case ChatFormat::Gemma: return "gemma";
    case ChatFormat::Llama3: return "llama3";
    case ChatFormat::ChatML: return "chatml";
    case ChatFormat::Llama2: return "llama2";
  }
  return "?";
}

std::string format_chat(ChatFormat f, const std::vector<ChatMessage>& msgs, bool add_generation_prompt) {
  std::string out;
  switch (f) {
    case ChatFormat::Gemma: {
      // No system role: system text is folded into the first user turn.
      std::string pending_system;
      for (const auto& m : msgs) {
        if (m.role == "system") {
          pending_system += m.content + "\n\n";
          continue;
        }
        const std::string role = m.role == "assistant" ? "model" : "user";
        out += "<start_of_turn>" + role + "\n";
        if (role == "user" && !pending_system.empty()) {
          out += pending_system;
          pending_system.clear();
        }
        out += m.content + "<end_of_turn>\n";
      }
      if (add_generation_prompt) out += "<start_of_turn>model\n";
      return out;
    }
    case ChatFormat::Llama3:
      for (const auto& m : msgs)
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + m.content + "<|eot_id|>";
      if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      return out;
    case ChatFormat::ChatML:
      for (const auto& m : msgs) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      return out;
    case ChatFormat::Llama2: {
      std::string sys;
      for (const auto& m : msgs) {
        if (m.role == "system") sys = "<<SYS>>\n" + m.content + "\n<</SYS>>\n\n";
        else if (m.role == "user") {
          out += "[INST] " + sys + m.content + " [/INST]";
          sys.clear();
        } else {
          out += m.content + "</s>";
        }
      }
      return out;
    }
  }
  return out;
}

}  // namespace leanlm
