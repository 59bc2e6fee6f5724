// Paging and reads of the compressed store: tokens enter the recent window, move into pages, and
// scores/accumulate walk the low tier, the pages and the window as contiguous slot ranges.
#include "kv/paged_store.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kv/kv_kernels.h"
#include "util/error.h"
#include "util/fp16.h"

namespace leanlm {

namespace {

// A head's blocks lie one page apart (pages come from the pool one at a time, with every head's keys
// and values in each), a pattern the hardware prefetchers do not follow: reads ask for the block
// this many pages ahead while they compute on the current one.
constexpr int kPrefetchPages = 2;

void prefetch(const uint8_t* p, size_t bytes) {
  for (size_t o = 0; o < bytes; o += 64) _mm_prefetch(reinterpret_cast<const char*>(p + o), _MM_HINT_T0);
}

}  // namespace

PagedKvStore::PagedKvStore(const KvShape& shape, BlockPool& pool, PagedKvOptions opts)
    : s_(shape), pool_(pool), opts_(std::move(opts)), recent_(shape.n_kv_head * shape.head_dim, pool) {
  B_ = opts_.key->tokens();
  KVH_ = s_.n_kv_head;
  D_ = s_.head_dim;
  Dk_ = opts_.key->dim();
  row_ = KVH_ * D_;
  if (opts_.value->tokens() != B_ || opts_.value->dim() != D_) fail("internal error: key and value codecs disagree");
  if (opts_.rotate) {
    if (opts_.think_keep > 0) fail("internal error: ThinK with rotation");
    rotation_ = std::make_unique<HeadRotation>(D_);
  }
  if (opts_.think_keep > 0) {
    if (!opts_.make_key) fail("internal error: ThinK needs a key codec factory");
    think_ = std::make_unique<ThinkChooser>(KVH_, D_, opts_.think_keep, opts_.think_unit);
  }
  full_key_ = opts_.key;
  kbytes_ = opts_.key->block_bytes();
  vbytes_ = opts_.value->block_bytes();
  page_bytes_ = size_t(KVH_) * (kbytes_ + vbytes_);
  per_token_ = opts_.key->per_token() && opts_.value->per_token();
  base_cap_ = opts_.residual + (per_token_ ? 1 : B_);
  recent_.resize(base_cap_);
  observer_ = std::make_unique<Observer>(*this);
}

PagedKvStore::~PagedKvStore() {
  for (size_t p = 0; p < pages_.size(); ++p) {
    pool_.put(pages_[p], page_bytes_);
    pool_.refund(page_meta());
  }
}

AttentionObserver* PagedKvStore::observer() {
  return observer_->wants_queries() || observer_->wants_weights() ? observer_.get() : nullptr;
}

void PagedKvStore::sync_slots() {
  if (!opts_.low_tier) return;  // slot_positions() is pos_ itself
  const int L = low_slots();
  slots_.resize(size_t(L) + pos_.size());
  if (L) std::memcpy(slots_.data(), opts_.low_tier->slot_positions(), size_t(L) * 4);
  if (!pos_.empty()) std::memcpy(slots_.data() + L, pos_.data(), pos_.size() * 4);
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

// The window capacity that holds `need` tokens: doublings of the current one.
static int grown_capacity(int cap, int need) {
  while (cap < need) cap *= 2;
  return cap;
}

// ThinK's wait: the window holds every token until the end of the pass that fills it, so it grows
// by at most one pass (max_batch tokens: a request of several passes chooses after its first).
int PagedKvStore::waiting_capacity(int n) const {
  return grown_capacity(recent_.capacity(), recent_.size() + std::min(n, std::max(1, s_.max_batch)));
}

void PagedKvStore::reserve(int n) {
  if (choosing_channels()) recent_.resize(waiting_capacity(n));  // one resize, which bytes_to_append counts
}

void PagedKvStore::append(int pos, const float* k, const float* v) {
  if (rotation_) {  // stored rotated; a sink tier takes the rotated rows too (queries reach it rotated)
    thread_local std::vector<float> kr, vr;
    kr.assign(k, k + row_), vr.assign(v, v + row_);
    for (int h = 0; h < KVH_; ++h) rotation_->forward(kr.data() + size_t(h) * D_), rotation_->forward(vr.data() + size_t(h) * D_);
    k = kr.data(), v = vr.data();
  }
  if (pos < opts_.sinks) {
    opts_.low_tier->append(pos, k, v);
    newest_ = std::max(newest_, pos);
    sync_slots();
    return;
  }
  if (recent_.size() == recent_.capacity()) recent_.resize(2 * recent_.capacity());  // ThinK's wait
  recent_.push(k, v);
  pos_.push_back(pos);
  ++n_live_;
  newest_ = std::max(newest_, pos);
  if (!choosing_channels()) flush();
  if (s_.window > 0) recycle_window(newest_);
  sync_slots();
}

void PagedKvStore::add_page() {
  pool_.charge(page_meta());
  try {
    pages_.push_back(pool_.get(page_bytes_));
  } catch (...) {
    pool_.refund(page_meta());
    throw;
  }
  fill_.push_back(0);
  reencoded_.push_back(0);
  pos_.insert(pos_.begin() + (page_end() - B_), B_, -1);
}

void PagedKvStore::remove_page(int p) {
  for (int j = 0; j < B_; ++j) n_live_ -= pos_[size_t(p) * B_ + j] >= 0;
  pool_.put(pages_[p], page_bytes_);
  pool_.refund(page_meta());
  pages_.erase(pages_.begin() + p);
  fill_.erase(fill_.begin() + p);
  reencoded_.erase(reencoded_.begin() + p);
  pos_.erase(pos_.begin() + size_t(p) * B_, pos_.begin() + size_t(p + 1) * B_);
}

// Moves tokens from the recent window into pages: one at a time for per-token codecs, B at a time
// otherwise. Evicted tokens (position -1) are dropped on the way.
void PagedKvStore::flush() {
  thread_local std::vector<float> kf, vf, kg;
  const int batch = per_token_ ? 1 : B_;
  while (recent_.size() >= opts_.residual + batch) {
    const int pe = page_end();
    // Live rows among the oldest `batch` of the window, converted to f32: [n][row].
    kf.resize(size_t(batch) * row_);
    vf.resize(size_t(batch) * row_);
    std::vector<int32_t> live_pos;
    for (int r = 0; r < batch; ++r) {
      if (pos_[pe + r] < 0) continue;
      const size_t o = live_pos.size() * row_;
      for (int i = 0; i < row_; ++i) {
        kf[o + i] = fp16_to_f32(recent_.key(r)[i]);
        vf[o + i] = fp16_to_f32(recent_.value(r)[i]);
      }
      live_pos.push_back(pos_[pe + r]);
    }
    const int n = int(live_pos.size());
    if (n > 0 && (!per_token_ || pages_.empty() || fill_.back() == B_)) add_page();  // may throw: nothing moved yet
    const int pe2 = page_end();
    pos_.erase(pos_.begin() + pe2, pos_.begin() + pe2 + batch);
    recent_.pop(batch);
    if (n == 0) continue;
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
  for (int p = drop - 1; p >= 0; --p) remove_page(p);
  if (opts_.low_tier) opts_.low_tier->recycle_window(newest);
  if (drop > 0) sync_slots();
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
    const int n = recent_.run(r, s1 - pe - r);
    recent(recent_.index(r), n, pe + r - first);
    r += n;
  }
}

void PagedKvStore::scores(int h, const float* q, int n_q, int q_stride, int s0, int s1, float* out,
                          int out_stride) const {
  if (rotation_) {  // everything stored is rotated: rotate the queries once per call
    thread_local AlignedVec<float> qr;
    qr.resize(size_t(n_q) * D_);
    for (int i = 0; i < n_q; ++i) {
      std::memcpy(qr.data() + size_t(i) * D_, q + size_t(i) * q_stride, size_t(D_) * 4);
      rotation_->forward(qr.data() + size_t(i) * D_);
    }
    q = qr.data(), q_stride = D_;
  }
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
        if (p + kPrefetchPages < int(pages_.size())) prefetch(key_block(p + kPrefetchPages, h), kbytes_);
        opts_.key->dot(h, key_block(p, h), j0, j1, prep, out + off, out_stride);
      },
      [&](int idx, int n, int off) {
        best_kv_kernels().rows_scores_f16(recent_.key_at(idx) + size_t(h) * D_, row_, n, D_, q, n_q, q_stride, out + off,
                                           out_stride);
      });
}

