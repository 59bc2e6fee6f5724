// SnapKV (Li et al., 2024): the last `window` queries of the prompt vote for the positions they
// attend to; the votes are smoothed by a 1-D average pool (kernel `pool`) over neighbouring
// positions, and each head keeps its top positions plus the observation window itself.
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
  explicit SnapKVPolicy(const EvictSpec& s) : spec_(s) {}

  void observe(int q_pos, int newest, const int32_t* key_pos, const float* w, int n) override {
    if (newest != newest_) {  // a new pass: the votes of the previous one are stale
      std::fill(votes_.begin(), votes_.end(), 0.f);
      newest_ = newest;
    }
    if (q_pos <= newest - spec_.window) return;
    for (int j = 0; j < n; ++j)
      if (key_pos[j] >= 0) at_pos(votes_, key_pos[j]) += w[j];
  }

  void choose(const std::vector<int32_t>& live, int budget, std::vector<int32_t>& drop) override {
    const int n = int(live.size());
    if (n <= budget) return;
    const int window = std::min(spec_.recent >= 0 ? spec_.recent : spec_.window, budget);
    const int nc = n - window;  // candidates: all but the observation window
    std::vector<float> pooled(nc);
    const int half = spec_.pool / 2;
    for (int i = 0; i < nc; ++i) {
      float s = 0;
      int cnt = 0;
      for (int k = std::max(0, i - half); k <= std::min(nc - 1, i + half); ++k, ++cnt) s += vote(live[k]);
      pooled[i] = s / float(cnt);
    }
    std::vector<int> idx(nc);
    for (int i = 0; i < nc; ++i) idx[i] = i;
    std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return pooled[a] > pooled[b]; });
    for (int r = budget - window; r < nc; ++r) drop.push_back(live[idx[r]]);
  }

  void clear() override {
    votes_.clear();
    newest_ = -1;
  }

 private:
  float vote(int32_t p) const { return size_t(p) < votes_.size() ? votes_[p] : 0.f; }
  EvictSpec spec_;
  std::vector<float> votes_;  // per position: attention from the observation window
  int newest_ = -1;
};

}  // namespace

std::unique_ptr<EvictionPolicy> make_snapkv_policy(const EvictSpec& spec) {
  return std::make_unique<SnapKVPolicy>(spec);
}

}  // namespace leanlm
