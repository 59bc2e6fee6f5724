// The scheduler on a real model (SmolLM2, 30 layers, 3 KV heads): batched decoding gives each
// request the tokens it gets alone; a tight KV budget makes requests wait or be preempted and
// recomputed, never fail or change their output; cancelled requests free their KV.
#include "server/scheduler.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "quant/dot.h"
#include "util/error.h"

namespace leanlm {
namespace {

std::string model_path() {
  const char* s = std::getenv("LEANLM_SOURCE_DIR");
  return std::string(s ? s : ".") + "/models/smollm2-135m-instruct-q4_1.gguf";
}

// The engine loop on its own thread; a failed ASSERT returning early still stops and joins it.
struct Loop {
  Scheduler& s;
  std::thread t;
  explicit Loop(Scheduler& sched) : s(sched), t([&sched] { sched.run(); }) {}
  ~Loop() {
    if (t.joinable()) s.stop(false), t.join();
  }
  void finish() {  // let everything queued finish, then join
    s.stop(true);
    t.join();
  }
};

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Installed by scripts/setup.sh: a missing model is a failure, not a skip.
    ASSERT_TRUE(std::filesystem::exists(model_path())) << model_path() << " missing: run scripts/setup.sh";
  }
  std::unique_ptr<Engine> make_engine(size_t kv_mem, const std::string& codec = "f16") {
    EngineOptions o;
    o.model_path = model_path();
    o.ctx = 512;
    o.batch = 64;
    o.kv.codec = parse_codec(codec);
    o.kv_mem = kv_mem;
    return std::make_unique<Engine>(o);
  }
  std::shared_ptr<Request> request(Engine& e, const std::string& prompt, int max_tokens) {
    auto r = std::make_shared<Request>();
    r->prompt = e.tokenizer().encode(prompt, true, false);
    r->params.sampler.temperature = 0.f;  // greedy: the output is a function of the logits only
    r->params.max_tokens = max_tokens;
    r->kv = e.options().kv;
    r->kv_label = r->kv.codec.name();
    return r;
  }
  // Every token the request produced, after waiting for its final event.
  static std::vector<int> collect(Request& r, FinishReason* reason = nullptr) {
    std::vector<int> toks;
    GenerationEvent ev;
    while (true) {
      if (!r.next(ev, 120.0)) {
        ADD_FAILURE() << "no event for 120 s";
        return toks;
      }
      for (const auto& t : ev.tokens) toks.push_back(t.token);
      if (ev.final) break;
    }
    if (reason) *reason = ev.reason;
    return toks;
  }
  // The same greedy generation without the scheduler: one sequence, engine.feed.
  static std::vector<int> alone(Engine& e, const std::vector<int>& prompt, int n) {
    auto seq = e.new_sequence();
    const float* logits = e.feed(*seq, prompt);
    std::vector<int> out;
    for (int i = 0; i < n; ++i) {
      const int t = Sampler::argmax(logits, e.n_vocab());
      out.push_back(t);
      if (e.tokenizer().is_eog(t)) break;
      logits = e.feed(*seq, {t});
    }
    return out;
  }
  // Every prompt as a greedy request of max_tokens, all queued before the loop starts; returns
  // each request's tokens and checks that it ended with stop or length.
  std::vector<std::vector<int>> run_all(Scheduler& sched, Engine& e, int max_tokens,
                                        std::vector<std::shared_ptr<Request>>& reqs) {
    for (const auto& p : prompts_) reqs.push_back(request(e, p, max_tokens));
    for (auto& r : reqs) EXPECT_EQ(sched.submit(r), SubmitResult::Queued);
    Loop loop(sched);
    std::vector<std::vector<int>> got;
    for (auto& r : reqs) {
      FinishReason why = FinishReason::None;
      got.push_back(collect(*r, &why));
      EXPECT_TRUE(why == FinishReason::Stop || why == FinishReason::Length);
    }
    loop.finish();
    return got;
  }
  // The first n tokens (all, if the reference is shorter) of each request equal its run alone.
  void expect_same_start(Engine& alone_engine, const std::vector<std::shared_ptr<Request>>& reqs,
                         const std::vector<std::vector<int>>& got, int max_tokens, size_t n) {
    for (size_t i = 0; i < reqs.size(); ++i) {
      const std::vector<int> ref = alone(alone_engine, reqs[i]->prompt, max_tokens);
      const size_t k = std::min(n, ref.size());
      ASSERT_GE(got[i].size(), k);
      EXPECT_EQ(std::vector<int>(got[i].begin(), got[i].begin() + k), std::vector<int>(ref.begin(), ref.begin() + k))
          << prompts_[i];
    }
  }
  const std::vector<std::string> prompts_ = {"The capital of France is", "Once upon a time, in a small village,",
                                             "def fibonacci(n):", "The three primary colors are",
                                             "Water boils at a temperature of"};
};

