// KV codecs: round-trip error within each codec's bound, fused kernels equal to their plain
// references, rows copied between blocks exactly; the eviction policies' invariants; k-means; the
// configuration parser. The paged store is tested in test_kv_store.cc.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <vector>

#include "kv/block_codec.h"
#include "kv/codebooks.h"
#include "kv/eviction.h"
#include "kv/kv_config.h"
#include "kv/paged_store.h"
#include "util/error.h"
#include "util/fp16.h"
#include "kv_test_util.h"

namespace leanlm {
namespace {

using namespace testing_kv;

constexpr int kDim = 128, kTokens = 32;

struct CodecCase {
  std::string name;
  KvSide side;
};

std::vector<CodecCase> all_codecs() {
  std::vector<CodecCase> out;
  for (const char* n : {"f16", "q8_0", "q4_0", "kivi2", "kivi4", "kivi2:g=64", "cq-2c8b", "cq-4c8b", "cq-8c10b", "pq",
                        "pq:dsub=1", "pq:dsub=4", "pq:g=64", "pq:v=kivi2"})
    for (KvSide s : {KvSide::Key, KvSide::Value}) out.push_back({n, s});
  return out;
}

// gtest prints test parameters it cannot print as raw bytes.
void PrintTo(const CodecCase& c, std::ostream* os) { *os << c.name << (c.side == KvSide::Key ? " keys" : " values"); }

class CodecTest : public ::testing::TestWithParam<CodecCase> {
 protected:
  void SetUp() override {
    spec_ = parse_codec(GetParam().name);
    // PQ codes keys only: its value side is the value codec, tested as that codec.
    if (spec_.kind == CodecSpec::Kind::PQ && GetParam().side == KvSide::Value) spec_ = spec_.value_spec();
    if (spec_.needs_codebooks()) book_ = random_codebook(2, kDim, spec_.cq_channels, spec_.bits, 5);
    codec_ = make_block_codec(spec_, GetParam().side, 2, kDim, &book_);
  }
  std::vector<float> query_quantization_bound(const std::vector<float>& q, int n_q, int qs,
                                              const std::vector<uint8_t>& blk, int j0, int j1, int os) const;
  CodecSpec spec_;
  Codebook book_;
  std::unique_ptr<BlockCodec> codec_;
};

// Per-element bound on |x - decode(encode(x))| for the row block x: [T][D].
std::vector<float> error_bound(const CodecSpec& spec, KvSide side, const std::vector<float>& x, int T, int D) {
  std::vector<float> b(x.size(), 0.f);
  using K = CodecSpec::Kind;
  for (int j = 0; j < T; ++j)
    for (int c = 0; c < D; ++c) {
      const float v = x[size_t(j) * D + c];
      float bound = 0;
      auto group_range = [&](bool per_channel, int g) {
        float lo = INFINITY, hi = -INFINITY, amax = 0;
        if (per_channel) {
          for (int t = 0; t < T; ++t) lo = std::min(lo, x[size_t(t) * D + c]), hi = std::max(hi, x[size_t(t) * D + c]);
        } else {
          const int c0 = c / g * g;
          for (int e = c0; e < c0 + g; ++e) lo = std::min(lo, x[size_t(j) * D + e]), hi = std::max(hi, x[size_t(j) * D + e]);
        }
        amax = std::max(std::fabs(lo), std::fabs(hi));
        return std::array<float, 3>{lo, hi, amax};
      };
      switch (spec.kind) {
        case K::F16: bound = std::fabs(v) * 1e-3f; break;
        case K::Q8_0: bound = group_range(false, 32)[2] / 127.f * 0.5f * 1.01f; break;
        case K::Q4_0: bound = group_range(false, 32)[2] / 8.f * 1.01f; break;  // the clamped end loses a full step
        case K::Kivi: {
          const auto r = group_range(side == KvSide::Key, std::min(spec.group, D));
          bound = (r[1] - r[0]) / float((1 << spec.bits) - 1) * 0.5f * 1.01f + r[2] * 2e-3f;  // fp16 scale, min
          break;
        }
        default: bound = INFINITY;
      }
      b[size_t(j) * D + c] = bound + 1e-6f;
    }
  return b;
}

TEST_P(CodecTest, RoundTripWithinBound) {
  const auto x = random_rows(kTokens * spec_.group / 32, kDim, 1, 16);
  const int T = spec_.group;
  std::vector<uint8_t> blk(codec_->block_bytes());
  for (int h = 0; h < 2; ++h) {
    codec_->encode(h, x.data(), kDim, 0, T, blk.data());
    std::vector<float> y(x.size()), yr(x.size());
    codec_->decode(h, blk.data(), 0, T, y.data());
    codec_->decode_ref(h, blk.data(), 0, T, yr.data());
    for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], yr[i], 1e-5f * (1 + std::fabs(yr[i]))) << i;
    if (spec_.needs_codebooks()) {
      // Each group (PQ: sub-space) decodes to its nearest centroid.
      const int c = spec_.cq_channels, k = 1 << spec_.bits;
      for (int j = 0; j < T; j += 7)
        for (int g = 0; g < kDim / c; g += 5) {
          float best = INFINITY;
          for (int m = 0; m < k; ++m) {
            const float* cen = &book_.centroids[((size_t(h) * (kDim / c) + g) * k + m) * c];
            float d = 0;
            for (int e = 0; e < c; ++e) d += (x[size_t(j) * kDim + g * c + e] - cen[e]) * (x[size_t(j) * kDim + g * c + e] - cen[e]);
            best = std::min(best, d);
          }
          float got = 0;
          for (int e = 0; e < c; ++e)
            got += (x[size_t(j) * kDim + g * c + e] - y[size_t(j) * kDim + g * c + e]) *
                   (x[size_t(j) * kDim + g * c + e] - y[size_t(j) * kDim + g * c + e]);
          ASSERT_NEAR(got, best, 1e-4f * (1 + best));
        }
      continue;
    }
    const auto bound = error_bound(spec_, GetParam().side, x, T, kDim);
    for (size_t i = 0; i < y.size(); ++i) ASSERT_LE(std::fabs(y[i] - x[i]), bound[i]) << GetParam().name << " element " << i;
  }
}

