// Scissorhands (Liu et al., NeurIPS 2023), "persistence of importance": a token that was unimportant
// (attention weight below the uniform 1/t) at many of the last `history` steps will stay unimportant,
// so those tokens go first. The `recent` most recent tokens are protected (default: budget / 8).
//
// Per position, bit (q mod 64) of a 64-bit mask records whether the token was unimportant to the
// query at position q. Every live token is seen by every query, so each step rewrites its own bit:
// the statistic does not depend on the order in which the queries of one pass are reported.
#include <algorithm>
#include <bit>

#include "kv/eviction.h"

namespace leanlm {

namespace {

class ScissorhandsPolicy : public EvictionPolicy {
 public:
  explicit ScissorhandsPolicy(const EvictSpec& s) : spec_(s) {}

  void observe(int q_pos, int newest, const int32_t* key_pos, const float* w, int n) override {
    int t = 0;  // tokens this query sees
    for (int j = 0; j < n; ++j) t += key_pos[j] >= 0 && key_pos[j] <= q_pos;
    if (t == 0) return;
    const float uniform = 1.f / float(t);
    const uint64_t bit = uint64_t(1) << (q_pos & 63);
    for (int j = 0; j < n; ++j) {
      const int p = key_pos[j];
      if (p < 0 || p > q_pos) continue;
      uint64_t& m = at_pos(unimportant_, p);
      m = w[j] < uniform ? (m | bit) : (m & ~bit);
      at_pos(acc_, p) += w[j];
    }
    last_q_ = std::max(last_q_, q_pos);
    (void)newest;
  }

  void choose(const std::vector<int32_t>& live, int budget, std::vector<int32_t>& drop) override {
    const int n = int(live.size());
    if (n <= budget) return;
    const int recent = std::min(protected_recent(spec_, budget, 8), budget);
    // Bits of the last `history` query steps: positions last_q_ - history + 1 .. last_q_.
    uint64_t window = 0;
    for (int k = 0; k < spec_.history; ++k) window |= uint64_t(1) << ((last_q_ - k) & 63);
    std::vector<int32_t> cand(live.begin(), live.end() - recent);
    auto count = [&](int32_t p) {
      // Steps before the token existed do not count (their bits were never set).
      return size_t(p) < unimportant_.size() ? std::popcount(unimportant_[p] & window) : 0;
    };
    auto acc = [&](int32_t p) { return size_t(p) < acc_.size() ? acc_[p] : 0.f; };
    // Most often unimportant first; ties: least accumulated attention first.
    std::stable_sort(cand.begin(), cand.end(), [&](int32_t a, int32_t b) {
      const int ca = count(a), cb = count(b);
      return ca != cb ? ca > cb : acc(a) < acc(b);
    });
    drop.insert(drop.end(), cand.begin(), cand.begin() + (n - budget));
  }

  void clear() override {
    unimportant_.clear();
    acc_.clear();
    last_q_ = 0;
  }

 private:
  EvictSpec spec_;
  std::vector<uint64_t> unimportant_;  // per position: bit q%64 set = unimportant to query q
  std::vector<float> acc_;             // per position: accumulated attention (tie-break)
  int last_q_ = 0;
};

}  // namespace

std::unique_ptr<EvictionPolicy> make_scissorhands_policy(const EvictSpec& spec) {
  return std::make_unique<ScissorhandsPolicy>(spec);
}

}  // namespace leanlm
