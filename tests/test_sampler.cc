// Sampling: each filter keeps exactly the tokens its definition keeps, the draw follows the
// temperature-scaled distribution, and the same seed gives the same tokens.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "engine/sampler.h"

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

}  // namespace
}  // namespace leanlm
