#include "server/scheduler.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <set>
#include <unordered_map>

#include "kernels/matmul.h"
#include "kv/block_pool.h"
#include "engine/text_stream.h"
#include "util/error.h"

namespace leanlm {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::Stop: return "stop";
    case FinishReason::Length: return "length";
    case FinishReason::Cancelled: return "cancelled";
    case FinishReason::Error: return "error";
    default: return "";
  }
}

bool Request::next(GenerationEvent& ev, double timeout_s) {
  std::unique_lock<std::mutex> lk(mu);
  if (!cv.wait_for(lk, std::chrono::duration<double>(timeout_s), [&] { return !events.empty(); })) return false;
  ev = std::move(events.front());
  events.pop_front();
  return true;
}

struct Scheduler::Slot {
  std::shared_ptr<Request> req;
  std::unique_ptr<SequenceState> seq;  // null while waiting for memory
  std::vector<int> tokens;             // prompt, then every generated token: what the cache must hold
  int n_prompt = 0;
  std::unique_ptr<Sampler> sampler;
  TextStream text;
  std::unordered_map<int, int> counts;  // generated token -> occurrences (penalties)
  double t_submit = 0, t_last = 0;
  uint64_t order = 0;                   // arrival order, kept through preemption: the newest is preempted first
  size_t wait_bytes = 0;                // KV bytes it needed when it last did not fit
  bool prompt_cached = false;           // its prompt's KV went to the prefix cache
  bool skip_cache = false;              // a cached prefix kept it from fitting: computed whole instead
  uint64_t readmit_after = 0;           // preempted: admitted again once departures_ reaches this
  int fed() const { return seq ? seq->n_past : 0; }
  int generated() const { return int(tokens.size()) - n_prompt; }
};

Scheduler::Scheduler(Engine& engine, const SchedulerOptions& o, SchedulerObserver* observer)
    : engine_(engine), o_(o), observer_(observer), cache_(std::max(0, o.prefix_cache), engine.layer_windows()) {
  if (o_.step_tokens < 1 || o_.max_running < 1 || o_.max_waiting < 0 || o_.max_ctx < 2)
    fail("scheduler: step tokens, running sequences and context must be positive");
  o_.step_tokens = std::min(o_.step_tokens, engine_.forward().max_batch());
  if (o_.step_tokens < 2 * kMinGemmTokens)  // prompt chunks are never shorter than kMinGemmTokens
    fail(strfmt("scheduler: at least %d tokens per step are needed (and as large a batch)", 2 * kMinGemmTokens));
  o_.max_running = std::min(o_.max_running, o_.step_tokens);
  stats_.kv_budget = engine_.options().kv_mem;
}

Scheduler::~Scheduler() = default;

SubmitResult Scheduler::submit(const std::shared_ptr<Request>& r) {
  if (r->prompt.empty()) fail("the prompt is empty");
  if (int(r->prompt.size()) + 1 > o_.max_ctx)
    fail(strfmt("the prompt has %zu tokens; this server's context is %d tokens (prompt plus generated)",
                r->prompt.size(), o_.max_ctx));
  std::lock_guard<std::mutex> lk(mu_);
  if (stopping_) return SubmitResult::Stopping;
  if (int(queue_.size() + waiting_.size()) >= o_.max_waiting) return SubmitResult::QueueFull;
  queue_.push_back(r);
  cv_.notify_one();
  return SubmitResult::Queued;
}

void Scheduler::stop(bool drain) {
  std::lock_guard<std::mutex> lk(mu_);
  stopping_ = true;
  draining_ = drain;
  if (!drain) {
    for (auto& r : queue_) r->cancel();
    for (auto& s : waiting_) s->req->cancel();
    for (auto& s : running_) s->req->cancel();
  }
  cv_.notify_one();
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  SchedulerStats s = stats_;
  s.waiting = int(queue_.size() + waiting_.size());
  return s;
}

void Scheduler::emit(Slot& s, GenerationEvent ev) {
  Request& r = *s.req;
  std::lock_guard<std::mutex> lk(r.mu);
  r.completion_tokens = std::max(0, s.generated());
  if (s.seq) r.kv_bytes = s.seq->kv_bytes();
  r.events.push_back(std::move(ev));
  r.cv.notify_all();
}

