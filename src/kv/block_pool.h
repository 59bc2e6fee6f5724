// Memory for KV blocks: fixed-size pages from free lists, with a byte budget shared by everything
// that allocates from the pool (all layers, all sequences of an engine).
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

namespace leanlm {

class BlockPool {
 public:
  explicit BlockPool(size_t budget_bytes = 0) : budget_(budget_bytes) {}  // 0: no limit
  ~BlockPool();
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  // A 64-byte aligned page of `bytes`; throws leanlm::Error when the budget would be exceeded.
  uint8_t* get(size_t bytes);
  void put(uint8_t* page, size_t bytes);
  size_t in_use() const;       // bytes handed out and not returned
  size_t budget() const { return budget_; }

 private:
  mutable std::mutex mu_;
  size_t budget_, in_use_ = 0;
  std::map<size_t, std::vector<uint8_t*>> free_;  // by page size
};

}  // namespace leanlm
