#include "server/openai_api.h"

#include <cmath>

#include "engine/text_stream.h"
#include "util/error.h"

namespace leanlm {

using nlohmann::json;

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& message, const std::string& code = "invalid_value") {
  throw ApiError{400, message, "invalid_request_error", param, code};
}

double number(const json& body, const char* key, double def, double lo, double hi) {
  if (!body.contains(key) || body[key].is_null()) return def;
  const json& v = body[key];
  if (!v.is_number()) bad(key, std::string("'") + key + "' must be a number");
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi)
    bad(key, strfmt("'%s' is %g; it must be between %g and %g", key, x, lo, hi));
  return x;
}

long long integer(const json& body, const char* key, long long def, long long lo, long long hi) {
  if (!body.contains(key) || body[key].is_null()) return def;
  const json& v = body[key];
  if (!v.is_number_integer() && !v.is_number_unsigned()) bad(key, std::string("'") + key + "' must be an integer");
  const long long x = v.is_number_unsigned() && v.get<unsigned long long>() > (1ULL << 62) ? hi + 1 : v.get<long long>();
  if (x < lo || x > hi) bad(key, strfmt("'%s' is %lld; it must be between %lld and %lld", key, x, lo, hi));
  return x;
}

bool boolean(const json& body, const char* key, bool def) {
  if (!body.contains(key) || body[key].is_null()) return def;
  if (!body[key].is_boolean()) bad(key, std::string("'") + key + "' must be true or false");
  return body[key].get<bool>();
}

