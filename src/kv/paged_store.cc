#include "kv/paged_store.h"

#include <algorithm>
#include <cstring>

#include "kv/dense_rows.h"
#include "util/error.h"
#include "util/fp16.h"

namespace leanlm {

PagedKvStore::PagedKvStore(const KvShape& shape, BlockPool& pool, PagedKvOptions opts)
    : s_(shape), pool_(pool), opts_(std::move(opts)) {
  B_ = opts_.key->tokens();
  KVH_ = s_.n_kv_head;
  D_ = s_.head_dim;
  Dk_ = opts_.key->dim();
  row_ = KVH_ * D_;
  if (opts_.value->tokens() != B_ || opts_.value->dim() != D_) fail("internal error: key and value codecs disagree");
  if (opts_.think_keep > 0) {
    if (!opts_.make_key || opts_.think_keep >= D_ || opts_.think_unit <= 0 || opts_.think_keep % opts_.think_unit)
      fail("internal error: bad ThinK options");
    q_sq_.assign(size_t(KVH_) * kThinkQueries * D_, 0.f);
    q_sq_pos_.assign(size_t(KVH_) * kThinkQueries, -1);
  }
  kbytes_ = opts_.key->block_bytes();
  vbytes_ = opts_.value->block_bytes();
  page_bytes_ = size_t(KVH_) * (kbytes_ + vbytes_);
  per_token_ = opts_.key->per_token() && opts_.value->per_token();
  cap_ = base_cap_ = opts_.residual + (per_token_ ? 1 : B_);
  rk_.resize(size_t(cap_) * row_);
  rv_.resize(size_t(cap_) * row_);
}

const std::vector<int>& PagedKvStore::kept_channels(int h) const {
  static const std::vector<int> none;
  return kept_.empty() ? none : kept_[h];
}

void PagedKvStore::resize_ring(int cap) {
  if (cap == cap_ || cap < n_recent_) return;
  AlignedVec<uint16_t> k(size_t(cap) * row_), v(size_t(cap) * row_);
  for (int r = 0; r < n_recent_; ++r) {
    std::memcpy(k.data() + size_t(r) * row_, recent_row(rk_, r), size_t(row_) * 2);
    std::memcpy(v.data() + size_t(r) * row_, recent_row(rv_, r), size_t(row_) * 2);
  }
  rk_ = std::move(k), rv_ = std::move(v);
  cap_ = cap, head_ = 0;
}

void PagedKvStore::observe_queries(int h, int q_pos, const float* q, int n_rows, int stride) const {
  if (!choosing_channels()) return;
  std::lock_guard<std::mutex> lock(observe_mu_);
  const size_t e = size_t(h) * kThinkQueries + q_pos % kThinkQueries;
  if (q_pos < q_sq_pos_[e]) return;  // holds a later query already
  q_sq_pos_[e] = q_pos;
  float* dst = q_sq_.data() + e * D_;
  for (int c = 0; c < D_; ++c) {
    float s = 0;
    for (int r = 0; r < n_rows; ++r) s += q[size_t(r) * stride + c] * q[size_t(r) * stride + c];
    dst[c] = s / float(n_rows);
  }
}

// ThinK's channel choice: per KV head, score channel c by mean(q_c^2) over the last queries times
// mean(k_c^2) over the keys held, add the scores of each unit, keep the best units. (Sums rank the
// channels of a head as the means do.)
void PagedKvStore::choose_channels() {
  const int U = opts_.think_unit, n_units = D_ / U, keep_units = opts_.think_keep / U;
  std::vector<std::vector<int>> kept(KVH_);
  std::vector<double> qs(D_), ks(D_), unit(n_units);
  std::vector<int> order(n_units);
  for (int h = 0; h < KVH_; ++h) {
    std::fill(qs.begin(), qs.end(), 0.0);
    std::fill(ks.begin(), ks.end(), 0.0);
    bool any_query = false;
    for (int e = 0; e < kThinkQueries; ++e) {
      if (q_sq_pos_[size_t(h) * kThinkQueries + e] < 0) continue;
      const float* src = q_sq_.data() + (size_t(h) * kThinkQueries + e) * D_;
      for (int c = 0; c < D_; ++c) qs[c] += src[c];
      any_query = true;
    }
    if (!any_query) std::fill(qs.begin(), qs.end(), 1.0);  // no query seen: keys alone decide
    const int pe = page_end();
    for (int r = 0; r < n_recent_; ++r) {
      if (pos_[pe + r] < 0) continue;
      const uint16_t* k = recent_row(rk_, r) + size_t(h) * D_;
      for (int c = 0; c < D_; ++c) {
        const double x = fp16_to_f32(k[c]);
        ks[c] += x * x;
      }
    }
    for (int u = 0; u < n_units; ++u) {
      double s = 0;
      for (int c = u * U; c < (u + 1) * U; ++c) s += qs[c] * ks[c];
      unit[u] = s;
    }
    for (int u = 0; u < n_units; ++u) order[u] = u;
    // Best first; ties to the lower channel so the choice is deterministic.
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return unit[a] > unit[b]; });
    std::sort(order.begin(), order.begin() + keep_units);
    for (int i = 0; i < keep_units; ++i)
      for (int c = order[i] * U; c < (order[i] + 1) * U; ++c) kept[h].push_back(c);
  }
  opts_.key = opts_.make_key(opts_.think_keep, kept);
  kept_ = std::move(kept);
  Dk_ = opts_.think_keep;
  kbytes_ = opts_.key->block_bytes();
  page_bytes_ = size_t(KVH_) * (kbytes_ + vbytes_);
}

