// Shared helpers of the KV tests: random rows and codebooks, and a paged store that remembers what
// was appended so tests can check what every slot returns.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "kv/block_codec.h"
#include "kv/block_pool.h"
#include "kv/kv_config.h"
#include "kv/paged_store.h"
#include "util/fp16.h"

namespace leanlm::testing_kv {

// Tolerances of the KV tests are multiples of a natural unit of each check's error (float
// rounding: the unit roundoff times the sum of |terms|; int8 queries, int16 coefficients, uint8
// tables: the standard deviation of the rounding a uniform error of half a step gives). ErrorStats
// collects |got - want| / unit; with LEANLM_ERROR_STATS=1 in the environment each check prints the
// median, 99th percentile and maximum at the end. That is how the multiples were measured: a few
// times the largest ratio seen, never the worst case a bound allows.
class ErrorStats {
 public:
  explicit ErrorStats(std::string name) : name_(std::move(name)) {}
  ErrorStats(const ErrorStats&) = delete;
  ~ErrorStats() {
    if (!std::getenv("LEANLM_ERROR_STATS") || r_.empty()) return;
    std::sort(r_.begin(), r_.end());
    std::printf("ERRSTATS %-28s n %8zu  median %8.3f  p99 %8.3f  max %8.3f\n", name_.c_str(), r_.size(),
                r_[r_.size() / 2], r_[std::min(r_.size() - 1, r_.size() * 99 / 100)], r_.back());
  }
  // Records the error ratio; true when |got - want| <= k * unit.
  bool check(double got, double want, double unit, double k) {
    const double err = std::fabs(got - want);
    r_.push_back(unit > 0 ? err / unit : (err > 0 ? INFINITY : 0.0));
    return err <= k * unit;
  }

 private:
  std::string name_;
  std::vector<double> r_;
};

// Float32's unit roundoff: a sum of n float terms is off by about sqrt(n) of it times sum |terms|.
constexpr double kUnitRoundoff = 1.0 / (1 << 24);

// IEEE half -> double from the format's definition (not the converters under test).
inline double half_to_double(uint16_t h) {
  const int sign = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v = e == 0 ? std::ldexp(double(m), -24) : e == 31 ? (m ? NAN : INFINITY) : std::ldexp(double(1024 + m), e - 25);
  return sign ? -v : v;
}

inline std::vector<float> random_rows(int n, int d, uint32_t seed, float outlier_every = 0) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(size_t(n) * d);
  for (auto& v : x) v = nd(rng);
  // Keys of trained models have a few large channels; give some channels a large scale.
  if (outlier_every > 0)
    for (int j = 0; j < n; ++j)
      for (int c = 0; c < d; c += int(outlier_every)) x[size_t(j) * d + c] *= 8.f;
  return x;
}

// Keys scored in the integer domain (q8_0, q4_0) see the query rounded to int8 with the step
// max |q| / 127: a score moves by at most half a step times sum |k|. The slack tests allow for it.
inline double int8_query_slack(const float* q, const float* k, int n) {
  double qmax = 0, kabs = 0;
  for (int c = 0; c < n; ++c) qmax = std::max(qmax, double(std::fabs(q[c]))), kabs += std::fabs(k[c]);
  return 0.5 * qmax / 127 * kabs * 1.02;
}

inline Codebook random_codebook(int n_kv_head, int dim, int channels, int bits, uint32_t seed) {
  Codebook b;
  b.channels = channels, b.bits = bits;
  const auto x = random_rows(n_kv_head * (dim / channels) * (1 << bits), channels, seed);
  b.centroids = x;
  return b;
}
// ---------------------------------------------------------------------------------------------
// The paged store.

// Store options for one codec with an fp16 window of `residual` tokens.
inline PagedKvOptions store_options(const CodecSpec& spec, int n_kv_head, int dim, int residual, const Codebook* book) {
  PagedKvOptions o;
  o.key = make_block_codec(spec, KvSide::Key, n_kv_head, dim, book);
  o.value = make_block_codec(spec, KvSide::Value, n_kv_head, dim, book);
  o.residual = residual;
  return o;
}

