#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

namespace leanlm {

Sampler::Sampler(const SamplerOptions& o) : o_(o), rng_(o.seed) {}

int Sampler::argmax(const float* logits, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (logits[i] > logits[best]) best = i;
  return best;
}

int Sampler::sample(const float* logits, int n, const std::vector<int>& history) {
  cand_.resize(n);
  for (int i = 0; i < n; ++i) cand_[i] = {logits[i], i};

  if (o_.repeat_penalty != 1.f && o_.repeat_last_n != 0) {
    std::unordered_set<int> seen;
    const size_t from = o_.repeat_last_n < 0 || size_t(o_.repeat_last_n) >= history.size()
                            ? 0 : history.size() - o_.repeat_last_n;
    for (size_t i = from; i < history.size(); ++i) seen.insert(history[i]);
    for (int id : seen) {
      if (id < 0 || id >= n) continue;
      float& l = cand_[id].first;
      l = l > 0 ? l / o_.repeat_penalty : l * o_.repeat_penalty;
    }
  }

  if (o_.temperature <= 0.f) {
    auto it = std::max_element(cand_.begin(), cand_.end(),
                               [](const auto& a, const auto& b) { return a.first < b.first; });
    return it->second;
  }

  auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first; };
  size_t keep = cand_.size();
  if (o_.top_k > 0 && size_t(o_.top_k) < keep) {
    keep = o_.top_k;
    std::partial_sort(cand_.begin(), cand_.begin() + keep, cand_.end(), by_logit);
  } else {
    std::sort(cand_.begin(), cand_.end(), by_logit);
  }
  cand_.resize(keep);

  // Probabilities at temperature 1 for top-p / min-p (as the filters are usually defined).
  auto probs = [&](float temp) {
    std::vector<double> p(cand_.size());
    const float mx = cand_[0].first;
    double sum = 0;
    for (size_t i = 0; i < cand_.size(); ++i) sum += p[i] = std::exp(double(cand_[i].first - mx) / temp);
    for (double& v : p) v /= sum;
    return p;
  };
  if (o_.top_p < 1.f) {
    auto p = probs(1.f);
    double cum = 0;
    size_t k = 0;
    while (k < p.size()) {
      cum += p[k++];
      if (cum >= o_.top_p) break;
    }
    cand_.resize(std::max<size_t>(k, 1));
  }
  if (o_.min_p > 0.f) {
    auto p = probs(1.f);
    size_t k = 1;
    while (k < p.size() && p[k] >= o_.min_p * p[0]) ++k;
    cand_.resize(k);
  }
  auto p = probs(o_.temperature);
  std::discrete_distribution<size_t> dist(p.begin(), p.end());
  return cand_[dist(rng_)].second;
}

}  // namespace leanlm
