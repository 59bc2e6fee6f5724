// StreamingLLM (Xiao et al., 2023): the first `sinks` tokens (attention sinks) and a window of the
// most recent tokens. Uses no attention statistics.
#include <algorithm>

#include "kv/eviction.h"

namespace leanlm {

namespace {

class StreamingPolicy : public EvictionPolicy {
 public:
  explicit StreamingPolicy(const EvictSpec& s) : spec_(s) {}
  void observe(int, int, int, const int32_t*, const float*, int) override {}
  void choose(const std::vector<int32_t>& live, int budget, std::vector<int32_t>& drop) override {
    const int n = int(live.size());
    if (n <= budget) return;
    const int sinks = std::min(spec_.sinks, budget);
    // live is ascending: keep live[0, sinks) and the last budget - sinks.
    for (int i = sinks; i < n - (budget - sinks); ++i) drop.push_back(live[i]);
  }
  void clear() override {}
  bool needs_weights() const override { return false; }

 private:
  EvictSpec spec_;
};

}  // namespace

std::unique_ptr<EvictionPolicy> make_streaming_policy(const EvictSpec& spec, int) {
  return std::make_unique<StreamingPolicy>(spec);
}

}  // namespace leanlm
