// Eviction in the paged store: applying the policy's choice after a pass, dropping what sliding-
// window layers can no longer see, merging pages with holes, and demoting evicted tokens to the
// MiKV low tier.
#include <algorithm>
#include <cstring>

#include "kv/paged_store.h"
#include "util/fp16.h"

namespace leanlm {

void PagedKvStore::after_pass() {
  const bool over = opts_.policy && opts_.budget > 0 && n_live_ > opts_.budget;
  // ThinK chooses at the end of the pass that fills its window, or before the first eviction (so a
  // low tier never receives a token before the channels are known).
  if (choosing_channels() && (recent_.size() >= opts_.residual + (per_token_ ? 1 : B_) || over)) {
    choose_channels();
    flush();
    recent_.resize(std::max(base_cap_, recent_.size()));
    sync_slots();
  }
  if (!opts_.policy) return;
  std::vector<int32_t> drop;
  if (s_.window > 0) {
    // The next query sits at newest + 1 or later and sees keys from newest - window + 2 on: older
    // tokens are gone for good, so they leave before the policy weighs what stays (and are not demoted).
    const int horizon = newest_ - s_.window + 2;
    for (int32_t p : pos_)
      if (p >= 0 && p < horizon) drop.push_back(p);
    if (!drop.empty()) evict(drop, false);
    drop.clear();
  }
  if (opts_.budget <= 0 || n_live_ <= opts_.budget) return;
  // Tokens in the low tier do not count against the budget: it bounds the high-precision tokens.
  std::vector<int32_t> live;
  live.reserve(n_live_);
  for (int32_t p : pos_)
    if (p >= 0) live.push_back(p);
  std::sort(live.begin(), live.end());
  opts_.policy->choose(live, opts_.budget, drop);
  evict(drop, true);
}

void PagedKvStore::evict(const std::vector<int32_t>& positions, bool demote_to_low) {
  if (positions.empty()) return;
  if (demote_to_low && opts_.low_tier && choosing_channels()) {  // the low tier stores the chosen channels
    choose_channels();
    flush();
    recent_.resize(std::max(base_cap_, recent_.size()));
  }
  std::vector<int32_t> want(positions);
  std::sort(want.begin(), want.end());
  std::vector<int32_t> slots;
  for (int s = 0; s < int(pos_.size()); ++s)
    if (pos_[s] >= 0 && std::binary_search(want.begin(), want.end(), pos_[s])) slots.push_back(s);
  // Each token leaves this tier as soon as it is in the low tier: if the low tier runs out of
  // memory midway, no token is in both.
  try {
    for (int s : slots) {
      if (demote_to_low && opts_.low_tier) demote(s);
      pos_[s] = -1;
      --n_live_;
    }
  } catch (...) {
    sync_slots();
    throw;
  }
  merge_pages();
  sync_slots();
}

// Greedy, left to right: a page whose live tokens fit into the page before it (with that page's
// live tokens) is merged into it; empty pages are released. Pages without a merge partner keep
// their holes (compacting them alone would free nothing).
void PagedKvStore::merge_pages() {
  auto live_in = [&](int p) {
    int n = 0;
    for (int j = 0; j < fill_[p]; ++j) n += pos_[size_t(p) * B_ + j] >= 0;
    return n;
  };
  for (int p = 0; p < int(pages_.size());) {
    const int n = live_in(p);
    const bool last_open = per_token_ && p + 1 == int(pages_.size());
    if (n == 0 && !last_open) {
      remove_page(p);
      continue;
    }
    if (p > 0 && live_in(p - 1) + n <= B_ && (live_in(p - 1) < fill_[p - 1] || n < fill_[p]) && merge_into(p - 1, p)) {
      remove_page(p);
      continue;
    }
    ++p;
  }
}

// Moves the live rows of page src behind the live rows of page dst (both compacted, slot order
// kept). Per-token codecs copy encoded rows as bytes; a codec that groups across tokens re-encodes
// the decoded rows, which each page allows kMaxReencodes times (returns false beyond that).
bool PagedKvStore::merge_into(int dst, int src) {
  const bool copy_k = opts_.key->rows_copyable(), copy_v = opts_.value->rows_copyable();
  if ((!copy_k || !copy_v) && std::max(reencoded_[dst], reencoded_[src]) >= kMaxReencodes) return false;
  std::vector<int> rows_dst, rows_src;
  for (int j = 0; j < fill_[dst]; ++j)
    if (pos_[size_t(dst) * B_ + j] >= 0) rows_dst.push_back(j);
  for (int j = 0; j < fill_[src]; ++j)
    if (pos_[size_t(src) * B_ + j] >= 0) rows_src.push_back(j);
  const int nd = int(rows_dst.size()), m = nd + int(rows_src.size());
  thread_local std::vector<float> a, b, merged;
  auto side = [&](const BlockCodec& codec, int h, int dim, uint8_t* blk_dst, const uint8_t* blk_src) {
    if (codec.rows_copyable()) {
      for (int i = 0; i < nd; ++i)
        if (rows_dst[i] != i) codec.copy_row(blk_dst, rows_dst[i], blk_dst, i);  // i < rows_dst[i]: in place
      for (int i = nd; i < m; ++i) codec.copy_row(blk_src, rows_src[i - nd], blk_dst, i);
      return;
    }
    a.resize(size_t(B_) * dim), b.resize(size_t(B_) * dim), merged.resize(size_t(B_) * dim);
    codec.decode(h, blk_dst, 0, fill_[dst], a.data());
    codec.decode(h, blk_src, 0, fill_[src], b.data());
    for (int i = 0; i < m; ++i) {
      const float* r = i < nd ? &a[size_t(rows_dst[i]) * dim] : &b[size_t(rows_src[i - nd]) * dim];
      std::memcpy(&merged[size_t(i) * dim], r, size_t(dim) * 4);
    }
    codec.encode(h, merged.data(), dim, 0, m, blk_dst);
  };
  for (int h = 0; h < KVH_; ++h) {
    side(*opts_.key, h, Dk_, key_block(dst, h), key_block(src, h));
    side(*opts_.value, h, D_, value_block(dst, h), value_block(src, h));
  }
  std::vector<int32_t> pos(m);
  for (int i = 0; i < m; ++i)
    pos[i] = i < nd ? pos_[size_t(dst) * B_ + rows_dst[i]] : pos_[size_t(src) * B_ + rows_src[i - nd]];
  for (int j = 0; j < B_; ++j) pos_[size_t(dst) * B_ + j] = j < m ? pos[j] : -1;
  // The source's tokens now live in dst: remove_page(src) must not count them out.
  for (int j = 0; j < B_; ++j) pos_[size_t(src) * B_ + j] = -1;
  fill_[dst] = m;
  if (!copy_k || !copy_v) reencoded_[dst] = std::max(reencoded_[dst], reencoded_[src]) + 1;
  return true;
}

void PagedKvStore::demote(int s) {
  // Decode the evicted token back to f32 and append it to the low tier. Pruned key channels
  // (ThinK) come back as zeros; the low tier stores the same channels and never reads them.
  thread_local std::vector<float> k, v, kb;
  k.resize(row_), v.resize(row_), kb.resize(Dk_);
  const int pe = page_end();
  if (s < pe) {
    const int p = s / B_, j = s % B_;
    for (int h = 0; h < KVH_; ++h) {
      opts_.key->decode(h, key_block(p, h), j, j + 1, kb.data());
      opts_.value->decode(h, value_block(p, h), j, j + 1, v.data() + size_t(h) * D_);
      std::fill(k.begin() + size_t(h) * D_, k.begin() + size_t(h + 1) * D_, 0.f);
      for (int c = 0; c < Dk_; ++c) k[size_t(h) * D_ + (kept_.empty() ? c : kept_[h][c])] = kb[c];
    }
  } else {
    for (int i = 0; i < row_; ++i) {
      k[i] = fp16_to_f32(recent_.key(s - pe)[i]);
      v[i] = fp16_to_f32(recent_.value(s - pe)[i]);
    }
  }
  opts_.low_tier->append(pos_[s], k.data(), v.data());
}

}  // namespace leanlm
