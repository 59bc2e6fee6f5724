// KV codecs and the paged store: round-trip error within each codec's bound, fused kernels equal to
// their plain references, store bookkeeping (positions <-> data) through flushes, eviction, page
// merges and sliding-window recycling, and the eviction policies' invariants.
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

namespace leanlm {
namespace {

constexpr int kDim = 128, kTokens = 32;

std::vector<float> random_rows(int n, int d, uint32_t seed, float outlier_every = 0) {
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

Codebook random_codebook(int n_kv_head, int dim, int channels, int bits, uint32_t seed) {
  Codebook b;
  b.channels = channels, b.bits = bits;
  const auto x = random_rows(n_kv_head * (dim / channels) * (1 << bits), channels, seed);
  b.centroids = x;
  return b;
}

struct CodecCase {
  std::string name;
  KvSide side;
};

std::vector<CodecCase> all_codecs() {
  std::vector<CodecCase> out;
  for (const char* n : {"f16", "q8_0", "q4_0", "kivi2", "kivi4", "kivi2:g=64", "cq-2c8b", "cq-4c8b", "cq-8c10b"})
    for (KvSide s : {KvSide::Key, KvSide::Value}) out.push_back({n, s});
  return out;
}

class CodecTest : public ::testing::TestWithParam<CodecCase> {
 protected:
  void SetUp() override {
    spec_ = parse_codec(GetParam().name);
    if (spec_.kind == CodecSpec::Kind::CQ) book_ = random_codebook(2, kDim, spec_.cq_channels, spec_.bits, 5);
    codec_ = make_block_codec(spec_, GetParam().side, 2, kDim, &book_);
  }
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
    if (spec_.kind == CodecSpec::Kind::CQ) {
      // Each group decodes to its nearest centroid.
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
      for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 2e-3f * (1 + std::fabs(want[i]))) << n_q << " " << i;

      std::vector<float> w(size_t(n_q) * os);
      std::uniform_real_distribution<float> ud(0.f, 1.f);
      for (auto& v : w) v = ud(rng) < 0.2f ? 0.f : ud(rng);
      std::vector<float> o1(size_t(n_q) * (kDim + 4)), o2;
      for (auto& v : o1) v = ud(rng);
      o2 = o1;
      codec_->axpy(1, blk.data(), j0, j1, w.data(), n_q, os, o1.data(), kDim + 4);
      codec_->axpy_ref(1, blk.data(), j0, j1, w.data(), n_q, os, o2.data(), kDim + 4);
      for (size_t i = 0; i < o1.size(); ++i) ASSERT_NEAR(o1[i], o2[i], 2e-3f * (1 + std::fabs(o2[i]))) << n_q << " " << i;
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
// The paged store.

// Store options for one codec with an fp16 window of `residual` tokens.
PagedKvOptions store_options(const CodecSpec& spec, int n_kv_head, int dim, int residual, const Codebook* book) {
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
          const float got = s[size_t(i) * n + slot];
          // The slot holds the token either encoded or still in the fp16 window.
          const bool ok = std::fabs(got - coded) < tol * (1 + std::fabs(coded)) ||
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

TEST(PagedStore, SlotsHoldTheirTokensThroughFlushesEvictionAndMerges) {
  for (const char* codec : {"f16", "q8_0", "q4_0"}) {
    SCOPED_TRACE(codec);
    StoreHarness hs(codec, 5);
    hs.append(150, 1);
    EXPECT_EQ(hs.store->n_live(), 150);
    hs.check_scores(1e-4);
    // Evict a scattered third, then more: pages with holes merge.
    std::vector<int32_t> drop;
    for (int p = 0; p < 150; p += 3) drop.push_back(p);
    hs.store->evict(drop);
    EXPECT_EQ(hs.store->n_live(), 100);
    hs.check_scores(1e-4);
    const int pages_before = hs.store->n_pages();
    drop.clear();
    for (int p = 1; p < 120; p += 3) drop.push_back(p);
    hs.store->evict(drop);
    EXPECT_LT(hs.store->n_pages(), pages_before);
    hs.check_scores(1e-4);
    hs.append(70, 9);
    hs.check_scores(1e-4);
    const auto live = hs.live();
    EXPECT_EQ(int(live.size()), hs.store->n_live());
    for (int p : drop) EXPECT_EQ(live.count(p), 0u);
    EXPECT_EQ(live.count(149), 1u);
    EXPECT_EQ(live.count(219), 1u);
  }
}

TEST(PagedStore, BytesFollowTheTokensKept) {
  StoreHarness hs("q8_0", 0);
  hs.append(320, 2);  // 10 full pages
  const size_t full = hs.store->bytes();
  std::vector<int32_t> drop;
  for (int p = 0; p < 320; ++p)
    if (p % 4) drop.push_back(p);
  hs.store->evict(drop);  // 80 tokens left: 3 pages (merged) instead of 10
  EXPECT_LE(hs.store->n_pages(), 4);
  EXPECT_LT(hs.store->bytes(), full / 2);
  EXPECT_EQ(hs.pool.in_use() % size_t(hs.store->n_pages()), 0u);  // whole pages, all accounted for
  EXPECT_LE(hs.pool.in_use(), hs.store->bytes());
}

TEST(PagedStore, KiviKeysWaitForAFullGroupBeyondTheResidual) {
  StoreHarness hs("kivi2", 16);
  hs.append(16 + 31, 3);
  EXPECT_EQ(hs.store->n_pages(), 0);  // 47 < R + G
  hs.append(1, 4);
  EXPECT_EQ(hs.store->n_pages(), 1);  // 32 tokens quantized at once, 16 stay in fp16
  EXPECT_EQ(hs.store->n_live(), 48);
}

TEST(PagedStore, SlidingWindowLayersRecyclePages) {
  StoreHarness hs("q4_0", 0, /*window=*/64, /*max_batch=*/8);
  hs.append(2000, 5);
  // Window 64 + batch slack 8 + one partly visible page on each side.
  EXPECT_LE(hs.store->n_pages(), (64 + 8) / 32 + 2);
  EXPECT_EQ(hs.live().count(1999), 1u);
  EXPECT_EQ(hs.live().count(100), 0u);
}

TEST(PagedStore, LowTierKeepsEvictedTokens) {
  BlockPool lp;
  auto spec = parse_codec("kivi2");
  PagedKvOptions lo;
  lo.key = make_block_codec(spec, KvSide::Key, 2, 64, nullptr);
  lo.value = make_block_codec(spec, KvSide::Value, 2, 64, nullptr);
  auto low = std::make_unique<PagedKvStore>(KvShape{2, 64, 0, 8, 1 << 20}, lp, std::move(lo));
  StoreHarness hs("q8_0", 0, 0, 8, std::move(low));
  hs.append(100, 6);
  std::vector<int32_t> drop;
  for (int p = 0; p < 60; ++p) drop.push_back(p);
  hs.store->evict(drop);
  EXPECT_EQ(hs.store->n_live(), 100);  // all still there, 60 of them in 2 bits
  EXPECT_EQ(int(hs.live().size()), 100);
}

bool wants_queries(PagedKvStore& s) { return s.observer() && s.observer()->wants_queries(); }

// ThinK: keys whose large channels differ per head, queries that favour other channels. The store
// must keep, per head, the channels with the largest q^2 * k^2, store only those (fewer bytes) and
// score exactly q . k over them for compressed tokens, over all channels for the recent window.
struct ThinkHarness {
  static constexpr int KVH = 2, D = 128, keep = 64;
  BlockPool pool;
  std::unique_ptr<PagedKvStore> store;
  std::vector<float> K;  // [pos][KVH][D]
  CodecSpec spec;

  ThinkHarness(const std::string& codec, int residual, const Codebook* book = nullptr) {
    spec = parse_codec(codec);
    spec.residual = residual;
    PagedKvOptions o = store_options(spec, KVH, D, residual, book);
    o.think_keep = keep;
    o.think_unit = spec.kind == CodecSpec::Kind::CQ ? spec.cq_channels : 1;
    const CodecSpec sp = spec;
    o.make_key = [sp, book](int dim, const std::vector<std::vector<int>>& kept) {
      return std::shared_ptr<const BlockCodec>(make_block_codec(sp, KvSide::Key, KVH, dim, book, &kept));
    };
    store = std::make_unique<PagedKvStore>(KvShape{KVH, D, 0, 64, 1 << 20}, pool, std::move(o));
  }
  // Head 0: keys large on channels divisible by 4 and on 1 mod 4 (ahead of all others), queries
  // even. Head 1: keys even, queries large on channels 64..127.
  void append(int n, uint32_t seed) {
    auto k = random_rows(n, KVH * D, seed), v = random_rows(n, KVH * D, seed + 1);
    for (int j = 0; j < n; ++j)
      for (int c = 0; c < D; ++c)
        if (c % 4 < 2) k[size_t(j) * KVH * D + c] *= 4.f;
    const auto q = random_rows(n * 4, D, seed + 2);  // 2 query heads per KV head
    for (int i = 0; i < n; ++i) {
      const int pos = int(K.size() / (KVH * D));
      K.insert(K.end(), k.begin() + size_t(i) * KVH * D, k.begin() + size_t(i + 1) * KVH * D);
      store->append(pos, &K[size_t(pos) * KVH * D], &v[size_t(i) * KVH * D]);
    }
    for (int i = 0; i < n; ++i) {
      const int pos = int(K.size() / (KVH * D)) - n + i;
      std::vector<float> qq(q.begin() + size_t(i) * 4 * D, q.begin() + size_t(i + 1) * 4 * D);
      for (int c = 64; c < D; ++c) qq[2 * D + c] *= 4.f, qq[3 * D + c] *= 4.f;
      if (wants_queries(*store)) {
        store->observer()->on_queries(0, pos, qq.data(), 2, D);
        store->observer()->on_queries(1, pos, qq.data() + 2 * D, 2, D);
      }
    }
    store->after_pass();
  }
};

TEST(Think, KeepsTheChannelsQueriesAndKeysUseAndStoresOnlyThose) {
  ThinkHarness t("f16", 16);
  t.append(40, 3);  // 40 >= R + 1: channels chosen at the end of this pass
  ASSERT_FALSE(wants_queries(*t.store));
  std::vector<int> want0, want1;
  for (int c = 0; c < ThinkHarness::D; ++c) {
    if (c % 4 < 2) want0.push_back(c);
    if (c >= 64) want1.push_back(c);
  }
  EXPECT_EQ(t.store->kept_channels(0), want0);
  // Head 1's keys are large on c % 4 < 2 and its queries on c >= 64: those 32 channels win, then
  // the rest of both sets (q^2 k^2 equal within noise) fill the 64.
  const auto& k1 = t.store->kept_channels(1);
  ASSERT_EQ(int(k1.size()), ThinkHarness::keep);
  for (int c = 64; c < ThinkHarness::D; ++c)
    if (c % 4 < 2) EXPECT_TRUE(std::binary_search(k1.begin(), k1.end(), c)) << c;

  // Scores: pruned channels do not count for compressed tokens, count for the window.
  t.append(30, 9);
  const int n = t.store->n_slots();
  const int32_t* sp = t.store->slot_positions();
  const auto q = random_rows(2, ThinkHarness::D, 5);
  int compressed = 0;
  for (int h = 0; h < ThinkHarness::KVH; ++h) {
    std::vector<float> s(size_t(2) * n);
    t.store->scores(h, q.data(), 2, ThinkHarness::D, 0, n, s.data(), n);
    const auto& kept = t.store->kept_channels(h);
    for (int slot = 0; slot < n; ++slot) {
      if (sp[slot] < 0) continue;          // free rows of the last page
      const bool in_page = slot < n - 16;  // the window holds the 16 newest
      compressed += in_page;
      for (int i = 0; i < 2; ++i) {
        double want = 0;
        for (int c = 0; c < ThinkHarness::D; ++c) {
          if (in_page && !std::binary_search(kept.begin(), kept.end(), c)) continue;
          want += double(q[size_t(i) * ThinkHarness::D + c]) *
                  fp16_to_f32(f32_to_fp16(t.K[(size_t(sp[slot]) * ThinkHarness::KVH + h) * ThinkHarness::D + c]));
        }
        EXPECT_NEAR(s[size_t(i) * n + slot], want, 1e-3 * (1 + std::fabs(want))) << "slot " << slot;
      }
    }
  }
  EXPECT_GT(compressed, 0);
}

TEST(Think, HoldsTokensWholeUntilItChoosesThenSavesKeyBytes) {
  ThinkHarness t("q8_0", 0), full("q8_0", 0);
  // Without ThinK for comparison: same codec, all channels.
  PagedKvOptions o;
  o.key = make_block_codec(full.spec, KvSide::Key, ThinkHarness::KVH, ThinkHarness::D, nullptr);
  o.value = make_block_codec(full.spec, KvSide::Value, ThinkHarness::KVH, ThinkHarness::D, nullptr);
  PagedKvStore plain(KvShape{ThinkHarness::KVH, ThinkHarness::D, 0, 64, 1 << 20}, full.pool, std::move(o));
  EXPECT_TRUE(wants_queries(*t.store));
  for (int pos = 0; pos < 5; ++pos) {
    std::vector<float> k(ThinkHarness::KVH * ThinkHarness::D, 1.f);
    t.store->append(pos, k.data(), k.data());
  }
  EXPECT_EQ(t.store->n_pages(), 0);  // a pass in progress: nothing compressed yet
  t.store->after_pass();
  EXPECT_GT(t.store->n_pages(), 0);
  EXPECT_FALSE(wants_queries(*t.store));
  t.append(250, 4);
  const auto k = random_rows(255, ThinkHarness::KVH * ThinkHarness::D, 4);
  for (int pos = 0; pos < 255; ++pos) plain.append(pos, &k[size_t(pos) * ThinkHarness::KVH * ThinkHarness::D],
                                                   &k[size_t(pos) * ThinkHarness::KVH * ThinkHarness::D]);
  // Half the key channels: keys cost half, values the same -> 3/4 of the pages' bytes.
  EXPECT_EQ(t.store->n_pages(), plain.n_pages());
  EXPECT_NEAR(double(t.store->bytes()) / double(plain.bytes()), 0.75, 0.02);
}

TEST(Think, CoupledQuantizationKeepsWholeGroups) {
  const Codebook book = random_codebook(ThinkHarness::KVH, ThinkHarness::D, 4, 8, 21);
  ThinkHarness t("cq-4c8b", 8, &book);
  t.append(60, 6);
  for (int h = 0; h < ThinkHarness::KVH; ++h) {
    const auto& kept = t.store->kept_channels(h);
    ASSERT_EQ(int(kept.size()), ThinkHarness::keep);
    for (size_t i = 0; i < kept.size(); i += 4)
      for (int e = 0; e < 4; ++e) EXPECT_EQ(kept[i + e], kept[i] + e);
    EXPECT_EQ(kept[0] % 4, 0);
  }
  // Compressed keys decode to the kept channels' centroids: scores match a full-size CQ codec
  // whose pruned groups are zero in the query.
  const auto q = random_rows(1, ThinkHarness::D, 8);
  auto probe = make_block_codec(t.spec, KvSide::Key, ThinkHarness::KVH, ThinkHarness::D, &book);
  std::vector<uint8_t> blk(probe->block_bytes());
  std::vector<float> dec(ThinkHarness::D);
  const int n = t.store->n_slots();
  std::vector<float> s(n);
  for (int h = 0; h < ThinkHarness::KVH; ++h) {
    t.store->scores(h, q.data(), 1, ThinkHarness::D, 0, n, s.data(), n);
    const auto& kept = t.store->kept_channels(h);
    for (int slot = 0; slot < n - 8; ++slot) {
      const int pos = t.store->slot_positions()[slot];
      if (pos < 0) continue;
      std::vector<float> k(ThinkHarness::D);
      for (int c = 0; c < ThinkHarness::D; ++c)
        k[c] = fp16_to_f32(f32_to_fp16(t.K[(size_t(pos) * ThinkHarness::KVH + h) * ThinkHarness::D + c]));
      probe->encode(h, k.data(), ThinkHarness::D, 0, 1, blk.data());
      probe->decode_ref(h, blk.data(), 0, 1, dec.data());
      double want = 0;
      for (int c : kept) want += double(q[c]) * dec[c];
      EXPECT_NEAR(s[slot], want, 1e-3 * (1 + std::fabs(want))) << "slot " << slot;
    }
  }
}

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

TEST(KvConfig, ParsesNamesAndRejectsBadOnes) {
  EXPECT_EQ(parse_codec("kivi2").residual, 128);
  EXPECT_EQ(parse_codec("kivi4:g=64:r=32").name(), "kivi4:g=64:r=32");
  EXPECT_EQ(parse_codec("cq-8c10b").bits, 10);
  EXPECT_THROW(parse_codec("kivi3"), Error);
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
