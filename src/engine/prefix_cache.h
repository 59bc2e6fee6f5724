// The prefix cache: frozen KV prefixes (kv/segmented_store.h) of earlier requests, found again by
// their tokens, so a request that starts like an earlier one (the same system prompt, the next turn
// of a conversation) reads those positions from shared memory instead of recomputing them.
//
// An entry is a token sequence and the frozen prefix that holds exactly those positions, under a key
// naming everything else the KV depends on (codec, options, context). Lookups pick the entry with
// the longest common prefix with the new tokens. Entries share stores: a conversation's later entry
// holds the parts of its earlier ones. Memory is released least recently used first, when the
// scheduler needs room in the KV budget (evict_lru) or the cache holds more entries than allowed;
// a store's bytes go back to the pool when no entry and no sequence hold it any more.
//
// Not thread-safe: the engine loop owns it.
#pragma once
#include <cstdint>
#include <list>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "kv/segmented_store.h"

namespace leanlm {

class PrefixCache {
 public:
  // layer_windows: the model's per-layer sliding windows (KvPrefix::can_continue_at).
  PrefixCache(int max_entries, std::vector<int> layer_windows)
      : max_entries_(max_entries), windows_(std::move(layer_windows)) {}

  struct Hit {
    std::shared_ptr<const KvPrefix> prefix;  // null: no usable entry
    int n_tokens = 0;                        // positions to take from it
  };
  // The longest usable cached prefix of tokens[0..max_use) under this key.
  Hit lookup(const std::string& key, const std::vector<int>& tokens, int max_use);
  // Remembers that `prefix` holds tokens[0..prefix->n_tokens). An entry whose tokens start the new
  // one is replaced by it when the new one can serve it (a sliding-window layer's ring may have
  // moved on from the older entry's end).
  void insert(const std::string& key, const std::vector<int>& tokens, std::shared_ptr<const KvPrefix> prefix);
  // Forgets the least recently used entry that would free memory: one with a store outside
  // `in_use` (the stores running sequences read); false when there is none.
  bool evict_lru(const std::set<const KvStore*>& in_use = {});
  void clear() { entries_.clear(); }

  int size() const { return int(entries_.size()); }
  bool enabled() const { return max_entries_ > 0; }
  // Bytes of the distinct stores the entries hold, leaving out those in `in_use` (what evicting
  // every entry would free).
  size_t bytes(const std::set<const KvStore*>& in_use = {}) const;

 private:
  struct Entry {
    std::string key;
    std::vector<int> tokens;
    std::shared_ptr<const KvPrefix> prefix;
  };
  int max_entries_;
  std::vector<int> windows_;
  std::list<Entry> entries_;  // most recently used first
};

}  // namespace leanlm