// The fields both endpoints share: model, sampling, limits, stop, stream, the "kv" extension.
void parse_common(const json& body, const ApiLimits& lim, ParsedRequest& p) {
  if (!body.is_object()) bad("", "the request body must be a JSON object");
  p.model = lim.model_id;
  if (body.contains("model") && !body["model"].is_null()) {
    if (!body["model"].is_string()) bad("model", "'model' must be a string");
    const std::string m = body["model"].get<std::string>();
    if (m != lim.model_id)
      throw ApiError{404, "The model '" + m + "' does not exist; this server serves '" + lim.model_id + "'",
                     "invalid_request_error", "model", "model_not_found"};
  }
  if (integer(body, "n", 1, 1, 1) != 1) bad("n", "only n = 1 is supported");
  // What is not implemented is refused, not ignored: a client asking for biased logits or for
  // JSON output must not get free text that looks like an answer.
  if (body.contains("logit_bias") && !body["logit_bias"].is_null() &&
      !(body["logit_bias"].is_object() && body["logit_bias"].empty()))
    bad("logit_bias", "'logit_bias' is not supported");
  // Tool calling is not implemented: a request offering tools the model may call is refused, so a
  // client never waits for a tool call that cannot come. An empty list, or tool_choice "none" (the
  // model must answer in text), asks for nothing leanlm lacks.
  if (body.contains("tools") && !body["tools"].is_null()) {
    if (!body["tools"].is_array()) bad("tools", "'tools' must be an array");
    const bool answer_in_text = body.contains("tool_choice") && body["tool_choice"] == "none";
    if (!body["tools"].empty() && !answer_in_text)
      bad("tools", "tool calling is not supported ('tools' must be empty or 'tool_choice' \"none\")");
  }
  if (body.contains("response_format") && !body["response_format"].is_null()) {
    const json& rf = body["response_format"];
    if (!rf.is_object() || !rf.contains("type") || !rf["type"].is_string())
      bad("response_format", "'response_format' must be an object like {\"type\": \"text\"}");
    if (rf["type"] != "text")
      bad("response_format", "only 'response_format' {\"type\": \"text\"} is supported (got '" +
                                 rf["type"].get<std::string>() + "')");
  }
  auto r = std::make_shared<Request>();
  GenerationParams& g = r->params;
  g.sampler.temperature = float(number(body, "temperature", 1.0, 0.0, 2.0));
  g.sampler.top_p = float(number(body, "top_p", 1.0, 0.0, 1.0));
  if (g.sampler.top_p <= 0.f) bad("top_p", "'top_p' must be above 0");
  const long long top_k = integer(body, "top_k", 0, -1, 1 << 30);
  g.sampler.top_k = top_k < 0 ? 0 : int(top_k);
  g.sampler.min_p = float(number(body, "min_p", 0.0, 0.0, 1.0));
  g.sampler.repeat_penalty = float(number(body, "repetition_penalty", 1.0, 0.01, 10.0));
  g.sampler.seed = body.contains("seed") && !body["seed"].is_null()
                       ? uint64_t(integer(body, "seed", 0, -(1LL << 62), 1LL << 62))
                       : uint64_t(std::random_device{}()) << 32 | std::random_device{}();
  g.presence_penalty = float(number(body, "presence_penalty", 0.0, -2.0, 2.0));
  g.frequency_penalty = float(number(body, "frequency_penalty", 0.0, -2.0, 2.0));
  long long mt = integer(body, "max_tokens", -1, 1, 1LL << 40);
  mt = integer(body, "max_completion_tokens", mt, 1, 1LL << 40);
  if (mt > lim.max_tokens)
    bad(body.contains("max_completion_tokens") ? "max_completion_tokens" : "max_tokens",
        strfmt("at most %d tokens can be generated per request on this server (asked for %lld)", lim.max_tokens, mt));
  g.max_tokens = mt < 0 ? lim.max_tokens : int(mt);
  if (body.contains("stop") && !body["stop"].is_null()) {
    const json& s = body["stop"];
    if (s.is_string()) {
      g.stop.push_back(s.get<std::string>());
    } else if (s.is_array()) {
      if (s.size() > 16) bad("stop", "at most 16 stop strings");
      for (const json& x : s) {
        if (!x.is_string()) bad("stop", "'stop' must be a string or a list of strings");
        g.stop.push_back(x.get<std::string>());
      }
    } else {
      bad("stop", "'stop' must be a string or a list of strings");
    }
    for (const auto& x : g.stop)
      if (x.size() > 256) bad("stop", "a stop string is longer than 256 bytes");
  }
  p.stream = boolean(body, "stream", false);
  if (body.contains("stream_options") && !body["stream_options"].is_null()) {
    const json& so = body["stream_options"];
    if (!so.is_object()) bad("stream_options", "'stream_options' must be an object");
    if (!p.stream) bad("stream_options", "'stream_options' is only allowed with 'stream': true");
    p.include_usage = boolean(so, "include_usage", false);
    p.include_kv = boolean(so, "include_kv", false);
  }
  // The "kv" extension: the request's KV cache configuration, within what the server allows.
  r->kv = lim.default_kv;
  if (body.contains("kv") && !body["kv"].is_null()) {
    const json& kv = body["kv"];
    if (!kv.is_object()) bad("kv", "'kv' must be an object like {\"codec\": \"kivi4\"}");
    for (auto it = kv.begin(); it != kv.end(); ++it)
      if (it.key() != "codec" && it.key() != "evict" && it.key() != "budget")
        bad("kv." + it.key(), "unknown field '" + it.key() + "' in 'kv' (codec, evict, budget)");
    try {
      if (kv.contains("codec")) {
        if (!kv["codec"].is_string()) bad("kv.codec", "'kv.codec' must be a string");
        const std::string c = kv["codec"].get<std::string>();
        r->kv.codec = parse_codec(c);
        const std::string name = r->kv.codec.name();
        if (name != lim.default_kv.codec.name() && !lim.kv_codecs.count(name) && !lim.kv_codecs.count(c)) {
          std::string allowed = lim.default_kv.codec.name();
          for (const auto& a : lim.kv_codecs) allowed += ", " + a;
          bad("kv.codec", "this server does not allow the KV codec '" + c + "' (allowed: " + allowed + ")");
        }
      }
      if (kv.contains("evict") || kv.contains("budget")) {
        if (!lim.allow_evict) bad("kv.evict", "this server does not allow choosing an eviction policy");
        if (kv.contains("evict")) {
          if (!kv["evict"].is_string()) bad("kv.evict", "'kv.evict' must be a string");
          r->kv.evict = parse_evict(kv["evict"].get<std::string>());
        }
        if (kv.contains("budget")) {
          const json& b = kv["budget"];
          if (b.is_number_integer()) {
            if (b.get<long long>() < 1 || b.get<long long>() > lim.max_ctx) bad("kv.budget", "'kv.budget' is out of range");
            r->kv.budget_tokens = b.get<int>(), r->kv.budget_frac = 0;
          } else if (b.is_string()) {
            parse_budget(b.get<std::string>(), r->kv);
          } else {
            bad("kv.budget", "'kv.budget' must be a token count or a percentage like \"20%\"");
          }
        }
        if (r->kv.evict.kind != EvictSpec::Kind::None && r->kv.budget_for(lim.max_ctx) <= 0)
          bad("kv.budget", "an eviction policy needs 'kv.budget'");
      }
    } catch (const Error& e) {
      bad("kv", e.what());
    }
    // Whether the server can build it, the codec alone first (on this model, with its codebooks),
    // then with the eviction asked for: a request the scheduler could not start is refused here.
    const std::string field = kv.contains("evict") ? "kv.evict" : kv.contains("budget") ? "kv.budget" : "kv.codec";
    KvConfig codec_only = r->kv;
    codec_only.evict = EvictSpec{};
    codec_only.budget_tokens = 0, codec_only.budget_frac = 0;
    auto problem = [&](const KvConfig& c) -> std::string {
      if (lim.kv_problem) return lim.kv_problem(c);
      try {
        c.check();
        return {};
      } catch (const Error& e) {
        return e.what();
      }
    };
    if (kv.contains("codec"))
      if (const std::string why = problem(codec_only); !why.empty())
        bad("kv.codec", "this server cannot use the KV codec '" + r->kv.codec.name() + "': " + why);
    if (const std::string why = problem(r->kv); !why.empty())
      bad(field, "this server cannot use the KV configuration " + r->kv.name() + ": " + why);
  }
  r->kv_label = r->kv.codec.name();
  p.req = std::move(r);
}