// A store of per-token codec blocks; every score it returns must equal q . (decoded key) of the
// token its slot claims to hold, whatever happened to the slots before.
struct StoreHarness {
  int KVH = 2, D = 64;
  BlockPool pool;
  std::unique_ptr<PagedKvStore> store;
  std::vector<float> K, V;  // [pos][KVH][D] what was appended
  CodecSpec spec;
  std::unique_ptr<BlockCodec> probe;  // encodes single tokens to predict the stored values

  StoreHarness(const std::string& codec, int residual, int window = 0, int max_batch = 8,
               std::unique_ptr<PagedKvStore> low = nullptr) {
    spec = parse_codec(codec);
    spec.residual = residual;
    PagedKvOptions o = store_options(spec, KVH, D, residual, nullptr);
    o.low_tier = std::move(low);
    probe = make_block_codec(spec, KvSide::Key, KVH, D, nullptr);
    store = std::make_unique<PagedKvStore>(KvShape{KVH, D, window, max_batch, 1 << 20}, pool, std::move(o));
  }
  void append(int n, uint32_t seed) {
    const auto k = random_rows(n, KVH * D, seed), v = random_rows(n, KVH * D, seed + 1);
    for (int i = 0; i < n; ++i) {
      const int pos = int(K.size() / (KVH * D));
      K.insert(K.end(), k.begin() + size_t(i) * KVH * D, k.begin() + size_t(i + 1) * KVH * D);
      V.insert(V.end(), v.begin() + size_t(i) * KVH * D, v.begin() + size_t(i + 1) * KVH * D);
      store->append(pos, &K[size_t(pos) * KVH * D], &V[size_t(pos) * KVH * D]);
    }
  }
  // q . k for the token at pos as a per-token codec (or fp16 for the recent window) stores it.
  void check_scores(double tol) {
    const auto q = random_rows(3, D, 77);
    const int n = store->n_slots();
    const int32_t* sp = store->slot_positions();
    for (int h = 0; h < KVH; ++h) {
      std::vector<float> s(size_t(3) * n);
      store->scores(h, q.data(), 3, D, 0, n, s.data(), n);
      std::vector<uint8_t> blk(probe->block_bytes());
      std::vector<float> dec(D);
      for (int slot = 0; slot < n; ++slot) {
        if (sp[slot] < 0) continue;
        // Tokens reach the pages through the fp16 window.
        std::vector<float> k(D);
        for (int c = 0; c < D; ++c) k[c] = fp16_to_f32(f32_to_fp16(K[(size_t(sp[slot]) * KVH + h) * D + c]));
        probe->encode(h, k.data(), D, 0, 1, blk.data());
        probe->decode_ref(h, blk.data(), 0, 1, dec.data());
        for (int i = 0; i < 3; ++i) {
          double exact = 0, coded = 0;
          for (int c = 0; c < D; ++c) {
            exact += double(q[size_t(i) * D + c]) * fp16_to_f32(f32_to_fp16(k[c]));
            coded += double(q[size_t(i) * D + c]) * dec[c];
          }
          const bool int8_query = spec.kind == CodecSpec::Kind::Q8_0 || spec.kind == CodecSpec::Kind::Q4_0;
          const double slack = int8_query ? int8_query_slack(&q[size_t(i) * D], dec.data(), D) : 0.0;
          const float got = s[size_t(i) * n + slot];
          // The slot holds the token either encoded or still in the fp16 window.
          const bool ok = std::fabs(got - coded) < slack + tol * (1 + std::fabs(coded)) ||
                          std::fabs(got - exact) < tol * (1 + std::fabs(exact));
          ASSERT_TRUE(ok) << "slot " << slot << " pos " << sp[slot] << " got " << got << " coded " << coded
                          << " exact " << exact;
        }
      }
    }
  }
  std::set<int> live() const {
    std::set<int> s;
    for (int i = 0; i < store->n_slots(); ++i)
      if (store->slot_positions()[i] >= 0) s.insert(store->slot_positions()[i]);
    return s;
  }
};


}  // namespace leanlm::testing_kv