// Keys scored in the integer domain (q8_0, q4_0, KIVI) see the query rounded to int8, q_c ~ d k_c
// with |error| <= d / 2 per channel and d = max_c |q_c s_c| / 127 (s_c: KIVI's channel scales, else
// 1). A score then moves by at most d / 2 * sum_c |code_c| (KIVI: codes of the key; others: the key
// itself): the slack each score gets on top of rounding, [n_q][os] like the scores. Zero for the
// float codecs.
std::vector<float> CodecTest::query_quantization_bound(const std::vector<float>& q, int n_q, int qs,
                                                        const std::vector<uint8_t>& blk, int j0, int j1, int os) const {
  std::vector<float> slack(size_t(n_q) * os, 0.f);
  using K = CodecSpec::Kind;
  const bool integer = GetParam().side == KvSide::Key && (spec_.kind == K::Q8_0 || spec_.kind == K::Q4_0 || spec_.kind == K::Kivi);
  if (!integer) return slack;
  const int T = codec_->tokens();
  std::vector<float> x(size_t(T) * kDim);
  codec_->decode_ref(1, blk.data(), 0, T, x.data());
  std::vector<float> s(kDim, 1.f), lo(kDim, 0.f);  // KIVI: each channel's step and minimum in the block
  if (spec_.kind == K::Kivi)
    for (int c = 0; c < kDim; ++c) {
      float mn = INFINITY, mx = -INFINITY;
      for (int j = 0; j < T; ++j) mn = std::min(mn, x[size_t(j) * kDim + c]), mx = std::max(mx, x[size_t(j) * kDim + c]);
      lo[c] = mn, s[c] = (mx - mn) / float((1 << spec_.bits) - 1);
    }
  for (int i = 0; i < n_q; ++i) {
    float amax = 0.f;
    for (int c = 0; c < kDim; ++c) amax = std::max(amax, std::fabs(q[size_t(i) * qs + c] * s[c]));
    const float d = amax / 127.f;
    for (int j = j0; j < j1; ++j) {
      float codes = 0.f;
      for (int c = 0; c < kDim; ++c) {
        const float v = x[size_t(j) * kDim + c];
        codes += spec_.kind == K::Kivi ? (s[c] > 0 ? std::nearbyint((v - lo[c]) / s[c]) : 0.f) : std::fabs(v);
      }
      slack[size_t(i) * os + (j - j0)] = 0.5f * d * codes * 1.02f;
    }
  }
  return slack;
}