PagedKvStore::~PagedKvStore() {
  for (uint8_t* p : pages_) pool_.put(p, page_bytes_);
}

const int32_t* PagedKvStore::slot_positions() const {
  if (!opts_.low_tier) return pos_.data();
  const int L = low_slots();
  all_pos_.resize(size_t(L) + pos_.size());
  std::memcpy(all_pos_.data(), opts_.low_tier->slot_positions(), size_t(L) * 4);
  std::memcpy(all_pos_.data() + L, pos_.data(), pos_.size() * 4);
  return all_pos_.data();
}

void PagedKvStore::gather_key(const float* k, float* out) const {
  for (int h = 0; h < KVH_; ++h) {
    if (kept_.empty()) {
      std::memcpy(out + size_t(h) * Dk_, k + size_t(h) * D_, size_t(D_) * 4);
    } else {
      const std::vector<int>& ch = kept_[h];
      for (int c = 0; c < Dk_; ++c) out[size_t(h) * Dk_ + c] = k[size_t(h) * D_ + ch[c]];
    }
  }
}

void PagedKvStore::append(int pos, const float* k, const float* v) {
  if (n_recent_ == cap_) resize_ring(2 * cap_);  // ThinK holds tokens whole until it has chosen
  const int r = (head_ + n_recent_) % cap_;
  for (int i = 0; i < row_; ++i) {
    rk_[size_t(r) * row_ + i] = f32_to_fp16(k[i]);
    rv_[size_t(r) * row_ + i] = f32_to_fp16(v[i]);
  }
  ++n_recent_;
  pos_.push_back(pos);
  ++n_live_;
  newest_ = std::max(newest_, pos);
  if (!choosing_channels()) flush();
  if (s_.window > 0) recycle_window(newest_);
}

void PagedKvStore::new_page() {
  pages_.push_back(pool_.get(page_bytes_));
  fill_.push_back(0);
  pos_.insert(pos_.begin() + (page_end() - B_), B_, -1);
}

