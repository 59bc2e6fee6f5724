// Sampling: each filter keeps exactly the tokens its definition keeps, the draw follows the
// temperature-scaled distribution, and the same seed gives the same tokens.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <unordered_set>
#include <map>
#include <vector>

#include "engine/sampler.h"
#include "quant/dot.h"

namespace leanlm {
namespace {

// log-probabilities of a known distribution over 6 tokens: 0.4, 0.25, 0.15, 0.1, 0.06, 0.04.
const std::vector<float> kLogits = [] {
  std::vector<float> l;
  for (double p : {0.4, 0.25, 0.15, 0.1, 0.06, 0.04}) l.push_back(float(std::log(p)));
  return l;
}();

// Which tokens a configuration can produce, and how often, over many draws.
std::map<int, int> draw(SamplerOptions o, int n = 20000, const std::vector<int>& history = {}) {
  Sampler s(o);
  std::map<int, int> counts;
  for (int i = 0; i < n; ++i) ++counts[s.sample(kLogits.data(), int(kLogits.size()), history)];
  return counts;
}

SamplerOptions plain() {
  SamplerOptions o;
  o.temperature = 1.f;
  o.top_k = 0;
  o.top_p = 1.f;
  o.min_p = 0.f;
  o.seed = 7;
  return o;
}

TEST(Sampler, GreedyIsArgmax) {
  SamplerOptions o = plain();
  o.temperature = 0.f;
  EXPECT_EQ(draw(o, 50), (std::map<int, int>{{0, 50}}));
  std::vector<float> l = {1.f, 3.f, 2.f, 3.5f, -1.f};
  EXPECT_EQ(Sampler::argmax(l.data(), int(l.size())), 3);
}

TEST(Sampler, TemperatureOneFollowsTheDistribution) {
  auto c = draw(plain(), 40000);
  const double want[] = {0.4, 0.25, 0.15, 0.1, 0.06, 0.04};
  for (int t = 0; t < 6; ++t) EXPECT_NEAR(c[t] / 40000.0, want[t], 0.012) << "token " << t;
}

TEST(Sampler, LowTemperatureSharpens) {
  SamplerOptions o = plain();
  o.temperature = 0.25f;  // p^4 renormalised: token 0 gets 0.4^4 / sum = 0.84
  auto c = draw(o, 20000);
  EXPECT_NEAR(c[0] / 20000.0, 0.0256 / (0.0256 + 0.00390625 + 0.00050625 + 0.0001 + 0.00001296 + 0.00000256), 0.015);
}

TEST(Sampler, TopKKeepsK) {
  SamplerOptions o = plain();
  o.top_k = 2;
  auto c = draw(o);
  EXPECT_EQ(c.size(), 2u);
  EXPECT_TRUE(c.count(0) && c.count(1));
  EXPECT_NEAR(c[0] / 20000.0, 0.4 / 0.65, 0.015);
}

TEST(Sampler, TopPKeepsSmallestSetReachingP) {
  SamplerOptions o = plain();
  o.top_p = 0.7f;  // 0.4 + 0.25 = 0.65 < 0.7, + 0.15 = 0.8: three tokens
  EXPECT_EQ(draw(o).size(), 3u);
  o.top_p = 0.3f;  // the first token alone
  EXPECT_EQ(draw(o).size(), 1u);
}

TEST(Sampler, MinPDropsTokensBelowFractionOfBest) {
  SamplerOptions o = plain();
  o.min_p = 0.3f;  // keep p >= 0.12: tokens 0, 1, 2
  auto c = draw(o);
  EXPECT_EQ(c.size(), 3u);
  EXPECT_FALSE(c.count(3));
}

TEST(Sampler, RepetitionPenaltyLowersRecentTokens) {
  SamplerOptions o = plain();
  o.temperature = 0.f;
  o.repeat_penalty = 3.f;
  // log(0.4) < 0, so the penalty multiplies it: token 0 falls below token 1.
  EXPECT_EQ(draw(o, 5, {0}), (std::map<int, int>{{1, 5}}));
  o.repeat_last_n = 1;  // only the last token counts: 0 is outside the window
  EXPECT_EQ(draw(o, 5, {0, 4}), (std::map<int, int>{{0, 5}}));
}

TEST(Sampler, SameSeedSameTokens) {
  SamplerOptions o = plain();
  o.seed = 1234;
  Sampler a(o), b(o);
  o.seed = 1235;
  Sampler c(o);
  std::vector<int> ta, tb, tc;
  for (int i = 0; i < 200; ++i) {
    ta.push_back(a.sample(kLogits.data(), 6, ta));
    tb.push_back(b.sample(kLogits.data(), 6, tb));
    tc.push_back(c.sample(kLogits.data(), 6, tc));
  }
  EXPECT_EQ(ta, tb);
  EXPECT_NE(ta, tc);
}


// ---- Vocabularies of thousands, against a plain reference ------------------------------------
// The draw's weights come from the SIMD exponential and maximum (best_kv_kernels()), which only a
// vocabulary of many vectors and a tail exercises. The reference below is the sampler's definition
// in doubles and plain loops: the same filters, the same candidate order (sorted by logit where a
// top-k or top-p filter sorted them, vocabulary order otherwise), one uniform draw from the same
// seeded generator per token, walked along the running sum. Its tokens must be the sampler's; a
// token may differ only where the draw fell within a rounding distance of a boundary between two
// candidates (the float exponential's error), and then the test says so.
struct RefDraw {
  int token;
  double margin;  // distance of the draw from the nearest boundary, relative to the total weight
};
RefDraw reference_draw(const SamplerOptions& o, std::vector<float> l, const std::vector<int>& history,
                       std::mt19937_64& rng) {
  const int n = int(l.size());
  if (o.repeat_penalty != 1.f && o.repeat_last_n != 0) {
    const size_t from = o.repeat_last_n < 0 || size_t(o.repeat_last_n) >= history.size() ? 0 : history.size() - o.repeat_last_n;
    std::unordered_set<int> seen(history.begin() + from, history.end());
    for (int id : seen)
      if (id >= 0 && id < n) l[id] = l[id] > 0 ? l[id] / o.repeat_penalty : l[id] * o.repeat_penalty;
  }
  std::vector<int> c(n);
  for (int i = 0; i < n; ++i) c[i] = i;
  const auto by_logit = [&](int a, int b) { return l[a] > l[b]; };
  double mx = -INFINITY;
  for (float x : l) mx = std::max(mx, double(x));
  const auto softmax1 = [&](const std::vector<int>& ids) {  // temperature-1 probabilities of ids
    std::vector<double> p;
    double z = 0;
    for (int id : ids) z += std::exp(double(l[id]) - mx);
    for (int id : ids) p.push_back(std::exp(double(l[id]) - mx) / z);
    return p;
  };
  if (o.top_k > 0 && o.top_k < n) {
    std::stable_sort(c.begin(), c.end(), by_logit);
    c.resize(o.top_k);
    if (o.top_p < 1.f) {  // the smallest prefix whose mass (within the k) reaches top_p
      const auto p = softmax1(c);
      double cum = 0;
      size_t k = 0;
      while (k < p.size()) {
        cum += p[k++];
        if (cum >= o.top_p) break;
      }
      c.resize(std::max<size_t>(k, 1));
    }
    if (o.min_p > 0.f) {
      const auto p = softmax1(c);
      size_t k = 1;
      while (k < p.size() && p[k] >= o.min_p * p[0]) ++k;
      c.resize(k);
    }
  } else {
    if (o.top_p < 1.f) {  // mass over the whole vocabulary
      std::stable_sort(c.begin(), c.end(), by_logit);
      const auto p = softmax1(c);
      double cum = 0;
      size_t k = 0;
      while (k < p.size() && cum < o.top_p) cum += p[k++];
      c.resize(std::max<size_t>(k, 1));
    }
    if (o.min_p > 0.f)  // logits within log(min_p) of the best
      c.erase(std::remove_if(c.begin(), c.end(), [&](int id) { return double(l[id]) < mx + std::log(double(o.min_p)); }),
              c.end());
  }
  double cmax = -INFINITY;
  for (int id : c) cmax = std::max(cmax, double(l[id]));
  std::vector<double> w;
  double total = 0;
  for (int id : c) total += w.emplace_back(std::exp((double(l[id]) - cmax) / o.temperature));
  const double r = std::uniform_real_distribution<double>(0.0, 1.0)(rng) * total;
  double acc = 0;
  for (size_t i = 0; i < c.size(); ++i) {
    const double before = acc;
    acc += w[i];
    if (acc > r) return {c[i], std::min(r - before, acc - r) / total};
  }
  return {c.back(), 0.0};
}

// Logits as a model gives them: a broad normal body, a few tokens far above it, some masked (-inf).
std::vector<float> model_like_logits(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 2.5f);
  std::vector<float> l(n);
  for (auto& x : l) x = nd(rng);
  std::uniform_int_distribution<int> any(0, n - 1);
  for (int i = 0; i < 6; ++i) l[any(rng)] = 9.f + float(i);
  for (int i = 0; i < n / 50; ++i) l[any(rng)] = -INFINITY;
  l[n - 1] = 11.5f, l[n - 2] = 10.5f;  // peaks in the SIMD tail of an odd vocabulary
  return l;
}

TEST(SamplerLargeVocab, DrawsMatchThePlainReference) {
  std::printf("[ kernels  ] sampler exponential and maximum from the %s kernel set\n", isa_name(best_isa()));
  struct Config {
    float temperature;
    int top_k;
    float top_p, min_p, penalty;
  };
  const Config configs[] = {
      {1.0f, 0, 1.f, 0.f, 1.f},      // the whole vocabulary
      {0.7f, 0, 1.f, 0.f, 1.f},
      {1.5f, 0, 1.f, 0.f, 1.3f},     // hot, with a repetition penalty
      {0.8f, 40, 0.95f, 0.05f, 1.f},  // the defaults
      {1.0f, 0, 0.9f, 0.f, 1.f},     // top-p over the whole vocabulary
      {1.0f, 0, 1.f, 0.001f, 1.1f},  // min-p over the whole vocabulary
      {1.2f, 500, 1.f, 0.f, 1.f},    // a wide top-k
  };
  int draws = 0, explained = 0;
  for (int n : {4099, 32000, 262144}) {
    const std::vector<float> logits = model_like_logits(n, uint32_t(n));
    std::vector<int> history;
    for (int i = 0; i < 64; ++i) history.push_back((i * 7919) % n);
    for (const Config& cf : configs) {
      SamplerOptions o;
      o.temperature = cf.temperature, o.top_k = cf.top_k, o.top_p = cf.top_p, o.min_p = cf.min_p;
      o.repeat_penalty = cf.penalty, o.seed = 1234 + uint64_t(n);
      Sampler s(o);
      std::mt19937_64 rng(o.seed);
      std::map<int, int> seen;
      const int rounds = n > 100000 ? 60 : 200;
      for (int i = 0; i < rounds; ++i) {
        const int got = s.sample(logits.data(), n, history);
        const RefDraw want = reference_draw(o, logits, history, rng);
        ++draws, ++seen[got];
        if (got == want.token) continue;
        // Allowed only within the float exponential's rounding of a boundary (relative 1e-5).
        EXPECT_LT(want.margin, 1e-5) << "vocab " << n << " T " << cf.temperature << " top_k " << cf.top_k << " top_p "
                                     << cf.top_p << " min_p " << cf.min_p << " draw " << i << ": " << got << " vs "
                                     << want.token;
        ++explained;
      }
      EXPECT_GE(seen.size(), cf.temperature >= 1.f ? 4u : 2u) << n;  // draws, not one token every time
    }
  }
  std::printf("[ measured ] %d draws, %d differing from the reference within rounding of a boundary\n", draws,
              explained);
  EXPECT_LE(explained, draws / 100);
}

}  // namespace
}  // namespace leanlm