void Scheduler::finish(Slot& s, FinishReason reason, const std::string& error) {
  GenerationEvent ev;
  ev.final = true;
  ev.reason = reason;
  ev.error = error;
  if (reason != FinishReason::Cancelled && reason != FinishReason::Error) ev.text = s.text.flush();
  emit(s, std::move(ev));
  retire(s, reason);
}

// After a request's final event: its KV goes to the prefix cache (a finished answer) or back to the
// pool, and it is counted.
void Scheduler::retire(Slot& s, FinishReason reason) {
  if (reason == FinishReason::Stop || reason == FinishReason::Length) cache_prefix(s, true);
  s.seq.reset();
  ++departures_;
  if (observer_) observer_->finished(now_s() - s.t_submit, reason);
  std::lock_guard<std::mutex> lk(mu_);
  if (reason == FinishReason::Stop || reason == FinishReason::Length) {
    ++stats_.requests_done;
    ++(reason == FinishReason::Stop ? stats_.finished_stop : stats_.finished_length);
  } else if (reason == FinishReason::Cancelled) {
    ++stats_.cancelled;
  } else {
    ++stats_.requests_failed;
  }
}

void Scheduler::preempt(Slot& s) {
  s.seq.reset();  // recomputed from s.tokens when memory allows
  s.wait_bytes = 0;
  // Back only once a request has left: the memory it freed is what the others' growth needs, so
  // taking it back at once would make it the victim again the next step. So a request is
  // preempted at most once per request that finishes meanwhile.
  s.readmit_after = departures_ + 1;
  {
    std::lock_guard<std::mutex> rk(s.req->mu);
    ++s.req->preemptions;
  }
  std::lock_guard<std::mutex> lk(mu_);
  ++stats_.preemptions;
}

namespace {

// Everything besides the tokens that a cached prefix's KV depends on (the model and context are the
// server's own).
std::string cache_key(const KvConfig& kv) { return kv.name() + "|" + kv.codebooks; }

}  // namespace

// A sequence for the slot's tokens, starting from the longest cached prefix of them when there is one.
std::unique_ptr<SequenceState> Scheduler::new_sequence(Slot& s) {
  const KvConfig& kv = s.req->kv;
  if (cache_.enabled() && kv.shareable() && !s.skip_cache) {
    // The last tokens are computed again even when cached: the last one's logits give the next
    // token, and a chunk of kMinGemmTokens goes through the matrix kernels, as the prompt that
    // filled the cache did, so a repeated prompt gets the very logits it got the first time (one
    // token alone would take the matrix-vector kernels: equal in exact arithmetic, rounded
    // differently, and greedy decoding can turn on a near-tie).
    const int max_use = int(s.tokens.size()) - kMinGemmTokens;
    const auto hit = cache_.lookup(cache_key(kv), s.tokens, max_use);
    if (hit.prefix) return engine_.new_sequence(kv, o_.max_ctx, hit.prefix.get(), hit.n_tokens);
  }
  return engine_.new_sequence(kv, o_.max_ctx);
}

// Freezes the slot's KV so far into the prefix cache: after its prompt (the sequence goes on in
// fresh stores), or when it finished (handing its stores over).
void Scheduler::cache_prefix(Slot& s, bool finished) {
  if (!cache_.enabled() || !s.seq || !s.req->kv.shareable() || s.seq->n_past == 0) return;
  while (true) {
    try {
      cache_.insert(cache_key(s.req->kv), s.tokens, s.seq->freeze(!finished));
      return;
    } catch (const KvMemoryError&) {
      // No room for the fresh stores (nothing changed): older entries give way, or the sequence
      // goes on uncached.
      if (!evict_cached()) return;
    }
  }
}

// Drops the least recently used prefix-cache entry that frees memory (one whose stores running
// sequences also read frees nothing); false when none does.
bool Scheduler::evict_cached() { return cache_.evict_lru(stores_in_use()); }

// The shared stores that sequences (running, or admitted this step) read: evicting the cache frees
// none of them.
std::set<const KvStore*> Scheduler::stores_in_use() const {
  std::set<const KvStore*> in_use;
  for (auto& s : running_) add_parts(s.get(), in_use);
  for (auto& s : waiting_) add_parts(s.get(), in_use);
  return in_use;
}

