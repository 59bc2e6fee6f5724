#include "kv/kv_cache.h"
#include "kv/kv_kernels.h"

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

// Uncompressed keys and values, per KV head, laid out for streaming reads of one head:
//   f16 keys   transposed in blocks of 32 slots: [n_kv_head][cap / 32][head_dim][32] (one vector
//              holds one channel of consecutive slots: scores need no horizontal sums)
//   f32 keys   [n_kv_head][cap][head_dim]
//   values     [n_kv_head][cap][head_dim] (accumulation streams whole rows)
// Full-attention layers grow (to what a pass needs, at least doubling, at most max_ctx slots, in
// multiples of 32); sliding-window layers are a ring of window + max_batch slots (rounded up to
// 32), so a batch never overwrites a key that one of its own queries still needs. Every allocated
// slot (rows and position) is charged to the pool.
template <typename T>
class DenseKvStore : public KvStore {
 public:
  static constexpr bool kTransposed = sizeof(T) == 2;
  static constexpr int kBlock = 32;

  DenseKvStore(const KvShape& s, BlockPool& pool) : s_(s), pool_(pool), D_(s.head_dim) {
    if (s.head_dim % 16 != 0) fail("KV cache: head size must be a multiple of 16");
    if (s.window > 0) {
      ring_ = s.window + std::max(1, s.max_batch);
      if (s.max_ctx > 0) ring_ = std::min(ring_, s.max_ctx);
      ring_ = round_up(ring_);
      resize(ring_);
      std::fill(pos_.begin(), pos_.end(), -1);
    }
  }
  ~DenseKvStore() override { pool_.refund(bytes()); }

  void append(int pos, const float* k, const float* v) override {
    int slot;
    if (ring_) {
      slot = pos % ring_;
    } else {
      if (n_ >= cap_) resize(target_capacity(1));
      slot = n_++;
    }
    pos_[slot] = pos;
    for (int h = 0; h < s_.n_kv_head; ++h) {
      const float* kh = k + size_t(h) * D_;
      const float* vh = v + size_t(h) * D_;
      T* vd = value_row(h, slot);
      for (int c = 0; c < D_; ++c) store_elem(vd + c, vh[c]);
      if constexpr (kTransposed) {
        T* kb = key_block(h, slot / kBlock) + slot % kBlock;
        for (int c = 0; c < D_; ++c) store_elem(kb + size_t(c) * kBlock, kh[c]);
      } else {
        T* kd = k_.data() + (size_t(h) * cap_ + slot) * D_;
        for (int c = 0; c < D_; ++c) store_elem(kd + c, kh[c]);
      }
    }
  }

  int n_slots() const override { return ring_ ? ring_ : n_; }
  const int32_t* slot_positions() const override { return pos_.data(); }

  void scores(int h, const float* q, int n_q, int q_stride, int s0, int s1, float* out, int out_stride) const override {
    const KvKernels& kk = best_kv_kernels();
    if constexpr (kTransposed) {
      for (int b = s0 / kBlock; b * kBlock < s1; ++b) {
        const int j0 = std::max(s0, b * kBlock) - b * kBlock, j1 = std::min(s1, (b + 1) * kBlock) - b * kBlock;
        kk.tkeys_scores_f16(key_block(h, b), kBlock, j0, j1, D_, q, n_q, q_stride, out + (b * kBlock + j0 - s0), out_stride);
      }
    } else {
      kk.rows_scores_f32(k_.data() + (size_t(h) * cap_ + s0) * D_, D_, s1 - s0, D_, q, n_q, q_stride, out, out_stride);
    }
  }
  void accumulate(int h, const float* w, int n_q, int w_stride, int s0, int s1, float* out, int out_stride) const override {
    const KvKernels& kk = best_kv_kernels();
    if constexpr (kTransposed) kk.rows_accum_f16(value_row(h, s0), D_, s1 - s0, D_, w, n_q, w_stride, out, out_stride);
    else kk.rows_accum_f32(value_row(h, s0), D_, s1 - s0, D_, w, n_q, w_stride, out, out_stride);
  }

