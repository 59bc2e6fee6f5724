// What the microbenchmarks share: thread pools by size and the read bandwidth they are measured
// against (best of three passes over 512 MiB on the same threads, measured once per size).
#pragma once
#include <benchmark/benchmark.h>

#include <map>
#include <memory>
#include <string>

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

// The bandwidth the of_bw counters divide by, as a benchmark of its own (state.range(0): threads).
inline void BM_ReadBandwidth(benchmark::State& state) {
  const int threads = int(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(bandwidth_gbs(threads));
  state.counters["GB/s"] = bandwidth_gbs(threads);
}
inline void register_bandwidth(int threads) {
  benchmark::RegisterBenchmark(("BM_ReadBandwidth/threads:" + std::to_string(threads)).c_str(), BM_ReadBandwidth)
      ->Arg(threads)
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
}

// main() of a microbenchmark binary whose benchmarks register_all() registers.
inline int run(int argc, char** argv, void (*register_all)()) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace leanlm::bench
