// What the microbenchmarks share: thread pools by size and the read bandwidth they are measured
// against (best of three passes over 512 MiB on the same threads, measured once per size).
#pragma once
#include <map>
#include <memory>

#include "kernels/bandwidth.h"
#include "kernels/threadpool.h"

namespace leanlm::bench {

inline ThreadPool& pool(int threads) {
  static std::map<int, std::unique_ptr<ThreadPool>> pools;
  auto& p = pools[threads];
  if (!p) p = std::make_unique<ThreadPool>(threads);
  return *p;
}

inline double bandwidth_gbs(int threads) {
  static std::map<int, double> measured;
  auto it = measured.find(threads);
  if (it == measured.end()) it = measured.emplace(threads, measure_read_bandwidth(pool(threads))).first;
  return it->second;
}

}  // namespace leanlm::bench
