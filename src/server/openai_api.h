// The OpenAI API's JSON, both ways: request bodies of /v1/chat/completions and /v1/completions
// validated and turned into a scheduler Request, and the results turned into OpenAI's response and
// streaming-chunk shapes. No I/O here, so every rule is unit-testable.
#pragma once
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "server/scheduler.h"
#include "tokenizer/tokenizer.h"

namespace leanlm {

// A client error, answered as {"error": {"message", "type", "param", "code"}} with `status`.
struct ApiError {
  int status = 400;
  std::string message, type = "invalid_request_error", param, code;
};
nlohmann::json error_body(const ApiError& e);

// What the server allows requests to ask for.
struct ApiLimits {
  std::string model_id;            // the name /v1/models lists; requests must name it (or omit it)
  int max_ctx = 4096;              // positions per sequence
  int max_tokens = 4096;           // the most tokens one request may generate
  int max_prompt_tokens = 0;       // 0: up to the context
  KvConfig default_kv;             // the server's --kv-* flags
  std::set<std::string> kv_codecs; // codecs a request may choose ("kv" extension); empty: only the default
  bool allow_evict = true;         // whether requests may choose an eviction policy and budget
  // What this server can build: "" when sequences with this KV configuration can be made on its
  // model, else why not (the server asks its engine). Unset: only the model-independent rules
  // (KvConfig::check) apply.
  std::function<std::string(const KvConfig&)> kv_problem;
};

struct ParsedRequest {
  std::shared_ptr<Request> req;
  bool chat = true;
  bool stream = false;
  bool include_usage = false;
  bool include_kv = false;         // stream_options.include_kv (leanlm): each chunk carries "kv_bytes"
  bool logprobs = false;           // chat: logprobs: true; completions: logprobs: N
  std::string model;
};

// Throw ApiError on a malformed or out-of-range request.
ParsedRequest parse_chat_request(const nlohmann::json& body, const ApiLimits& lim, const Tokenizer& tok,
                                 ChatFormat fmt);
ParsedRequest parse_completion_request(const nlohmann::json& body, const ApiLimits& lim, const Tokenizer& tok);

// Response shapes. `id` like "chatcmpl-..."; `created` seconds since the epoch.
struct ResponseMeta {
  std::string id, model;
  long long created = 0;
};
nlohmann::json logprobs_json(const std::vector<TokenLogprob>& toks, const Tokenizer& tok, bool chat,
                             size_t text_offset0 = 0);
// Token counts of one request; `cached` of the prompt's were read from the prefix cache (reported
// as usage.prompt_tokens_details.cached_tokens, as OpenAI and vLLM do).
struct Usage {
  int prompt = 0, completion = 0, cached = 0;
  size_t kv_bytes = 0;  // the request's KV cache bytes at its latest event
};
nlohmann::json usage_json(const Usage& u);
nlohmann::json final_response(const ParsedRequest& p, const ResponseMeta& m, const std::string& text,
                              const std::vector<TokenLogprob>& toks, FinishReason reason, const Usage& u,
                              const Tokenizer& tok);
// A chat stream's first chunk: the role alone (delta {"role": "assistant", "content": null}), no
// text and no logprobs, as OpenAI, vLLM and llama-server open theirs; the text follows in stream_chunk.
nlohmann::json role_chunk(const ParsedRequest& p, const ResponseMeta& m);
// One streaming chunk: text delta (chat: delta.content; completions: text), optional finish reason.
nlohmann::json stream_chunk(const ParsedRequest& p, const ResponseMeta& m, const std::string& text,
                            const std::vector<TokenLogprob>& toks, FinishReason reason, const Tokenizer& tok);
nlohmann::json usage_chunk(const ParsedRequest& p, const ResponseMeta& m, const Usage& u);

}  // namespace leanlm
