// Request validation and response shapes of the OpenAI layer, on SmolLM2's tokenizer and chat format.
#include "server/openai_api.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "engine/engine.h"

namespace leanlm {
namespace {

using nlohmann::json;

class OpenAiApiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* s = std::getenv("LEANLM_SOURCE_DIR");
    const std::string path = std::string(s ? s : ".") + "/models/smollm2-135m-instruct-q4_1.gguf";
    if (!std::filesystem::exists(path)) return;
    EngineOptions o;
    o.model_path = path;
    o.ctx = 256;
    engine_ = new Engine(o);
  }
  static void TearDownTestSuite() { delete engine_; }
  void SetUp() override {
    ASSERT_NE(engine_, nullptr) << "SmolLM2 missing: run scripts/setup.sh";
    lim_.model_id = "smol";
    lim_.max_ctx = 256;
    lim_.max_tokens = 100;
    lim_.kv_codecs = {"q8_0"};
  }
  ParsedRequest chat(const json& body) {
    return parse_chat_request(body, lim_, engine_->tokenizer(),
                              detect_chat_format(engine_->tokenizer(), engine_->model().config().arch));
  }
  ParsedRequest completion(const json& body) { return parse_completion_request(body, lim_, engine_->tokenizer()); }
  // The ApiError a request raises (status 0 if it raises none).
  template <typename F>
  ApiError error_of(F&& f) {
    try {
      f();
    } catch (const ApiError& e) {
      return e;
    }
    return ApiError{0, "", "", "", ""};
  }
  static Engine* engine_;
  ApiLimits lim_;
};
Engine* OpenAiApiTest::engine_ = nullptr;

TEST_F(OpenAiApiTest, ChatRequestBecomesTemplatedPromptAndParameters) {
  const ParsedRequest p = chat({{"model", "smol"},
                               {"messages", {{{"role", "system"}, {"content", "Be brief."}},
                                             {{"role", "user"}, {"content", {{{"type", "text"}, {"text", "Hi"}}}}}}},
                               {"temperature", 0.5},
                               {"top_p", 0.9},
                               {"top_k", 20},
                               {"max_completion_tokens", 7},
                               {"stop", "END"},
                               {"seed", 42},
                               {"presence_penalty", 0.5},
                               {"logprobs", true},
                               {"top_logprobs", 3},
                               {"stream", true},
                               {"stream_options", {{"include_usage", true}}}});
  const std::string text = engine_->tokenizer().decode(p.req->prompt, true);
  EXPECT_NE(text.find("<|im_start|>system\nBe brief.<|im_end|>"), std::string::npos) << text;
  EXPECT_NE(text.find("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"), std::string::npos) << text;
  const GenerationParams& g = p.req->params;
  EXPECT_FLOAT_EQ(g.sampler.temperature, 0.5f);
  EXPECT_FLOAT_EQ(g.sampler.top_p, 0.9f);
  EXPECT_EQ(g.sampler.top_k, 20);
  EXPECT_EQ(g.sampler.seed, 42u);
  EXPECT_EQ(g.max_tokens, 7);
  EXPECT_EQ(g.stop, std::vector<std::string>{"END"});
  EXPECT_FLOAT_EQ(g.presence_penalty, 0.5f);
  EXPECT_EQ(g.top_logprobs, 3);
  EXPECT_TRUE(p.stream && p.include_usage && p.logprobs && p.chat);
}

TEST_F(OpenAiApiTest, CompletionPromptForms) {
  const auto a = completion({{"prompt", "Hello"}, {"max_tokens", 3}, {"logprobs", 2}});
  EXPECT_EQ(a.req->prompt, engine_->tokenizer().encode("Hello", true, false));
  EXPECT_EQ(a.req->params.top_logprobs, 2);
  const auto b = completion({{"prompt", {"Hello"}}});
  EXPECT_EQ(b.req->prompt, a.req->prompt);
  EXPECT_EQ(b.req->params.max_tokens, 100);  // the server's cap by default
  const auto c = completion({{"prompt", {1, 2, 3}}});
  EXPECT_EQ(c.req->prompt, (std::vector<int>{1, 2, 3}));
}