void PagedKvStore::accumulate(int h, const float* w, int n_q, int w_stride, int s0, int s1, float* out,
                              int out_stride) const {
  if (rotation_) {  // the weighted sum of rotated values, rotated back: out += R^T sum_j w_j (R v_j)
    thread_local AlignedVec<float> acc;
    acc.assign(size_t(n_q) * D_, 0.f);
    accumulate_stored(h, w, n_q, w_stride, s0, s1, acc.data(), D_);
    for (int i = 0; i < n_q; ++i) {
      float* a = acc.data() + size_t(i) * D_;
      rotation_->inverse(a);
      float* o = out + size_t(i) * out_stride;
      for (int c = 0; c < D_; ++c) o[c] += a[c];
    }
    return;
  }
  accumulate_stored(h, w, n_q, w_stride, s0, s1, out, out_stride);
}

void PagedKvStore::accumulate_stored(int h, const float* w, int n_q, int w_stride, int s0, int s1, float* out,
                                     int out_stride) const {
  for_ranges(
      s0, s1, [&](int a, int e) { opts_.low_tier->accumulate(h, w, n_q, w_stride, a, e, out, out_stride); },
      [&](int p, int j0, int j1, int off) {
        if (p + kPrefetchPages < int(pages_.size())) prefetch(value_block(p + kPrefetchPages, h), vbytes_);
        opts_.value->axpy(h, value_block(p, h), j0, j1, w + off, n_q, w_stride, out, out_stride);
      },
      [&](int idx, int n, int off) {
        best_kv_kernels().rows_accum_f16(recent_.value_at(idx) + size_t(h) * D_, row_, n, D_, w + off, n_q, w_stride, out,
                                          out_stride);
      });
}

