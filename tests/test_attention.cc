// The attention driver (query blocks, visible slot ranges, chunked online softmax, split decode)
// against a plain double-precision attention over the same keys and values.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "attention/attention.h"
#include "kv/block_codec.h"
#include "kv/block_pool.h"
#include "kv/kv_cache.h"
#include "kv/kv_config.h"
#include "kv/segmented_store.h"
#include "util/fp16.h"
#include "kv_test_util.h"

namespace leanlm {
namespace {

struct Case {
  const char* name;
  int n_head, n_head_kv, head_dim, window;
  int n_prompt;  // positions appended before the query batch
  int n_batch;   // tokens appended and queried together
  KvType type;
  int threads;
};

void check(const Case& c) {
  std::mt19937 rng(99);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int D = c.head_dim, KVH = c.n_head_kv, H = c.n_head, G = H / KVH;
  KvShape ks{KVH, D, c.window, c.n_batch, c.n_prompt + c.n_batch};
  BlockPool kv_pool;
  auto kv = make_kv_store(c.type, ks, kv_pool);
  const int total = c.n_prompt + c.n_batch;
  std::vector<float> K(size_t(total) * KVH * D), V(K.size());
  for (auto& x : K) x = nd(rng);
  for (auto& x : V) x = nd(rng);
  // Large-magnitude scores on some keys, as trained models produce (tests the online rescaling).
  for (int p = 0; p < total; p += 37) K[size_t(p) * KVH * D] = 30.f;
  // Feed the prompt in pieces no larger than a batch (what the engine does), then the query batch.
  for (int p0 = 0; p0 < c.n_prompt; p0 += c.n_batch)
    for (int p = p0; p < std::min(c.n_prompt, p0 + c.n_batch); ++p)
      kv->append(p, &K[size_t(p) * KVH * D], &V[size_t(p) * KVH * D]);
  for (int p = c.n_prompt; p < total; ++p) kv->append(p, &K[size_t(p) * KVH * D], &V[size_t(p) * KVH * D]);

  std::vector<float> q(size_t(c.n_batch) * H * D), out(q.size());
  for (auto& x : q) x = nd(rng) * 0.2f;
  std::vector<AttnToken> toks(c.n_batch);
  for (int t = 0; t < c.n_batch; ++t) toks[t] = {kv.get(), c.n_prompt + t, nullptr};
  ThreadPool pool(c.threads);
  Attention attn(pool.size());
  attn.run(pool, {H, KVH, D, c.window}, toks, q.data(), out.data());

  auto kv_round = [&](float x) { return c.type == KvType::F16 ? fp16_to_f32_ref(f32_to_fp16_ref(x)) : x; };
  for (int t = 0; t < c.n_batch; ++t) {
    const int p = c.n_prompt + t;
    const int lo = c.window > 0 ? std::max(0, p - c.window + 1) : 0;
    for (int hq = 0; hq < H; ++hq) {
      const int h = hq / G;
      const float* qv = &q[(size_t(t) * H + hq) * D];
      std::vector<double> s(p + 1, 0.0);
      double mx = -1e300;
      for (int kp = lo; kp <= p; ++kp) {
        for (int e = 0; e < D; ++e) s[kp] += double(qv[e]) * kv_round(K[(size_t(kp) * KVH + h) * D + e]);
        mx = std::max(mx, s[kp]);
      }
      double z = 0;
      for (int kp = lo; kp <= p; ++kp) z += std::exp(s[kp] - mx);
      for (int e = 0; e < D; ++e) {
        double o = 0;
        for (int kp = lo; kp <= p; ++kp) o += std::exp(s[kp] - mx) / z * kv_round(V[(size_t(kp) * KVH + h) * D + e]);
        ASSERT_NEAR(out[(size_t(t) * H + hq) * D + e], o, 2e-4 * (1 + std::fabs(o)))
            << c.name << ": token " << t << " head " << hq << " dim " << e;
      }
    }
  }
}

TEST(Attention, PromptBlockFullAttention) { check({"prompt", 4, 1, 64, 0, 0, 70, KvType::F32, 2}); }
TEST(Attention, PromptAfterContextGqa) { check({"gqa", 8, 2, 32, 0, 45, 40, KvType::F16, 2}); }
TEST(Attention, SlidingWindowRing) { check({"window", 4, 1, 64, 16, 50, 12, KvType::F16, 2}); }
TEST(Attention, DecodeSplitAcrossThreads) { check({"decode", 4, 1, 64, 0, 3000, 1, KvType::F16, 2}); }
TEST(Attention, DecodeSlidingWindowSplit) { check({"decode-window", 2, 1, 32, 600, 1500, 1, KvType::F32, 2}); }
TEST(Attention, LongerThanOneSlotChunk) { check({"chunks", 2, 1, 32, 0, 4500, 3, KvType::F16, 1}); }

// Attention over what a compressed store returns, computed the plain way: per query, the store's
// score of every visible slot (one at a time), a double-precision softmax, and its value rows.
void reference(const KvStore& kv, const std::vector<AttnToken>& toks, int H, int KVH, int D, const float* q,
               std::vector<double>& out) {
  const int G = H / KVH, n = kv.n_slots();
  const int32_t* sp = kv.slot_positions();
  out.assign(toks.size() * H * D, 0.0);
  std::vector<float> vrow(D);
  for (size_t t = 0; t < toks.size(); ++t)
    for (int hq = 0; hq < H; ++hq) {
      const int h = hq / G;
      const float* qv = q + (t * H + hq) * D;
      std::vector<double> s(n, -1e300);
      double mx = -1e300;
      for (int slot = 0; slot < n; ++slot) {
        if (sp[slot] < 0 || sp[slot] > toks[t].pos) continue;
        float x;
        kv.scores(h, qv, 1, D, slot, slot + 1, &x, 1);
        s[slot] = x;
        mx = std::max(mx, s[slot]);
      }
      double z = 0;
      for (int slot = 0; slot < n; ++slot)
        if (s[slot] > -1e300) z += std::exp(s[slot] - mx);
      for (int slot = 0; slot < n; ++slot) {
        if (s[slot] <= -1e300) continue;
        const float one = 1.f;
        std::fill(vrow.begin(), vrow.end(), 0.f);
        kv.accumulate(h, &one, 1, 1, slot, slot + 1, vrow.data(), D);
        for (int e = 0; e < D; ++e) out[(t * H + hq) * D + e] += std::exp(s[slot] - mx) / z * vrow[e];
      }
    }
}

// A compressed store with evicted holes, a MiKV low tier and ThinK (or rotation), several KV heads, two threads,
// passes of several query blocks (observers called concurrently), then decode steps: the driver
// must agree with the plain computation over the same store after every pass. Under
// ThreadSanitizer this is also the race test for stores with a low tier.
// A sequence that reads a shared prefix (a frozen part with hidden positions beyond its limit, then
// a store of its own) gets exactly the bits of one store holding the same tokens: decode split
// between threads, prompt blocks, more slots than one softmax chunk.
TEST(Attention, SharedPrefixLayoutGivesTheSameBits) {
  struct Layout {
    int shared, total, batch, threads;
  };
  for (const Layout& L : {Layout{3000, 4500, 1, 2}, Layout{2100, 2600, 1, 4}, Layout{1500, 3000, 16, 2},
                          Layout{1000, 1040, 24, 4}}) {
    SCOPED_TRACE(L.total);
    const int H = 6, KVH = 3, D = 64;
    std::mt19937 rng(L.total);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<float> K(size_t(L.total + 50) * KVH * D), V(K.size()), other(K.size());
    for (auto* v : {&K, &V, &other})
      for (auto& x : *v) x = nd(rng);
    BlockPool pool;
    const KvShape shape{KVH, D, 0, 64, 8192};
    auto row = [&](std::vector<float>& m, int p) { return &m[size_t(p) * KVH * D]; };
    auto whole = make_kv_store(KvType::F16, shape, pool);
    for (int p = 0; p < L.total; ++p) whole->append(p, row(K, p), row(V, p));
    // The cached part: the shared positions, then 50 of another conversation (hidden).
    auto cached = make_kv_store(KvType::F16, shape, pool);
    for (int p = 0; p < L.shared; ++p) cached->append(p, row(K, p), row(V, p));
    for (int p = L.shared; p < L.shared + 50; ++p) cached->append(p, row(other, p), row(other, p));
    SegmentedKvStore seg({{std::shared_ptr<const KvStore>(std::move(cached)), L.shared}},
                         make_kv_store(KvType::F16, shape, pool), 0);
    for (int p = L.shared; p < L.total; ++p) seg.append(p, row(K, p), row(V, p));

    std::vector<float> q(size_t(L.batch) * H * D), a(q.size()), b(q.size());
    for (auto& x : q) x = nd(rng) * 0.3f;
    ThreadPool threads(L.threads);
    Attention attn(threads.size());
    std::vector<AttnToken> ta(L.batch), tb(L.batch);
    for (int t = 0; t < L.batch; ++t) {
      ta[t] = {whole.get(), L.total - L.batch + t, nullptr};
      tb[t] = {&seg, L.total - L.batch + t, nullptr};
    }
    attn.run(threads, {H, KVH, D, 0}, ta, q.data(), a.data());
    attn.run(threads, {H, KVH, D, 0}, tb, q.data(), b.data());
    EXPECT_EQ(a, b);
  }
}

TEST(Attention, CompressedStoreWithHolesLowTierAndThink) {
  const int H = 4, KVH = 2, D = 64;
  struct Case {
    const char *codec, *evict;
    double think;
  };
  for (const Case& c : {Case{"q8_0:r=8", "h2o:keep=kivi2", 0.5}, Case{"q8_0:r=8", "scissorhands:keep=q4_0", 0.5},
                        Case{"q8_0:r=8", "snapkv", 0.5}, Case{"q4_0:r=8:rot=1", "h2o:keep=kivi2", 0}}) {
    SCOPED_TRACE(std::string(c.codec) + " " + c.evict);
    KvConfig cfg;
    cfg.codec = parse_codec(c.codec);
    cfg.evict = parse_evict(c.evict);
    parse_budget("60", cfg);
    cfg.think = c.think;
    BlockPool pool;
    auto kv = make_kv_store(cfg, KvShape{KVH, D, 0, 80, 4096}, pool, nullptr, nullptr);
    ThreadPool threads(2);
    Attention attn(threads.size());
    std::mt19937 rng(17);
    std::normal_distribution<float> nd(0.f, 1.f);
    int pos = 0;
    for (int pass = 0; pass < 10; ++pass) {
      const int n = pass < 4 ? 70 : 1;  // prompt blocks, then decode steps
      std::vector<float> k(size_t(KVH) * D), v(k.size()), q(size_t(n) * H * D), out(q.size());
      std::vector<AttnToken> toks;
      for (int t = 0; t < n; ++t) {
        for (auto& x : k) x = nd(rng);
        for (auto& x : v) x = nd(rng);
        kv->append(pos + t, k.data(), v.data());
        toks.push_back({kv.get(), pos + t, kv->observer()});
      }
      for (auto& x : q) x = nd(rng) * 0.3f;
      attn.run(threads, {H, KVH, D, 0}, toks, q.data(), out.data());
      std::vector<double> want;
      reference(*kv, toks, H, KVH, D, q.data(), want);
      // Compressed values accumulate with int16 coefficients, one step per block and row: at most
      // 32 tokens * (block's largest weight * 2 max |v|) / 65534 per block, and the blocks' largest
      // weights sum to at most 1. Values here are normal, |v| < 6.
      const double value_slack = 32.0 * 2 * 6 / 65534;
      for (size_t i = 0; i < out.size(); ++i)
        ASSERT_NEAR(out[i], want[i], value_slack + 1e-4 * (1 + std::fabs(want[i]))) << "pass " << pass << " element " << i;
      kv->after_pass();
      pos += n;
    }
    EXPECT_GT(kv->n_slots(), kv->n_live());  // holes were made
    EXPECT_EQ(pool.in_use(), kv->bytes());
  }
}

// Sparse decode attention: spans of 32 visible slots ranked by their best score over the query
// heads sharing a KV head, the best spans up to top_k slots kept, a softmax over those only, their
// values only. Against the plain computation of exactly
// that, for the dense f16 store and compressed stores whose keys are scored the cheap way (PQ
// lookups, 2-bit KIVI codes); with k at least the visible slots it is dense attention.
TEST(Attention, SparseDecodeKeepsTheTopSlots) {
  const int H = 6, KVH = 2, D = 64, G = H / KVH, n_prompt = 1500;
  Codebook book;  // PQ, d_sub = 2: [KVH][32][16][2]
  book.channels = 2, book.bits = 4;
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (int i = 0; i < KVH * D * 16; ++i) book.centroids.push_back(nd(rng));
  for (const char* codec : {"f16", "kivi2", "kivi2:sinks=4", "pq:v=kivi2"}) {
    SCOPED_TRACE(codec);
    KvConfig cfg;
    cfg.codec = parse_codec(codec);
    BlockPool pool;
    auto kv = make_kv_store(cfg, KvShape{KVH, D, 0, 1, n_prompt + 1}, pool, &book, &book);
    // Every position's keys and values as appended ([n_prompt + 1][KVH][D]).
    std::vector<float> K(size_t(n_prompt + 1) * KVH * D), V(K.size());
    for (int p = 0; p <= n_prompt; ++p) {
      float* k = &K[size_t(p) * KVH * D];
      float* v = &V[size_t(p) * KVH * D];
      for (int i = 0; i < KVH * D; ++i) k[i] = nd(rng), v[i] = nd(rng);
      if (p % 97 == 0) k[0] = k[D] = 12.f;  // a few keys that matter much more than the rest
      kv->append(p, k, v);
    }
    // The f16 store's reference never goes through the store: its keys and values are the appended
    // ones rounded to fp16, scored and summed here in plain loops. The compressed stores' scores and
    // value rows come from the store one slot at a time (those primitives are checked against the
    // codecs' storage definitions in test_kv_codecs); what this test checks there is the driver's
    // span choice, softmax and accumulation over them.
    const bool plain_reference = std::string(codec) == "f16";
    const auto f16 = [](float x) { return fp16_to_f32_ref(f32_to_fp16_ref(x)); };
    const auto key_at = [&](int slot, int h, int e) {
      return f16(K[(size_t(kv->slot_positions()[slot]) * KVH + h) * D + e]);
    };
    std::vector<float> q(size_t(H) * D);
    for (auto& x : q) x = nd(rng) * 0.3f;
    for (int i = 0; i < H; ++i) q[size_t(i) * D] = 1.f;
    for (int top_k : {40, 300, n_prompt + 1}) {
      ThreadPool threads(1);
      Attention attn(threads.size());
      std::vector<float> out(q.size());
      attn.run(threads, {H, KVH, D, 0}, {{kv.get(), n_prompt, nullptr, top_k}}, q.data(), out.data());
      {  // the same choice whatever the thread count (sparse steps are never split)
        ThreadPool two(2);
        Attention attn2(two.size());
        std::vector<float> out2(q.size());
        attn2.run(two, {H, KVH, D, 0}, {{kv.get(), n_prompt, nullptr, top_k}}, q.data(), out2.data());
        ASSERT_EQ(out, out2) << "k " << top_k;
      }
      const int n = kv->n_slots();
      for (int h = 0; h < KVH; ++h) {
        std::vector<float> s(size_t(G) * n), best(n, -INFINITY);
        for (int g = 0; g < G; ++g)
          for (int slot = 0; slot < n; ++slot) {
            if (kv->slot_positions()[slot] < 0) continue;  // an empty slot of a page: never visible
            float& x = s[size_t(g) * n + slot];
            if (plain_reference) {
              double dot = 0;
              for (int e = 0; e < D; ++e) dot += double(q[size_t(h * G + g) * D + e]) * key_at(slot, h, e);
              x = float(dot);
            } else {
              kv->scores(h, &q[size_t(h * G + g) * D], 1, D, slot, slot + 1, &x, 1);
            }
            best[slot] = std::max(best[slot], s[size_t(g) * n + slot]);
          }
        // Visible slots in order, cut into spans of 32; the spans with the best scores are kept.
        std::vector<int> vis;
        for (int slot = 0; slot < n; ++slot)
          if (best[slot] > -INFINITY) vis.push_back(slot);
        const int n_spans = (int(vis.size()) + 31) / 32;
        int keep = std::min(n_spans, (top_k + 31) / 32);
        std::vector<float> span_best(n_spans, -INFINITY);
        for (size_t c = 0; c < vis.size(); ++c) span_best[c / 32] = std::max(span_best[c / 32], best[vis[c]]);
        std::vector<int> span_order(n_spans);
        for (int i = 0; i < n_spans; ++i) span_order[i] = i;
        // The first span (sinks) and those holding the newest 32 slots come first, whatever their scores.
        const int first_recent = std::max(0, int(vis.size()) - 32) / 32;
        const auto rank = [&](int sp) { return sp == 0 || sp >= first_recent ? INFINITY : span_best[sp]; };
        std::stable_sort(span_order.begin(), span_order.end(), [&](int a, int b) { return rank(a) > rank(b); });
        const int n_reserved = 1 + n_spans - std::max(1, first_recent);
        keep = std::max(keep, std::min(n_spans, n_reserved));
        std::vector<int> order;
        for (int k = 0; k < keep; ++k)
          for (size_t c = size_t(span_order[k]) * 32; c < std::min(vis.size(), size_t(span_order[k] + 1) * 32); ++c)
            order.push_back(vis[c]);
        for (int g = 0; g < G; ++g) {
          double mx = -1e300, z = 0;
          for (int slot : order) mx = std::max(mx, double(s[size_t(g) * n + slot]));
          std::vector<double> want(D, 0.0);
          std::vector<float> vrow(D);
          for (int slot : order) {
            const double w = std::exp(s[size_t(g) * n + slot] - mx);
            z += w;
            const float one = 1.f;
            std::fill(vrow.begin(), vrow.end(), 0.f);
            if (plain_reference)
              for (int e = 0; e < D; ++e) vrow[e] = f16(V[(size_t(kv->slot_positions()[slot]) * KVH + h) * D + e]);
            else
              kv->accumulate(h, &one, 1, 1, slot, slot + 1, vrow.data(), D);
            for (int e = 0; e < D; ++e) want[e] += w * vrow[e];
          }
          // int16 coefficients of compressed values; none for the f16 store, whose reference is exact
          const double value_slack = plain_reference ? 0.0 : 32.0 * 2 * 6 / 65534;
          for (int e = 0; e < D; ++e)
            ASSERT_NEAR(out[size_t(h * G + g) * D + e], want[e] / z, value_slack + 1e-4 * (1 + std::fabs(want[e] / z)))
                << "k " << top_k << " head " << h * G + g << " dim " << e;
        }
      }
    }
  }
}

// Sparse attention is for decode steps only: a prompt's tokens (here the 33rd of a block of 33,
// alone in its query block) are computed densely, so chunking never changes them.
TEST(Attention, SparseLeavesPromptTokensDense) {
  const int H = 2, KVH = 1, D = 32, n = 600, T = 33;
  BlockPool pool;
  auto kv = make_kv_store(KvType::F16, KvShape{KVH, D, 0, T, n + T}, pool);
  const auto K = [] {
    std::mt19937 rng(3);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<float> x(size_t(n + T) * KVH * D * 2);
    for (auto& v : x) v = nd(rng);
    return x;
  }();
  for (int p = 0; p < n + T; ++p) kv->append(p, &K[size_t(p) * D], &K[size_t(n + T + p) * D]);
  std::vector<float> q(size_t(T) * H * D);
  for (size_t i = 0; i < q.size(); ++i) q[i] = K[i % K.size()] * 0.5f;
  ThreadPool threads(1);
  Attention attn(threads.size());
  std::vector<float> dense(q.size()), sparse(q.size());
  std::vector<AttnToken> toks(T);
  for (int t = 0; t < T; ++t) toks[t] = {kv.get(), n + t, nullptr, 0};
  attn.run(threads, {H, KVH, D, 0}, toks, q.data(), dense.data());
  for (auto& t : toks) t.top_k = 64;
  attn.run(threads, {H, KVH, D, 0}, toks, q.data(), sparse.data());
  EXPECT_EQ(dense, sparse);
  // Alone in the batch, the last token is a decode step: sparse, so different.
  std::vector<float> one(size_t(H) * D);
  attn.run(threads, {H, KVH, D, 0}, {toks.back()}, q.data() + size_t(T - 1) * H * D, one.data());
  EXPECT_NE(one, std::vector<float>(dense.end() - H * D, dense.end()));
}

// Sparse selection on designed data, against plain double loops over the keys and values as
// appended (an f32 store holds them exactly). One KV head, two query heads; the query is e_0, so a
// slot's score is its key's channel 0; slot s holds the one-hot value of its span s / 32, so the
// output of a query head is, per channel e, the softmax weight that span e received: which spans
// were kept, and with how many slots each, can be read off the output.
struct SparseCase {
  int n;                         // slots (positions 0 .. n-1; the query at n-1)
  int top_k;
  std::vector<float> score;      // per slot: channel 0 of its key (NaN allowed)
  std::vector<int> want_spans;   // the spans attention must keep
};
void check_sparse(const SparseCase& c) {
  const int H = 2, KVH = 1, D = 64;
  ASSERT_LE((c.n + 31) / 32, D);
  BlockPool pool;
  auto kv = make_kv_store(KvType::F32, KvShape{KVH, D, 0, 1, c.n}, pool);
  for (int p = 0; p < c.n; ++p) {
    std::vector<float> k(D, 0.f), v(D, 0.f);
    k[0] = c.score[p], k[1] = -10.f;  // the second query head: a tie everywhere, below every span's best
    v[p / 32] = 1.f;
    kv->append(p, k.data(), v.data());
  }
  std::vector<float> q(size_t(H) * D, 0.f), out(q.size());
  q[0] = 1.f, q[D + 1] = 1.f;
  ThreadPool threads(1);
  Attention attn(threads.size());
  attn.run(threads, {H, KVH, D, 0}, {{kv.get(), c.n - 1, nullptr, c.top_k}}, q.data(), out.data());
  // The reference: the softmax of head 0 over exactly the slots of want_spans.
  std::vector<int> slots;
  for (int sp : c.want_spans)
    for (int p = sp * 32; p < std::min(c.n, sp * 32 + 32); ++p) slots.push_back(p);
  for (int hq = 0; hq < H; ++hq) {
    double mx = -INFINITY, z = 0;
    for (int p : slots) mx = std::max(mx, hq == 0 ? double(c.score[p]) : -10.0);
    std::vector<double> want(D, 0.0);
    for (int p : slots) {
      const double w = std::exp((hq == 0 ? double(c.score[p]) : -10.0) - mx);
      z += w, want[p / 32] += w;
    }
    for (int e = 0; e < D; ++e)
      ASSERT_NEAR(out[size_t(hq) * D + e], want[e] / z, 1e-6) << "head " << hq << " span " << e << " (weight of 0: not kept)";
  }
}

// The first span (the sinks) and the spans holding the newest 32 slots (here 640 slots: span 19)
// are always kept; the others go by best score, equal best scores to the earlier span, so the
// choice is the same on every run, and exactly ceil(K / 32) spans are kept (K = 70: 3 spans, 96
// slots; the rest get no weight).
TEST(SparseAttention, TiesGoToTheEarlierSpanAndKeepCeilKOver32Spans) {
  check_sparse({640, 70, std::vector<float>(640, 0.f), {0, 1, 19}});
  // K a multiple of 32 keeps K slots exactly: here the reserved spans alone.
  check_sparse({640, 64, std::vector<float>(640, 0.f), {0, 19}});
  // A tie between a later and an earlier span, both below the best: the earlier of the two.
  std::vector<float> s(640, 0.f);
  s[400] = 3.f, s[100] = 1.f, s[600] = 1.f;
  check_sparse({640, 128, s, {0, 3, 12, 19}});
}

// NaN scores (an fp16 key that overflowed) rank last: a span of NaN keys outside the reserved ones
// is never kept while other spans remain, and the output stays finite.
TEST(SparseAttention, NaNKeysRankLast) {
  std::vector<float> s(640, 0.f);
  for (int p = 32; p < 64; ++p) s[p] = NAN;      // span 1, which would win every tie
  for (int p = 320; p < 352; ++p) s[p] = NAN;    // span 10
  check_sparse({640, 128, s, {0, 2, 3, 19}});
}

// A NaN query (a model that has already diverged) gives NaN outputs, as dense attention does, and
// no crash: every score is NaN, so the reserved spans and then the earliest are kept.
TEST(SparseAttention, NaNQueryGivesNaNLikeDense) {
  const int H = 2, KVH = 1, D = 32, n = 1200;
  BlockPool pool;
  auto kv = make_kv_store(KvType::F16, KvShape{KVH, D, 0, 1, n}, pool);
  std::mt19937 rng(9);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> k(D), v(D);
  for (int p = 0; p < n; ++p) {
    for (auto& x : k) x = nd(rng);
    for (auto& x : v) x = nd(rng);
    kv->append(p, k.data(), v.data());
  }
  std::vector<float> q(size_t(H) * D, 0.5f);
  q[3] = NAN;  // head 0 only
  for (int n_threads : {1, 2}) {  // two threads split the dense step's slots: the merged result too
    ThreadPool threads(n_threads);
    Attention attn(threads.size());
    for (int top_k : {0, 96}) {
      std::vector<float> out(q.size());
      attn.run(threads, {H, KVH, D, 0}, {{kv.get(), n - 1, nullptr, top_k}}, q.data(), out.data());
      for (int e = 0; e < D; ++e) {
        EXPECT_TRUE(std::isnan(out[e])) << "threads " << n_threads << " k " << top_k << " dim " << e;
        EXPECT_TRUE(std::isfinite(out[D + e])) << "threads " << n_threads << " k " << top_k << " dim " << e;
      }
    }
  }
}

// The best-scoring spans are kept wherever they are, a short last span (the newest tokens, here
// 16) counting its own slots only. The recent window is the newest 32 slots: with a short last
// span, the span before it too (656 slots: spans 19 and 20, with the sinks' span 0 three reserved).
TEST(SparseAttention, KeepsTheBestSpansWhereverTheyAre) {
  std::vector<float> s(656, 0.f);
  s[650] = 5.f, s[300] = 4.f, s[100] = 3.f, s[40] = 2.f;
  check_sparse({656, 192, s, {0, 1, 3, 9, 19, 20}});
  check_sparse({656, 160, s, {0, 3, 9, 19, 20}});
  check_sparse({656, 128, s, {0, 9, 19, 20}});
}

// Sinks and the recent window are kept however low their scores, even where they alone exceed K.
TEST(SparseAttention, SinksAndRecentWindowAreAlwaysKept) {
  std::vector<float> low(656, 1.f);
  for (int p = 0; p < 32; ++p) low[p] = -3.f;     // the span of the sinks (the first 4 positions)
  for (int p = 608; p < 656; ++p) low[p] = -3.f;  // the newest tokens, the query's own included
  check_sparse({656, 64, low, {0, 19, 20}});
  check_sparse({656, 160, low, {0, 1, 2, 19, 20}});
  std::vector<float> even(640, 1.f);  // 640 slots: the newest 32 are span 19 alone
  for (int p = 576; p < 640; ++p) even[p] = -3.f;
  check_sparse({640, 96, even, {0, 1, 19}});
}

// What an eviction policy is told: per query token and KV head, the softmax weights averaged over
// the query heads, for every visible key. Checked against the plain computation, both from the
// exponentials attention keeps during the pass and (over a small limit) from scores computed again.
struct Recorder : AttentionObserver {
  std::mutex mu;
  std::map<std::pair<int, int>, std::map<int, float>> got;  // (q_pos, h) -> key position -> weight
  std::map<std::pair<int, int>, int> calls;                  // (q_pos, h) -> reports
  bool wants_weights() const override { return true; }
  void on_weights(int h, int q_pos, const int32_t* key_pos, const float* w, int n) override {
    std::lock_guard<std::mutex> lock(mu);
    ++calls[{q_pos, h}];
    auto& m = got[{q_pos, h}];
    for (int j = 0; j < n; ++j)
      if (key_pos[j] >= 0) m[key_pos[j]] += w[j];
  }
};

// Measured (LEANLM_ERROR_STATS=1, native, avx2, scalar): median 0.26, p99 1.1, max 2.4 units.
constexpr double kWeightRounding = 6;
TEST(Attention, ReportsTheFinalWeightsToObservers) {
  const int H = 4, KVH = 2, D = 32, n_prompt = 2100, n_batch = 40;  // more than one slot chunk
  for (size_t limit : {size_t(1) << 30, size_t(16)}) {
    SCOPED_TRACE(limit > 16 ? "kept" : "recomputed");
    testing_kv::ErrorStats st(std::string("weights ") + (limit > 16 ? "kept" : "recomputed"));
    BlockPool kv_pool;
    auto kv = make_kv_store(KvType::F32, KvShape{KVH, D, 0, n_batch, n_prompt + n_batch}, kv_pool);
    std::mt19937 rng(5);
    std::normal_distribution<float> nd(0.f, 1.f);
    // The keys as appended: an f32 store holds them exactly, so the reference needs no store.
    std::vector<float> K(size_t(n_prompt + n_batch) * KVH * D), v(size_t(KVH) * D);
    for (int p = 0; p < n_prompt + n_batch; ++p) {
      float* k = &K[size_t(p) * KVH * D];
      for (int e = 0; e < KVH * D; ++e) k[e] = nd(rng);
      for (auto& x : v) x = nd(rng);
      kv->append(p, k, v.data());
    }
    std::vector<float> q(size_t(n_batch) * H * D), out(q.size());
    for (auto& x : q) x = nd(rng) * 0.5f;
    Recorder rec;
    std::vector<AttnToken> toks;
    for (int t = 0; t < n_batch; ++t) toks.push_back({kv.get(), n_prompt + t, &rec});
    ThreadPool threads(2);
    Attention attn(threads.size());
    attn.set_kept_weights_limit(limit);
    attn.run(threads, {H, KVH, D, 0}, toks, q.data(), out.data());
    const int G = H / KVH;
    for (int t = 0; t < n_batch; ++t)
      for (int h = 0; h < KVH; ++h) {
        const auto& got = rec.got[{n_prompt + t, h}];
        ASSERT_EQ((rec.calls[{n_prompt + t, h}]), 1) << "one report per token and KV head, with every key it sees";
        ASSERT_EQ(int(got.size()), n_prompt + t + 1);
        std::vector<double> want(n_prompt + t + 1, 0.0), mag(want.size(), 0.0);  // mag: largest sum |q_e k_e|
        for (int g = 0; g < G; ++g) {
          const float* qv = &q[(size_t(t) * H + h * G + g) * D];
          std::vector<double> s(want.size());
          double mx = -1e300, z = 0;
          for (size_t p = 0; p < s.size(); ++p) {
            s[p] = 0;
            double m = 0;
            for (int e = 0; e < D; ++e) s[p] += double(qv[e]) * K[(p * KVH + h) * D + e], m += std::fabs(qv[e] * K[(p * KVH + h) * D + e]);
            mx = std::max(mx, s[p]), mag[p] = std::max(mag[p], m);
          }
          for (double x : s) z += std::exp(x - mx);
          for (size_t p = 0; p < s.size(); ++p) want[p] += std::exp(s[p] - mx) / z / G;
        }
        // A weight's relative error is about its score's float rounding (u sum |q_e k_e|) plus that
        // of the exponential and the normalising sum: unit u (1 + mag) weight.
        for (size_t p = 0; p < want.size(); ++p)
          ASSERT_TRUE(st.check(got.at(int(p)), want[p], testing_kv::kUnitRoundoff * (1 + mag[p]) * want[p], kWeightRounding))
              << "token " << t << " head " << h << " key " << p << ": " << got.at(int(p)) << " vs " << want[p];
      }
  }
}

}  // namespace
}  // namespace leanlm
