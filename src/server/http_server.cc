#include "server/http_server.h"

#include <httplib.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "server/metrics.h"
#include "engine/text_stream.h"
#include "server/chat_page.h"
#include "util/error.h"

namespace leanlm {

using nlohmann::json;

namespace {

std::string random_id(const char* prefix) {
  static std::mutex mu;
  static std::mt19937_64 rng(std::random_device{}());
  std::lock_guard<std::mutex> lk(mu);
  return strfmt("%s%016llx%08llx", prefix, (unsigned long long)rng(), (unsigned long long)(rng() & 0xffffffffu));
}

// The request's token counts, read under its lock (the loop writes them).
Usage usage_of(Request& r) {
  std::lock_guard<std::mutex> lk(r.mu);
  return {r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.kv_bytes};
}

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) {
  if (e.status == 429) res.set_header("Retry-After", "1");
  send_json(res, e.status, error_body(e));
}

// Counts API requests in flight; beyond the limit they are refused rather than queued in the
// HTTP layer, where nothing would bound them.
class InFlight {
 public:
  InFlight(std::atomic<int>& n, int limit) : n_(n), ok_(++n_ <= limit) {}
  ~InFlight() { --n_; }
  bool ok() const { return ok_; }

 private:
  std::atomic<int>& n_;
  bool ok_;
};

}  // namespace

struct HttpServer::Impl {
  ServerOptions o;
  httplib::Server svr;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<Scheduler> sched;
  ServerMetrics metrics;
  ApiLimits limits;
  ChatFormat chat_format = ChatFormat::ChatML;
  std::atomic<bool> ready{false}, stopping{false}, forced{false};
  std::atomic<int> in_flight{0};
  long long created = std::time(nullptr);
  std::mutex stop_mu;
  std::condition_variable stop_cv;

  explicit Impl(ServerOptions opts) : o(std::move(opts)) { metrics.set_model_name(o.model_id); }

  // Common gate of the API endpoints: loaded, not shutting down.
  bool gate(httplib::Response& res) {
    if (stopping) {
      send_error(res, {503, "the server is shutting down", "unavailable_error", "", "shutting_down"});
      return false;
    }
    if (!ready) {
      send_error(res, {503, "the model is loading", "unavailable_error", "", "loading"});
      return false;
    }
    return true;
  }

  json parse_body(const httplib::Request& req) {
    try {
      return json::parse(req.body);
    } catch (const json::exception& e) {
      throw ApiError{400, std::string("the body is not valid JSON: ") + e.what(), "invalid_request_error", "",
                     "invalid_json"};
    }
  }

  void generate(const httplib::Request& req, httplib::Response& res, bool chat) {
    // A stream keeps its count until its last chunk is written (the provider holds the guard).
    auto guard = std::make_shared<InFlight>(in_flight, o.max_connections);
    try {
      if (!gate(res)) return;
      if (!guard->ok()) throw ApiError{429, "too many requests in flight; retry shortly", "server_busy", "", "busy"};
      const json body = parse_body(req);
      ParsedRequest p = chat ? parse_chat_request(body, limits, engine->tokenizer(), chat_format)
                             : parse_completion_request(body, limits, engine->tokenizer());
      SubmitResult sr;
      try {
        sr = sched->submit(p.req);
      } catch (const Error& e) {
        throw ApiError{400, e.what(), "invalid_request_error", "", "invalid_request"};
      }
      if (sr == SubmitResult::QueueFull)
        throw ApiError{429, "the request queue is full; retry shortly", "server_busy", "", "queue_full"};
      if (sr == SubmitResult::Stopping)
        throw ApiError{503, "the server is shutting down", "unavailable_error", "", "shutting_down"};
      ResponseMeta meta{random_id(chat ? "chatcmpl-" : "cmpl-"), p.model, std::time(nullptr)};
      if (p.stream) stream(res, std::move(p), meta, guard);
      else wait_whole(res, p, meta);
    } catch (const ApiError& e) {
      metrics.count_http(e.status);
      send_error(res, e);
    }
  }

