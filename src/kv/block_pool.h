// Memory for the KV cache: fixed-size pages from free lists, and one byte budget shared by every
// store that takes memory from the pool (all layers and sequences of an engine). Pages come with
// get/put; stores that keep their own buffers (dense rows, the fp16 window, position tables) charge
// and refund their bytes, so the budget covers every KV byte, not only the pages.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

#include "util/aligned.h"
#include "util/error.h"

namespace leanlm {

// The budget cannot hold what was asked for. Distinct from other errors so that a caller that can
// free memory (the server's scheduler: preempt, evict cached prefixes, wait) tells "not now" from
// "never" (a KV configuration the model cannot take).
class KvMemoryError : public Error {
 public:
  using Error::Error;
};

class BlockPool {
 public:
  explicit BlockPool(size_t budget_bytes = 0) : budget_(budget_bytes) {}  // 0: no limit
  ~BlockPool();
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  // A 64-byte aligned page of `bytes`, charged to the budget; throws KvMemoryError when the budget
  // would be exceeded.
  uint8_t* get(size_t bytes);
  void put(uint8_t* page, size_t bytes);
  // Memory a store allocates itself: charge before allocating (throws like get), refund after freeing.
  void charge(size_t bytes);
  void refund(size_t bytes);
  size_t in_use() const;       // bytes charged and not refunded (pages included)
  size_t budget() const { return budget_; }
  // Throws a clear KvMemoryError naming `what` (e.g. "this batch") unless `bytes` more fit the budget.
  void require_room(size_t bytes, const char* what) const;
  // The most bytes in use at once since the last reset_peak() (tests check bytes_to_append with it).
  size_t peak() const;
  void reset_peak();

 private:
  void charge_locked(size_t bytes);
  mutable std::mutex mu_;
  size_t budget_, in_use_ = 0, peak_ = 0;
  std::map<size_t, std::vector<uint8_t*>> free_;  // by page size
};

// Charges `bytes` to pool, then sizes a and b to n elements each; if allocating fails, the charge is
// undone. Stores that keep key and value buffers of their own (dense rows, the fp16 window) grow so.
template <typename T>
void allocate_charged(BlockPool& pool, size_t bytes, size_t n, AlignedVec<T>& a, AlignedVec<T>& b) {
  pool.charge(bytes);  // throws before anything changes
  try {
    a.resize(n), b.resize(n);
  } catch (...) {
    pool.refund(bytes);
    throw;
  }
}

}  // namespace leanlm