TEST_P(CodecTest, FusedKernelsMatchReference) {
  const int T = spec_.group;
  const auto x = random_rows(T, kDim, 2, 16);
  std::vector<uint8_t> blk(codec_->block_bytes());
  codec_->encode(1, x.data(), kDim, 0, T, blk.data());
  std::mt19937 rng(3);
  for (int n_q : {1, 2, 3, 4, 9}) {
    const auto q = random_rows(n_q, kDim + 8, 10 + n_q);  // stride > dim
    for (auto [j0, j1] : {std::pair{0, T}, {5, 29}, {31, 32}, {3, 4}}) {
      const int n = j1 - j0;
      const int os = T + 8;  // output and weight strides
      std::vector<float> got(size_t(n_q) * os, -7.f), want(got);
      QueryPrep prep;
      codec_->prepare(1, q.data(), n_q, kDim + 8, prep);
      codec_->dot(1, blk.data(), j0, j1, prep, got.data(), os);
      codec_->dot_ref(1, blk.data(), j0, j1, q.data(), n_q, kDim + 8, want.data(), os);
      auto slack = query_quantization_bound(q, n_q, kDim + 8, blk, j0, j1, os);
      // PQ keys scored through uint8 tables: each of the M table entries a score adds is off by at
      // most half the query's table step.
      for (size_t i = 0; i < prep.lut_scale.size(); ++i)
        for (int j = 0; j < n; ++j) slack[i * os + j] = 0.5f * prep.lut_scale[i] * (kDim / spec_.cq_channels) * 1.01f;
      if (spec_.kind == CodecSpec::Kind::PQ) EXPECT_EQ(prep.lut_scale.empty(), n_q > 8);
      for (size_t i = 0; i < got.size(); ++i)
        ASSERT_NEAR(got[i], want[i], slack[i] + 2e-3f * (1 + std::fabs(want[i]))) << n_q << " " << i;

      std::vector<float> w(size_t(n_q) * os);
      std::uniform_real_distribution<float> ud(0.f, 1.f);
      for (auto& v : w) v = ud(rng) < 0.2f ? 0.f : ud(rng);
      std::vector<float> o1(size_t(n_q) * (kDim + 4)), o2;
      for (auto& v : o1) v = ud(rng);
      o2 = o1;
      codec_->axpy(1, blk.data(), j0, j1, w.data(), n_q, os, o1.data(), kDim + 4);
      codec_->axpy_ref(1, blk.data(), j0, j1, w.data(), n_q, os, o2.data(), kDim + 4);
      // Values of the integer codecs accumulate with each row's coefficients w_j * scale_j rounded
      // to int16 (step max |w_j scale_j| / 32767); since scale * |code| <= 2 max |x|, an output
      // moves by at most max_j |w_j| * 2 max |x| * n / 65534.
      float xmax = 0.f;
      {
        std::vector<float> xd(size_t(T) * kDim);
        codec_->decode_ref(1, blk.data(), 0, T, xd.data());
        for (float v : xd) xmax = std::max(xmax, std::fabs(v));
      }
      for (int i = 0; i < n_q; ++i) {
        float wmax = 0.f;
        for (int j = 0; j < n; ++j) wmax = std::max(wmax, std::fabs(w[size_t(i) * os + j]));
        const float slack = GetParam().side == KvSide::Value ? wmax * 2 * xmax * n / 65534.f : 0.f;
        for (int c = 0; c < kDim + 4; ++c) {
          const size_t k = size_t(i) * (kDim + 4) + c;
          ASSERT_NEAR(o1[k], o2[k], slack + 2e-3f * (1 + std::fabs(o2[k]))) << n_q << " " << k;
        }
      }
    }
  }
}

TEST_P(CodecTest, PerTokenCodecsAppendRowByRow) {
  if (!codec_->per_token()) GTEST_SKIP() << "groups across tokens";
  const int T = spec_.group;
  const auto x = random_rows(T, kDim, 4);
  std::vector<uint8_t> a(codec_->block_bytes()), b(codec_->block_bytes());
  codec_->encode(0, x.data(), kDim, 0, T, a.data());
  for (int j = 0; j < T; ++j) codec_->encode(0, x.data() + size_t(j) * kDim, kDim, j, j + 1, b.data());
  std::vector<float> ya(x.size()), yb(x.size());
  codec_->decode(0, a.data(), 0, T, ya.data());
  codec_->decode(0, b.data(), 0, T, yb.data());
  EXPECT_EQ(ya, yb);
}

