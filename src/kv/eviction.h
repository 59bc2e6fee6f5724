// Token eviction: which tokens a sequence keeps when its cache reaches the budget.
//
// A policy sees the attention weights that attention computes anyway (observe), keyed by position
// so that its statistics survive the store moving tokens between slots, and chooses the positions
// to drop (choose). The store does the dropping (or, MiKV-style, the demotion to fewer bits).
// Adding a policy means adding one policies/*.cc file and a line in make_eviction_policy.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "kv/kv_config.h"

namespace leanlm {

class EvictionPolicy {
 public:
  virtual ~EvictionPolicy() = default;
  // The query at position q_pos gave weights w[0..n) (softmax-normalised, averaged over the query
  // heads of one KV head) to the keys at key_pos[0..n) (entries of -1 carry no weight). newest: the
  // largest position in the cache. Called once per query token and KV head; calls of one pass may
  // come in any order (and never concurrently: the store serialises them).
  virtual void observe(int q_pos, int newest, const int32_t* key_pos, const float* w, int n) = 0;
  // live: the positions held now, ascending. Appends to drop the positions to remove so that at
  // most `budget` remain.
  virtual void choose(const std::vector<int32_t>& live, int budget, std::vector<int32_t>& drop) = 0;
  // The sequence starts over.
  virtual void clear() = 0;
};

std::unique_ptr<EvictionPolicy> make_eviction_policy(const EvictSpec& spec);

// Shared helpers for policies.
// The `recent` most recent live positions (or the spec's default share of the budget).
int protected_recent(const EvictSpec& spec, int budget, int default_share_divisor);
// Grows v so that index `pos` exists.
template <typename T>
inline T& at_pos(std::vector<T>& v, int pos) {
  if (size_t(pos) >= v.size()) v.resize(std::max<size_t>(size_t(pos) + 1, v.size() * 2), T{});
  return v[pos];
}

}  // namespace leanlm
