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
  explicit PrefixCache(int max_entries) : max_entries_(max_entries) {}

  struct Hit {
    std::shared_ptr<const KvPrefix> prefix;  // null: no usable entry
    int n_tokens = 0;                        // positions to take from it
  };
  // The longest usable cached prefix of tokens[0..max_use) for this key; layer_windows as in
  // KvPrefix::can_continue_at. Counts the query (and hit) tokens.
  Hit lookup(const std::string& key, const std::vector<int>& tokens, int max_use, const std::vector<int>& layer_windows);
  // Remembers that `prefix` holds tokens[0..prefix->n_tokens). An entry whose tokens start the new
  // one is replaced by it (the new one answers every lookup the old one could).
  void insert(const std::string& key, const std::vector<int>& tokens, std::shared_ptr<const KvPrefix> prefix);
  // Forgets the least recently used entry; false when empty.
  bool evict_lru();
  void clear() { entries_.clear(); }

  int size() const { return int(entries_.size()); }
  bool enabled() const { return max_entries_ > 0; }
  // Bytes of the distinct stores the entries hold, leaving out those in `in_use` (the stores
  // running sequences read: what evicting every entry would not free).
  size_t bytes(const std::set<const KvStore*>& in_use = {}) const;
  uint64_t query_tokens() const { return queries_; }
  uint64_t hit_tokens() const { return hits_; }

 private:
  struct Entry {
    std::string key;
    std::vector<int> tokens;
    std::shared_ptr<const KvPrefix> prefix;
  };
  int max_entries_;
  std::list<Entry> entries_;  // most recently used first
  uint64_t queries_ = 0, hits_ = 0;
};

}  // namespace leanlm
