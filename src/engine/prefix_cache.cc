#include "engine/prefix_cache.h"

#include <algorithm>

namespace leanlm {

namespace {

int common_prefix(const std::vector<int>& a, int na, const std::vector<int>& b, int nb) {
  const int n = std::min(na, nb);
  int i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

}  // namespace

PrefixCache::Hit PrefixCache::lookup(const std::string& key, const std::vector<int>& tokens, int max_use) {
  max_use = std::min(max_use, int(tokens.size()));
  Hit best;
  if (!enabled() || max_use <= 0) return best;
  auto best_it = entries_.end();
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if (it->key != key) continue;
    const int n = common_prefix(it->tokens, it->prefix->n_tokens, tokens, max_use);
    if (n <= best.n_tokens) continue;
    // A sliding-window part frozen far beyond n may have lost positions n needs; then this entry
    // cannot serve n (a shorter match elsewhere still may).
    if (!it->prefix->can_continue_at(n, windows_)) continue;
    best = {it->prefix, n};
    best_it = it;
  }
  if (best_it != entries_.end()) entries_.splice(entries_.begin(), entries_, best_it);  // most recently used
  return best;
}

void PrefixCache::insert(const std::string& key, const std::vector<int>& tokens, std::shared_ptr<const KvPrefix> prefix) {
  if (!enabled() || !prefix || prefix->n_tokens <= 0 || int(tokens.size()) < prefix->n_tokens) return;
  const int n = prefix->n_tokens;
  for (auto it = entries_.begin(); it != entries_.end();) {
    const int m = it->prefix->n_tokens;
    if (it->key == key && m <= n && common_prefix(it->tokens, m, tokens, n) == m &&
        prefix->can_continue_at(m, windows_)) {
      it = entries_.erase(it);  // the new entry serves every lookup this one could
    } else {
      ++it;
    }
  }
  entries_.push_front({key, std::vector<int>(tokens.begin(), tokens.begin() + n), std::move(prefix)});
  while (int(entries_.size()) > max_entries_) entries_.pop_back();
}

bool PrefixCache::evict_lru(const std::set<const KvStore*>& in_use) {
  for (auto it = entries_.end(); it != entries_.begin();) {
    --it;
    if (distinct_bytes({it->prefix.get()}, in_use) == 0) continue;  // frees nothing
    entries_.erase(it);
    return true;
  }
  return false;
}

size_t PrefixCache::bytes(const std::set<const KvStore*>& in_use) const {
  std::vector<const KvPrefix*> all;
  for (const auto& e : entries_) all.push_back(e.prefix.get());
  return distinct_bytes(all, in_use);
}

}  // namespace leanlm