void Scheduler::add_parts(const Slot* s, std::set<const KvStore*>& out) {
  if (!s || !s->seq) return;
  for (const auto& l : s->seq->layers)
    if (const auto* seg = dynamic_cast<const SegmentedKvStore*>(l.get()))
      for (const auto& p : seg->parts()) out.insert(p.store.get());
}

// Prefix-cache counters, once per admission that runs: prompt tokens asked for, and found.
void Scheduler::count_lookup(Slot& s) {
  if (s.generated() == 0) {  // a preempted request's recomputation may find its own prompt: not a hit
    std::lock_guard<std::mutex> rk(s.req->mu);
    s.req->cached_tokens = std::min(s.seq->n_past, s.n_prompt);
  }
  if (!cache_.enabled() || !s.req->kv.shareable()) return;
  std::lock_guard<std::mutex> lk(mu_);  // counted now: a request may end within this step
  stats_.prefix_query_tokens += s.tokens.size();
  stats_.prefix_hit_tokens += uint64_t(s.seq->n_past);
}

// Frees prefix-cache entries, least recently used first, until `need` more bytes fit the budget.
bool Scheduler::make_room(size_t need) {
  const BlockPool& pool = engine_.kv_pool();
  if (!pool.budget() || pool.in_use() + need <= pool.budget()) return true;
  // Only if dropping the whole cache could make room: a request that waits for running sequences
  // keeps the cache for later ones.
  const std::set<const KvStore*> in_use = stores_in_use();  // eviction does not change it
  const size_t freeable = cache_.bytes(in_use);
  if (pool.in_use() - std::min(pool.in_use(), freeable) + need > pool.budget()) return false;
  while (pool.in_use() + need > pool.budget())
    if (!cache_.evict_lru(in_use)) return false;
  return true;
}

// Takes new requests from the queue and gives waiting ones a sequence while memory allows, in order.
void Scheduler::admit() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    while (!queue_.empty()) {
      auto s = std::make_unique<Slot>();
      s->req = std::move(queue_.front());
      queue_.pop_front();
      if (s->req->cancelled) {  // the client left while it was queued
        GenerationEvent ev;
        ev.final = true, ev.reason = FinishReason::Cancelled;
        std::lock_guard<std::mutex> rk(s->req->mu);
        s->req->events.push_back(ev);
        s->req->cv.notify_all();
        ++stats_.cancelled;
        continue;
      }
      s->tokens = s->req->prompt;
      s->n_prompt = int(s->tokens.size());
      s->sampler = std::make_unique<Sampler>(s->req->params.sampler);
      s->text = TextStream(s->req->params.stop);
      s->t_submit = s->t_last = now_s();
      // Its place for good: a preempted request keeps it, so it is never the newest (the next
      // victim) again for being re-admitted, and as the oldest prompt it keeps its reserve.
      s->order = next_order_++;
      {
        std::lock_guard<std::mutex> rk(s->req->mu);
        s->req->prompt_tokens = s->n_prompt;
      }
      waiting_.push_back(std::move(s));
    }
  }
  BlockPool& pool = engine_.kv_pool();
  // Bytes the running sequences still need to read their prompts (admitted, not yet allocated):
  // promised already, so a new request must fit beside them, or admission would overcommit the
  // budget and the steps would preempt what it let in.
  size_t promised = 0;
  for (const auto& r : running_)
    if (r->seq && int(r->tokens.size()) - r->fed() > 1)
      promised += r->seq->kv_bytes_to_append(int(r->tokens.size()) - r->fed());
  while (!waiting_.empty() && int(running_.size()) < o_.max_running) {
    Slot& s = *waiting_.front();
    if (departures_ < s.readmit_after && !running_.empty()) break;  // preempted: waits for a departure
    // Known not to fit at the last try: wait for memory to free without building a sequence again.
    if (s.wait_bytes && !running_.empty() && !make_room(s.wait_bytes + promised)) break;
    if (!s.seq) {
      try {
        s.seq = new_sequence(s);
      } catch (const KvMemoryError& e) {
        if (evict_cached()) continue;  // the cache held the memory: try again
        if (running_.empty()) {  // nothing will free memory for it: it can never run
          auto dead = std::move(waiting_.front());
          waiting_.pop_front();
          finish(*dead, FinishReason::Error, e.what());
          continue;
        }
        break;
      } catch (const std::exception& e) {
        // Not memory: a KV configuration this model cannot take (requests are checked when they are
        // parsed; this is the last line). It fails this request alone: the prefix cache keeps its
        // entries and the requests behind it go on being admitted.
        auto dead = std::move(waiting_.front());
        waiting_.pop_front();
        finish(*dead, FinishReason::Error, e.what());
        continue;
      }
    }
    const size_t need = s.seq->kv_bytes_to_append(int(s.tokens.size()) - s.seq->n_past);
    const size_t budget = pool.budget();
    if (!make_room(need + promised)) {
      if (running_.empty() && s.seq->n_past > 0) {
        // The shared part it started from stays whole in memory (positions it hides included):
        // alone, it may fit computing everything itself.
        s.seq.reset();
        s.skip_cache = true;
        continue;
      }
      if (running_.empty()) {
        // Alone on an empty pool and still too big: the budget can never hold these tokens. A
        // preempted sequence that already answered ends as at the end of its context.
        auto dead = std::move(waiting_.front());
        waiting_.pop_front();
        dead->seq.reset();
        if (dead->generated() > 0) {
          finish(*dead, FinishReason::Length);
          continue;
        }
        finish(*dead, FinishReason::Error,
               strfmt("the prompt needs %.1f MiB of KV cache; the server's budget is %.1f MiB", need / 1048576.0,
                      budget / 1048576.0));
        continue;
      }
      s.seq.reset();  // wait without holding memory
      s.wait_bytes = need;
      break;
    }
    count_lookup(s);
    promised += need;
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
}