// Moves tokens from the recent window into pages: one at a time for per-token codecs, B at a time
// otherwise. Evicted tokens (position -1) are dropped on the way.
void PagedKvStore::flush() {
  thread_local std::vector<float> kf, vf, kg;
  const int batch = per_token_ ? 1 : B_;
  while (n_recent_ >= opts_.residual + batch) {
    const int pe = page_end();
    // Live rows among the oldest `batch` of the window, converted to f32: [n][row].
    kf.resize(size_t(batch) * row_);
    vf.resize(size_t(batch) * row_);
    std::vector<int32_t> live_pos;
    for (int r = 0; r < batch; ++r) {
      if (pos_[pe + r] < 0) continue;
      const size_t o = live_pos.size() * row_;
      for (int i = 0; i < row_; ++i) {
        kf[o + i] = fp16_to_f32(recent_row(rk_, r)[i]);
        vf[o + i] = fp16_to_f32(recent_row(rv_, r)[i]);
      }
      live_pos.push_back(pos_[pe + r]);
    }
    pos_.erase(pos_.begin() + pe, pos_.begin() + pe + batch);
    head_ = (head_ + batch) % cap_;
    n_recent_ -= batch;
    if (live_pos.empty()) continue;
    const int n = int(live_pos.size());
    if (per_token_) {
      if (pages_.empty() || fill_.back() == B_) new_page();
    } else {
      new_page();
    }
    const int p = int(pages_.size()) - 1, j0 = fill_[p];
    kg.resize(size_t(n) * KVH_ * Dk_);
    for (int j = 0; j < n; ++j) gather_key(kf.data() + size_t(j) * row_, kg.data() + size_t(j) * KVH_ * Dk_);
    for (int h = 0; h < KVH_; ++h) {
      opts_.key->encode(h, kg.data() + size_t(h) * Dk_, KVH_ * Dk_, j0, j0 + n, key_block(p, h));
      opts_.value->encode(h, vf.data() + size_t(h) * D_, row_, j0, j0 + n, value_block(p, h));
    }
    for (int j = 0; j < n; ++j) pos_[size_t(p) * B_ + j0 + j] = live_pos[j];
    fill_[p] += n;
  }
}

void PagedKvStore::recycle_window(int newest) {
  // Queries of the current and later passes sit at or after newest - max_batch + 1 and see keys at
  // most window - 1 positions back.
  const int limit = newest - std::max(1, s_.max_batch) - s_.window + 2;
  int drop = 0;
  while (drop < int(pages_.size())) {
    bool old = true;
    for (int j = 0; j < B_ && old; ++j) old = pos_[size_t(drop) * B_ + j] < limit;
    if (!old) break;
    ++drop;
  }
  if (drop > 0) {
    for (int p = 0; p < drop; ++p) {
      for (int j = 0; j < B_; ++j) n_live_ -= pos_[size_t(p) * B_ + j] >= 0;
      pool_.put(pages_[p], page_bytes_);
    }
    pages_.erase(pages_.begin(), pages_.begin() + drop);
    fill_.erase(fill_.begin(), fill_.begin() + drop);
    pos_.erase(pos_.begin(), pos_.begin() + size_t(drop) * B_);
  }
  if (opts_.low_tier) opts_.low_tier->recycle_window(newest);
}

// Cuts [s0, s1) into the low tier's slots, page-block pieces and contiguous runs of the recent
// window (a ring, so at most two), calling each with its offset from s0.
template <typename Low, typename Page, typename Recent>
void PagedKvStore::for_ranges(int s0, int s1, Low&& low, Page&& page, Recent&& recent) const {
  const int first = s0, L = low_slots();
  if (s0 < L) {
    const int e = std::min(s1, L);
    low(s0, e);
    s0 = e;
  }
  const int pe = L + page_end();
  for (int p = (s0 - L) / B_; L + p * B_ < std::min(s1, pe); ++p) {
    const int j0 = std::max(s0, L + p * B_) - (L + p * B_), j1 = std::min(s1, L + (p + 1) * B_) - (L + p * B_);
    page(p, j0, j1, L + p * B_ + j0 - first);
  }
  for (int r = std::max(s0, pe) - pe; r < s1 - pe;) {
    const int idx = (head_ + r) % cap_;
    const int n = std::min(s1 - pe - r, cap_ - idx);
    recent(idx, n, pe + r - first);
    r += n;
  }
}

void PagedKvStore::scores(int h, const float* q, int n_q, int q_stride, int s0, int s1, float* out,
                          int out_stride) const {
  thread_local QueryPrep prep;
  thread_local AlignedVec<float> qk;  // ThinK: the queries' stored channels
  bool prepared = false;
  for_ranges(
      s0, s1, [&](int a, int e) { opts_.low_tier->scores(h, q, n_q, q_stride, a, e, out, out_stride); },
      [&](int p, int j0, int j1, int off) {
        if (!prepared) {  // once per call: tables and gathered channels serve every block
          const float* qp = q;
          int qs = q_stride;
          if (!kept_.empty()) {
            qk.resize(size_t(n_q) * Dk_);
            const std::vector<int>& ch = kept_[h];
            for (int i = 0; i < n_q; ++i)
              for (int c = 0; c < Dk_; ++c) qk[size_t(i) * Dk_ + c] = q[size_t(i) * q_stride + ch[c]];
            qp = qk.data(), qs = Dk_;
          }
          opts_.key->prepare(h, qp, n_q, qs, prep);
          prepared = true;
        }
        opts_.key->dot(h, key_block(p, h), j0, j1, prep, out + off, out_stride);
      },
      [&](int idx, int n, int off) {
        dense_dot(rk_.data() + size_t(idx) * row_ + size_t(h) * D_, row_, n, D_, q, n_q, q_stride, out + off,
                  out_stride);
      });
}

