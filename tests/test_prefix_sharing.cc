// Prefix sharing: a store made of frozen shared parts plus a tail of its own answers like one store
// that took every token (exactly for per-token codecs), hides what a part holds beyond its limit,
// lets sliding-window parts go once no query can see them, and knows when a ring has lost
// positions; the prefix cache finds the longest usable prefix, replaces covered entries and frees
// memory least recently used first.
#include <gtest/gtest.h>

#include <climits>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include "engine/prefix_cache.h"
#include "kv/block_pool.h"
#include "kv/kv_cache.h"
#include "kv/kv_config.h"
#include "kv/segmented_store.h"
#include "kv_test_util.h"
#include "util/error.h"

namespace leanlm {
namespace {

using namespace testing_kv;

constexpr int KVH = 2, D = 64;

std::unique_ptr<KvStore> make_store(const std::string& codec, BlockPool& pool, int window = 0, int max_batch = 16) {
  KvConfig cfg;
  cfg.codec = parse_codec(codec);
  return make_kv_store(cfg, KvShape{KVH, D, window, max_batch, 4096}, pool, nullptr, nullptr);
}

struct Rows {
  std::vector<float> k, v;  // [pos][KVH][D]
  explicit Rows(int n, uint32_t seed) : k(random_rows(n, KVH * D, seed)), v(random_rows(n, KVH * D, seed + 7)) {}
  const float* key(int pos) const { return &k[size_t(pos) * KVH * D]; }
  const float* value(int pos) const { return &v[size_t(pos) * KVH * D]; }
};

void append(KvStore& s, const Rows& r, int from, int to) {
  for (int p = from; p < to; ++p) s.append(p, r.key(p), r.value(p));
  s.after_pass();
}

// Per position: the scores of 3 queries and the weighted value sum with weights that depend on the
// position only (so both stores get the same weights whatever their slot order).
struct Readout {
  std::map<int, std::vector<float>> scores;  // pos -> [h][3]
  std::vector<float> sums;                   // [h][3][D]
};

Readout read(const KvStore& s) {
  const auto q = random_rows(3, D, 99);
  Readout r;
  const int n = s.n_slots();
  const int32_t* pos = s.slot_positions();
  r.sums.assign(size_t(KVH) * 3 * D, 0.f);
  for (int h = 0; h < KVH; ++h) {
    std::vector<float> sc(size_t(3) * n), w(size_t(3) * n, 0.f);
    s.scores(h, q.data(), 3, D, 0, n, sc.data(), n);
    for (int slot = 0; slot < n; ++slot) {
      if (pos[slot] < 0) continue;
      auto& row = r.scores[pos[slot]];
      row.resize(size_t(KVH) * 3);
      for (int i = 0; i < 3; ++i) {
        row[size_t(h) * 3 + i] = sc[size_t(i) * n + slot];
        w[size_t(i) * n + slot] = 1.f / float(1 + (pos[slot] * 7 + i) % 13);
      }
    }
    s.accumulate(h, w.data(), 3, n, 0, n, &r.sums[size_t(h) * 3 * D], D);
  }
  return r;
}

void expect_same(const Readout& a, const Readout& b, double sum_tol) {
  ASSERT_EQ(a.scores.size(), b.scores.size());
  for (const auto& [p, row] : a.scores) {
    ASSERT_TRUE(b.scores.count(p)) << "position " << p;
    EXPECT_EQ(row, b.scores.at(p)) << "position " << p;  // the same stored rows: the same bits
  }
  for (size_t i = 0; i < a.sums.size(); ++i) ASSERT_NEAR(a.sums[i], b.sums[i], sum_tol * (1 + std::fabs(a.sums[i])));
}

TEST(SegmentedStore, SharedPartsPlusTailReadLikeOneStore) {
  for (const char* codec : {"f16", "q8_0", "q4_0:rot=1", "kivi4"}) {
    SCOPED_TRACE(codec);
    BlockPool pool;
    const Rows rows(300, 5);
    auto whole = make_store(codec, pool);
    append(*whole, rows, 0, 300);

    // Two parts frozen at 120 and 200, the rest in the tail.
    auto first = make_store(codec, pool);
    append(*first, rows, 0, 120);
    SegmentedKvStore seg({}, std::move(first), 0);
    seg.freeze(make_store(codec, pool));
    append(seg, rows, 120, 200);
    seg.freeze(make_store(codec, pool));
    append(seg, rows, 200, 300);
    EXPECT_EQ(seg.parts().size(), 2u);
    EXPECT_EQ(seg.n_live(), 300);
    if (std::string(codec) == "kivi4") {
      // KIVI keys group 32 tokens from where each part starts: the same tokens in other groups, so
      // other rounding; the error against the exact scores must stay the same size.
      const auto q = random_rows(3, D, 99);
      auto rms_error = [&](const Readout& r) {
        double e2 = 0;
        for (const auto& [p, row] : r.scores)
          for (int h = 0; h < KVH; ++h)
            for (int i = 0; i < 3; ++i) {
              double exact = 0;
              for (int c = 0; c < D; ++c) exact += double(q[size_t(i) * D + c]) * rows.key(p)[h * D + c];
              e2 += (row[size_t(h) * 3 + i] - exact) * (row[size_t(h) * 3 + i] - exact);
            }
        return std::sqrt(e2 / double(r.scores.size() * KVH * 3));
      };
      const Readout a = read(*whole), b = read(seg);
      ASSERT_EQ(a.scores.size(), b.scores.size());
      EXPECT_LT(rms_error(b), 1.3 * rms_error(a) + 0.02);
    } else {
      // The same stored rows: the same scores, bit for bit. Sums of int8-quantized weights (q8_0,
      // q4_0) round the weights per range, and the parts split the ranges.
      expect_same(read(*whole), read(seg), std::string(codec) == "f16" ? 1e-5 : 1e-3);
    }
  }
}

TEST(SegmentedStore, PositionsBeyondThePartsLimitAreHidden) {
  BlockPool pool;
  const Rows a(250, 1), b(300, 2);
  // The cached part holds 250 positions of another sequence; this one shares its first 180.
  auto cached = make_store("f16", pool);
  append(*cached, a, 0, 250);
  std::shared_ptr<const KvStore> part(std::move(cached));
  SegmentedKvStore seg({{part, 180}}, make_store("f16", pool), 0);
  append(seg, b, 180, 300);
  // The same as a store holding a's first 180 rows, then b's from 180.
  auto ref = make_store("f16", pool);
  append(*ref, a, 0, 180);
  append(*ref, b, 180, 300);
  expect_same(read(*ref), read(seg), 1e-5);
  EXPECT_EQ(seg.n_live(), 300);
}

TEST(SegmentedStore, WindowLayersLetUnseeablePartsGoAndRingsKnowWhatTheyLost) {
  BlockPool pool;
  const Rows rows(400, 3);
  const int window = 64, batch = 8;
  auto ring = make_store("f16", pool, window, batch);
  append(*ring, rows, 0, 100);
  SegmentedKvStore seg({}, std::move(ring), window);
  const auto& parts = seg.freeze(make_store("f16", pool, window, batch));
  KvPrefix prefix;
  prefix.layers = {parts};
  prefix.n_tokens = 100;
  EXPECT_TRUE(prefix.can_continue_at(100, {window}));
  // The ring (64 + 8 slots, rounded to 96) still holds 4..99: a query at 80 reads 17..79, one at
  // 60 would need 0..59.
  EXPECT_TRUE(prefix.can_continue_at(80, {window}));
  EXPECT_FALSE(prefix.can_continue_at(60, {window}));
  EXPECT_FALSE(prefix.can_continue_at(101, {window}));

  append(seg, rows, 100, 160);
  EXPECT_EQ(seg.parts().size(), 1u);  // the next query (160) still sees 97..99
  const size_t held = pool.in_use();
  append(seg, rows, 160, 170);
  EXPECT_TRUE(seg.parts().empty());  // no query after 169 sees position 99
  EXPECT_EQ(pool.in_use(), held);    // the prefix still holds the part's memory
  prefix.layers.clear();
  EXPECT_LT(pool.in_use(), held);    // ... until it lets go
}

TEST(PrefixCache, KeepsAnOlderEntryARingCanNoLongerServe) {
  BlockPool pool;
  const Rows rows(400, 6);
  const int window = 64, batch = 8;
  auto ring = make_store("f16", pool, window, batch);
  append(*ring, rows, 0, 100);
  SegmentedKvStore seg({}, std::move(ring), window);
  auto a = std::make_shared<KvPrefix>();
  a->layers = {seg.freeze(make_store("f16", pool, window, batch))};
  a->n_tokens = 100;
  append(seg, rows, 100, 400);  // the prompt's part is let go; the ring holds the last 96 positions
  auto b = std::make_shared<KvPrefix>();
  b->layers = {seg.freeze(make_store("f16", pool, window, batch))};
  b->n_tokens = 400;
  std::vector<int> tokens(400);
  for (int i = 0; i < 400; ++i) tokens[i] = 1000 + i;
  PrefixCache cache(8, {window});
  cache.insert("f16", tokens, a);
  cache.insert("f16", tokens, b);  // extends a, but cannot continue at 100
  EXPECT_EQ(cache.size(), 2);
  std::vector<int> again(tokens.begin(), tokens.begin() + 120);
  const auto hit = cache.lookup("f16", again, 110);
  EXPECT_EQ(hit.prefix, a);
  EXPECT_EQ(hit.n_tokens, 100);
}

TEST(SegmentedStore, FreezingADenseStoreGivesBackUnusedCapacity) {
  BlockPool pool;
  const Rows rows(300, 4);
  auto s = make_store("f16", pool);
  append(*s, rows, 0, 300);  // grows to 512 slots
  const size_t before = pool.in_use();
  SegmentedKvStore seg({}, std::move(s), 0);
  seg.freeze(make_store("f16", pool));
  EXPECT_LT(pool.in_use(), before);
  EXPECT_EQ(seg.parts()[0].store->n_slots(), 300);
}

std::shared_ptr<const KvPrefix> frozen(BlockPool& pool, const Rows& rows, int n) {
  auto s = make_store("f16", pool);
  append(*s, rows, 0, n);
  auto p = std::make_shared<KvPrefix>();
  p->layers = {{KvPart{std::shared_ptr<const KvStore>(std::move(s)), INT_MAX}}};
  p->n_tokens = n;
  return p;
}

TEST(PrefixCache, FindsTheLongestPrefixAndReplacesCoveredEntries) {
  BlockPool pool;
  const Rows rows(64, 9);
  PrefixCache cache(8, {0});
  std::vector<int> sys = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<int> turn1 = sys;
  turn1.insert(turn1.end(), {20, 21, 22});
  cache.insert("f16", turn1, frozen(pool, rows, int(turn1.size())));
  EXPECT_EQ(cache.size(), 1);

  // Another user: the system prompt matches.
  std::vector<int> other = sys;
  other.insert(other.end(), {30, 31});
  auto hit = cache.lookup("f16", other, int(other.size()) - 1);
  ASSERT_TRUE(hit.prefix);
  EXPECT_EQ(hit.n_tokens, 8);
  // Another codec never matches.
  EXPECT_FALSE(cache.lookup("q8_0", other, int(other.size()) - 1).prefix);
  // At most max_use tokens are taken (the last prompt token must be computed for its logits).
  hit = cache.lookup("f16", turn1, int(turn1.size()) - 1);
  EXPECT_EQ(hit.n_tokens, int(turn1.size()) - 1);

  // The next turn extends turn 1: it replaces it.
  std::vector<int> turn2 = turn1;
  turn2.insert(turn2.end(), {40, 41, 42, 43});
  cache.insert("f16", turn2, frozen(pool, rows, int(turn2.size())));
  EXPECT_EQ(cache.size(), 1);
  EXPECT_EQ(cache.lookup("f16", turn2, 100).n_tokens, int(turn2.size()));
}

TEST(PrefixCache, EvictsLeastRecentlyUsedAndFreesMemoryNobodyHolds) {
  BlockPool pool;
  const Rows rows(64, 9);
  PrefixCache cache(2, {0});
  cache.insert("f16", {1, 2, 3}, frozen(pool, rows, 3));
  cache.insert("f16", {4, 5, 6}, frozen(pool, rows, 3));
  EXPECT_EQ(cache.lookup("f16", {1, 2, 3, 9}, 3).n_tokens, 3);  // {1,2,3} is now the most recent
  cache.insert("f16", {7, 8, 9}, frozen(pool, rows, 3));              // over the limit: {4,5,6} goes
  EXPECT_EQ(cache.size(), 2);
  EXPECT_FALSE(cache.lookup("f16", {4, 5, 6, 1}, 3).prefix);
  EXPECT_EQ(cache.lookup("f16", {1, 2, 3, 1}, 3).n_tokens, 3);

  const size_t before = pool.in_use();
  EXPECT_GT(cache.bytes(), 0u);
  auto held = cache.lookup("f16", {7, 8, 9, 1}, 3).prefix;  // a sequence still reads this one
  std::set<const KvStore*> in_use;
  for (const auto& layer : held->layers)
    for (const auto& p : layer) in_use.insert(p.store.get());
  EXPECT_TRUE(cache.evict_lru(in_use));  // {1,2,3}: nobody else holds it
  EXPECT_LT(pool.in_use(), before);
  EXPECT_EQ(cache.size(), 1);
  EXPECT_FALSE(cache.evict_lru(in_use));  // {7,8,9} would free nothing while `held` reads it
  EXPECT_EQ(cache.size(), 1);
  held.reset();
  EXPECT_TRUE(cache.evict_lru());
  EXPECT_EQ(pool.in_use(), 0u);
}

}  // namespace
}  // namespace leanlm