bool Scheduler::fits(const std::vector<std::pair<Slot*, int>>& plan) const {
  const BlockPool& pool = engine_.kv_pool();
  if (!pool.budget()) return true;
  size_t need = 0;
  for (const auto& [s, n] : plan) need += s->seq->kv_bytes_to_append(n);
  return pool.in_use() + need <= pool.budget();
}

void Scheduler::sample_next(Slot& s, const float* logits) {
  const int V = engine_.n_vocab();
  const GenerationParams& p = s.req->params;
  const float* l = logits;
  if ((p.presence_penalty != 0.f || p.frequency_penalty != 0.f) && !s.counts.empty()) {
    logits_.assign(logits, logits + V);
    for (const auto& [tok, n] : s.counts) logits_[tok] -= p.presence_penalty + p.frequency_penalty * float(n);
    l = logits_.data();
  }
  const int tok = s.sampler->sample(l, V, s.tokens);
  GenerationEvent ev;
  TokenLogprob lp;
  lp.token = tok;
  if (p.top_logprobs >= 0) {  // log-softmax of the model's distribution (before sampling settings)
    float m = -INFINITY;
    for (int i = 0; i < V; ++i) m = std::max(m, logits[i]);
    double z = 0;
    for (int i = 0; i < V; ++i) z += std::exp(double(logits[i] - m));
    const float lz = m + float(std::log(z));
    lp.logprob = logits[tok] - lz;
    if (p.top_logprobs > 0) {
      std::vector<int> idx(V);
      for (int i = 0; i < V; ++i) idx[i] = i;
      const int k = std::min(p.top_logprobs, V);
      std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int a, int b) { return logits[a] > logits[b]; });
      for (int i = 0; i < k; ++i) lp.top.push_back({idx[i], logits[idx[i]] - lz});
    }
  }
  ev.tokens.push_back(std::move(lp));
  s.tokens.push_back(tok);
  ++s.counts[tok];
  const double t = now_s();
  if (observer_) {
    if (s.generated() == 1) observer_->first_token(t - s.t_submit);
    else observer_->inter_token(t - s.t_last);
  }
  s.t_last = t;
  {
    std::lock_guard<std::mutex> lk(mu_);
    ++stats_.generated_tokens;
  }
  const Tokenizer& tok_ = engine_.tokenizer();
  if (tok_.is_eog(tok)) {
    ev.text = s.text.flush();
    ev.final = true;
    ev.reason = FinishReason::Stop;
  } else {
    ev.text = s.text.push(tok_.token_to_piece(tok));
    if (s.text.stopped()) {
      ev.final = true, ev.reason = FinishReason::Stop;
    } else if (s.generated() >= p.max_tokens || int(s.tokens.size()) >= o_.max_ctx) {
      ev.text += s.text.flush();
      ev.final = true, ev.reason = FinishReason::Length;
    }
  }
  const bool final = ev.final;
  const FinishReason reason = ev.reason;
  emit(s, std::move(ev));
  if (final) retire(s, reason);
}