INSTANTIATE_TEST_SUITE_P(All, CodecTest, ::testing::ValuesIn(all_codecs()), [](const auto& info) {
  std::string n = info.param.name + (info.param.side == KvSide::Key ? "_keys" : "_values");
  for (char& c : n)
    if (!isalnum(static_cast<unsigned char>(c))) c = '_';
  return n;
});

// ---------------------------------------------------------------------------------------------
// Eviction policies: budget kept, protected tokens kept, the right tokens chosen.

std::vector<int32_t> run_policy(const std::string& name, int n_tokens, int budget, std::vector<float> importance,
                                int* max_live = nullptr) {
  auto policy = make_eviction_policy(parse_evict(name), 1);
  std::vector<int32_t> live;
  std::mt19937 rng(8);
  std::uniform_real_distribution<float> ud(0.5f, 1.5f);
  for (int q = 0; q < n_tokens; ++q) {
    live.push_back(q);
    // Attention of query q over the live tokens: proportional to their importance, with noise.
    std::vector<float> w(live.size());
    float sum = 0;
    for (size_t j = 0; j < live.size(); ++j) sum += w[j] = importance[live[j]] * ud(rng);
    for (float& v : w) v /= sum;
    policy->observe(0, q, q, live.data(), w.data(), int(live.size()));
    std::vector<int32_t> drop;
    policy->choose(live, budget, drop);
    std::set<int32_t> d(drop.begin(), drop.end());
    EXPECT_EQ(d.size(), drop.size()) << "duplicates";
    std::vector<int32_t> next;
    for (int32_t p : live)
      if (!d.count(p)) next.push_back(p);
    EXPECT_EQ(next.size(), live.size() - drop.size()) << "dropped a token that was not live";
    live = next;
    EXPECT_LE(int(live.size()), budget);
    if (max_live) *max_live = std::max(*max_live, int(live.size()));
  }
  return live;
}

TEST(Eviction, EveryPolicyKeepsTheBudgetAndTheNewestToken) {
  std::vector<float> imp(400, 1.f);
  for (const char* name : {"streaming", "h2o", "scissorhands", "snapkv"}) {
    SCOPED_TRACE(name);
    int max_live = 0;
    const auto live = run_policy(name, 400, 50, imp, &max_live);
    EXPECT_EQ(max_live, 50);
    EXPECT_EQ(live.back(), 399);
  }
}

TEST(Eviction, StreamingKeepsSinksAndRecent) {
  const auto live = run_policy("streaming:sinks=4", 300, 40, std::vector<float>(300, 1.f));
  std::vector<int32_t> want = {0, 1, 2, 3};
  for (int p = 300 - 36; p < 300; ++p) want.push_back(p);
  EXPECT_EQ(live, want);
}

TEST(Eviction, ScoringPoliciesKeepImportantTokensAndProtectRecent) {
  // Tokens at multiples of 10 get 50x the attention of the others.
  std::vector<float> imp(500, 1.f);
  for (int p = 0; p < 500; p += 10) imp[p] = 50.f;
  for (const char* name : {"h2o:recent=20", "scissorhands:recent=20", "snapkv:recent=20:pool=1"}) {
    SCOPED_TRACE(name);
    const auto live = run_policy(name, 500, 80, imp);
    std::set<int32_t> s(live.begin(), live.end());
    for (int p = 480; p < 500; ++p) EXPECT_EQ(s.count(p), 1u) << "recent " << p;
    int heavy = 0;
    for (int p = 0; p < 480; p += 10) heavy += int(s.count(p));
    EXPECT_GE(heavy, 40) << "of 48 heavy hitters";
  }
}