  size_t bytes() const override { return slot_bytes() * size_t(cap_); }
  size_t bytes_to_append(int n) const override {
    if (ring_ || n_ + n <= cap_) return 0;
    return slot_bytes() * size_t(target_capacity(n));  // the new buffers while the old are still held
  }
  void reserve(int n) override {
    if (!ring_ && n_ + n > cap_) resize(target_capacity(n));
  }

  void clear() override {
    if (ring_) std::fill(pos_.begin(), pos_.end(), -1);
    else n_ = 0;
  }
  void shrink_to_fit() override {
    if (ring_ || round_up(n_) >= cap_) return;
    try {
      resize(round_up(n_));  // the copy is charged before the old buffers are refunded
    } catch (const Error&) {
      // No room for the copy: keep the capacity (nothing changed).
    }
  }

 private:
  static void store_elem(float* p, float v) { *p = v; }
  static void store_elem(uint16_t* p, float v) { *p = f32_to_fp16(v); }
  static int round_up(int n) { return (n + kBlock - 1) / kBlock * kBlock; }

  T* value_row(int h, int slot) { return v_.data() + (size_t(h) * cap_ + slot) * D_; }
  const T* value_row(int h, int slot) const { return v_.data() + (size_t(h) * cap_ + slot) * D_; }
  T* key_block(int h, int b) { return k_.data() + (size_t(h) * (cap_ / kBlock) + b) * D_ * kBlock; }
  const T* key_block(int h, int b) const { return k_.data() + (size_t(h) * (cap_ / kBlock) + b) * D_ * kBlock; }

  size_t slot_bytes() const { return size_t(s_.n_kv_head) * D_ * sizeof(T) * 2 + sizeof(int32_t); }
  // Capacity for n more slots: at least double (amortised growth), at most max_ctx (rounded up to 32).
  int target_capacity(int n) const {
    int c = std::max({256, n_ + n, 2 * cap_});
    if (s_.max_ctx > 0) c = std::max(n_ + n, std::min(c, s_.max_ctx));
    return round_up(c);
  }
  // Each head's region moves to its place in the new buffers (its first slots, same layout; a
  // smaller capacity keeps the slots in use).
  void resize(int cap) {
    AlignedVec<T> k, v;
    allocate_charged(pool_, slot_bytes() * size_t(cap), size_t(cap) * s_.n_kv_head * D_, k, v);
    const size_t per_head_old = size_t(cap_) * D_, per_head_new = size_t(cap) * D_;
    const size_t keep = std::min(per_head_old, per_head_new);
    for (int h = 0; h < s_.n_kv_head && cap_ > 0; ++h) {
      std::copy_n(k_.data() + h * per_head_old, keep, k.data() + h * per_head_new);
      std::copy_n(v_.data() + h * per_head_old, keep, v.data() + h * per_head_new);
    }
    k_ = std::move(k), v_ = std::move(v);
    pos_.resize(cap, -1);
    pos_.shrink_to_fit();
    pool_.refund(slot_bytes() * size_t(cap_));
    cap_ = cap;
  }

  KvShape s_;
  BlockPool& pool_;
  int D_;
  int ring_ = 0;  // > 0: ring buffer of that many slots
  int n_ = 0;     // slots in use (linear mode)
  int cap_ = 0;   // slots allocated (a multiple of 32)
  AlignedVec<T> k_, v_;
  std::vector<int32_t> pos_;  // [cap_]
};

}  // namespace

std::unique_ptr<KvStore> make_kv_store(KvType type, const KvShape& shape, BlockPool& pool) {
  if (type == KvType::F16) return std::make_unique<DenseKvStore<uint16_t>>(shape, pool);
  return std::make_unique<DenseKvStore<float>>(shape, pool);
}

}  // namespace leanlm
