// A std::vector whose storage is 64-byte aligned (cache lines, AVX-512 loads).
#pragma once
#include <cstddef>
#include <cstdlib>
#include <new>
#include <vector>

namespace leanlm {

template <typename T, size_t Align = 64>
struct AlignedAllocator {
  using value_type = T;
  template <typename U>
  struct rebind { using other = AlignedAllocator<U, Align>; };
  AlignedAllocator() = default;
  template <typename U>
  AlignedAllocator(const AlignedAllocator<U, Align>&) {}
  T* allocate(size_t n) {
    size_t bytes = (n * sizeof(T) + Align - 1) / Align * Align;
    void* p = std::aligned_alloc(Align, bytes ? bytes : Align);
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { std::free(p); }
  template <typename U>
  bool operator==(const AlignedAllocator<U, Align>&) const { return true; }
};

template <typename T>
using AlignedVec = std::vector<T, AlignedAllocator<T>>;

}  // namespace leanlm
