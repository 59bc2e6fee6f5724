#include "kv/recent_window.h"

#include <algorithm>
#include <cstring>

#include "util/error.h"
#include "util/fp16.h"

namespace leanlm {

void RecentWindow::resize(int cap) {
  if (cap == cap_ || cap < n_) return;
  if (n_ == 0) {  // nothing to keep: free first, so shrinking an empty window never needs room
    AlignedVec<uint16_t>().swap(k_);
    AlignedVec<uint16_t>().swap(v_);
    pool_.refund(bytes_for(cap_));
    cap_ = head_ = 0;
  }
  AlignedVec<uint16_t> k, v;
  allocate_charged(pool_, bytes_for(cap), size_t(cap) * row_, k, v);
  for (int r = 0; r < n_; ++r) {
    std::memcpy(k.data() + size_t(r) * row_, key(r), size_t(row_) * 2);
    std::memcpy(v.data() + size_t(r) * row_, value(r), size_t(row_) * 2);
  }
  k_ = std::move(k), v_ = std::move(v);
  pool_.refund(bytes_for(cap_));
  cap_ = cap, head_ = 0;
}

void RecentWindow::push(const float* k, const float* v) {
  if (n_ == cap_) fail("internal error: recent window is full");
  const size_t o = size_t(index(n_)) * row_;
  for (int i = 0; i < row_; ++i) {
    k_[o + i] = f32_to_fp16(k[i]);
    v_[o + i] = f32_to_fp16(v[i]);
  }
  ++n_;
}

void RecentWindow::pop(int n) {
  n = std::min(n, n_);
  head_ = cap_ ? (head_ + n) % cap_ : 0;
  n_ -= n;
}

}  // namespace leanlm