void PagedKvStore::accumulate(int h, const float* w, int n_q, int w_stride, int s0, int s1, float* out,
                              int out_stride) const {
  for_ranges(
      s0, s1, [&](int a, int e) { opts_.low_tier->accumulate(h, w, n_q, w_stride, a, e, out, out_stride); },
      [&](int p, int j0, int j1, int off) {
        opts_.value->axpy(h, value_block(p, h), j0, j1, w + off, n_q, w_stride, out, out_stride);
      },
      [&](int idx, int n, int off) {
        dense_axpy(rv_.data() + size_t(idx) * row_ + size_t(h) * D_, row_, n, D_, w + off, n_q, w_stride, out,
                   out_stride);
      });
}

size_t PagedKvStore::bytes() const {
  size_t b = pages_.size() * page_bytes_ + (rk_.size() + rv_.size()) * sizeof(uint16_t);
  if (opts_.low_tier) b += opts_.low_tier->bytes();
  return b;
}

void PagedKvStore::clear() {
  for (uint8_t* p : pages_) pool_.put(p, page_bytes_);
  pages_.clear();
  fill_.clear();
  pos_.clear();
  head_ = n_recent_ = n_live_ = 0;
  newest_ = -1;
  if (opts_.think_keep > 0) {  // the next sequence chooses its own channels
    kept_.clear();
    Dk_ = D_;
    std::fill(q_sq_pos_.begin(), q_sq_pos_.end(), -1);
  }
  resize_ring(base_cap_);
  if (opts_.policy) opts_.policy->clear();
  if (opts_.low_tier) opts_.low_tier->clear();
}

void PagedKvStore::observe(int h, int q_pos, const int32_t* key_pos, const float* w, int n) const {
  if (!opts_.policy) return;
  std::lock_guard<std::mutex> lock(observe_mu_);
  opts_.policy->observe(q_pos, newest_, key_pos, w, n);
}

void PagedKvStore::after_pass() {
  if (choosing_channels() && n_recent_ >= opts_.residual + (per_token_ ? 1 : B_)) {
    choose_channels();
    flush();
    resize_ring(std::max(base_cap_, n_recent_));
  }
  if (!opts_.policy || opts_.budget <= 0 || n_live_ <= opts_.budget) return;
  // Tokens in the low tier do not count against the budget: it bounds the high-precision tokens.
  std::vector<int32_t> live, drop;
  live.reserve(n_live_);
  for (int32_t p : pos_)
    if (p >= 0) live.push_back(p);
  std::sort(live.begin(), live.end());
  opts_.policy->choose(live, opts_.budget, drop);
  evict(drop);
}

int PagedKvStore::decode_live(int p, std::vector<float>& k, std::vector<float>& v, std::vector<int32_t>& pos) const {
  thread_local std::vector<float> kb, vb;
  kb.resize(size_t(B_) * Dk_);
  vb.resize(size_t(B_) * D_);
  const int start = int(pos.size());
  for (int j = 0; j < fill_[p]; ++j)
    if (pos_[size_t(p) * B_ + j] >= 0) pos.push_back(pos_[size_t(p) * B_ + j]);
  const int n = int(pos.size()) - start;
  k.resize(pos.size() * KVH_ * Dk_);
  v.resize(pos.size() * row_);
  for (int h = 0; h < KVH_; ++h) {
    opts_.key->decode(h, key_block(p, h), 0, fill_[p], kb.data());
    opts_.value->decode(h, value_block(p, h), 0, fill_[p], vb.data());
    for (int j = 0, o = start; j < fill_[p]; ++j) {
      if (pos_[size_t(p) * B_ + j] < 0) continue;
      std::memcpy(&k[(size_t(o) * KVH_ + h) * Dk_], &kb[size_t(j) * Dk_], size_t(Dk_) * 4);
      std::memcpy(&v[(size_t(o) * KVH_ + h) * D_], &vb[size_t(j) * D_], size_t(D_) * 4);
      ++o;
    }
  }
  return n;
}

