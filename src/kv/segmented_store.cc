#include "kv/segmented_store.h"

#include <algorithm>

#include "util/error.h"

namespace leanlm {

size_t distinct_bytes(const std::vector<const KvPrefix*>& prefixes, std::set<const KvStore*> skip) {
  size_t b = 0;
  for (const KvPrefix* prefix : prefixes)
    for (const auto& layer : prefix->layers)
      for (const auto& p : layer)
        if (skip.insert(p.store.get()).second) b += p.store->bytes();
  return b;
}

size_t KvPrefix::bytes() const { return distinct_bytes({this}); }

bool KvPrefix::can_continue_at(int n, const std::vector<int>& layer_windows) const {
  if (n > n_tokens || layer_windows.size() != layers.size()) return false;
  for (size_t l = 0; l < layers.size(); ++l) {
    // The query at position n reads positions [lo, n) from the parts (and n itself from the tail).
    // A full-attention layer's parts never lose a position (shareable stores drop nothing; hidden
    // positions are beyond n): only sliding-window rings can have moved on.
    const int w = layer_windows[l];
    if (w <= 0) continue;
    const int lo = std::max(0, n - w + 1);
    int64_t held = 0;
    for (const auto& p : layers[l]) {
      const int end = std::min(n, p.limit);
      const int32_t* pos = p.store->slot_positions();
      for (int s = 0, ns = p.store->n_slots(); s < ns; ++s) held += pos[s] >= lo && pos[s] < end;
    }
    if (held != n - lo) return false;  // positions are unique across parts, so every one is there
  }
  return true;
}

SegmentedKvStore::SegmentedKvStore(std::vector<KvPart> parts, std::unique_ptr<KvStore> tail, int window)
    : tail_(std::move(tail)), window_(window) {
  if (!tail_) fail("segmented KV store: no tail store");
  set_parts(std::move(parts));
}

// Keeps the parts with a visible slot, and their slot offsets and newest positions.
void SegmentedKvStore::set_parts(std::vector<KvPart> parts) {
  parts_.clear(), part_begin_.clear(), part_max_.clear();
  part_slots_ = 0;
  for (auto& p : parts) {
    const int32_t* pos = p.store->slot_positions();
    int newest = -1;
    for (int s = 0, ns = p.store->n_slots(); s < ns; ++s)
      if (pos[s] >= 0 && pos[s] < p.limit) newest = std::max(newest, int(pos[s]));
    if (newest < 0) continue;
    part_begin_.push_back(part_slots_);
    part_max_.push_back(newest);
    part_slots_ += p.store->n_slots();
    newest_ = std::max(newest_, newest);
    parts_.push_back(std::move(p));
  }
  part_begin_.push_back(part_slots_);
  stale_ = true;
}

void SegmentedKvStore::append(int pos, const float* k, const float* v) {
  tail_->append(pos, k, v);
  newest_ = std::max(newest_, pos);
  stale_ = true;
}

const int32_t* SegmentedKvStore::slot_positions() const {
  if (stale_.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lk(rebuild_mu_);
    if (stale_.load(std::memory_order_relaxed)) {
      pos_.resize(size_t(n_slots()));
      for (size_t i = 0; i < parts_.size(); ++i) {
        const KvStore& st = *parts_[i].store;
        const int32_t* src = st.slot_positions();
        for (int s = 0, ns = st.n_slots(); s < ns; ++s)
          pos_[part_begin_[i] + s] = src[s] < parts_[i].limit ? src[s] : -1;
      }
      std::copy_n(tail_->slot_positions(), tail_->n_slots(), pos_.begin() + part_slots_);
      stale_.store(false, std::memory_order_release);
    }
  }
  return pos_.data();
}

// Splits [s0, s1) at the part boundaries; a part's hidden slots are never in a range attention
// asks for (their positions read -1), so each part sees only slots it shows.
template <typename Fn>
void SegmentedKvStore::for_ranges(int s0, int s1, Fn&& fn) const {
  for (size_t i = 0; i < parts_.size() && s0 < s1; ++i) {
    const int b = part_begin_[i], e = part_begin_[i + 1];
    const int lo = std::max(s0, b), hi = std::min(s1, e);
    if (lo < hi) fn(*parts_[i].store, lo - b, hi - b, lo - s0);
  }
  const int lo = std::max(s0, part_slots_);
  if (lo < s1) fn(*tail_, lo - part_slots_, s1 - part_slots_, lo - s0);
}

void SegmentedKvStore::scores(int h, const float* q, int n_q, int q_stride, int s0, int s1, float* out,
                              int out_stride) const {
  for_ranges(s0, s1, [&](const KvStore& st, int a, int b, int off) {
    st.scores(h, q, n_q, q_stride, a, b, out + off, out_stride);
  });
}

void SegmentedKvStore::accumulate(int h, const float* w, int n_q, int w_stride, int s0, int s1, float* out,
                                  int out_stride) const {
  for_ranges(s0, s1, [&](const KvStore& st, int a, int b, int off) {
    st.accumulate(h, w + off, n_q, w_stride, a, b, out, out_stride);
  });
}

void SegmentedKvStore::clear() {
  set_parts({});
  tail_->clear();
  newest_ = -1;
  stale_ = true;
}

void SegmentedKvStore::after_pass() {
  tail_->after_pass();
  stale_ = true;
  if (window_ <= 0) return;
  // A part whose newest position is a window behind the newest token is seen by no later query:
  // let it go (the prefix cache may still hold it for other sequences).
  bool drop = false;
  for (int m : part_max_) drop |= m + window_ <= newest_;
  if (!drop) return;
  std::vector<KvPart> keep;
  for (size_t i = 0; i < parts_.size(); ++i)
    if (part_max_[i] + window_ > newest_) keep.push_back(parts_[i]);
  set_parts(std::move(keep));
}

const std::vector<KvPart>& SegmentedKvStore::freeze(std::unique_ptr<KvStore> fresh) {
  if (!fresh) fail("segmented KV store: no store to continue in");
  if (tail_->n_live() > 0) {
    tail_->shrink_to_fit();
    std::vector<KvPart> parts = parts_;
    parts.push_back({std::shared_ptr<const KvStore>(std::move(tail_)), INT_MAX});
    tail_ = std::move(fresh);
    set_parts(std::move(parts));
  } else {
    tail_ = std::move(fresh);
    stale_ = true;
  }
  return parts_;
}

}  // namespace leanlm