void check_prompt(const ParsedRequest& p, const ApiLimits& lim) {
  const size_t n = p.req->prompt.size();
  const size_t cap = lim.max_prompt_tokens > 0 ? size_t(lim.max_prompt_tokens) : size_t(lim.max_ctx - 1);
  if (n == 0) bad(p.chat ? "messages" : "prompt", "the prompt is empty");
  if (n > cap || n + 1 > size_t(lim.max_ctx))
    bad(p.chat ? "messages" : "prompt",
        strfmt("the prompt has %zu tokens; this server takes at most %zu (context %d, prompt plus generated)", n,
               std::min(cap, size_t(lim.max_ctx - 1)), lim.max_ctx),
        "context_length_exceeded");
  // Generation stops at the end of the context; max_tokens is not refused for that (OpenAI caps it).
}

std::string content_text(const json& c, size_t i) {
  if (c.is_string()) return c.get<std::string>();
  if (c.is_array()) {  // [{"type": "text", "text": ...}, ...]
    std::string out;
    for (const json& part : c) {
      if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
        bad(strfmt("messages[%zu].content", i), "only text content parts are supported");
      out += part["text"].get<std::string>();
    }
    return out;
  }
  if (c.is_null()) return "";
  bad(strfmt("messages[%zu].content", i), "'content' must be a string or a list of text parts");
}

std::string token_text(const Tokenizer& tok, int id) { return utf8_sanitize(tok.token_to_piece(id, true)); }

json token_bytes(const Tokenizer& tok, int id) {
  json b = json::array();
  for (unsigned char c : tok.token_to_piece(id, true)) b.push_back(int(c));
  return b;
}

}  // namespace

json error_body(const ApiError& e) {
  json err = {{"message", e.message}, {"type", e.type}};
  err["param"] = e.param.empty() ? json(nullptr) : json(e.param);
  err["code"] = e.code.empty() ? json(nullptr) : json(e.code);
  return {{"error", err}};
}

ParsedRequest parse_chat_request(const json& body, const ApiLimits& lim, const Tokenizer& tok, ChatFormat fmt) {
  ParsedRequest p;
  p.chat = true;
  parse_common(body, lim, p);
  if (!body.contains("messages") || !body["messages"].is_array() || body["messages"].empty())
    bad("messages", "'messages' must be a non-empty list", "missing_required_parameter");
  std::vector<ChatMessage> msgs;
  size_t i = 0;
  for (const json& m : body["messages"]) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
      bad(strfmt("messages[%zu]", i), "each message needs a 'role' and 'content'");
    std::string role = m["role"].get<std::string>();
    if (role == "developer") role = "system";
    if (role != "system" && role != "user" && role != "assistant")
      bad(strfmt("messages[%zu].role", i), "role must be system, developer, user or assistant (got '" + role + "')");
    msgs.push_back({role, content_text(m.contains("content") ? m["content"] : json(nullptr), i)});
    ++i;
  }
  p.logprobs = boolean(body, "logprobs", false);
  const long long top = integer(body, "top_logprobs", -1, 0, 20);
  if (top >= 0 && !p.logprobs) bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
  p.req->params.top_logprobs = p.logprobs ? int(std::max(0LL, top)) : -1;
  p.req->prompt = tok.encode(format_chat(fmt, msgs, true), true, true);
  check_prompt(p, lim);
  return p;
}

