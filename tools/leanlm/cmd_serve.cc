// leanlm serve: the OpenAI-compatible server (src/server/). SIGTERM and SIGINT stop it gracefully:
// no new work, in-flight requests finish (or are cancelled after --shutdown-grace), exit 0.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "common.h"
#include "server/http_server.h"
#include "util/sysinfo.h"

namespace leanlm::cli {

namespace {

// The self-pipe of the stop signals: the handler writes the signal's number, the waiter reads it.
int g_signal_pipe[2] = {-1, -1};
extern "C" void on_stop_signal(int sig) {
  const int saved = errno;
  const unsigned char b = static_cast<unsigned char>(sig);
  if (write(g_signal_pipe[1], &b, 1) < 0) {
  }
  errno = saved;
}

struct ServeFlags {
  EngineFlags eng;
  ServerOptions srv;
  std::string kv_allow;
};

int serve(ServeFlags& f) {
  ServerOptions o = f.srv;
  o.engine = f.eng.resolve(false);
  if (o.model_id.empty()) {  // a short name as given (-m smollm2-135m), else the file's base name
    const std::string& m = f.eng.model;
    o.model_id = !m.empty() && m.find('/') == std::string::npos && m.find(".gguf") == std::string::npos
                     ? m
                     : std::filesystem::path(o.engine.model_path).stem().string();
  }
  if (o.engine.kv_mem == 0) {
    // Default budget: half of the memory available now (weights are mapped, not counted).
    const double avail = double(available_memory_bytes());
    if (avail > 0) o.engine.kv_mem = size_t(avail * 0.5);
  }
  // Flag combinations that no model takes fail here, before the port is bound; what depends on the
  // model (head size, codebooks) fails once it is loaded (HttpServer), also with exit 1.
  o.engine.kv.check();
  for (const auto& c : f.kv_allow.empty() ? std::vector<std::string>{} : split_list(f.kv_allow)) {
    const CodecSpec spec = parse_codec(c);  // a clear error for a bad name
    if (spec.needs_codebooks() && o.engine.kv.codebooks.empty())
      fail("--kv-allow " + c + " needs --kv-codebooks (CQ codebooks)");
    KvConfig k = o.engine.kv;
    k.codec = spec;
    try {
      k.check();
    } catch (const Error& e) {
      fail("--kv-allow " + c + ": " + e.what());
    }
    o.kv_codecs.insert(spec.name());
  }
  if (o.sched.step_tokens > o.engine.batch) o.engine.batch = o.sched.step_tokens;

  // SIGTERM and SIGINT reach a handler that only writes the signal's number to a pipe (async-signal
  // safe); one thread reads it and asks the server to stop (a handler may not take locks). The
  // server's threads start with the signals blocked and the waiter unblocks them, so the signal
  // lands on the waiter (or on a thread a library started before main, such as OpenBLAS's pool:
  // the handler works there too, where a sigwait design would leave the default action, death).
  if (pipe(g_signal_pipe) != 0) fail("serve: cannot create the signal pipe");
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client that left must not kill the server
  HttpServer server(o);
  std::thread waiter([&] {
    pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
    // The first signal drains, a second one cancels what is still running; 0 is the end.
    for (int n = 0;;) {
      unsigned char sig = 0;
      const ssize_t got = read(g_signal_pipe[0], &sig, 1);
      if (got < 0 && errno == EINTR) continue;
      if (got != 1 || sig == 0) return;
      std::fprintf(stderr, "leanlm serve: %s, %s\n", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                   n == 0 ? "stopping (again to cancel running requests)" : "cancelling running requests");
      server.stop(n++ > 0);
    }
  });
  const int rc = server.run();
  const unsigned char end = 0;
  while (write(g_signal_pipe[1], &end, 1) < 0 && errno == EINTR) {
  }
  waiter.join();
  return rc;
}

}  // namespace

void add_serve(CLI::App& app) {
  auto f = std::make_shared<ServeFlags>();
  CLI::App* c = app.add_subcommand("serve", "OpenAI-compatible HTTP server with continuous batching");
  f->eng.add(c, 4096);
  c->add_option("--host", f->srv.host, "address to listen on")->capture_default_str();
  c->add_option("--port", f->srv.port, "port (0: any free port)")->capture_default_str()->check(CLI::Range(0, 65535));
  c->add_option("--api-key", f->srv.api_key, "require 'Authorization: Bearer KEY' on the API endpoints");
  c->add_option("--model-id", f->srv.model_id, "model name clients use (default: the file's base name)");
  c->add_option("--kv-allow", f->kv_allow,
                "KV codecs a request may choose with its \"kv\" field, comma-separated (the --kv-codec default is "
                "always allowed)");
  c->add_option("--step-tokens", f->srv.sched.step_tokens, "most tokens per forward pass (decode plus prompt chunks)")
      ->capture_default_str()
      ->check(CLI::Range(16, 65536));
  c->add_option("--max-running", f->srv.sched.max_running, "most sequences in the batch at once")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  c->add_option("--prefix-cache", f->srv.sched.prefix_cache,
                 "prompt prefixes kept for reuse by later requests (shared KV, freed when memory is needed; 0: off)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 16));
  c->add_option("--max-waiting", f->srv.sched.max_waiting, "queued requests beyond which new ones get 429")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 20));
  c->add_option("--max-tokens", f->srv.max_tokens, "most tokens one request may generate (0: the context size)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 24));
  c->add_option("--max-connections", f->srv.max_connections, "API requests in flight at once; more get 429")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  c->add_option("--max-body", f->srv.max_body_bytes, "largest request body in bytes")->capture_default_str();
  c->add_option("--shutdown-grace", f->srv.shutdown_grace_s,
                "seconds in-flight requests get to finish after SIGTERM")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 3600.0));
  c->add_option("--ready-file", f->srv.ready_file, "write the bound port to this file once the model is loaded");
  c->callback([f] {
    const int rc = serve(*f);
    if (rc != 0) std::exit(rc);
  });
}

}  // namespace leanlm::cli