bool Scheduler::step() {
  // Requests whose client went away leave first: their memory serves the others this step.
  auto drop_cancelled = [&](auto& list) {
    for (auto& s : list)
      if (s->req->cancelled) finish(*s, FinishReason::Cancelled), s.reset();
    list.erase(std::remove(list.begin(), list.end(), nullptr), list.end());
  };
  drop_cancelled(running_);
  drop_cancelled(waiting_);

  admit();
  if (running_.empty()) return false;

  // The plan: one token for every decoding sequence, then prompt chunks, the prompts with the
  // fewest tokens left first. A turn whose history came from the prefix cache has a few dozen
  // tokens to read: it gets its first token at the next step instead of waiting behind a cold
  // prompt of thousands. The oldest prompt keeps a quarter of the step in reserve, so a stream of
  // shorter ones cannot hold it back for ever.
  std::vector<std::pair<Slot*, int>> plan;
  while (true) {
    plan.clear();
    int budget = o_.step_tokens;
    auto left = [](const Slot* s) { return int(s->tokens.size()) - s->fed(); };
    std::vector<Slot*> prompts;
    for (auto& s : running_) {
      if (left(s.get()) == 1) plan.push_back({s.get(), 1}), --budget;
      else if (left(s.get()) > 1) prompts.push_back(s.get());
    }
    std::stable_sort(prompts.begin(), prompts.end(), [&](const Slot* a, const Slot* b) { return left(a) < left(b); });
    Slot* const oldest =
        prompts.empty() ? nullptr
                        : *std::min_element(prompts.begin(), prompts.end(),
                                            [](const Slot* a, const Slot* b) { return a->order < b->order; });
    const int reserve =
        oldest && oldest != prompts.front() ? std::min(left(oldest), std::max(kMinGemmTokens, o_.step_tokens / 4)) : 0;
    // A chunk of s within `room` tokens, or none.
    auto take = [&](Slot* s, int room) {
      int n = std::min(left(s), room);
      // Chunks of at least kMinGemmTokens (when the prompt has them): every batch holding prompt
      // tokens then takes the matrix kernels, whose rows do not depend on the rest of the batch,
      // so a prompt's tokens get the same bits however the steps cut it (and a cached prefix's
      // recomputed tail matches the run that filled the cache).
      if (n < left(s) && left(s) - n < kMinGemmTokens) n = left(s) - kMinGemmTokens;
      if (n <= 0 || (n < kMinGemmTokens && n < left(s))) return;  // a later step has room for a full chunk
      plan.push_back({s, n});
      budget -= n;
    };
    for (Slot* s : prompts)
      if (reserve == 0 || s != oldest) take(s, budget - reserve);
    if (reserve > 0) take(oldest, budget);
    if (plan.empty() && !prompts.empty())  // no prompt fits a full chunk (a step under 8 tokens)
      plan.push_back({prompts.front(), std::min(left(prompts.front()), o_.step_tokens)});
    if (fits(plan)) break;
    if (evict_cached()) continue;  // cached prefixes give way before any sequence does
    // Prompt chunks wait first; if decoding alone does not fit, the newest sequence gives way.
    std::vector<std::pair<Slot*, int>> decode_only;
    for (auto& e : plan)
      if (e.second == 1 && e.first->fed() == int(e.first->tokens.size()) - 1) decode_only.push_back(e);
    if (!decode_only.empty() && fits(decode_only)) {
      plan = decode_only;
      break;
    }
    auto newest = std::max_element(running_.begin(), running_.end(),
                                   [](const auto& a, const auto& b) { return a->order < b->order; });
    if (running_.size() == 1) {
      // One sequence alone has filled the budget: it ends here, as at the end of its context.
      finish(**newest, FinishReason::Length);
      running_.clear();
      return true;
    }
    preempt(**newest);
    waiting_.push_front(std::move(*newest));
    running_.erase(newest);
  }

  std::vector<BatchEntry> batch;
  std::vector<Slot*> wants_logits;
  for (auto& [s, n] : plan) {
    const int start = s->fed();
    for (int i = 0; i < n; ++i) {
      const bool last = start + i + 1 == int(s->tokens.size());
      batch.push_back({s->seq.get(), s->tokens[start + i], start + i, last});
      if (last) wants_logits.push_back(s);
    }
  }
  const float* logits = engine_.forward().run(batch);
  int prompt_fed = 0;
  for (auto& [s, n] : plan)
    if (s->fed() - n < s->n_prompt) prompt_fed += std::min(n, s->n_prompt - (s->fed() - n));
  {
    std::lock_guard<std::mutex> lk(mu_);
    stats_.prompt_tokens += prompt_fed;
    ++stats_.steps;
  }
  const int V = engine_.n_vocab();
  for (size_t i = 0; i < wants_logits.size(); ++i) sample_next(*wants_logits[i], logits + i * size_t(V));
  // Prompts read to the end this step go to the prefix cache once their first token is out (a
  // request that already ended handed its whole cache over in retire()).
  for (auto& [s, n] : plan)
    if (s->seq && !s->prompt_cached && s->fed() >= s->n_prompt) {
      s->prompt_cached = true;
      cache_prefix(*s, false);
    }
  running_.erase(std::remove_if(running_.begin(), running_.end(), [](const auto& s) { return !s->seq; }),
                 running_.end());

  return true;
}

