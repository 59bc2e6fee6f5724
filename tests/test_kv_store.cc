// The paged and dense KV stores: bookkeeping (positions <-> data) through flushes, eviction, page
// merges and sliding-window recycling; bytes reported = bytes charged to the pool; the pre-pass
// bound on new bytes; merges that do not compound quantization error; the MiKV low tier (with
// ThinK); ThinK's channel choice.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <map>
#include <set>
#include <vector>

#include "kv/block_codec.h"
#include "kv/block_pool.h"
#include "kv/eviction.h"
#include "kv/kv_cache.h"
#include "kv/kv_config.h"
#include "kv/paged_store.h"
#include "kv/rotation.h"
#include "kv_test_util.h"
#include "util/error.h"
#include "util/fp16.h"

namespace leanlm {
namespace {

using namespace testing_kv;

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

// The bytes a paged store reports are exactly its pages (blocks and position tables) and its fp16
// window, and exactly what it charged to the pool.
size_t expected_bytes(const StoreHarness& hs, int window_cap) {
  const size_t page = size_t(hs.KVH) * 2 * hs.probe->block_bytes() + size_t(hs.probe->tokens()) * 4 + 2 * sizeof(int);
  return size_t(hs.store->n_pages()) * page + size_t(window_cap) * (size_t(hs.KVH) * hs.D * 4 + 4);
}

TEST(PagedStore, BytesFollowTheTokensKept) {
  StoreHarness hs("q8_0", 0);
  hs.append(320, 2);  // 10 full pages
  EXPECT_EQ(hs.store->n_pages(), 10);
  const size_t full = hs.store->bytes();
  EXPECT_EQ(full, expected_bytes(hs, 1));
  EXPECT_EQ(hs.pool.in_use(), full);
  std::vector<int32_t> drop;
  for (int p = 0; p < 320; ++p)
    if (p % 4) drop.push_back(p);
  hs.store->evict(drop);  // 80 tokens left: 3 pages (merged) instead of 10
  EXPECT_LE(hs.store->n_pages(), 4);
  EXPECT_LT(hs.store->bytes(), full / 2);
  EXPECT_EQ(hs.store->bytes(), expected_bytes(hs, 1));
  EXPECT_EQ(hs.pool.in_use(), hs.store->bytes());
  hs.store->clear();
  EXPECT_EQ(hs.pool.in_use(), expected_bytes(hs, 1));  // the window's capacity stays
}

TEST(DenseStore, BytesAreTheAllocatedCapacityAllCharged) {
  BlockPool pool;
  const KvShape full{2, 64, 0, 8, 4096}, window{2, 64, 100, 8, 4096};
  const size_t slot = size_t(2) * 64 * 2 * 2 + 4;  // f16 key and value rows, position
  std::vector<float> k(128, 1.f);
  {
    auto s = make_kv_store(KvType::F16, full, pool);
    for (int p = 0; p < 10; ++p) s->append(p, k.data(), k.data());
    EXPECT_EQ(s->bytes(), 256 * slot);  // the first allocation holds 256 slots
    EXPECT_EQ(pool.in_use(), s->bytes());
    for (int p = 10; p < 300; ++p) s->append(p, k.data(), k.data());
    EXPECT_EQ(s->bytes(), 512 * slot);
    EXPECT_EQ(pool.in_use(), s->bytes());
    EXPECT_EQ(s->bytes_to_append(100), 0u);
    EXPECT_EQ(s->bytes_to_append(300), 1024 * slot);
  }
  EXPECT_EQ(pool.in_use(), 0u);
  auto w = make_kv_store(KvType::F16, window, pool);
  EXPECT_EQ(w->bytes(), size_t(128) * slot);  // a ring of window + max_batch slots, in blocks of 32
  EXPECT_EQ(pool.in_use(), w->bytes());
  BlockPool small(100 * slot);
  EXPECT_THROW(make_kv_store(KvType::F16, window, small), Error);
  EXPECT_EQ(small.in_use(), 0u);
}

// Before every pass the engine asks each store for an upper bound of the bytes the pass may add;
// the pool's high-water mark during the pass must stay within it, for every kind of store.
TEST(KvStores, BytesToAppendBoundsEveryPass) {
  struct Cfg {
    const char *codec, *evict, *budget;
    double think;
    int window;
  };
  for (const Cfg& c : std::vector<Cfg>{{"f16", "none", "", 0, 0},
                                       {"f16", "none", "", 0, 48},
                                       {"q8_0", "none", "", 0, 0},
                                       {"kivi2", "none", "", 0, 0},
                                       {"kivi4", "none", "", 0.5, 0},
                                       {"cq-4c8b", "none", "", 0.5, 0},
                                       {"q4_0", "h2o", "40", 0, 0},
                                       {"f16", "scissorhands", "60", 0, 48},
                                       {"kivi2", "scissorhands:keep=kivi2", "50", 0.5, 0},
                                       {"q8_0", "snapkv:keep=q4_0", "30", 0, 0}}) {
    KvConfig cfg;
    cfg.codec = parse_codec(c.codec);
    cfg.evict = parse_evict(c.evict);
    parse_budget(c.budget, cfg);
    cfg.think = c.think;
    SCOPED_TRACE(cfg.name() + (c.window ? " window" : ""));
    const int KVH = 2, D = 64;
    const Codebook book = random_codebook(KVH, D, 4, 8, 3);
    BlockPool pool;
    auto store = make_kv_store(cfg, KvShape{KVH, D, c.window, 300, 8192}, pool, &book, &book);
    std::mt19937 rng(5);
    int pos = 0;
    for (int pass = 0; pass < 40; ++pass) {
      // A long first pass (ThinK's window grows several doublings while it waits), then short ones.
      const int n = pass == 0 ? 300 : 1 + int(rng() % 40);
      const auto k = random_rows(n, KVH * D, 100 + pass), v = random_rows(n, KVH * D, 200 + pass);
      const size_t bound = pool.in_use() + store->bytes_to_append(n);
      pool.reset_peak();
      store->reserve(n);
      for (int i = 0; i < n; ++i) store->append(pos + i, &k[size_t(i) * KVH * D], &v[size_t(i) * KVH * D]);
      if (AttentionObserver* o = store->observer(); o && o->wants_weights()) {
        std::vector<float> w(store->n_slots(), 1.f / float(store->n_slots()));
        for (int h = 0; h < KVH; ++h) o->on_weights(h, pos + n - 1, store->slot_positions(), w.data(), store->n_slots());
      }
      store->after_pass();
      pos += n;
      ASSERT_LE(pool.peak(), bound) << "pass " << pass;
      ASSERT_EQ(pool.in_use(), store->bytes());
    }
  }
}

// Sinks: the first positions stay in fp16 (their scores and values are the fp16 rows), the rest go
// through the codec; sliding-window layers keep none; eviction does not combine with them.
TEST(PagedStore, SinksStayInFp16) {
  const int KVH = 2, D = 64, n = 150;
  for (int window : {0, 64}) {
    KvConfig cfg;
    cfg.codec = parse_codec("q4_0:r=8:sinks=3");
    BlockPool pool;
    auto kv = make_kv_store(cfg, KvShape{KVH, D, window, 8, 4096}, pool, nullptr, nullptr);
    const auto K = random_rows(n, KVH * D, 3), V = random_rows(n, KVH * D, 4);
    for (int p = 0; p < n; ++p) kv->append(p, &K[size_t(p) * KVH * D], &V[size_t(p) * KVH * D]);
    if (window == 0) EXPECT_EQ(kv->n_live(), n);
    const int32_t* sp = kv->slot_positions();
    const auto q = random_rows(1, D, 5);
    int exact_sinks = 0, coded = 0;
    for (int slot = 0; slot < kv->n_slots(); ++slot) {
      const int p = sp[slot];
      if (p < 0 || p >= n - 8) continue;  // the fp16 window is exact anyway
      float s = 0, want = 0;
      kv->scores(1, q.data(), 1, D, slot, slot + 1, &s, 1);
      for (int c = 0; c < D; ++c) want += q[c] * fp16_to_f32(f32_to_fp16(K[(size_t(p) * KVH + 1) * D + c]));
      const bool exact = std::fabs(s - want) < 1e-4f * (1 + std::fabs(want));
      if (p < 3) {
        EXPECT_TRUE(exact) << "sink " << p << ": " << s << " vs " << want;
        std::vector<float> v(D, 0.f);
        const float one = 1.f;
        kv->accumulate(1, &one, 1, 1, slot, slot + 1, v.data(), D);
        for (int c = 0; c < D; ++c) ASSERT_EQ(v[c], fp16_to_f32(f32_to_fp16(V[(size_t(p) * KVH + 1) * D + c])));
        ++exact_sinks;
      } else {
        coded += !exact;
      }
    }
    EXPECT_EQ(exact_sinks, window ? 0 : 3);
    EXPECT_GT(coded, 50);  // the others went through q4_0
    EXPECT_EQ(pool.in_use(), kv->bytes());
  }
  KvConfig bad;
  bad.codec = parse_codec("q4_0:sinks=3");
  bad.evict = parse_evict("h2o");
  parse_budget("40", bad);
  BlockPool pool;
  EXPECT_THROW(make_kv_store(bad, KvShape{KVH, D, 0, 8, 4096}, pool, nullptr, nullptr), Error);
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

// Evicted tokens move to the low tier: still visible, now in its codec (decoded from the upper
// tier's codec, encoded again), and only the upper tier's remaining tokens count as its own.
TEST(PagedStore, LowTierKeepsEvictedTokens) {
  auto low_spec = parse_codec("q4_0");
  PagedKvOptions lo = store_options(low_spec, 2, 64, 0, nullptr);
  StoreHarness hs("q8_0", 0, 0, 8);
  auto low = std::make_unique<PagedKvStore>(KvShape{2, 64, 0, 8, 1 << 20}, hs.pool, std::move(lo));
  PagedKvOptions o = store_options(hs.spec, 2, 64, 0, nullptr);
  o.low_tier = std::move(low);
  hs.store = std::make_unique<PagedKvStore>(KvShape{2, 64, 0, 8, 1 << 20}, hs.pool, std::move(o));
  hs.append(100, 6);
  std::vector<int32_t> drop;
  for (int p = 0; p < 60; ++p) drop.push_back(p);
  hs.store->evict(drop);
  EXPECT_EQ(hs.store->n_live(), 100);  // all still there, 60 of them in 4 bits
  EXPECT_EQ(int(hs.live().size()), 100);
  EXPECT_EQ(hs.store->low_tier()->n_live(), 60);
  // Every slot's score: the token through q8_0 (upper tier) then q4_0 (low tier) for the evicted.
  auto q8 = make_block_codec(hs.spec, KvSide::Key, 2, 64, nullptr);
  auto q4 = make_block_codec(low_spec, KvSide::Key, 2, 64, nullptr);
  const auto q = random_rows(1, 64, 9);
  const int n = hs.store->n_slots();
  const int32_t* sp = hs.store->slot_positions();
  for (int h = 0; h < 2; ++h) {
    std::vector<float> s(n);
    hs.store->scores(h, q.data(), 1, 64, 0, n, s.data(), n);
    for (int slot = 0; slot < n; ++slot) {
      if (sp[slot] < 0) continue;
      std::vector<float> k(64), d8(64), d4(64);
      std::vector<uint8_t> b8(q8->block_bytes()), b4(q4->block_bytes());
      for (int c = 0; c < 64; ++c) k[c] = fp16_to_f32(f32_to_fp16(hs.K[(size_t(sp[slot]) * 2 + h) * 64 + c]));
      q8->encode(h, k.data(), 64, 0, 1, b8.data());
      q8->decode_ref(h, b8.data(), 0, 1, d8.data());
      const bool low_tier = sp[slot] < 60;
      if (low_tier) {  // the low tier takes tokens through its fp16 window, like any store
        for (float& x : d8) x = fp16_to_f32(f32_to_fp16(x));
        q4->encode(h, d8.data(), 64, 0, 1, b4.data());
        q4->decode_ref(h, b4.data(), 0, 1, d4.data());
      }
      const std::vector<float>& kd = low_tier ? d4 : d8;
      double want = 0;
      for (int c = 0; c < 64; ++c) want += double(q[c]) * kd[c];
      // Both tiers score on an int8 query.
      ASSERT_NEAR(s[slot], want, int8_query_slack(q.data(), kd.data(), 64) + 1e-4 * (1 + std::fabs(want)))
          << "slot " << slot << " pos " << sp[slot];
    }
  }
  EXPECT_EQ(hs.pool.in_use(), hs.store->bytes());
}

// Merges move the rows of per-token codecs as bytes, so a token's stored value never changes
// however often its page merges; KIVI keys (grouped across tokens) are re-encoded at most
// kMaxReencodes times, so their error stays within that many quantization steps.
TEST(PagedStore, MergesDoNotCompoundQuantizationError) {
  for (const char* codec : {"q4_0", "kivi2"}) {
    SCOPED_TRACE(codec);
    StoreHarness hs(codec, 0);
    hs.append(320, 12);
    // One-hot queries read the stored (decoded) key channels back.
    auto stored = [&](std::map<int, std::vector<float>>& out) {
      out.clear();
      const int n = hs.store->n_slots();
      const int32_t* sp = hs.store->slot_positions();
      std::vector<float> e(size_t(hs.D) * hs.D, 0.f), s(size_t(hs.D) * n);
      for (int c = 0; c < hs.D; ++c) e[size_t(c) * hs.D + c] = 1.f;
      for (int h = 0; h < hs.KVH; ++h) {
        hs.store->scores(h, e.data(), hs.D, hs.D, 0, n, s.data(), n);
        for (int slot = 0; slot < n; ++slot)
          if (sp[slot] >= 0) {
            auto& row = out[sp[slot]];
            row.resize(size_t(hs.KVH) * hs.D);
            for (int c = 0; c < hs.D; ++c) row[size_t(h) * hs.D + c] = s[size_t(c) * n + slot];
          }
      }
    };
    std::map<int, std::vector<float>> first, now;
    stored(first);
    // Per channel, the largest range any group can have: the bound of one 2-bit step.
    std::vector<float> lo(size_t(hs.KVH) * hs.D, INFINITY), hi(lo.size(), -INFINITY);
    std::mt19937 rng(3);
    for (int round = 0; round < 30; ++round) {
      std::vector<int32_t> drop;
      for (int p : hs.live())
        if (p < int(hs.K.size() / (hs.KVH * hs.D)) - 40 && rng() % 6 == 0) drop.push_back(p);
      hs.store->evict(drop);
      hs.append(32, 100 + round);
      stored(now);
      if (hs.spec.kind != CodecSpec::Kind::Kivi) {
        for (const auto& [p, row] : now)
          if (first.count(p)) ASSERT_EQ(row, first[p]) << "pos " << p << " round " << round;
        for (const auto& [p, row] : now) first.emplace(p, row);
        continue;
      }
      for (size_t i = 0; i < hs.K.size(); ++i) {
        const size_t c = i % (size_t(hs.KVH) * hs.D);
        lo[c] = std::min(lo[c], hs.K[i]), hi[c] = std::max(hi[c], hs.K[i]);
      }
      for (const auto& [p, row] : now)
        for (size_t c = 0; c < row.size(); ++c) {
          const float step = (hi[c] - lo[c]) / 3.f;
          const float bound = (PagedKvStore::kMaxReencodes + 1) * step * 0.5f * 1.02f + 0.01f;
          ASSERT_LE(std::fabs(row[c] - hs.K[size_t(p) * hs.KVH * hs.D + c]), bound)
              << "pos " << p << " channel " << c << " round " << round;
        }
    }
    EXPECT_EQ(hs.pool.in_use(), hs.store->bytes());
  }
}

// A sliding-window layer with a policy: tokens no later query can see leave first (without
// counting against the budget), then the policy chooses among the rest.
TEST(PagedStore, WindowLayersDropUnseeableTokensBeforeThePolicy) {
  KvConfig cfg;
  cfg.codec = parse_codec("q8_0");
  cfg.evict = parse_evict("h2o:recent=8");
  parse_budget("40", cfg);
  BlockPool pool;
  const int window = 64;
  auto store = make_kv_store(cfg, KvShape{1, 64, window, 16, 4096}, pool, nullptr, nullptr);
  std::vector<float> k(64, 0.5f);
  int pos = 0;
  for (int pass = 0; pass < 20; ++pass) {
    for (int i = 0; i < 16; ++i, ++pos) store->append(pos, k.data(), k.data());
    // Old tokens get all the attention: H2O alone would keep them.
    std::vector<float> w(store->n_slots());
    const int32_t* sp = store->slot_positions();
    for (int s = 0; s < store->n_slots(); ++s) w[s] = sp[s] >= 0 && sp[s] < 32 ? 1.f : 0.f;
    store->observer()->on_weights(0, pos - 1, sp, w.data(), store->n_slots());
    store->after_pass();
    int live = 0;
    for (int s = 0; s < store->n_slots(); ++s) {
      const int p = store->slot_positions()[s];
      if (p < 0) continue;
      ++live;
      ASSERT_GE(p, pos - 1 - window + 2) << "pass " << pass << ": position " << p << " is out of every later window";
    }
    ASSERT_LE(live, 40);
  }
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

// Rotation: R is orthogonal (R^T R = I, dot products kept), and a rotated store returns the same
// scores and value sums as the plain computation, within its codec's error (also through a low tier).
TEST(Rotation, IsOrthogonalAndKeepsDotProducts) {
  for (int dim : {64, 128, 256}) {
    HeadRotation r(dim);
    const auto x = random_rows(2, dim, 3);
    std::vector<float> a(x.begin(), x.begin() + dim), b(x.begin() + dim, x.end());
    double dot = 0, norm = 0;
    for (int c = 0; c < dim; ++c) dot += double(a[c]) * b[c], norm += double(a[c]) * a[c];
    std::vector<float> ra = a, rb = b;
    r.forward(ra.data()), r.forward(rb.data());
    double rdot = 0, rnorm = 0, moved = 0;
    for (int c = 0; c < dim; ++c) rdot += double(ra[c]) * rb[c], rnorm += double(ra[c]) * ra[c], moved += std::fabs(ra[c] - a[c]);
    EXPECT_NEAR(rdot, dot, 1e-4 * dim);
    EXPECT_NEAR(rnorm, norm, 1e-4 * dim);
    EXPECT_GT(moved, 1.0);  // it does rotate
    r.inverse(ra.data());
    for (int c = 0; c < dim; ++c) ASSERT_NEAR(ra[c], a[c], 1e-5) << "dim " << dim << " channel " << c;
  }
  EXPECT_THROW(HeadRotation(96), Error);
}

TEST(Rotation, RotatedStoresScoreAndSumLikeThePlainComputation) {
  for (const char* evict : {"none", "h2o:keep=q4_0"}) {
    SCOPED_TRACE(evict);
    KvConfig cfg;
    cfg.codec = parse_codec("q8_0:r=4:rot=1");
    cfg.evict = parse_evict(evict);
    if (cfg.evict.kind != EvictSpec::Kind::None) parse_budget("40", cfg);
    const int KVH = 2, D = 64, n = 120;
    BlockPool pool;
    auto store = make_kv_store(cfg, KvShape{KVH, D, 0, 32, 4096}, pool, nullptr, nullptr);
    const auto k = random_rows(n, KVH * D, 51, 16), v = random_rows(n, KVH * D, 52);
    for (int p = 0; p < n; ++p) {
      store->append(p, &k[size_t(p) * KVH * D], &v[size_t(p) * KVH * D]);
      if (p % 20 == 19) store->after_pass();
    }
    const int S = store->n_slots();
    const int32_t* sp = store->slot_positions();
    EXPECT_EQ(store->n_live(), n);  // the low tier keeps what is evicted
    const auto q = random_rows(2, D, 53);
    for (int h = 0; h < KVH; ++h) {
      std::vector<float> s(size_t(2) * S);
      store->scores(h, q.data(), 2, D, 0, S, s.data(), S);
      std::vector<float> w(size_t(2) * S, 0.f), out(size_t(2) * D, 0.f);
      std::vector<double> want(size_t(2) * D, 0.0);
      for (int i = 0; i < 2; ++i)
        for (int slot = 0; slot < S; ++slot) {
          if (sp[slot] < 0) continue;
          double exact = 0, qq = 0, kk = 0;
          for (int c = 0; c < D; ++c) {
            const double kc = k[(size_t(sp[slot]) * KVH + h) * D + c], qc = q[size_t(i) * D + c];
            exact += qc * kc, qq += qc * qc, kk += kc * kc;
          }
          // Rotated rows are quantized: the error is a share of |q| |k| (4 bits in the low tier, 8 above).
          const double share = cfg.evict.kind == EvictSpec::Kind::None ? 0.02 : 0.12;
          ASSERT_NEAR(s[size_t(i) * S + slot], exact, share * std::sqrt(qq * kk)) << "slot " << slot;
          w[size_t(i) * S + slot] = float(1 + (slot % 3));
          for (int c = 0; c < D; ++c) want[size_t(i) * D + c] += w[size_t(i) * S + slot] * v[(size_t(sp[slot]) * KVH + h) * D + c];
        }
      store->accumulate(h, w.data(), 2, S, 0, S, out.data(), D);
      double err = 0, ref = 0;
      for (size_t e = 0; e < out.size(); ++e) err += std::pow(out[e] - want[e], 2), ref += want[e] * want[e];
      EXPECT_LT(std::sqrt(err / ref), 0.08) << "head " << h;  // relative error of the value sums
    }
    EXPECT_EQ(pool.in_use(), store->bytes());
  }
}

// ThinK with a MiKV low tier: evicted tokens keep only the chosen channels there too (no
// full-width rows of zeros), and their scores are q . k over those channels.
TEST(Think, LowTierStoresOnlyTheKeptChannels) {
  KvConfig cfg;
  cfg.codec = parse_codec("f16");
  cfg.evict = parse_evict("h2o:keep=q8_0");
  parse_budget("48", cfg);
  cfg.think = 0.5;
  const int KVH = ThinkHarness::KVH, D = ThinkHarness::D;
  BlockPool pool;
  auto store = make_kv_store(cfg, KvShape{KVH, D, 0, 64, 4096}, pool, nullptr, nullptr);
  auto& paged = dynamic_cast<PagedKvStore&>(*store);
  const auto k = random_rows(200, KVH * D, 31), v = random_rows(200, KVH * D, 32);
  for (int p = 0; p < 200; ++p) {
    store->append(p, &k[size_t(p) * KVH * D], &v[size_t(p) * KVH * D]);
    if (p % 20 == 19) store->after_pass();
  }
  const PagedKvStore* low = paged.low_tier();
  ASSERT_GT(low->n_live(), 100);
  for (int h = 0; h < KVH; ++h) {
    ASSERT_EQ(int(paged.kept_channels(h).size()), D / 2);
    EXPECT_EQ(low->kept_channels(h), paged.kept_channels(h));
  }
  // Low-tier pages hold half-width keys: 3/4 of a full-width q8_0 page's blocks.
  auto q8 = make_block_codec(parse_codec("q8_0"), KvSide::Key, KVH, D, nullptr);
  auto q8k = make_block_codec(parse_codec("q8_0"), KvSide::Key, KVH, D / 2, nullptr);
  const size_t meta = 32 * 4 + 2 * sizeof(int), window = size_t(1) * (KVH * D * 4 + 4);
  EXPECT_EQ(low->bytes(), size_t(low->n_pages()) * (KVH * (q8k->block_bytes() + q8->block_bytes()) + meta) + window);
  // Scores of the demoted tokens: f16 rounding, then q8_0 over the kept channels only.
  const auto q = random_rows(1, D, 33);
  const int n = low->n_slots();
  std::vector<float> s(n);
  for (int h = 0; h < KVH; ++h) {
    low->scores(h, q.data(), 1, D, 0, n, s.data(), n);
    const auto& kept = paged.kept_channels(h);
    for (int slot = 0; slot < n; ++slot) {
      const int p = low->slot_positions()[slot];
      if (p < 0) continue;
      std::vector<float> kk(D / 2), dec(D / 2);
      std::vector<uint8_t> blk(q8k->block_bytes());
      for (int i = 0; i < D / 2; ++i) kk[i] = fp16_to_f32(f32_to_fp16(k[(size_t(p) * KVH + h) * D + kept[i]]));
      q8k->encode(h, kk.data(), D / 2, 0, 1, blk.data());
      q8k->decode_ref(h, blk.data(), 0, 1, dec.data());
      std::vector<float> qk(D / 2);  // the query's kept channels
      double want = 0;
      for (int i = 0; i < D / 2; ++i) qk[i] = q[kept[i]], want += double(qk[i]) * dec[i];
      // q8_0 keys score on the int8-rounded query.
      ASSERT_NEAR(s[slot], want, int8_query_slack(qk.data(), dec.data(), D / 2) + 1e-4 * (1 + std::fabs(want)))
          << "slot " << slot << " pos " << p;
    }
  }
  EXPECT_EQ(pool.in_use(), store->bytes());
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

}  // namespace
}  // namespace leanlm
