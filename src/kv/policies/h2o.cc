// H2O (Zhang et al., NeurIPS 2023): keep the "heavy hitters" (largest attention accumulated over
// all queries so far) plus the most recent tokens; by default half the budget each. With several KV
// heads a token's score is its attention summed over the heads (the mean, up to a constant).
#include <algorithm>

#include "kv/eviction.h"

namespace leanlm {

namespace {

class H2OPolicy : public EvictionPolicy {
 public:
  H2OPolicy(const EvictSpec& s, int n_kv_head) : spec_(s), acc_(n_kv_head) {}
  void observe(int h, int, int, const int32_t* key_pos, const float* w, int n) override {
    for (int j = 0; j < n; ++j)
      if (key_pos[j] >= 0) acc_.at(h, key_pos[j]) += to_accum(w[j]);
  }
  void choose(const std::vector<int32_t>& live, int budget, std::vector<int32_t>& drop) override {
    const int n = int(live.size());
    if (n <= budget) return;
    const int recent = std::min(protected_recent(spec_, budget, 2), budget);
    // Candidates: everything but the recent window; keep the (budget - recent) heaviest.
    std::vector<int32_t> cand(live.begin(), live.end() - recent);
    std::vector<Accum> score(cand.size());
    for (size_t i = 0; i < cand.size(); ++i) score[i] = acc_.sum(cand[i]);
    std::vector<int> idx(cand.size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = int(i);
    std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return score[a] > score[b]; });
    for (size_t r = size_t(budget - recent); r < idx.size(); ++r) drop.push_back(cand[idx[r]]);
  }
  void clear() override { acc_.clear(); }

 private:
  EvictSpec spec_;
  PerHead<Accum> acc_;  // accumulated attention per KV head and position
};

}  // namespace

std::unique_ptr<EvictionPolicy> make_h2o_policy(const EvictSpec& spec, int n_kv_head) {
  return std::make_unique<H2OPolicy>(spec, n_kv_head);
}

}  // namespace leanlm