// Rows of per-token codecs move between blocks as bytes: the copy decodes to the same values.
TEST_P(CodecTest, CopiedRowsDecodeExactly) {
  if (!codec_->rows_copyable()) {
    EXPECT_FALSE(codec_->per_token()) << "a per-token codec must describe its row planes";
    GTEST_SKIP() << "groups across tokens";
  }
  const int T = codec_->tokens();
  size_t per_row = 0;
  for (const RowPlane& p : codec_->row_planes()) per_row += p.unit * p.units;
  if (!codec_->row_planes().empty()) ASSERT_EQ(per_row * size_t(T), codec_->block_bytes()) << "planes must tile the block";
  const auto x = random_rows(T, kDim, 41, 16);
  std::vector<uint8_t> a(codec_->block_bytes()), b(codec_->block_bytes(), 0);
  codec_->encode(1, x.data(), kDim, 0, T, a.data());
  for (int j = 0; j < T; ++j) codec_->copy_row(a.data(), j, b.data(), T - 1 - j);
  std::vector<float> ra(size_t(T) * kDim), rb(ra.size());
  codec_->decode_ref(1, a.data(), 0, T, ra.data());
  codec_->decode_ref(1, b.data(), 0, T, rb.data());
  for (int j = 0; j < T; ++j)
    for (int c = 0; c < kDim; ++c)
      ASSERT_EQ(rb[size_t(T - 1 - j) * kDim + c], ra[size_t(j) * kDim + c]) << "row " << j << " channel " << c;
}

// Several KV heads share a layer's slots: each policy combines its heads' statistics, and the
// result must not depend on the order in which heads and queries report (threads race to report).
// Tokens 0..39: important to head 0 only; 40..79: to head 1 only; 80..129: to none of the 3 heads;
// 130..199 recent (protected). Queries 104..199 report: more than 64 in one pass (Scissorhands' bit q % 64
// would be shared by q and q + 64), and every candidate was judged by the last 64.
TEST(Eviction, HeadsCombineWhateverTheReportOrder) {
  const int n = 200, H = 3;
  // For Scissorhands the oldest 32 queries favour 80..129 on every head instead: they share bits
  // q % 64 with the newest 32, so whichever reports last would decide those bits if old queries
  // wrote them (they fall outside the 64-step history and must not).
  bool twist = false;
  auto weight = [&](int h, int q, int p) {
    if (twist && q < n - 64) return p >= 80 && p < 130 ? 20.f : 1.f;
    if (h == 2) return p >= 130 ? 3.f : 1.f;  // head 2 looks at the recent tokens only
    const bool imp = (h == 0 && p < 40) || (h == 1 && p >= 40 && p < 80);
    return imp ? 20.f : 1.f;
  };
  for (const char* name : {"h2o:recent=70", "scissorhands:recent=70", "scissorhands:recent=70:heads=mean",
                           "snapkv:recent=70:pool=1:window=200"}) {
    SCOPED_TRACE(name);
    twist = std::string(name).rfind("scissorhands", 0) == 0;
    std::vector<std::vector<int32_t>> drops;
    for (int order = 0; order < 3; ++order) {
      auto policy = make_eviction_policy(parse_evict(name), H);
      std::vector<int32_t> live(n);
      for (int p = 0; p < n; ++p) live[p] = p;
      // Queries n-96 .. n-1 report for every head, in an order that depends on `order`.
      std::vector<std::pair<int, int>> reports;
      for (int q = n - 96; q < n; ++q)
        for (int h = 0; h < H; ++h) reports.push_back({q, h});
      if (order == 1) std::reverse(reports.begin(), reports.end());
      if (order == 2) std::shuffle(reports.begin(), reports.end(), std::mt19937(7));
      for (auto [q, h] : reports) {
        std::vector<float> w(q + 1);
        float sum = 0;
        for (int p = 0; p <= q; ++p) sum += w[p] = weight(h, q, p);
        for (float& x : w) x /= sum;
        policy->observe(h, q, n - 1, live.data(), w.data(), q + 1);
      }
      std::vector<int32_t> drop;
      policy->choose(live, 150, drop);
      std::sort(drop.begin(), drop.end());
      drops.push_back(drop);
    }
    EXPECT_EQ(drops[0], drops[1]);
    EXPECT_EQ(drops[0], drops[2]);
    // What either head needs stays; what no head needs goes first.
    ASSERT_EQ(drops[0].size(), 50u);
    for (int32_t p : drops[0]) EXPECT_TRUE(p >= 80 && p < 130) << p << ": dropped a token one head attends to";
  }
}

// ---------------------------------------------------------------------------------------------

