#include "kv/kv_cache.h"
#include "kv/dense_rows.h"

#include <algorithm>
#include <cstring>

#include "kv/block_pool.h"
#include "util/aligned.h"
#include "util/error.h"
#include "util/fp16.h"

namespace leanlm {

int KvStore::n_live() const {
  const int32_t* p = slot_positions();
  int n = 0;
  for (int s = 0; s < n_slots(); ++s) n += p[s] >= 0;
  return n;
}

namespace {

inline void store_elem(float* p, float v) { *p = v; }
inline void store_elem(uint16_t* p, float v) { *p = f32_to_fp16(v); }

// Uncompressed keys and values, token-major: [slot][n_kv_head][head_dim]. Full-attention layers
// grow (to what a pass needs, at least doubling, at most max_ctx slots); sliding-window layers are
// a ring of window + max_batch slots, so a batch never overwrites a key that one of its own queries
// still needs. Every allocated slot (rows and position) is charged to the pool.
template <typename T>
class DenseKvStore : public KvStore {
 public:
  DenseKvStore(const KvShape& s, BlockPool& pool) : s_(s), pool_(pool), row_(s.n_kv_head * s.head_dim) {
    if (s.head_dim % 8 != 0) fail("KV cache: head size must be a multiple of 8");
    if (s.window > 0) {
      ring_ = s.window + std::max(1, s.max_batch);
      if (s.max_ctx > 0) ring_ = std::min(ring_, s.max_ctx);
      grow(ring_);
      std::fill(pos_.begin(), pos_.end(), -1);
    }
  }
  ~DenseKvStore() override { pool_.refund(bytes()); }

  void append(int pos, const float* k, const float* v) override {
    int slot;
    if (ring_) {
      slot = pos % ring_;
    } else {
      if (n_ >= cap_) grow(target_capacity(1));
      slot = n_++;
    }
    pos_[slot] = pos;
    T* kd = k_.data() + size_t(slot) * row_;
    T* vd = v_.data() + size_t(slot) * row_;
    for (int i = 0; i < row_; ++i) {
      store_elem(kd + i, k[i]);
      store_elem(vd + i, v[i]);
    }
  }

  int n_slots() const override { return ring_ ? ring_ : n_; }
  const int32_t* slot_positions() const override { return pos_.data(); }

  void scores(int h, const float* q, int n_q, int q_stride, int s0, int s1, float* out, int out_stride) const override {
    dense_dot(row(k_, s0, h), row_, s1 - s0, s_.head_dim, q, n_q, q_stride, out, out_stride);
  }
  void accumulate(int h, const float* w, int n_q, int w_stride, int s0, int s1, float* out, int out_stride) const override {
    dense_axpy(row(v_, s0, h), row_, s1 - s0, s_.head_dim, w, n_q, w_stride, out, out_stride);
  }

  // Row of KV head h in slot s.
  const T* row(const AlignedVec<T>& buf, int slot, int h) const { return buf.data() + size_t(slot) * row_ + size_t(h) * s_.head_dim; }

  size_t bytes() const override { return slot_bytes() * size_t(cap_); }
  size_t bytes_to_append(int n) const override {
    if (ring_ || n_ + n <= cap_) return 0;
    return slot_bytes() * size_t(target_capacity(n));  // the new buffers while the old are still held
  }
  void reserve(int n) override {
    if (!ring_ && n_ + n > cap_) grow(target_capacity(n));
  }

  void clear() override {
    if (ring_) std::fill(pos_.begin(), pos_.end(), -1);
    else n_ = 0;
  }

 private:
  size_t slot_bytes() const { return size_t(row_) * sizeof(T) * 2 + sizeof(int32_t); }
  // Capacity for n more slots: at least double (amortised growth), at most max_ctx.
  int target_capacity(int n) const {
    int c = std::max({256, n_ + n, 2 * cap_});
    if (s_.max_ctx > 0) c = std::max(n_ + n, std::min(c, s_.max_ctx));
    return c;
  }
  void grow(int cap) {
    AlignedVec<T> k, v;
    allocate_charged(pool_, slot_bytes() * size_t(cap), size_t(cap) * row_, k, v);
    std::copy(k_.begin(), k_.end(), k.begin());
    std::copy(v_.begin(), v_.end(), v.begin());
    k_ = std::move(k), v_ = std::move(v);
    pos_.resize(cap, -1);
    pool_.refund(slot_bytes() * size_t(cap_));
    cap_ = cap;
  }

  KvShape s_;
  BlockPool& pool_;
  int row_;
  int ring_ = 0;  // > 0: ring buffer of that many slots
  int n_ = 0;     // slots in use (linear mode)
  int cap_ = 0;   // slots allocated
  AlignedVec<T> k_, v_;
  std::vector<int32_t> pos_;  // [cap_]
};

}  // namespace

std::unique_ptr<KvStore> make_kv_store(KvType type, const KvShape& shape, BlockPool& pool) {
  if (type == KvType::F16) return std::make_unique<DenseKvStore<uint16_t>>(shape, pool);
  return std::make_unique<DenseKvStore<float>>(shape, pool);
}

}  // namespace leanlm