TEST_F(SchedulerTest, BatchedRequestsGetTheTokensTheyGetAlone) {
  auto engine = make_engine(0);
  SchedulerOptions so;
  so.max_ctx = 512;
  so.step_tokens = 64;
  Scheduler sched(*engine, so);
  std::vector<std::shared_ptr<Request>> reqs;
  const auto got = run_all(sched, *engine, 24, reqs);
  const SchedulerStats st = sched.stats();
  // Batching happened: fewer forward passes than tokens generated.
  EXPECT_LT(st.steps, st.generated_tokens);
  EXPECT_EQ(st.requests_done, reqs.size());
  // A decode batch of 4+ tokens goes through the prompt GEMM kernels, one token alone through the
  // per-row dot kernels: two roundings of the same product (KL ~1e-3 on this model), which can turn
  // a near-tie of greedy decoding after a dozen tokens. With the scalar kernels (LEANLM_ISA=scalar,
  // its own ctest entry) both go through the same per-row kernel and must agree token for token;
  // otherwise the first tokens must (a batch that mixed up sequences would differ at once).
  expect_same_start(*engine, reqs, got, 24, best_isa() == Isa::Scalar ? 24 : 6);
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ(reqs[i]->completion_tokens, int(got[i].size()));
    EXPECT_EQ(reqs[i]->prompt_tokens, int(reqs[i]->prompt.size()));
  }
  EXPECT_EQ(engine->kv_pool().in_use(), 0u);  // every sequence gave its pages back
}

TEST_F(SchedulerTest, TightBudgetQueuesAndPreemptsWithoutChangingOutputs) {
  // Room for about two sequences' prompts and growth: the rest wait, and growth forces preemption.
  auto probe = make_engine(0, "q8_0");
  auto seq = probe->new_sequence();
  const size_t per_seq = seq->kv_bytes_to_append(40);
  auto engine = make_engine(per_seq * 2, "q8_0");
  SchedulerOptions so;
  so.max_ctx = 512;
  so.step_tokens = 64;
  Scheduler sched(*engine, so);
  std::vector<std::shared_ptr<Request>> reqs;
  const auto got = run_all(sched, *engine, 32, reqs);
  EXPECT_LE(engine->kv_pool().peak(), engine->kv_pool().budget());
  EXPECT_EQ(engine->kv_pool().in_use(), 0u);
  // A preempted sequence recomputes its generated tokens as a prompt chunk (the GEMM on SIMD
  // CPUs) where alone they were decoded one by one: exact with the scalar kernels, the first
  // tokens otherwise (a recomputation that lost or mixed up tokens would differ at once).
  expect_same_start(*probe, reqs, got, 32, best_isa() == Isa::Scalar ? 32 : 12);
  EXPECT_GT(sched.stats().preemptions, 0u) << "the budget should have forced a preemption";
}

TEST_F(SchedulerTest, CancelFreesTheSequenceAndFullQueueRefuses) {
  auto engine = make_engine(0);
  SchedulerOptions so;
  so.max_ctx = 512;
  so.max_running = 1;
  so.max_waiting = 2;
  Scheduler sched(*engine, so);
  auto a = request(*engine, prompts_[0], 400), b = request(*engine, prompts_[1], 4), c = request(*engine, prompts_[2], 4);
  ASSERT_EQ(sched.submit(a), SubmitResult::Queued);
  ASSERT_EQ(sched.submit(b), SubmitResult::Queued);
  EXPECT_EQ(sched.submit(c), SubmitResult::QueueFull);  // two queued already
  Loop loop(sched);
  GenerationEvent ev;
  ASSERT_TRUE(a->next(ev, 60));  // a is running
  a->cancel();
  FinishReason why;
  collect(*a, &why);
  EXPECT_EQ(why, FinishReason::Cancelled);
  collect(*b, &why);  // b ran after a left
  EXPECT_NE(why, FinishReason::Cancelled);
  loop.finish();
  EXPECT_EQ(sched.stats().cancelled, 1u);
  EXPECT_EQ(engine->kv_pool().in_use(), 0u);
  // A prompt longer than the context is refused at once.
  auto big = std::make_shared<Request>();
  big->prompt.assign(600, 1);
  EXPECT_THROW(sched.submit(big), Error);
}

TEST_F(SchedulerTest, StopStringsAndMaxTokensEndWithTheRightReason) {
  auto engine = make_engine(0);
  SchedulerOptions so;
  so.max_ctx = 512;
  Scheduler sched(*engine, so);
  auto free_run = request(*engine, prompts_[1], 40);
  ASSERT_EQ(sched.submit(free_run), SubmitResult::Queued);
  Loop loop(sched);
  std::string text;
  GenerationEvent ev;
  do {
    ASSERT_TRUE(free_run->next(ev, 60));
    text += ev.text;
  } while (!ev.final);
  EXPECT_EQ(ev.reason, FinishReason::Length);
  ASSERT_GT(text.size(), 12u);
  // Stop on a piece of the text the free run produced: the output ends right before it.
  const std::string stop = text.substr(text.size() / 2, 5);
  auto stopped = request(*engine, prompts_[1], 40);
  stopped->params.stop = {stop};
  ASSERT_EQ(sched.submit(stopped), SubmitResult::Queued);
  std::string text2;
  do {
    ASSERT_TRUE(stopped->next(ev, 60));
    text2 += ev.text;
  } while (!ev.final);
  loop.finish();
  EXPECT_EQ(ev.reason, FinishReason::Stop);
  EXPECT_EQ(text2, text.substr(0, text.find(stop)));
}

}  // namespace
}  // namespace leanlm
