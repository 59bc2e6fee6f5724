#include "kv/block_pool.h"

#include <algorithm>
#include <cstdlib>
#include <new>

#include "util/error.h"

namespace leanlm {

BlockPool::~BlockPool() {
  for (auto& [bytes, pages] : free_)
    for (uint8_t* p : pages) std::free(p);
}

void BlockPool::charge_locked(size_t bytes) {
  if (budget_ > 0 && in_use_ + bytes > budget_)
    throw KvMemoryError(strfmt("KV cache memory budget of %.2f MiB is exhausted (raise --kv-mem or lower the context)",
                               double(budget_) / (1 << 20)));
  in_use_ += bytes;
  peak_ = std::max(peak_, in_use_);
}

uint8_t* BlockPool::get(size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  charge_locked(bytes);
  auto& list = free_[bytes];
  if (!list.empty()) {
    uint8_t* p = list.back();
    list.pop_back();
    return p;
  }
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (!p) {
    in_use_ -= bytes;
    throw std::bad_alloc();
  }
  return static_cast<uint8_t*>(p);
}

void BlockPool::put(uint8_t* page, size_t bytes) {
  if (!page) return;
  std::lock_guard<std::mutex> lock(mu_);
  in_use_ -= bytes;
  free_[bytes].push_back(page);
}

void BlockPool::charge(size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  charge_locked(bytes);
}

void BlockPool::refund(size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  in_use_ -= bytes;
}

size_t BlockPool::in_use() const {
  std::lock_guard<std::mutex> lock(mu_);
  return in_use_;
}

size_t BlockPool::peak() const {
  std::lock_guard<std::mutex> lock(mu_);
  return peak_;
}

void BlockPool::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  peak_ = in_use_;
}

void BlockPool::require_room(size_t bytes, const char* what) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (budget_ == 0 || in_use_ + bytes <= budget_) return;
  const double mib = 1 << 20;
  throw KvMemoryError(
      strfmt("the KV cache needs up to %.2f MiB more for %s but its memory budget of %.2f MiB has %.2f MiB left "
             "(raise --kv-mem, or shorten the prompt or context)",
             double(bytes) / mib, what, double(budget_) / mib, double(budget_ - std::min(budget_, in_use_)) / mib));
}

}  // namespace leanlm
