// Token eviction: which tokens a sequence keeps when its cache reaches the budget.
//
// A policy sees the attention weights that attention computes anyway (observe), per KV head and
// keyed by position so that its statistics survive the store moving tokens between slots, and
// chooses the positions to drop (choose). The store does the dropping (or, MiKV-style, the
// demotion to fewer bits). Slots are shared by the KV heads of a layer, so the choice is per layer:
// each policy combines its heads' statistics (see the policies).
//
// Determinism: the reports of one pass arrive from several threads in any order. Policies keep
// statistics per KV head and per position, and accumulate weights in fixed point (Accum), whose sums
// do not depend on the order of the additions, so their choices do not depend on thread timing.
//
// Adding a policy means adding one policies/*.cc file and a row in the table in eviction.cc.
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
  // heads of KV head h) to the keys at key_pos[0..n) (entries of -1 carry no weight). newest: the
  // largest position in the cache. Called once per query token and KV head. Calls for different
  // heads may run concurrently; calls for one head never do (the store serialises them).
  virtual void observe(int h, int q_pos, int newest, const int32_t* key_pos, const float* w, int n) = 0;
  // live: the positions held now, ascending. Appends to drop the positions to remove so that at
  // most `budget` remain.
  virtual void choose(const std::vector<int32_t>& live, int budget, std::vector<int32_t>& drop) = 0;
  // The sequence starts over.
  virtual void clear() = 0;
  // Whether observe() needs attention weights at all (StreamingLLM does not).
  virtual bool needs_weights() const { return true; }
};

std::unique_ptr<EvictionPolicy> make_eviction_policy(const EvictSpec& spec, int n_kv_head);

// Shared helpers for policies.
// The `recent` most recent live positions (or the spec's default share of the budget).
int protected_recent(const EvictSpec& spec, int budget, int default_share_divisor);
// Grows v so that index `pos` exists.
template <typename T>
inline T& at_pos(std::vector<T>& v, int pos) {
  if (size_t(pos) >= v.size()) v.resize(std::max<size_t>(size_t(pos) + 1, v.size() * 2), T{});
  return v[pos];
}
// Attention weight in fixed point (2^-32 units): integer sums are exact, so they do not depend on
// the order in which threads add them (float sums do, in their last bits, which can flip a choice).
using Accum = uint64_t;
inline Accum to_accum(float w) { return Accum(double(w) * 4294967296.0 + 0.5); }
// Per-head statistics indexed by position, summed over heads in head order when choosing.
template <typename T>
struct PerHead {
  std::vector<std::vector<T>> by_head;
  explicit PerHead(int n_heads) : by_head(n_heads) {}
  T& at(int h, int pos) { return at_pos(by_head[h], pos); }
  T get(int h, int pos) const { return size_t(pos) < by_head[h].size() ? by_head[h][pos] : T{}; }
  T sum(int pos) const {
    T s{};
    for (size_t h = 0; h < by_head.size(); ++h) s += get(int(h), pos);
    return s;
  }
  void clear() {
    for (auto& v : by_head) v.clear();
  }
};

}  // namespace leanlm