  void wait_whole(httplib::Response& res, const ParsedRequest& p, const ResponseMeta& meta) {
    std::string text;
    std::vector<TokenLogprob> toks;
    GenerationEvent ev;
    while (true) {
      if (!p.req->next(ev, 1.0)) continue;
      text += ev.text;
      for (auto& t : ev.tokens) toks.push_back(std::move(t));
      if (ev.final) break;
    }
    if (ev.reason == FinishReason::Error) {
      metrics.count_http(500);
      send_error(res, {500, ev.error, "server_error", "", "generation_failed"});
      return;
    }
    if (ev.reason == FinishReason::Cancelled) {
      metrics.count_http(503);
      send_error(res, {503, "the request was cancelled (server shutting down)", "unavailable_error", "", "cancelled"});
      return;
    }
    metrics.count_http(200);
    send_json(res, 200, final_response(p, meta, text, toks, ev.reason, usage_of(*p.req), engine->tokenizer()));
  }

  // Server-sent events: one chunk per event, then the usage chunk if asked, then [DONE]. A write
  // that fails means the client left: the request is cancelled and its KV freed by the loop.
  void stream(httplib::Response& res, ParsedRequest p, const ResponseMeta& meta, std::shared_ptr<InFlight> guard) {
    metrics.count_http(200);
    res.set_header("Cache-Control", "no-cache");
    auto pr = std::make_shared<ParsedRequest>(std::move(p));
    auto first = std::make_shared<bool>(true);
    const Tokenizer* tok = &engine->tokenizer();
    res.set_chunked_content_provider(
        "text/event-stream",
        [pr, meta, first, tok, guard](size_t, httplib::DataSink& sink) {
          auto send = [&](json j) {
            if (pr->include_kv) j["kv_bytes"] = usage_of(*pr->req).kv_bytes;  // leanlm's extension
            const std::string s = "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
            return sink.write(s.data(), s.size());
          };
          GenerationEvent ev;
          if (!pr->req->next(ev, 5.0)) {
            // Nothing for a while (queued, or a long prompt): a comment line keeps proxies open and
            // finds out whether the client is still there.
            static const char kKeepAlive[] = ": keep-alive\n\n";
            if (!sink.write(kKeepAlive, sizeof kKeepAlive - 1)) {
              pr->req->cancel();
              return false;
            }
            return true;
          }
          if (ev.reason == FinishReason::Error || ev.reason == FinishReason::Cancelled) {
            const ApiError e{ev.reason == FinishReason::Error ? 500 : 503,
                             ev.reason == FinishReason::Error ? ev.error : "the request was cancelled",
                             ev.reason == FinishReason::Error ? "server_error" : "unavailable_error", "",
                             ev.reason == FinishReason::Error ? "generation_failed" : "cancelled"};
            send(error_body(e));
            sink.write("data: [DONE]\n\n", 14);
            sink.done();
            return true;
          }
          bool ok = true;
          // A chat stream opens with the role alone; a completion stream with its first text, even empty.
          if (*first && pr->chat) ok = send(role_chunk(*pr, meta));
          const bool has_delta = !ev.text.empty() || (!ev.tokens.empty() && !ev.final);
          if (ok && (has_delta || (*first && !pr->chat)))
            ok = send(stream_chunk(*pr, meta, ev.text, ev.tokens, FinishReason::None, *tok));
          *first = false;
          if (ok && ev.final) {
            ok = send(stream_chunk(*pr, meta, "", {}, ev.reason, *tok));
            if (ok && pr->include_usage) {
              ok = send(usage_chunk(*pr, meta, usage_of(*pr->req)));
            }
            if (ok) ok = sink.write("data: [DONE]\n\n", 14);
            if (ok) sink.done();
          }
          if (!ok) {
            pr->req->cancel();
            return false;
          }
          return true;
        },
        [pr, guard](bool success) {
          if (!success) pr->req->cancel();  // connection closed before the end
        });
  }

