// Prefix sharing: one layer's cache of a sequence as read-only parts that other sequences share
// (the keys and values of a prompt prefix computed once: a system prompt, the earlier turns of a
// conversation), followed by a store of its own that takes the sequence's new tokens.
//
//   slots:  [ part 0's slots | part 1's slots | ... | own tail's slots ]
//
// A part is a whole store, frozen: nothing writes to it again, so any number of sequences read it at
// once, and it lives (its bytes stay charged to the pool) as long as a sequence or the prefix cache
// holds it. A part hides its positions >= limit: a sequence that shares only the start of a cached
// prefix sees those slots as empty (-1), so attention skips them.
//
// Only stores that never drop or change a token once written can be shared (no eviction, no ThinK
// channel choice after freezing); KvConfig::shareable() says which.
#pragma once
#include <atomic>
#include <climits>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include "kv/kv_cache.h"

namespace leanlm {

struct KvPart {
  std::shared_ptr<const KvStore> store;
  int limit = INT_MAX;  // positions >= limit are not part of the prefix
};

// A sequence's cache up to n_tokens positions, frozen: per layer, the parts in order.
struct KvPrefix {
  std::vector<std::vector<KvPart>> layers;
  int n_tokens = 0;
  // Bytes of the distinct stores behind it (each charged to its pool once, however many share it).
  size_t bytes() const;
  // True when a sequence can continue at position n (n <= n_tokens) from these parts: every
  // sliding-window layer holds every position its next query may read (a ring keeps only the last
  // window + batch positions of a part, so a part frozen far beyond n may have lost some).
  bool can_continue_at(int n, const std::vector<int>& layer_windows) const;
};
// Bytes of the distinct stores behind several prefixes (shared parts counted once), leaving out the
// stores in `skip`.
size_t distinct_bytes(const std::vector<const KvPrefix*>& prefixes, std::set<const KvStore*> skip = {});

class SegmentedKvStore : public KvStore {
 public:
  // parts: shared and read-only; tail: this sequence's own store (new tokens go there).
  // window > 0: a sliding-window layer (parts no later query can see are let go).
  SegmentedKvStore(std::vector<KvPart> parts, std::unique_ptr<KvStore> tail, int window);

  void append(int pos, const float* k, const float* v) override;
  int n_slots() const override { return part_slots_ + tail_->n_slots(); }
  const int32_t* slot_positions() const override;
  void scores(int h, const float* q, int n_q, int q_stride, int s0, int s1, float* out, int out_stride) const override;
  void accumulate(int h, const float* w, int n_q, int w_stride, int s0, int s1, float* out, int out_stride) const override;
  // This sequence's own bytes (the tail); the shared parts are counted by KvPrefix::bytes().
  size_t bytes() const override { return tail_->bytes(); }
  size_t bytes_to_append(int n) const override { return tail_->bytes_to_append(n); }
  void reserve(int n) override { tail_->reserve(n); }
  void clear() override;
  void after_pass() override;

  // Freezes the tail into the parts (shared from now on) and continues in `fresh`; returns the
  // parts, which are the layer's whole cache so far.
  const std::vector<KvPart>& freeze(std::unique_ptr<KvStore> fresh);
  const std::vector<KvPart>& parts() const { return parts_; }
  // Hands the tail over (SequenceState::freeze); the store must not be used afterwards.
  std::unique_ptr<KvStore> take_tail() { return std::move(tail_); }

 private:
  void set_parts(std::vector<KvPart> parts);
  template <typename Fn>
  void for_ranges(int s0, int s1, Fn&& fn) const;  // fn(store, local s0, local s1, offset from s0)

  std::vector<KvPart> parts_;
  std::vector<int> part_begin_;  // first slot of each part; part_slots_ after the last
  std::vector<int> part_max_;    // newest visible position of each part
  int part_slots_ = 0;
  std::unique_ptr<KvStore> tail_;
  int window_ = 0, newest_ = -1;
  // The concatenated position table, rebuilt on the first read after a change (reads come from
  // several attention threads at once, writes only between passes).
  mutable std::vector<int32_t> pos_;
  mutable std::atomic<bool> stale_{true};
  mutable std::mutex rebuild_mu_;
};

}  // namespace leanlm
