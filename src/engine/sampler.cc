#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "kv/kv_kernels.h"

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
  bool top_p_done = false, min_p_done = false;
  if (o_.top_k > 0 && size_t(o_.top_k) < keep) {
    keep = o_.top_k;
    std::partial_sort(cand_.begin(), cand_.begin() + keep, cand_.end(), by_logit);
    cand_.resize(keep);
  } else {
    // No top-k: sorting the whole vocabulary would cost more than the rest of a small model's step.
    // top-p needs the best candidates in order, sorted only as far as their mass (over the whole
    // vocabulary) reaches top_p; min-p keeps logits within log(min_p) of the best.
    const float mx = std::max_element(cand_.begin(), cand_.end(), [](const auto& a, const auto& b) {
                       return a.first < b.first;
                     })->first;
    if (o_.top_p < 1.f) {
      double total = 0;
      for (const auto& c : cand_) total += std::exp(double(c.first - mx));
      for (size_t k = std::min<size_t>(64, cand_.size());; k = std::min(cand_.size(), k * 4)) {
        std::partial_sort(cand_.begin(), cand_.begin() + k, cand_.end(), by_logit);
        double cum = 0;
        size_t cut = 0;
        while (cut < k && cum < o_.top_p * total) cum += std::exp(double(cand_[cut++].first - mx));
        if (cum >= o_.top_p * total || k == cand_.size()) {
          cand_.resize(std::max<size_t>(cut, 1));
          break;
        }
      }
      top_p_done = true;
    }
    if (o_.min_p > 0.f) {
      const float floor = mx + std::log(o_.min_p);
      cand_.erase(std::remove_if(cand_.begin(), cand_.end(), [&](const auto& c) { return c.first < floor; }),
                  cand_.end());
      min_p_done = true;
    }
    // Without top-p the order does not matter: the draw below is over whatever is left.
  }

  // Probabilities at temperature 1 for top-p / min-p (as the filters are usually defined).
  auto probs = [&](float temp) {
    std::vector<double> p(cand_.size());
    float mx = -INFINITY;
    for (const auto& c : cand_) mx = std::max(mx, c.first);
    double sum = 0;
    for (size_t i = 0; i < cand_.size(); ++i) sum += p[i] = std::exp(double(cand_[i].first - mx) / temp);
    for (double& v : p) v /= sum;
    return p;
  };
  if (o_.top_p < 1.f && !top_p_done) {
    auto p = probs(1.f);
    double cum = 0;
    size_t k = 0;
    while (k < p.size()) {
      cum += p[k++];
      if (cum >= o_.top_p) break;
    }
    cand_.resize(std::max<size_t>(k, 1));
  }
  if (o_.min_p > 0.f && !min_p_done) {  // the top-k candidates, sorted
    auto p = probs(1.f);
    size_t k = 1;
    while (k < p.size() && p[k] >= o_.min_p * p[0]) ++k;
    cand_.resize(k);
  }
  // The draw: weights exp((l - max) / T) over what is left (with no filter, the whole vocabulary:
  // 262k entries on Gemma 3, where building a discrete distribution in doubles cost milliseconds
  // per token on the serving loop), from the SIMD exponential, then one uniform draw along their
  // running sum (the same sum that is walked).
  const int m = int(cand_.size());
  const KvKernels& kk = best_kv_kernels();
  weights_.resize(m);
  for (int i = 0; i < m; ++i) weights_[i] = cand_[i].first;
  const float lmax = kk.max_of(weights_.data(), m);
  const float inv_t = 1.f / o_.temperature;
  if (!std::isfinite(inv_t) || !std::isfinite(lmax) || o_.temperature < 1e-6f) {  // as good as greedy
    return std::max_element(cand_.begin(), cand_.end(), [](const auto& a, const auto& b) { return a.first < b.first; })
        ->second;
  }
  for (int i = 0; i < m; ++i) weights_[i] = (weights_[i] - lmax) * inv_t;
  kk.exp_shift_sum(weights_.data(), m, 0.f);
  double total = 0;
  for (int i = 0; i < m; ++i) total += weights_[i];
  const double r = std::uniform_real_distribution<double>(0.0, 1.0)(rng_) * total;
  double acc = 0;
  for (int i = 0; i < m; ++i)
    if ((acc += weights_[i]) > r) return cand_[i].second;
  for (int i = m - 1; i > 0; --i)  // r at the very end (rounding): the last token with weight
    if (weights_[i] > 0.f) return cand_[i].second;
  return cand_[0].second;
}

}  // namespace leanlm
