#include "kv/eviction.h"

#include <algorithm>

namespace leanlm {

std::unique_ptr<EvictionPolicy> make_streaming_policy(const EvictSpec& spec);
std::unique_ptr<EvictionPolicy> make_h2o_policy(const EvictSpec& spec);
std::unique_ptr<EvictionPolicy> make_scissorhands_policy(const EvictSpec& spec);
std::unique_ptr<EvictionPolicy> make_snapkv_policy(const EvictSpec& spec);

std::unique_ptr<EvictionPolicy> make_eviction_policy(const EvictSpec& spec) {
  using K = EvictSpec::Kind;
  switch (spec.kind) {
    case K::Streaming: return make_streaming_policy(spec);
    case K::H2O: return make_h2o_policy(spec);
    case K::Scissorhands: return make_scissorhands_policy(spec);
    case K::SnapKV: return make_snapkv_policy(spec);
    case K::None: break;
  }
  return nullptr;
}

int protected_recent(const EvictSpec& spec, int budget, int default_share_divisor) {
  const int r = spec.recent >= 0 ? spec.recent : budget / default_share_divisor;
  return std::clamp(r, 1, std::max(1, budget));
}

}  // namespace leanlm