TEST_F(OpenAiApiTest, BadRequestsNameTheParameter) {
  const json msgs = {{{"role", "user"}, {"content", "Hi"}}};
  struct Case {
    json body;
    int status;
    std::string param;
  };
  const std::vector<Case> cases = {
      {json::array(), 400, ""},
      {{{"messages", msgs}, {"model", "gpt-4"}}, 404, "model"},
      {{{"messages", json::array()}}, 400, "messages"},
      {{{"messages", {{{"role", "robot"}, {"content", "x"}}}}}, 400, "messages[0].role"},
      {{{"messages", msgs}, {"temperature", 3}}, 400, "temperature"},
      {{{"messages", msgs}, {"temperature", "hot"}}, 400, "temperature"},
      {{{"messages", msgs}, {"max_tokens", 0}}, 400, "max_tokens"},
      {{{"messages", msgs}, {"max_tokens", 101}}, 400, "max_tokens"},
      {{{"messages", msgs}, {"n", 2}}, 400, "n"},
      {{{"messages", msgs}, {"stop", 5}}, 400, "stop"},
      {{{"messages", msgs}, {"top_logprobs", 3}}, 400, "top_logprobs"},
      {{{"messages", msgs}, {"stream_options", {{"include_usage", true}}}}, 400, "stream_options"},
      {{{"messages", msgs}, {"kv", {{"codec", "kivi2"}}}}, 400, "kv.codec"},
      {{{"messages", msgs}, {"kv", {{"codec", "nope"}}}}, 400, "kv"},
      {{{"messages", msgs}, {"kv", {{"color", "red"}}}}, 400, "kv.color"},
      {{{"messages", msgs}, {"kv", {{"evict", "h2o"}}}}, 400, "kv.budget"},
      {{{"messages", {{{"role", "user"}, {"content", std::string(3000, 'x')}}}}}, 400, "messages"},
      // Not implemented, so refused rather than ignored (llama.cpp's test_logit_bias and
      // test_completion_with_response_format found them ignored).
      {{{"messages", msgs}, {"logit_bias", {{"42", -100}}}}, 400, "logit_bias"},
      {{{"messages", msgs}, {"response_format", {{"type", "json_object"}}}}, 400, "response_format"},
      {{{"messages", msgs}, {"response_format", {{"type", "sound"}}}}, 400, "response_format"},
      {{{"messages", msgs}, {"response_format", "json"}}, 400, "response_format"},
  };
  for (const auto& c : cases) {
    const ApiError e = error_of([&] { chat(c.body); });
    EXPECT_EQ(e.status, c.status) << c.body.dump();
    EXPECT_EQ(e.param, c.param) << c.body.dump() << ": " << e.message;
    EXPECT_FALSE(e.message.empty());
  }
  // The forms that ask for nothing special pass.
  EXPECT_EQ(error_of([&] { chat({{"messages", msgs}, {"logit_bias", json::object()}}); }).status, 0);
  // Tools the model may call are refused; none offered, or tool_choice "none", is a plain chat.
  const json tool = {{"type", "function"}, {"function", {{"name", "f"}, {"parameters", json::object()}}}};
  EXPECT_EQ(error_of([&] { chat({{"messages", msgs}, {"tools", json::array({tool})}}); }).param, "tools");
  EXPECT_EQ(error_of([&] { chat({{"messages", msgs}, {"tools", json::array({tool})}, {"tool_choice", "auto"}}); }).status,
            400);
  EXPECT_EQ(error_of([&] { chat({{"messages", msgs}, {"tools", "f"}}); }).param, "tools");
  EXPECT_EQ(error_of([&] { chat({{"messages", msgs}, {"tools", json::array()}}); }).status, 0);
  EXPECT_EQ(error_of([&] { chat({{"messages", msgs}, {"tools", json::array({tool})}, {"tool_choice", "none"}}); }).status,
            0);
  EXPECT_EQ(error_of([&] { chat({{"messages", msgs}, {"response_format", {{"type", "text"}}}}); }).status, 0);
  EXPECT_EQ(error_of([&] { completion({{"prompt", "x"}, {"logit_bias", {{"42", 5}}}}); }).param, "logit_bias");
  EXPECT_EQ(error_of([&] { completion({{"max_tokens", 3}}); }).param, "prompt");
  EXPECT_EQ(error_of([&] { completion({{"prompt", {1, -2}}}); }).param, "prompt");
  EXPECT_EQ(error_of([&] { completion({{"prompt", "x"}, {"logprobs", 9}}); }).param, "logprobs");
  // The long prompt names its own code, as OpenAI does.
  EXPECT_EQ(error_of([&] { completion({{"prompt", std::string(3000, 'x')}}); }).code, "context_length_exceeded");
}

TEST_F(OpenAiApiTest, AllowedKvConfigurationPassesThrough) {
  const auto p = chat({{"messages", {{{"role", "user"}, {"content", "Hi"}}}},
                       {"kv", {{"codec", "q8_0"}, {"evict", "snapkv"}, {"budget", 128}}}});
  EXPECT_EQ(p.req->kv.codec.name(), "q8_0");
  EXPECT_EQ(p.req->kv.evict.kind, EvictSpec::Kind::SnapKV);
  EXPECT_EQ(p.req->kv.budget_tokens, 128);
  EXPECT_EQ(p.req->kv_label, "q8_0");
}

