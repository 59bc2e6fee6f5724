// SnapKV (Li et al., 2024): the last `window` queries of the prompt vote for the positions they
// attend to; the votes are smoothed by a 1-D average pool (kernel `pool`) over neighbouring
// positions, and the top positions are kept plus the observation window itself.
//
// The paper selects per head. Here the KV heads of a layer share its slots, so the selection is per
// layer: a position's vote is the sum of its votes from every KV head.
//
// The paper selects once, at the end of the prompt. Here selection runs whenever the cache exceeds
// its budget after a forward pass, with the pass's queries that lie in the last `window` positions
// as the observation window: with the whole prompt in one pass that is the paper's selection;
// when tokens arrive in small batches it keeps selecting as they come.
#include <algorithm>

#include "kv/eviction.h"

namespace leanlm {

namespace {

class SnapKVPolicy : public EvictionPolicy {
 public:
  SnapKVPolicy(const EvictSpec& s, int n_kv_head) : spec_(s), votes_(n_kv_head), newest_(n_kv_head, -1) {}

  void observe(int h, int q_pos, int newest, const int32_t* key_pos, const float* w, int n) override {
    if (newest != newest_[h]) {  // a new pass: the votes of the previous one are stale
      std::fill(votes_.by_head[h].begin(), votes_.by_head[h].end(), Accum{0});
      newest_[h] = newest;
    }
    if (q_pos <= newest - spec_.window) return;
    for (int j = 0; j < n; ++j)
      if (key_pos[j] >= 0) votes_.at(h, key_pos[j]) += to_accum(w[j]);
  }

  void choose(const std::vector<int32_t>& live, int budget, std::vector<int32_t>& drop) override {
    const int n = int(live.size());
    if (n <= budget) return;
    const int window = std::min(spec_.recent >= 0 ? spec_.recent : spec_.window, budget);
    const int nc = n - window;  // candidates: all but the observation window
    std::vector<double> vote(nc), pooled(nc);
    for (int i = 0; i < nc; ++i) vote[i] = double(votes_.sum(live[i]));
    const int half = spec_.pool / 2;
    for (int i = 0; i < nc; ++i) {
      double s = 0;
      int cnt = 0;
      for (int k = std::max(0, i - half); k <= std::min(nc - 1, i + half); ++k, ++cnt) s += vote[k];
      pooled[i] = s / cnt;
    }
    std::vector<int> idx(nc);
    for (int i = 0; i < nc; ++i) idx[i] = i;
    std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return pooled[a] > pooled[b]; });
    for (int r = budget - window; r < nc; ++r) drop.push_back(live[idx[r]]);
  }

  void clear() override {
    votes_.clear();
    std::fill(newest_.begin(), newest_.end(), -1);
  }

 private:
  EvictSpec spec_;
  PerHead<Accum> votes_;     // per head and position: attention from the observation window
  std::vector<int> newest_;  // per head: newest position of the pass its votes belong to
};

}  // namespace

std::unique_ptr<EvictionPolicy> make_snapkv_policy(const EvictSpec& spec, int n_kv_head) {
  return std::make_unique<SnapKVPolicy>(spec, n_kv_head);
}

}  // namespace leanlm
