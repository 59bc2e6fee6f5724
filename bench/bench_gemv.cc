// Decode GEMV microbenchmarks: every weight type at the matrix shapes of the three supported models,
// per ISA and thread count, in GB/s of weights read and as a share of the read bandwidth that this
// binary measures on the same threads (BM_ReadBandwidth).
//
//   build/bench/bench_gemv                                 # everything (a few minutes)
//   build/bench/bench_gemv --benchmark_filter='Q4_K.*qwen' # one type on one model's shapes
//
// Each iteration is one decode step's work for one matrix: the activation quantized once, then
// every row through the ISA's dot kernel, 64-row tiles spread over the threads (as the engine
// does). The matrix is replicated until the copies exceed 256 MiB and the iterations walk through
// them, so the bytes come from memory, not from cache, as they do in a model whose weights are
// larger than the last-level cache.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "bench_util.h"
#include "quant/act_quant.h"
#include "quant/dot.h"
#include "quant/quant_types.h"
#include "quant/random_blocks.h"
#include "util/aligned.h"

namespace leanlm {
namespace {

struct Shape {
  const char* model;
  const char* matrix;
  int n_out, n_in;
};
// [n_out x n_in] of the decode matrices that dominate each model's bytes.
constexpr Shape kShapes[] = {
    {"gemma3", "ffn_up", 2048, 640},      {"gemma3", "ffn_down", 640, 2048},
    {"gemma3", "attn_q", 1024, 640},      {"gemma3", "output", 262144, 640},
    {"smollm2", "ffn_up", 1536, 576},
    {"smollm2", "ffn_down", 576, 1536},   {"smollm2", "output", 49152, 576},
    {"qwen", "ffn_up", 8960, 1536},       {"qwen", "ffn_down", 1536, 8960},
    {"qwen", "attn_q", 1536, 1536},       {"qwen", "output", 151936, 1536},
};
constexpr GgmlType kTypes[] = {GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::Q8_0, GgmlType::Q4_0,
                               GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::F16,
                               GgmlType::BF16, GgmlType::F32, GgmlType::LQ4, GgmlType::LQ3, GgmlType::LQ2};

using bench::bandwidth_gbs;
using bench::pool;

void BM_Gemv(benchmark::State& state, GgmlType type, Shape shape, Isa isa, int threads) {
  const size_t rb = row_bytes(type, shape.n_in);
  const size_t mat_bytes = rb * size_t(shape.n_out);
  // LEANLM_BENCH_IN_CACHE=1: one copy only, so matrices that fit in cache measure the kernel's
  // instruction throughput (its ceiling when memory is not the limit).
  const bool in_cache = std::getenv("LEANLM_BENCH_IN_CACHE") != nullptr;
  const size_t copies = in_cache ? 1 : std::max<size_t>(1, ((size_t(256) << 20) + mat_bytes - 1) / mat_bytes);
  AlignedVec<uint8_t> w(mat_bytes * copies);
  {
    std::mt19937 rng(7);
    const std::vector<uint8_t> one = random_matrix(type, shape.n_out, shape.n_in, rng);
    for (size_t c = 0; c < copies; ++c) std::copy(one.begin(), one.end(), w.begin() + c * mat_bytes);
  }
  std::vector<float> x(size_t(shape.n_in)), y(size_t(shape.n_out));
  std::normal_distribution<float> nd(0.f, 1.f);
  std::mt19937 rng(3);
  for (float& v : x) v = nd(rng);
  const DotTable& table = dot_table(isa);
  const bool int8 = uses_int8_acts(type);
  ActBatch acts;
  ThreadPool& tp = pool(threads);
  constexpr int64_t kTile = 64;
  const int64_t tiles = (shape.n_out + kTile - 1) / kTile;
  size_t copy = 0;
  double seconds = 0;
  for (auto _ : state) {
    const uint8_t* wc = w.data() + copy * mat_bytes;
    copy = (copy + 1) % copies;
    const auto t0 = std::chrono::steady_clock::now();
    if (int8) acts.quantize(x.data(), 1, shape.n_in, shape.n_in, act_scheme(type));
    tp.parallel_for(tiles, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const int64_t r0 = t * kTile;
        const int nr = int(std::min<int64_t>(kTile, shape.n_out - r0));
        if (int8) table.q[int(type)](shape.n_in, wc + r0 * rb, rb, nr, acts.row(0), y.data() + r0);
        else table.f[int(type)](shape.n_in, wc + r0 * rb, rb, nr, x.data(), y.data() + r0);
      }
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    state.SetIterationTime(s);
    seconds += s;
    benchmark::DoNotOptimize(y.data());
  }
  const double gbs = double(mat_bytes) * double(state.iterations()) / seconds / 1e9;
  state.counters["GB/s"] = gbs;
  state.counters["of_bw"] = gbs / bandwidth_gbs(threads);
  state.SetBytesProcessed(int64_t(mat_bytes) * int64_t(state.iterations()));
}

void register_all() {
  for (int threads : {1, 2}) bench::register_bandwidth(threads);
  std::vector<Isa> isas{Isa::Avx2};
  if (best_isa() == Isa::Avx512) isas.push_back(Isa::Avx512);
  for (GgmlType type : kTypes)
    for (const Shape& s : kShapes) {
      if (s.n_in % traits(type).block_elems) continue;  // this model cannot store the matrix in this type
      for (Isa isa : isas)
        for (int threads : {1, 2}) {
          const std::string name = std::string(traits(type).name) + "/" + s.model + "." + s.matrix + "/" +
                                   std::to_string(s.n_out) + "x" + std::to_string(s.n_in) + "/" + isa_name(isa) +
                                   "/threads:" + std::to_string(threads);
          benchmark::RegisterBenchmark(name.c_str(), BM_Gemv, type, s, isa, threads)
              ->UseManualTime()
              ->MinTime(0.2)
              ->Unit(benchmark::kMicrosecond);
        }
    }
}

}  // namespace
}  // namespace leanlm

int main(int argc, char** argv) { return leanlm::bench::run(argc, argv, leanlm::register_all); }