ParsedRequest parse_completion_request(const json& body, const ApiLimits& lim, const Tokenizer& tok) {
  ParsedRequest p;
  p.chat = false;
  parse_common(body, lim, p);
  if (!body.contains("prompt")) bad("prompt", "'prompt' is required", "missing_required_parameter");
  const json& pr = body["prompt"];
  if (pr.is_string()) {
    p.req->prompt = tok.encode(pr.get<std::string>(), true, false);
  } else if (pr.is_array() && pr.size() == 1 && pr[0].is_string()) {
    p.req->prompt = tok.encode(pr[0].get<std::string>(), true, false);
  } else if (pr.is_array() && !pr.empty() && pr[0].is_number_integer()) {  // token ids
    for (const json& t : pr) {
      if (!t.is_number_integer() || t.get<long long>() < 0 || t.get<long long>() >= tok.n_vocab())
        bad("prompt", strfmt("token ids must be integers in [0, %d)", tok.n_vocab()));
      p.req->prompt.push_back(t.get<int>());
    }
  } else {
    bad("prompt", "'prompt' must be a string, a list of one string, or a list of token ids");
  }
  if (boolean(body, "echo", false)) bad("echo", "'echo' is not supported");
  if (body.contains("suffix") && !body["suffix"].is_null()) bad("suffix", "'suffix' is not supported");
  if (body.contains("best_of") && !body["best_of"].is_null() && integer(body, "best_of", 1, 1, 1) != 1)
    bad("best_of", "only best_of = 1 is supported");
  const long long lp = integer(body, "logprobs", -1, 0, 5);
  p.logprobs = lp >= 0;
  p.req->params.top_logprobs = int(lp);
  check_prompt(p, lim);
  return p;
}

json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt},
          {"completion_tokens", u.completion},
          {"total_tokens", u.prompt + u.completion},
          {"prompt_tokens_details", {{"cached_tokens", u.cached}}}};
}

json logprobs_json(const std::vector<TokenLogprob>& toks, const Tokenizer& tok, bool chat, size_t text_offset0) {
  if (chat) {
    json content = json::array();
    for (const auto& t : toks) {
      json top = json::array();
      for (const auto& [id, lp] : t.top)
        top.push_back({{"token", token_text(tok, id)}, {"logprob", lp}, {"bytes", token_bytes(tok, id)}});
      content.push_back({{"token", token_text(tok, t.token)},
                         {"logprob", t.logprob},
                         {"bytes", token_bytes(tok, t.token)},
                         {"top_logprobs", top}});
    }
    return {{"content", content}};
  }
  json tokens = json::array(), lps = json::array(), tops = json::array(), offs = json::array();
  size_t off = text_offset0;
  for (const auto& t : toks) {
    const std::string s = token_text(tok, t.token);
    tokens.push_back(s);
    lps.push_back(t.logprob);
    json top = json::object();
    for (const auto& [id, lp] : t.top) top[token_text(tok, id)] = lp;
    tops.push_back(top);
    offs.push_back(off);
    off += s.size();
  }
  return {{"tokens", tokens}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offs}};
}

json final_response(const ParsedRequest& p, const ResponseMeta& m, const std::string& text,
                    const std::vector<TokenLogprob>& toks, FinishReason reason, const Usage& u,
                    const Tokenizer& tok) {
  json choice = {{"index", 0}, {"finish_reason", finish_reason_name(reason)}};
  choice["logprobs"] = p.logprobs ? logprobs_json(toks, tok, p.chat) : json(nullptr);
  if (p.chat) choice["message"] = {{"role", "assistant"}, {"content", text}};
  else choice["text"] = text;
  return {{"id", m.id},
          {"object", p.chat ? "chat.completion" : "text_completion"},
          {"created", m.created},
          {"model", m.model},
          {"choices", json::array({choice})},
          {"usage", usage_json(u)}};
}

namespace {

json chunk_with(const ParsedRequest& p, const ResponseMeta& m, json choice) {
  json out = {{"id", m.id},
              {"object", p.chat ? "chat.completion.chunk" : "text_completion"},
              {"created", m.created},
              {"model", m.model},
              {"choices", json::array({std::move(choice)})}};
  if (p.include_usage) out["usage"] = nullptr;
  return out;
}

}  // namespace

json role_chunk(const ParsedRequest& p, const ResponseMeta& m) {
  json choice = {{"index", 0}, {"finish_reason", nullptr}, {"logprobs", nullptr}};
  choice["delta"] = {{"role", "assistant"}, {"content", nullptr}};
  return chunk_with(p, m, std::move(choice));
}

json stream_chunk(const ParsedRequest& p, const ResponseMeta& m, const std::string& text,
                  const std::vector<TokenLogprob>& toks, FinishReason reason, const Tokenizer& tok) {
  json choice = {{"index", 0}};
  choice["finish_reason"] = reason == FinishReason::None ? json(nullptr) : json(finish_reason_name(reason));
  choice["logprobs"] = p.logprobs && !toks.empty() ? logprobs_json(toks, tok, p.chat) : json(nullptr);
  if (p.chat) {
    json delta = json::object();
    if (!text.empty()) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  return chunk_with(p, m, std::move(choice));
}

json usage_chunk(const ParsedRequest& p, const ResponseMeta& m, const Usage& u) {
  return {{"id", m.id},
          {"object", p.chat ? "chat.completion.chunk" : "text_completion"},
          {"created", m.created},
          {"model", m.model},
          {"choices", json::array()},
          {"usage", usage_json(u)}};
}

}  // namespace leanlm
