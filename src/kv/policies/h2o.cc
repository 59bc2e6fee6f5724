// H2O (Zhang et al., NeurIPS 2023): keep the "heavy hitters" (largest attention accumulated over
// all queries so far) plus the most recent tokens; by default half the budget each.
#include <algorithm>

#include "kv/eviction.h"

namespace leanlm {

namespace {

class H2OPolicy : public EvictionPolicy {
 public:
  explicit H2OPolicy(const EvictSpec& s) : spec_(s) {}
  void observe(int, int, const int32_t* key_pos, const float* w, int n) override {
    for (int j = 0; j < n; ++j)
      if (key_pos[j] >= 0) at_pos(acc_, key_pos[j]) += w[j];
  }
  void choose(const std::vector<int32_t>& live, int budget, std::vector<int32_t>& drop) override {
    const int n = int(live.size());
    if (n <= budget) return;
    const int recent = std::min(protected_recent(spec_, budget, 2), budget);
    // Candidates: everything but the recent window; keep the (budget - recent) heaviest.
    std::vector<int32_t> cand(live.begin(), live.end() - recent);
    const int keep = budget - recent;
    std::stable_sort(cand.begin(), cand.end(), [&](int32_t a, int32_t b) { return score(a) > score(b); });
    drop.insert(drop.end(), cand.begin() + keep, cand.end());
  }
  void clear() override { acc_.clear(); }

 private:
  float score(int32_t p) const { return size_t(p) < acc_.size() ? acc_[p] : 0.f; }
  EvictSpec spec_;
  std::vector<float> acc_;  // accumulated attention per position
};

}  // namespace

std::unique_ptr<EvictionPolicy> make_h2o_policy(const EvictSpec& spec) { return std::make_unique<H2OPolicy>(spec); }

}  // namespace leanlm