TEST(KMeans, DeterministicForASeedAndBetterThanItsSeeding) {
  const auto x = random_rows(3000, 4, 11);
  const auto a = kmeans(x.data(), 3000, 4, 64, 42, 15, 2);
  const auto b = kmeans(x.data(), 3000, 4, 64, 42, 15, 1);
  EXPECT_EQ(a, b);
  const auto seeded = kmeans(x.data(), 3000, 4, 64, 42, 0, 1);
  auto sse = [&](const std::vector<float>& c) {
    double s = 0;
    for (int i = 0; i < 3000; ++i) {
      double best = 1e30;
      for (int k = 0; k < 64; ++k) {
        double d = 0;
        for (int e = 0; e < 4; ++e) d += std::pow(x[size_t(i) * 4 + e] - c[size_t(k) * 4 + e], 2);
        best = std::min(best, d);
      }
      s += best;
    }
    return s;
  };
  EXPECT_LT(sse(a), sse(seeded) * 0.9);
  EXPECT_NE(a, kmeans(x.data(), 3000, 4, 64, 43, 15, 1));
}

// Query-aware k-means: the factor reproduces the moment matrix, and centroids learned in its metric
// give a smaller score error E_q[(q . (x - c))^2] than plain k-means when queries lean on some
// channels and directions more than others (here: 2-d points, queries mostly along (1, 1)/sqrt 2).
TEST(KMeans, QueryAwareMetricCutsTheScoreError) {
  const int d = 2, n = 4000, k = 16;
  const double S[4] = {5.0, 4.5, 4.5, 5.0};  // E[q q^T] for q ~ (1, 1) a + (1, -1) b / 3
  const auto U = metric_factor(S, d, false);
  EXPECT_EQ(U[2], 0.f) << "upper triangular";
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j) {
      double v = 0;
      for (int r = 0; r < d; ++r) v += double(U[r * d + i]) * U[r * d + j];
      EXPECT_NEAR(v, S[i * d + j] + (i == j ? 5e-3 : 0.0), 1e-4) << i << j;
    }
  const auto Ud = metric_factor(S, d, true);
  EXPECT_EQ(Ud[1], 0.f);
  EXPECT_NEAR(Ud[0] * Ud[0], 5.005, 1e-4);

  const auto x = random_rows(n, d, 77);
  auto score_err = [&](const std::vector<float>& c) {  // assignment and error both in the metric
    double s = 0;
    for (int i = 0; i < n; ++i) {
      double best = 1e30;
      for (int m = 0; m < k; ++m) {
        const double e0 = x[size_t(i) * d] - c[size_t(m) * d], e1 = x[size_t(i) * d + 1] - c[size_t(m) * d + 1];
        best = std::min(best, S[0] * e0 * e0 + 2 * S[1] * e0 * e1 + S[3] * e1 * e1);
      }
      s += best;
    }
    return s;
  };
  const auto plain = kmeans(x.data(), n, d, k, 5, 20, 1);
  const auto aware = kmeans_in_metric(x.data(), n, d, k, U.data(), 5, 20, 1);
  EXPECT_LT(score_err(aware), 0.8 * score_err(plain));
}

// Query-aware books carry their metric U: CQ and PQ keys are coded to the centroid nearest in
// |U (x - c)|, which with a strongly anisotropic U differs from the Euclidean choice.
TEST(QueryAwareBooks, KeysAreCodedInTheBooksMetric) {
  for (const char* name : {"cq-2c8b", "pq"}) {
    SCOPED_TRACE(name);
    const CodecSpec spec = parse_codec(name);
    const int c = spec.cq_channels, k = 1 << spec.bits, G = kDim / c;
    Codebook book = random_codebook(1, kDim, c, spec.bits, 9);
    book.metric.assign(size_t(G) * c * c, 0.f);
    for (int g = 0; g < G; ++g) {  // U = [[10, 3], [0, 0.5]]: the first channel of a pair counts most
      book.metric[size_t(g) * 4 + 0] = 10.f, book.metric[size_t(g) * 4 + 1] = 3.f;
      book.metric[size_t(g) * 4 + 3] = 0.5f;
    }
    const auto codec = make_block_codec(spec, KvSide::Key, 1, kDim, &book);
    const int T = codec->tokens();
    const auto x = random_rows(T, kDim, 12);
    std::vector<uint8_t> blk(codec->block_bytes());
    codec->encode(0, x.data(), kDim, 0, T, blk.data());
    std::vector<float> y(size_t(T) * kDim);
    codec->decode_ref(0, blk.data(), 0, T, y.data());
    int differs = 0;
    for (int j = 0; j < T; ++j)
      for (int g = 0; g < G; ++g) {
        const float* xv = &x[size_t(j) * kDim + g * c];
        auto metric_d = [&](const float* cen) {
          const float e0 = xv[0] - cen[0], e1 = xv[1] - cen[1];
          const float u0 = 10.f * e0 + 3.f * e1, u1 = 0.5f * e1;
          return u0 * u0 + u1 * u1;
        };
        int best = 0, best_euclid = 0;
        for (int m = 0; m < k; ++m) {
          const float* cen = &book.centroids[(size_t(g) * k + m) * c];
          const float* b = &book.centroids[(size_t(g) * k + best) * c];
          const float* be = &book.centroids[(size_t(g) * k + best_euclid) * c];
          if (metric_d(cen) < metric_d(b)) best = m;
          auto ed = [&](const float* p) { return (xv[0] - p[0]) * (xv[0] - p[0]) + (xv[1] - p[1]) * (xv[1] - p[1]); };
          if (ed(cen) < ed(be)) best_euclid = m;
        }
        const float* want = &book.centroids[(size_t(g) * k + best) * c];
        ASSERT_NEAR(metric_d(&y[size_t(j) * kDim + g * c]), metric_d(want), 1e-3f * (1 + metric_d(want)))
            << "token " << j << " group " << g;
        differs += best != best_euclid;
      }
    EXPECT_GT(differs, T * G / 20) << "the metric should change some choices";
  }
}