size_t PagedKvStore::bytes() const {
  size_t b = pages_.size() * (page_bytes_ + page_meta()) + recent_.bytes();
  if (opts_.low_tier) b += opts_.low_tier->bytes();
  return b;
}

// Appending n tokens moves at most n + (window - R) of them into pages: at most n / B + 2 pages
// (one partly filled page and one for the rounding). ThinK's wait instead grows the window (the old
// and new rings are held together while it copies), and its choice then flushes the whole window
// into pages and shrinks the window back. A low tier receives at most the n tokens that push the
// store over its budget. Merges only free pages.
size_t PagedKvStore::bytes_to_append(int n) const {
  const size_t per_page = page_bytes_ + page_meta();
  size_t b = size_t(n / B_ + 2) * per_page;
  if (choosing_channels()) {  // reserve() grows the window in one step
    const int cap = waiting_capacity(n);
    if (cap != recent_.capacity()) b += recent_.bytes_for(cap);
    b += size_t((recent_.size() + n) / B_ + 2) * per_page + recent_.bytes_for(base_cap_);
  }
  // A sink tier's window was sized for every sink when it was made; it never grows.
  if (opts_.low_tier && opts_.sinks == 0) b += opts_.low_tier->bytes_to_append(n);
  return b;
}

void PagedKvStore::clear() {
  for (int p = int(pages_.size()) - 1; p >= 0; --p) remove_page(p);
  pos_.clear();
  recent_.clear();
  n_live_ = 0;
  newest_ = -1;
  if (think_) think_->clear();
  if (!kept_.empty()) {  // the next sequence chooses its own channels (a low tier: its upper tier does)
    kept_.clear();
    opts_.key = full_key_;
    Dk_ = D_;
    kbytes_ = opts_.key->block_bytes();
    page_bytes_ = size_t(KVH_) * (kbytes_ + vbytes_);
  }
  recent_.resize(base_cap_);
  if (opts_.policy) opts_.policy->clear();
  if (opts_.low_tier) opts_.low_tier->clear();
  sync_slots();
}

PagedKvStore::Observer::Observer(PagedKvStore& s) : s_(s), mu_(s.KVH_) {}

void PagedKvStore::Observer::on_queries(int h, int q_pos, const float* q, int n_rows, int stride) {
  if (s_.choosing_channels()) s_.think_->on_queries(h, q_pos, q, n_rows, stride);
}

void PagedKvStore::Observer::on_weights(int h, int q_pos, const int32_t* key_pos, const float* w, int n) {
  std::lock_guard<std::mutex> lock(mu_[h]);
  s_.opts_.policy->observe(h, q_pos, s_.newest_, key_pos, w, n);
}

}  // namespace leanlm
