// Attention kernel microbenchmarks: scores (q . k over every slot) and accumulation (the weighted
// sum of values) of one KV head, for every KV codec, at 1k-32k slots and head sizes 64 and 256,
// with 4 query heads sharing the KV head (a decode step under GQA), and scores for 1 query head. Reported in GB/s of cache
// bytes read and as a share of the one-thread read bandwidth this binary measures
// (BM_ReadBandwidth): a kernel that keeps up with memory reaches ~1.
//
//   build/bench/bench_kv                               # everything, the CPU's best ISA
//   LEANLM_ISA=avx2 build/bench/bench_kv               # the AVX2 kernels
//   build/bench/bench_kv --benchmark_filter='kivi2/.*' # one codec
//
// Each benchmark fills stores of enough KV heads that their bytes exceed 256 MiB and walks through
// the heads, so the cache bytes come from memory as they do at long context.
#include <benchmark/benchmark.h>

#include <chrono>
#include <random>
#include <string>
#include <vector>

#include "bench_util.h"
#include "kv/block_codec.h"
#include "kv/block_pool.h"
#include "kv/kv_cache.h"
#include "kv/kv_config.h"
#include "quant/dot.h"

namespace leanlm {
namespace {

// Query heads per KV head: 4 (Gemma 3, a decode step under GQA), and 1 for the scores alone (a
// model without GQA: the keys' bytes, not the arithmetic, set the pace).

struct Filled {
  BlockPool pool;
  std::unique_ptr<KvStore> store;
  Codebook book;  // CQ, PQ only
  int heads = 0;
  double bytes_per_side = 0;  // per head, keys or values (each side is read by one kernel)
};

std::unique_ptr<Filled> fill(const std::string& codec, int dim, int slots) {
  auto f = std::make_unique<Filled>();
  KvConfig cfg;
  cfg.codec = parse_codec(codec);
  cfg.codec.residual = 0;  // every token in pages: the codec's kernels, not the fp16 window
  const bool dense = !cfg.codec.compressed();
  const double per_token_head = dense ? 2.0 * dim * 2 : 0;  // rough, only to size the head count
  const double guess = dense ? per_token_head : dim * 1.2;
  f->heads = std::max(1, int((256.0 * (1 << 20)) / (guess * slots)));
  KvShape shape{f->heads, dim, 0, 1, slots};
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.f, 1.f);
  if (cfg.codec.needs_codebooks()) {  // random centroids (CQ, PQ): speed does not depend on them
    f->book.channels = cfg.codec.cq_channels, f->book.bits = cfg.codec.bits;
    f->book.centroids.resize(size_t(f->heads) * dim * (1 << cfg.codec.bits));
    for (auto& x : f->book.centroids) x = nd(rng);
  }
  f->store = make_kv_store(cfg, shape, f->pool, &f->book, &f->book);
  std::vector<float> k(size_t(f->heads) * dim), v(k.size());
  for (int p = 0; p < slots; ++p) {
    for (auto& x : k) x = nd(rng);
    for (auto& x : v) x = nd(rng);
    f->store->append(p, k.data(), v.data());
  }
  f->bytes_per_side = double(f->store->bytes()) / f->heads / 2;
  return f;
}

void BM_Kv(benchmark::State& state, std::string codec, int dim, int slots, bool scores, int kQueries) {
  const auto f = fill(codec, dim, slots);
  const int n = f->store->n_slots();
  std::mt19937 rng(2);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_real_distribution<float> ud(0.f, 1.f);
  std::vector<float> q(size_t(kQueries) * dim), w(size_t(kQueries) * n), out(size_t(kQueries) * std::max(n, dim));
  for (auto& x : q) x = nd(rng);
  for (auto& x : w) x = ud(rng) / n;
  int h = 0;
  double seconds = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    if (scores) f->store->scores(h, q.data(), kQueries, dim, 0, n, out.data(), n);
    else f->store->accumulate(h, w.data(), kQueries, n, 0, n, out.data(), dim);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    state.SetIterationTime(s);
    seconds += s;
    benchmark::DoNotOptimize(out.data());
    h = (h + 1) % f->heads;
  }
  const double gbs = f->bytes_per_side * double(state.iterations()) / seconds / 1e9;
  state.counters["GB/s"] = gbs;
  state.counters["of_bw"] = gbs / bench::bandwidth_gbs(1);
  state.counters["Mslot/s"] = double(n) * double(state.iterations()) / seconds / 1e6;
}

void register_all() {
  bench::register_bandwidth(1);
  for (const char* codec : {"f16", "q8_0", "q4_0", "kivi4", "kivi2", "cq-2c8b", "cq-4c8b", "pq:dsub=1", "pq", "pq:dsub=4", "pq:g=256"})
    for (int dim : {64, 256})
      for (int slots : {1024, 4096, 8192, 32768})
        for (bool scores : {true, false}) {
          const std::string name = std::string(codec) + "/" + (scores ? "scores" : "accum") + "/d" + std::to_string(dim) +
                                   "/slots:" + std::to_string(slots) + "/" + isa_name(best_isa());
          for (int nq : {4, 1}) {
            if (nq == 1 && !scores) continue;
            benchmark::RegisterBenchmark((name + (nq == 1 ? "/q1" : "")).c_str(), BM_Kv, std::string(codec), dim, slots,
                                         scores, nq)
                ->UseManualTime()
                ->MinTime(0.2)
                ->Unit(benchmark::kMicrosecond);
          }
        }
}

}  // namespace
}  // namespace leanlm

int main(int argc, char** argv) { return leanlm::bench::run(argc, argv, leanlm::register_all); }
