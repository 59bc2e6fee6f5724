// `leanlm serve`: the OpenAI-compatible HTTP front end (cpp-httplib) over one Engine and its
// Scheduler. The port is bound and /health answers 503 while the model loads; the engine loop runs
// on the thread that called run(); HTTP handlers only parse, queue and stream events, so a slow
// client never holds the loop.
#pragma once
#include <atomic>
#include <memory>
#include <string>

#include "engine/engine.h"
#include "server/openai_api.h"
#include "server/scheduler.h"

namespace leanlm {

struct ServerOptions {
  EngineOptions engine;
  std::string host = "127.0.0.1";
  int port = 8080;                 // 0: any free port (printed, and port() after start)
  std::string api_key;             // empty: no authentication
  std::string model_id;            // the name clients use; default: the model file's base name
  SchedulerOptions sched;
  int max_tokens = 0;              // per request; 0: the context size
  std::set<std::string> kv_codecs; // codecs requests may choose besides the default
  size_t max_body_bytes = 4 << 20;
  int max_connections = 64;        // API requests in flight; more get 429
  double shutdown_grace_s = 30;    // after SIGTERM: time in-flight requests get to finish
  std::string ready_file;          // written with the bound port once the model is loaded (tests)
};

class HttpServer {
 public:
  explicit HttpServer(ServerOptions o);
  ~HttpServer();
  // Binds, loads the model, serves until stop(); returns the process exit code.
  int run();
  // Stops accepting work (503 for new requests and /health), lets in-flight requests finish within
  // the grace time (force: none), then cancels the rest and returns from run(). Thread-safe.
  void stop(bool force = false);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace leanlm