TEST_F(OpenAiApiTest, KvChoicesTheServerCannotBuildAreRefusedNamingTheField) {
  // What the server does: ask the engine whether the configuration builds on this model.
  lim_.kv_problem = [](const KvConfig& kv) {
    try {
      engine_->check_kv(kv, 256);
      return std::string();
    } catch (const Error& e) {
      return std::string(e.what());
    }
  };
  lim_.kv_codecs = {"q8_0", "f32", "pq"};  // pq allowed, but this server has no codebook file
  const json msgs = {{{"role", "user"}, {"content", "Hi"}}};
  struct Case {
    KvConfig server;
    json kv;
    std::string param;
  };
  KvConfig topk;  // the server runs sparse attention (--kv-topk 64)
  topk.top_k = 64;
  KvConfig evicting;  // the server evicts by default (--kv-evict h2o --kv-budget 64)
  evicting.evict = parse_evict("h2o");
  evicting.budget_tokens = 64;
  const std::vector<Case> cases = {
      {KvConfig{}, {{"codec", "pq"}}, "kv.codec"},                                      // no codebooks
      {KvConfig{}, {{"codec", "f32"}, {"evict", "h2o"}, {"budget", 32}}, "kv.evict"},  // f32 never evicts
      {topk, {{"evict", "scissorhands"}, {"budget", 32}}, "kv.evict"},                 // top-k with eviction
      {evicting, {{"codec", "f32"}}, "kv.codec"},                                      // f32 under the server's eviction
      {KvConfig{}, {{"codec", "q8_0:sinks=2"}, {"evict", "h2o"}, {"budget", 32}}, "kv.evict"},
  };
  lim_.kv_codecs.insert("q8_0:sinks=2");
  for (const auto& c : cases) {
    lim_.default_kv = c.server;
    const ApiError e = error_of([&] { chat({{"messages", msgs}, {"kv", c.kv}}); });
    EXPECT_EQ(e.status, 400) << c.kv.dump();
    EXPECT_EQ(e.param, c.param) << c.kv.dump() << ": " << e.message;
    EXPECT_NE(e.message.find("cannot use"), std::string::npos) << e.message;
  }
  // The same choices that build pass (the check refuses only what cannot run).
  lim_.default_kv = KvConfig{};
  EXPECT_EQ(chat({{"messages", msgs}, {"kv", {{"codec", "f32"}}}}).req->kv.codec.name(), "f32");
  lim_.default_kv = topk;
  EXPECT_EQ(chat({{"messages", msgs}, {"kv", {{"codec", "q8_0"}}}}).req->kv.top_k, 64);
}

TEST_F(OpenAiApiTest, ResponseShapes) {
  const auto p = chat({{"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"logprobs", true}, {"top_logprobs", 1}});
  const ResponseMeta m{"chatcmpl-1", "smol", 7};
  const int hello = engine_->tokenizer().encode("Hello", false, false)[0];
  std::vector<TokenLogprob> toks = {{hello, -0.25f, {{hello, -0.25f}}}};
  const json r = final_response(p, m, "Hello", toks, FinishReason::Stop, Usage{5, 1, 3}, engine_->tokenizer());
  EXPECT_EQ(r["object"], "chat.completion");
  EXPECT_EQ(r["choices"][0]["message"]["content"], "Hello");
  EXPECT_EQ(r["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(r["usage"]["total_tokens"], 6);
  EXPECT_EQ(r["usage"]["prompt_tokens_details"]["cached_tokens"], 3);
  EXPECT_FLOAT_EQ(r["choices"][0]["logprobs"]["content"][0]["logprob"].get<float>(), -0.25f);
  EXPECT_EQ(r["choices"][0]["logprobs"]["content"][0]["top_logprobs"].size(), 1u);
  const json c = stream_chunk(p, m, "He", toks, FinishReason::None, engine_->tokenizer());
  EXPECT_EQ(c["object"], "chat.completion.chunk");
  EXPECT_FALSE(c["choices"][0]["delta"].contains("role"));
  EXPECT_EQ(c["choices"][0]["delta"]["content"], "He");
  EXPECT_EQ(c["choices"][0]["logprobs"]["content"].size(), 1u);
  EXPECT_TRUE(c["choices"][0]["finish_reason"].is_null());
  // The stream opens with the role alone: no text, no logprobs (llama.cpp's test_logprobs_stream
  // checks the first chunk's content is null and every later content chunk has logprobs).
  const json r0 = role_chunk(p, m);
  EXPECT_EQ(r0["object"], "chat.completion.chunk");
  EXPECT_EQ(r0["id"], "chatcmpl-1");
  EXPECT_EQ(r0["choices"][0]["delta"], (json{{"role", "assistant"}, {"content", nullptr}}));
  EXPECT_TRUE(r0["choices"][0]["logprobs"].is_null());
  EXPECT_TRUE(r0["choices"][0]["finish_reason"].is_null());
  const json e = error_body({429, "busy", "server_busy", "", "queue_full"});
  EXPECT_EQ(e["error"]["type"], "server_busy");
  EXPECT_TRUE(e["error"]["param"].is_null());
}

}  // namespace
}  // namespace leanlm