  // What the "kv" extension may ask for, the server's default first (the chat page's codec picker).
  json allowed_codecs() const {
    json a = json::array({limits.default_kv.codec.name()});
    for (const std::string& c : limits.kv_codecs)
      if (c != limits.default_kv.codec.name()) a.push_back(c);
    return a;
  }

  void routes() {
    svr.set_payload_max_length(o.max_body_bytes);
    svr.set_read_timeout(30, 0);   // per read: a slow client may take longer in all, not stall
    svr.set_write_timeout(30, 0);
    svr.set_keep_alive_max_count(1000);
    svr.set_keep_alive_timeout(5);  // a connection that sends nothing is closed after 5 s
    // One thread per open connection: beside the requests in flight, room for kIdleConnections
    // connections that are idle or slow to send, so they cannot keep requests from being read.
    constexpr int kIdleConnections = 256;
    const int threads = o.max_connections + kIdleConnections;
    svr.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };

    svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      // The chat page itself is static (no model output in it); its API calls carry the key.
      if (o.api_key.empty() || req.path == "/health" || req.path == "/metrics" || req.path == "/")
        return httplib::Server::HandlerResponse::Unhandled;
      const std::string auth = req.get_header_value("Authorization");
      if (auth == "Bearer " + o.api_key) return httplib::Server::HandlerResponse::Unhandled;
      metrics.count_http(401);
      send_error(res, {401, auth.empty() ? "missing API key: send 'Authorization: Bearer KEY'" : "invalid API key",
                       "invalid_request_error", "", "invalid_api_key"});
      return httplib::Server::HandlerResponse::Handled;
    });
    // httplib's own refusals (unknown path, body too large) get OpenAI-style bodies too.
    svr.set_error_handler([this](const httplib::Request&, httplib::Response& res) {
      if (!res.body.empty()) return;
      if (res.status == 404) send_error(res, {404, "no such endpoint", "invalid_request_error", "", "not_found"});
      else if (res.status == 413)
        send_error(res, {413, strfmt("the body is larger than %zu bytes", o.max_body_bytes), "invalid_request_error",
                         "", "payload_too_large"});
      else send_error(res, {res.status, "request refused", "invalid_request_error", "", ""});
      metrics.count_http(res.status);
    });

    svr.Get("/", [this](const httplib::Request&, httplib::Response& res) {
      res.set_header("Cache-Control", "no-cache");
      res.set_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; script-src 'unsafe-inline'; style-src 'unsafe-inline'");
      res.set_content(chat_page_html(), "text/html; charset=utf-8");
    });
    svr.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      if (!ready || stopping) {
        send_json(res, 503, {{"status", stopping ? "shutting down" : "loading"}});
        return;
      }
      send_json(res, 200, {{"status", "ok"}});
    });
    svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      SchedulerStats st;
      if (ready) st = sched->stats();  // sched is set before ready, never after
      res.set_content(metrics.render(st), "text/plain; version=0.0.4");
    });
    const auto models = [this](const httplib::Request&, httplib::Response& res) {
      if (!gate(res)) return;
      send_json(res, 200,
                {{"object", "list"},
                 {"data", json::array({{{"id", limits.model_id},
                                        {"object", "model"},
                                        {"created", created},
                                        {"owned_by", "leanlm"},
                                        {"max_model_len", limits.max_ctx},
                                        {"kv_codecs", allowed_codecs()}}})}});
    };
    const auto chat = [this](const httplib::Request& req, httplib::Response& res) { generate(req, res, true); };
    const auto completions = [this](const httplib::Request& req, httplib::Response& res) { generate(req, res, false); };
    svr.Get("/v1/models", models);
    svr.Post("/v1/chat/completions", chat);
    svr.Post("/v1/completions", completions);
    // The same two also without the /v1 prefix, as llama-server answers them (clients whose base URL
    // lacks /v1; llama.cpp's own server tests). Not /completions: there llama-server answers with its
    // own, non-OpenAI shape.
    svr.Get("/models", models);
    svr.Post("/chat/completions", chat);
    svr.Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res) {
      try {
        if (!gate(res)) return;
        const json body = parse_body(req);
        const char* key = body.contains("content") ? "content" : "prompt";
        if (!body.is_object() || !body.contains(key) || !body[key].is_string())
          throw ApiError{400, "'content' must be a string", "invalid_request_error", "content", "invalid_value"};
        bool special = true;
        if (body.contains("add_special")) {
          if (!body["add_special"].is_boolean())
            throw ApiError{400, "'add_special' must be true or false", "invalid_request_error", "add_special", ""};
          special = body["add_special"].get<bool>();
        }
        bool pieces = false;
        if (body.contains("with_pieces")) {
          if (!body["with_pieces"].is_boolean())
            throw ApiError{400, "'with_pieces' must be true or false", "invalid_request_error", "with_pieces", ""};
          pieces = body["with_pieces"].get<bool>();
        }
        const Tokenizer& tk = engine->tokenizer();
        const auto ids = tk.encode(body[key].get<std::string>(), special, true);
        json tokens = json::array();
        for (int id : ids) {
          if (!pieces) {
            tokens.push_back(id);
            continue;
          }
          // with_pieces (as llama-server): each token with its text, or its bytes when they are
          // not valid UTF-8 on their own (part of a multi-byte character).
          const std::string piece = tk.token_to_piece(id, true);
          json bytes = json::array();
          for (unsigned char c : piece) bytes.push_back(int(c));
          tokens.push_back({{"id", id}, {"piece", utf8_sanitize(piece) == piece ? json(piece) : bytes}});
        }
        send_json(res, 200, {{"tokens", tokens}, {"count", ids.size()}, {"max_model_len", limits.max_ctx}});
      } catch (const ApiError& e) {
        send_error(res, e);
      }
    });
    svr.Post("/detokenize", [this](const httplib::Request& req, httplib::Response& res) {
      try {
        if (!gate(res)) return;
        const json body = parse_body(req);
        if (!body.is_object() || !body.contains("tokens") || !body["tokens"].is_array())
          throw ApiError{400, "'tokens' must be a list of token ids", "invalid_request_error", "tokens", "invalid_value"};
        std::vector<int> ids;
        for (const json& t : body["tokens"]) {
          if (!t.is_number_integer() || t.get<long long>() < 0 || t.get<long long>() >= engine->n_vocab())
            throw ApiError{400, strfmt("token ids must be integers in [0, %d)", engine->n_vocab()),
                           "invalid_request_error", "tokens", "invalid_value"};
          ids.push_back(t.get<int>());
        }
        const std::string text = utf8_sanitize(engine->tokenizer().decode(ids));
        send_json(res, 200, {{"content", text}, {"prompt", text}});
      } catch (const ApiError& e) {
        send_error(res, e);
      }
    });
  }

  // "" when sequences with this KV configuration can be built on the model, else why not. Asked
  // by request handlers on their threads: the answers are kept (a server sees few distinct ones).
  std::mutex kv_checked_mu;
  std::map<std::string, std::string> kv_checked;
  std::string kv_problem(const KvConfig& kv) {
    const std::string key = strfmt("%s|%s|%d|%g", kv.name().c_str(), kv.codebooks.c_str(), kv.top_k, kv.think);
    {
      std::lock_guard<std::mutex> lk(kv_checked_mu);
      if (auto it = kv_checked.find(key); it != kv_checked.end()) return it->second;
    }
    std::string why;
    try {
      engine->check_kv(kv, o.sched.max_ctx);
    } catch (const std::exception& e) {
      why = e.what();
    }
    std::lock_guard<std::mutex> lk(kv_checked_mu);
    if (kv_checked.size() < 4096) kv_checked[key] = why;
    return why;
  }

  void load() {
    engine = std::make_unique<Engine>(o.engine);
    chat_format = detect_chat_format(engine->tokenizer(), engine->model().config().arch);
    limits.model_id = o.model_id;
    limits.max_ctx = o.engine.ctx;
    limits.max_tokens = o.max_tokens > 0 ? o.max_tokens : o.engine.ctx;
    limits.default_kv = o.engine.kv;
    limits.kv_codecs = o.kv_codecs;
    o.sched.max_ctx = o.engine.ctx;
    // Every configuration the flags allow must build on this model, or the server does not start.
    if (const std::string why = kv_problem(o.engine.kv); !why.empty())
      fail("the KV configuration " + o.engine.kv.name() + " cannot be used with this model: " + why);
    for (const std::string& c : o.kv_codecs) {
      KvConfig k = o.engine.kv;
      k.codec = parse_codec(c);
      if (const std::string why = kv_problem(k); !why.empty()) fail("--kv-allow " + c + ": " + why);
    }
    limits.kv_problem = [this](const KvConfig& kv) { return kv_problem(kv); };
    sched = std::make_unique<Scheduler>(*engine, o.sched, &metrics);
  }
};

