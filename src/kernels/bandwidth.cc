#include "kernels/bandwidth.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>

#include "util/aligned.h"

namespace leanlm {

namespace {

// Sum of the 64-bit words of [p, p + n) (n a multiple of 128 bytes), four loads in flight.
uint64_t read_sum(const uint8_t* p, size_t n) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i < n; i += 128) {
    a0 = _mm256_add_epi64(a0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  const __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  uint64_t lanes[4];
  std::memcpy(lanes, &s, sizeof lanes);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

}  // namespace

double measure_read_bandwidth(ThreadPool& pool, size_t bytes, int passes) {
  bytes = std::max<size_t>(bytes / 4096 * 4096, 4096);
  AlignedVec<uint8_t> buf(bytes);
  // Distinct values so that no page is shared copy-on-write with the zero page.
  pool.parallel_for(int64_t(bytes / 4096), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) std::memset(buf.data() + i * 4096, int(i & 0xFF), 4096);
  });
  const int nth = pool.size();
  const size_t share = bytes / 4096 / size_t(nth) * 4096;
  double best = 0;
  volatile uint64_t sink = 0;
  for (int pass = 0; pass < passes; ++pass) {
    std::vector<uint64_t> sums(size_t(nth), 0);
    const auto t0 = std::chrono::steady_clock::now();
    pool.run([&](int ith, int) { sums[size_t(ith)] = read_sum(buf.data() + size_t(ith) * share, share); });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (uint64_t v : sums) sink = sink + v;
    best = std::max(best, double(share) * nth / s / 1e9);
  }
  return best;
}

}  // namespace leanlm
