// Continuous batching: one engine loop serves every request. Each step is one forward pass over
// the next token of every running sequence plus chunks of prompts being read, up to a token budget;
// requests join and leave between steps. All sequences draw KV memory from the engine's one pool:
// a request waits in the queue until its prompt fits, and a running sequence that cannot grow is
// preempted (its KV freed, its tokens recomputed when memory frees up) instead of failing.
//
// Prefix reuse: when a prompt has been read, and when a request finishes, its KV is frozen into the
// prefix cache; a later request that starts with the same tokens (and KV configuration) shares
// those positions instead of recomputing them. The cache gives its memory back, least recently used
// first, before any request has to wait or be preempted.
//
// Threads: HTTP handlers call submit() and read their Request's events; only the loop thread
// (run()) touches the engine.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/prefix_cache.h"
#include "engine/sampler.h"
#include "kv/kv_config.h"

namespace leanlm {

struct GenerationParams {
  SamplerOptions sampler;          // temperature, top_k, top_p, min_p, seed
  int max_tokens = 256;            // generated tokens at most (also capped by the context)
  std::vector<std::string> stop;   // stop strings (the text ends before them)
  float presence_penalty = 0.f;    // OpenAI's penalties, over the tokens generated so far
  float frequency_penalty = 0.f;
  int top_logprobs = -1;           // -1: no log-probabilities; k >= 0: the chosen token's and the k best
};

enum class FinishReason { None, Stop, Length, Cancelled, Error };
const char* finish_reason_name(FinishReason r);

struct TokenLogprob {
  int token = 0;
  float logprob = 0.f;
  std::vector<std::pair<int, float>> top;  // the top_logprobs best (token, logprob), best first
};

// What the loop reports to a request's reader: text as it becomes final, token by token.
struct GenerationEvent {
  std::string text;                  // new text (may be empty while a stop string is possible)
  std::vector<TokenLogprob> tokens;  // the tokens this event covers (with log-probabilities if asked)
  bool final = false;
  FinishReason reason = FinishReason::None;
  std::string error;                 // with FinishReason::Error
};

struct Request {
  // Set before submit().
  std::vector<int> prompt;
  GenerationParams params;
  KvConfig kv;
  std::string kv_label;  // the codec name for metrics

  // Filled by the loop; read under mu.
  std::mutex mu;
  std::condition_variable cv;
  std::deque<GenerationEvent> events;
  int prompt_tokens = 0, completion_tokens = 0;
  int cached_tokens = 0;  // prompt tokens read from the prefix cache at the first admission
  size_t kv_bytes = 0;    // its sequence's KV bytes at the latest event (the chat page shows them live)
  int preemptions = 0;    // times its KV was freed to make room (then recomputed)
  std::atomic<bool> cancelled{false};  // set by the reader (client gone); the loop frees the sequence

  // Waits for the next event (false on timeout).
  bool next(GenerationEvent& ev, double timeout_s);
  void cancel() { cancelled = true; }
};

struct SchedulerOptions {
  int step_tokens = 512;   // tokens per forward pass (decode tokens first, then prompt chunks); >= 16
  int max_running = 16;    // sequences in the batch at once
  int max_waiting = 64;    // queued requests beyond which submit() refuses (HTTP 429)
  int max_ctx = 4096;      // positions per sequence
  int prefix_cache = 64;   // prefixes kept for reuse (engine/prefix_cache.h); 0: no prefix reuse
};

// Counters and latency samples for /metrics, read under the scheduler's lock.
struct SchedulerStats {
  int running = 0, waiting = 0;
  uint64_t prompt_tokens = 0, generated_tokens = 0, requests_done = 0, requests_failed = 0;
  uint64_t finished_stop = 0, finished_length = 0;  // requests_done by finish reason
  uint64_t preemptions = 0, cancelled = 0, steps = 0;
  size_t kv_bytes = 0, kv_budget = 0;   // all KV bytes charged (prefix cache included), the budget
  // Prefix reuse: prompt tokens looked up and found; bytes only the cache holds (freed on demand).
  uint64_t prefix_query_tokens = 0, prefix_hit_tokens = 0;
  size_t prefix_cache_bytes = 0;
  int prefix_cache_entries = 0;
  std::vector<std::pair<std::string, size_t>> kv_bytes_by_codec;
};

// Histograms are fed by callbacks so the metrics layer owns their buckets.
struct SchedulerObserver {
  virtual ~SchedulerObserver() = default;
  virtual void first_token(double seconds_since_submit) {}
  virtual void inter_token(double seconds) {}
  virtual void finished(double seconds_since_submit, FinishReason r) {}
};

enum class SubmitResult { Queued, QueueFull, Stopping };

class Scheduler {
 public:
  Scheduler(Engine& engine, const SchedulerOptions& o, SchedulerObserver* observer = nullptr);
  ~Scheduler();

  // Queues a request. Throws leanlm::Error for a prompt that can never run (empty, or longer than
  // the context); one whose KV needs exceed the whole budget ends with an error event instead.
  SubmitResult submit(const std::shared_ptr<Request>& r);
  // The engine loop; returns after stop() once nothing is left to do (or everything is cancelled).
  void run();
  // drain: finish what is running and queued; otherwise cancel it. Returns at once.
  void stop(bool drain);
  SchedulerStats stats() const;
  const SchedulerOptions& options() const { return o_; }

 private:
  struct Slot;  // a request being served: its sequence, sampler, text stream, progress
  bool step();  // one forward pass; false when idle
  void snapshot();
  void admit();
  bool fits(const std::vector<std::pair<Slot*, int>>& plan) const;
  void preempt(Slot& s);
  void finish(Slot& s, FinishReason r, const std::string& error = {});
  void emit(Slot& s, GenerationEvent ev);
  void retire(Slot& s, FinishReason r);
  void sample_next(Slot& s, const float* logits);
  std::unique_ptr<SequenceState> new_sequence(Slot& s);
  void cache_prefix(Slot& s, bool finished);
  bool make_room(size_t need);
  bool evict_cached();
  std::set<const KvStore*> stores_in_use() const;
  static void add_parts(const Slot* s, std::set<const KvStore*>& out);
  void count_lookup(Slot& s);

  Engine& engine_;
  SchedulerOptions o_;
  SchedulerObserver* observer_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Request>> queue_;  // submitted, not yet taken by the loop
  std::deque<std::unique_ptr<Slot>> waiting_;    // taken (or preempted), waiting for memory
  std::vector<std::unique_ptr<Slot>> running_;
  bool stopping_ = false, draining_ = false;
  SchedulerStats stats_;
  std::vector<float> logits_;  // one row, penalised
  PrefixCache cache_;
  size_t cache_only_bytes_ = 0;  // last measure of the bytes only the cache holds
  double cache_bytes_time_ = 0;
  uint64_t next_order_ = 0;
  uint64_t departures_ = 0;  // requests that have left (finished, failed, cancelled): loop thread only
};

}  // namespace leanlm
