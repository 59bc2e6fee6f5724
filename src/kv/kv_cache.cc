#include "kv/kv_cache.h"
#include "kv/dense_rows.h"

#include <algorithm>
#include <cstring>

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
// grow by doubling; sliding-window layers are a ring of window + max_batch slots, so a batch never
// overwrites a key that one of its own queries still needs.
template <typename T>
class DenseKvStore : public KvStore {
 public:
  explicit DenseKvStore(const KvShape& s) : s_(s), row_(s.n_kv_head * s.head_dim) {
    if (s.head_dim % 8 != 0) fail("KV cache: head size must be a multiple of 8");
    if (s.window > 0) {
      ring_ = std::min(s.window + s.max_batch, s.max_ctx > 0 ? s.max_ctx : s.window + s.max_batch);
      reserve(ring_);
      pos_.assign(ring_, -1);
    }
  }

  void append(int pos, const float* k, const float* v) override {
    int slot;
    if (ring_) {
      slot = pos % ring_;
    } else {
      slot = n_;
      if (slot >= cap_) reserve(std::max(256, cap_ * 2));
      pos_.push_back(-1);
      ++n_;
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

  size_t bytes() const override { return size_t(n_slots()) * row_ * sizeof(T) * 2; }

  void clear() override {
    if (ring_) std::fill(pos_.begin(), pos_.end(), -1);
    else {
      n_ = 0;
      pos_.clear();
    }
  }

 private:
  void reserve(int cap) {
    k_.resize(size_t(cap) * row_);
    v_.resize(size_t(cap) * row_);
    cap_ = cap;
  }

  KvShape s_;
  int row_;
  int ring_ = 0;  // > 0: ring buffer of that many slots
  int n_ = 0;     // slots in use (linear mode)
  int cap_ = 0;
  AlignedVec<T> k_, v_;
  std::vector<int32_t> pos_;
};

}  // namespace

std::unique_ptr<KvStore> make_kv_store(KvType type, const KvShape& shape) {
  if (type == KvType::F16) return std::make_unique<DenseKvStore<uint16_t>>(shape);
  return std::make_unique<DenseKvStore<float>>(shape);
}

}  // namespace leanlm