// A snapshot for /metrics (the stores are only read on the loop thread).
void Scheduler::snapshot() {
  std::map<std::string, size_t> by_codec;
  for (auto& s : running_)
    if (s->seq) by_codec[s->req->kv_label] += s->seq->kv_bytes();
  // The bytes only the prefix cache holds: what evicting it would free. Walking every part is not
  // free, so it is refreshed at most ten times a second.
  const double t = now_s();
  if (t - cache_bytes_time_ > 0.1 || cache_.size() == 0) {
    cache_only_bytes_ = cache_.bytes(stores_in_use());
    cache_bytes_time_ = t;
  }
  std::lock_guard<std::mutex> lk(mu_);
  stats_.running = int(running_.size());
  stats_.kv_bytes = engine_.kv_pool().in_use();
  stats_.kv_bytes_by_codec.assign(by_codec.begin(), by_codec.end());
  stats_.prefix_cache_bytes = cache_only_bytes_;
  stats_.prefix_cache_entries = cache_.size();
}

void Scheduler::run() {
  while (true) {
    bool worked = false;
    try {
      worked = step();
      snapshot();
    } catch (const std::exception& e) {
      // A failure inside a step (it should not happen: memory is checked first) fails the running
      // requests, not the server.
      for (auto& s : running_)
        if (s->seq) finish(*s, FinishReason::Error, e.what());  // those without one finished this step
      running_.clear();
    }
    std::unique_lock<std::mutex> lk(mu_);
    const bool idle = queue_.empty() && waiting_.empty() && running_.empty();
    if (stopping_ && (idle || !draining_)) {
      if (!draining_ && !(queue_.empty() && waiting_.empty() && running_.empty())) {
        // cancel everything left (the requests already carry `cancelled`)
        lk.unlock();
        for (auto& s : running_) finish(*s, FinishReason::Cancelled);
        running_.clear();
        for (auto& s : waiting_) finish(*s, FinishReason::Cancelled);
        waiting_.clear();
        lk.lock();
        for (auto& r : queue_) {
          std::lock_guard<std::mutex> rk(r->mu);
          GenerationEvent ev;
          ev.final = true, ev.reason = FinishReason::Cancelled;
          r->events.push_back(ev);
          r->cv.notify_all();
        }
        queue_.clear();
      }
      stats_.running = 0;
      lk.unlock();
      cache_.clear();  // the cached prefixes' memory goes back to the pool
      snapshot();
      return;
    }
    if (!worked) cv_.wait_for(lk, std::chrono::milliseconds(50), [&] { return !queue_.empty() || stopping_; });
  }
}

}  // namespace leanlm