HttpServer::HttpServer(ServerOptions o) : impl_(std::make_unique<Impl>(std::move(o))) {}
HttpServer::~HttpServer() = default;

void HttpServer::stop(bool force) {
  Impl& s = *impl_;
  std::lock_guard<std::mutex> lk(s.stop_mu);
  s.stopping = true;
  if (force) s.forced = true;
  s.stop_cv.notify_all();
}

int HttpServer::run() {
  Impl& s = *impl_;
  s.routes();
  int port = s.o.port;
  if (port == 0) {
    port = s.svr.bind_to_any_port(s.o.host);
  } else if (!s.svr.bind_to_port(s.o.host, port)) {
    port = -1;
  }
  if (port < 0) {
    std::fprintf(stderr, "leanlm serve: cannot listen on %s:%d (in use, or not an address of this machine)\n",
                 s.o.host.c_str(), s.o.port);
    return 1;
  }
  std::fprintf(stderr, "leanlm serve: listening on http://%s:%d (loading the model)\n", s.o.host.c_str(), port);
  std::thread listener([&] { s.svr.listen_after_bind(); });
  // stop() only takes effect once the listener runs: wait for it before anything can fail.
  while (!s.svr.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  int rc = 0;
  std::thread watcher;
  try {
    s.load();
    s.ready = true;
    std::fprintf(stderr, "leanlm serve: ready, model '%s', context %d, KV %s%s\n", s.limits.model_id.c_str(),
                 s.limits.max_ctx, s.o.engine.kv.name().c_str(),
                 s.o.engine.kv_mem ? strfmt(", budget %.0f MiB", s.o.engine.kv_mem / 1048576.0).c_str() : "");
    if (!s.o.ready_file.empty()) {
      const std::string tmp = s.o.ready_file + ".tmp";
      std::ofstream(tmp) << port << "\n";
      std::filesystem::rename(tmp, s.o.ready_file);
    }
    // The shutdown watcher: on stop(), drain; after the grace time (or a second stop), cancel the rest.
    watcher = std::thread([&] {
      std::unique_lock<std::mutex> lk(s.stop_mu);
      s.stop_cv.wait(lk, [&] { return s.stopping.load(); });
      s.sched->stop(true);
      if (!s.stop_cv.wait_for(lk, std::chrono::duration<double>(s.o.shutdown_grace_s),
                              [&] { return !s.ready.load() || s.forced.load(); }))
        s.sched->stop(false);
      else if (s.forced)
        s.sched->stop(false);
    });
    s.sched->run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "leanlm serve: error: %s\n", e.what());
    rc = 1;
  }
  {
    std::lock_guard<std::mutex> lk(s.stop_mu);
    s.stopping = true;
    s.ready = false;
    s.stop_cv.notify_all();
  }
  if (watcher.joinable()) watcher.join();
  // Streams have their last event; give their handlers time to write it (they hold in_flight).
  for (int i = 0; i < 1000 && s.in_flight.load() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  s.svr.stop();
  listener.join();
  std::fprintf(stderr, "leanlm serve: stopped\n");
  return rc;
}

}  // namespace leanlm