TEST(KvConfig, ParsesNamesAndRejectsBadOnes) {
  EXPECT_EQ(parse_codec("kivi2").residual, 128);
  EXPECT_EQ(parse_codec("kivi4:g=64:r=32").name(), "kivi4:g=64:r=32");
  EXPECT_EQ(parse_codec("cq-8c10b").bits, 10);
  EXPECT_EQ(parse_codec("kivi2:rot=1").name(), "kivi2:rot=1");
  EXPECT_TRUE(parse_codec("q4_0:rot=1").rotate);
  EXPECT_THROW(parse_codec("f16:rot=1"), Error);
  EXPECT_THROW(parse_codec("cq-4c8b:rot=1"), Error);
  EXPECT_THROW(parse_codec("q4_0:rot=2"), Error);
  EXPECT_THROW(parse_codec("kivi3"), Error);
  EXPECT_EQ(parse_codec("pq").cq_channels, 2);
  EXPECT_EQ(parse_codec("pq:dsub=4:v=kivi2").name(), "pq:dsub=4:v=kivi2");
  EXPECT_EQ(parse_codec("pq:v=kivi2").value_spec().name(), "kivi2");
  EXPECT_EQ(parse_codec("pq").sinks_for(false), 4);
  EXPECT_EQ(parse_codec("pq").sinks_for(true), 0);  // eviction keeps sinks its own way
  EXPECT_THROW(parse_codec("pq:sinks=2").sinks_for(true), Error);
  EXPECT_EQ(parse_codec("kivi2").sinks_for(false), 0);
  EXPECT_EQ(parse_codec("pq:sinks=0").name(), "pq:sinks=0");
  EXPECT_EQ(parse_codec("kivi2:rot=1:sinks=1").name(), "kivi2:rot=1:sinks=1");
  EXPECT_THROW(parse_codec("f16:sinks=4"), Error);
  EXPECT_EQ(parse_codec("pq:v=f16").name(), "pq");
  EXPECT_THROW(parse_codec("pq:dsub=3"), Error);
  EXPECT_THROW(parse_codec("pq:v=cq-2c8b"), Error);
  EXPECT_THROW(parse_codec("pq:v=pq"), Error);
  EXPECT_THROW(parse_codec("pq:rot=1"), Error);
  EXPECT_THROW(parse_codec("kivi2:dsub=2"), Error);
  EXPECT_THROW(parse_codec("kivi2:g=48"), Error);
  EXPECT_THROW(parse_codec("kivi2:x=1"), Error);
  EXPECT_THROW(parse_codec("q8_0:r"), Error);
  EXPECT_EQ(parse_evict("scissorhands:recent=10:keep=kivi2").keep, "kivi2");
  EXPECT_THROW(parse_evict("lru"), Error);
  EXPECT_THROW(parse_evict("h2o:keep=f16"), Error);
  KvConfig c;
  parse_budget("20%", c);
  EXPECT_EQ(c.budget_for(1000), 200);
  parse_budget("300", c);
  EXPECT_EQ(c.budget_for(1000), 300);
  EXPECT_THROW(parse_budget("120%", c), Error);
  EXPECT_THROW(parse_budget("abc", c), Error);
}

}  // namespace
}  // namespace leanlm