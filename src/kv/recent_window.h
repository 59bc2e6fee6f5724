// The newest tokens of a paged store, uncompressed: a ring of fp16 key and value rows, oldest first.
// KIVI's residual, CQ's window and ThinK's observation window all live here before their tokens are
// encoded into pages. Its memory (rows and the slot positions the store keeps for them) is charged
// to the pool.
#pragma once
#include <algorithm>
#include <cstdint>

#include "kv/block_pool.h"
#include "util/aligned.h"

namespace leanlm {

class RecentWindow {
 public:
  // row: values per token and side ([n_kv_head][head_dim]).
  RecentWindow(int row, BlockPool& pool) : row_(row), pool_(pool) {}
  ~RecentWindow() { pool_.refund(bytes_for(cap_)); }
  RecentWindow(const RecentWindow&) = delete;
  RecentWindow& operator=(const RecentWindow&) = delete;

  // Capacity `cap` (>= size()), rows kept oldest first; charges the new buffers before freeing the old.
  void resize(int cap);
  void push(const float* k, const float* v);  // needs size() < capacity()
  void pop(int n);                            // drops the n oldest
  void clear() { head_ = n_ = 0; }

  int size() const { return n_; }
  int capacity() const { return cap_; }
  // Storage index of the r-th oldest row; rows [r, r + run(r)) are contiguous in storage.
  int index(int r) const { return (head_ + r) % cap_; }
  int run(int r, int n) const { return std::min(n, cap_ - index(r)); }
  const uint16_t* key_at(int idx) const { return k_.data() + size_t(idx) * row_; }
  const uint16_t* value_at(int idx) const { return v_.data() + size_t(idx) * row_; }
  const uint16_t* key(int r) const { return key_at(index(r)); }
  const uint16_t* value(int r) const { return value_at(index(r)); }
  int row() const { return row_; }

  size_t bytes() const { return bytes_for(cap_); }
  // Bytes charged beyond bytes() while resizing to cap (old and new buffers are held together).
  size_t bytes_for(int cap) const { return size_t(cap) * (size_t(row_) * 2 * sizeof(uint16_t) + sizeof(int32_t)); }

 private:
  int row_;
  BlockPool& pool_;
  AlignedVec<uint16_t> k_, v_;  // [cap][row] fp16
  int cap_ = 0, head_ = 0, n_ = 0;
};

}  // namespace leanlm
