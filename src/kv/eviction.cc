#include "kv/eviction.h"

#include <algorithm>

namespace leanlm {

std::unique_ptr<EvictionPolicy> make_streaming_policy(const EvictSpec& spec, int n_kv_head);
std::unique_ptr<EvictionPolicy> make_h2o_policy(const EvictSpec& spec, int n_kv_head);
std::unique_ptr<EvictionPolicy> make_scissorhands_policy(const EvictSpec& spec, int n_kv_head);
std::unique_ptr<EvictionPolicy> make_snapkv_policy(const EvictSpec& spec, int n_kv_head);

namespace {

struct PolicyRow {
  EvictSpec::Kind kind;
  std::unique_ptr<EvictionPolicy> (*make)(const EvictSpec&, int);
};

constexpr PolicyRow kPolicies[] = {
    {EvictSpec::Kind::Streaming, make_streaming_policy},
    {EvictSpec::Kind::H2O, make_h2o_policy},
    {EvictSpec::Kind::Scissorhands, make_scissorhands_policy},
    {EvictSpec::Kind::SnapKV, make_snapkv_policy},
};

}  // namespace

std::unique_ptr<EvictionPolicy> make_eviction_policy(const EvictSpec& spec, int n_kv_head) {
  for (const PolicyRow& row : kPolicies)
    if (row.kind == spec.kind) return row.make(spec, n_kv_head);
  return nullptr;
}

int protected_recent(const EvictSpec& spec, int budget, int default_share_divisor) {
  const int r = spec.recent >= 0 ? spec.recent : budget / default_share_divisor;
  return std::clamp(r, 1, std::max(1, budget));
}

}  // namespace leanlm