void PagedKvStore::encode_rows(int p, const float* k, const float* v, int n) {
  for (int h = 0; h < KVH_; ++h) {
    opts_.key->encode(h, k + size_t(h) * Dk_, KVH_ * Dk_, 0, n, key_block(p, h));
    opts_.value->encode(h, v + size_t(h) * D_, row_, 0, n, value_block(p, h));
  }
}

// Greedy, left to right: a page whose live tokens fit into the page before it (with that page's
// live tokens) is merged into it; empty pages are released. Pages without a merge partner keep
// their holes (re-encoding them alone would free nothing).
void PagedKvStore::merge_pages() {
  auto live_in = [&](int p) {
    int n = 0;
    for (int j = 0; j < fill_[p]; ++j) n += pos_[size_t(p) * B_ + j] >= 0;
    return n;
  };
  thread_local std::vector<float> k, v;
  thread_local std::vector<int32_t> pos;
  for (int p = 0; p < int(pages_.size());) {
    const int n = live_in(p);
    const bool last_open = per_token_ && p + 1 == int(pages_.size());
    if (n == 0 && !last_open) {
      pool_.put(pages_[p], page_bytes_);
      pages_.erase(pages_.begin() + p);
      fill_.erase(fill_.begin() + p);
      pos_.erase(pos_.begin() + size_t(p) * B_, pos_.begin() + size_t(p + 1) * B_);
      continue;
    }
    if (p > 0 && live_in(p - 1) + n <= B_ && (live_in(p - 1) < fill_[p - 1] || n < fill_[p])) {
      k.clear(), v.clear(), pos.clear();
      decode_live(p - 1, k, v, pos);
      decode_live(p, k, v, pos);
      const int m = int(pos.size());
      encode_rows(p - 1, k.data(), v.data(), m);
      fill_[p - 1] = m;
      for (int j = 0; j < B_; ++j) pos_[size_t(p - 1) * B_ + j] = j < m ? pos[j] : -1;
      pool_.put(pages_[p], page_bytes_);
      pages_.erase(pages_.begin() + p);
      fill_.erase(fill_.begin() + p);
      pos_.erase(pos_.begin() + size_t(p) * B_, pos_.begin() + size_t(p + 1) * B_);
      continue;
    }
    ++p;
  }
}

void PagedKvStore::demote(const std::vector<int32_t>& slots) {
  // Decode each evicted token back to f32 and append it to the low tier.
  std::vector<float> k(row_), v(row_), kb(size_t(B_) * Dk_), vb(size_t(B_) * D_);
  const int pe = page_end();
  for (int s : slots) {
    if (s < pe) {
      const int p = s / B_, j = s % B_;
      for (int h = 0; h < KVH_; ++h) {
        opts_.key->decode(h, key_block(p, h), j, j + 1, kb.data());
        opts_.value->decode(h, value_block(p, h), j, j + 1, v.data() + size_t(h) * D_);
        // Pruned key channels (ThinK) come back as zeros.
        std::fill(k.begin() + size_t(h) * D_, k.begin() + size_t(h + 1) * D_, 0.f);
        for (int c = 0; c < Dk_; ++c)
          k[size_t(h) * D_ + (kept_.empty() ? c : kept_[h][c])] = kb[c];
      }
    } else {
      for (int i = 0; i < row_; ++i) {
        k[i] = fp16_to_f32(recent_row(rk_, s - pe)[i]);
        v[i] = fp16_to_f32(recent_row(rv_, s - pe)[i]);
      }
    }
    opts_.low_tier->append(pos_[s], k.data(), v.data());
  }
}

void PagedKvStore::evict(const std::vector<int32_t>& positions) {
  if (positions.empty()) return;
  std::vector<int32_t> want(positions);
  std::sort(want.begin(), want.end());
  std::vector<int32_t> slots;
  for (int s = 0; s < int(pos_.size()); ++s)
    if (pos_[s] >= 0 && std::binary_search(want.begin(), want.end(), pos_[s])) slots.push_back(s);
  if (opts_.low_tier) demote(slots);
  for (int s : slots) pos_[s] = -1;
  n_live_ -= int(slots.size());
  merge_pages();
}

}  // namespace leanlm
