#include "engine/calibrate.h"

#include <algorithm>

#include "util/error.h"
#include "util/progress.h"

namespace leanlm {

namespace {

uint64_t fnv1a(uint64_t h, const void* data, size_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

}  // namespace

std::vector<int> calibration_tokens(const Engine& engine, const std::string& text, int n_tokens) {
  return engine.tokenizer().encode(text.substr(0, std::min(text.size(), size_t(n_tokens) * 8 + 4096)), true, false);
}

int calibration_chunks(size_t text_tokens, int ctx, int n_tokens) {
  const int n_chunks = int(std::min<size_t>(text_tokens / ctx, size_t(std::max(1, n_tokens / ctx))));
  if (n_chunks == 0) fail(strfmt("calibration text: %zu tokens is less than one chunk of %d (use shorter chunks)", text_tokens, ctx));
  return n_chunks;
}

void feed_chunks(Engine& engine, const std::vector<int>& text, int ctx, int n_chunks, const char* label, bool progress) {
  ProgressBar bar(label, progress ? n_chunks : 0);
  for (int ci = 0; ci < n_chunks; ++ci) {
    std::vector<int> chunk(text.begin() + int64_t(ci) * ctx, text.begin() + int64_t(ci + 1) * ctx);
    if (engine.tokenizer().add_bos()) chunk[0] = engine.tokenizer().bos();
    auto seq = engine.new_sequence();
    engine.feed(*seq, chunk);
    bar.update(ci + 1);
  }
  bar.finish();
}

CodebookKey codebook_key(const Model& model) {
  const ModelConfig& c = model.config();
  uint64_t h = 0xcbf29ce484222325ull;
  h = fnv1a(h, c.arch.data(), c.arch.size());
  const int dims[] = {c.n_layer, c.n_embd, c.n_head, c.n_head_kv, c.head_dim, c.n_vocab};
  h = fnv1a(h, dims, sizeof dims);
  for (const LayerWeights& w : model.layers()) {
    h = fnv1a(h, w.wk.data, w.wk.row_bytes * w.wk.n_out);
    h = fnv1a(h, w.wv.data, w.wv.row_bytes * w.wv.n_out);
  }
  return {h, c.n_layer, c.n_head_kv, c.head_dim, model.file().path()};
}

QueryWeighting parse_query_weighting(const std::string& text) {
  if (text == "none") return QueryWeighting::None;
  if (text == "diag") return QueryWeighting::Diagonal;
  if (text == "full") return QueryWeighting::Full;
  fail("--query-aware must be none, diag or full, got '" + text + "'");
}

std::vector<CodebookSet> learn_codebooks(Engine& engine, const std::vector<int>& text, int ctx, int n_tokens,
                                         const std::vector<CodecSpec>& specs, int iters, uint64_t seed, bool progress,
                                         QueryWeighting weighting, int skip_first) {
  const ModelConfig& mc = engine.model().config();
  const int L = mc.n_layer, KVH = mc.n_head_kv, H = mc.n_head, D = mc.head_dim, row = KVH * D;
  int cmax = 1;  // query moments are kept in diagonal blocks of the widest group (groups nest)
  for (const CodecSpec& s : specs) {
    if (!s.needs_codebooks()) fail(s.name() + ": only CQ (cq-*) and PQ (pq) codecs have codebooks to learn");
    if (D % s.cq_channels != 0) fail(strfmt("%s: head size %d is not a multiple of %d", s.name().c_str(), D, s.cq_channels));
    if (s.kind == CodecSpec::Kind::PQ && (D / s.cq_channels) % 4 != 0)
      fail(strfmt("%s: head size %d does not split into a multiple of 4 sub-spaces", s.name().c_str(), D));
    cmax = std::max(cmax, s.cq_channels);
  }
  for (const CodecSpec& s : specs)
    if (cmax % s.cq_channels != 0) fail("calibrate: group sizes must divide each other (1, 2, 4, 8)");

  const int n_chunks = calibration_chunks(text.size(), ctx, n_tokens);
  if (skip_first < 0 || skip_first >= ctx) fail(strfmt("calibrate: cannot leave out %d positions of chunks of %d", skip_first, ctx));
  const int N = n_chunks * (ctx - skip_first);

  // Activations: [layer][token][KVH * D] for keys and values; query moments
  // [layer][KVH][D / cmax][cmax][cmax], summed over the queries of each KV head's group.
  std::vector<std::vector<float>> K(L), V(L);
  std::vector<std::vector<double>> S(L);
  for (int l = 0; l < L; ++l) {
    K[l].reserve(size_t(N) * row), V[l].reserve(size_t(N) * row);
    if (weighting != QueryWeighting::None) S[l].assign(size_t(KVH) * D * cmax, 0.0);
  }
  const int group_of = H / KVH;
  engine.forward().set_kv_tap([&](int l, int pos, const float* q, const float* k, const float* v) {
    if (pos < skip_first) return;
    K[l].insert(K[l].end(), k, k + row);
    V[l].insert(V[l].end(), v, v + row);
    if (weighting == QueryWeighting::None) return;
    for (int hd = 0; hd < H; ++hd) {
      const float* qh = q + size_t(hd) * D;
      double* s = S[l].data() + size_t(hd / group_of) * D * cmax;
      for (int b = 0; b < D; b += cmax)
        for (int i = 0; i < cmax; ++i)
          for (int j = 0; j < cmax; ++j) s[(size_t(b) + i) * cmax + j] += double(qh[b + i]) * qh[b + j];
    }
  });
  feed_chunks(engine, text, ctx, n_chunks, "activations", progress);
  engine.forward().set_kv_tap(nullptr);

  std::vector<CodebookSet> sets;
  int jobs = 0, done = 0;
  for (const CodecSpec& s : specs) jobs += L * (s.kind == CodecSpec::Kind::PQ ? 1 : 2) * KVH * (D / s.cq_channels);
  ProgressBar bar("k-means", progress ? jobs : 0);
  for (const CodecSpec& s : specs) {
    CodebookSet set;
    set.channels = s.cq_channels, set.bits = s.bits;
    const int c = s.cq_channels, k = 1 << s.bits, G = D / c;
    const bool keys_only = s.kind == CodecSpec::Kind::PQ;
    set.books.key.resize(L);
    set.books.value.resize(L);
    std::vector<float> pts(size_t(N) * c);
    std::vector<double> block(size_t(c) * c);
    for (int l = 0; l < L; ++l)
      for (int side = 0; side < 2; ++side) {
        Codebook& book = side == 0 ? set.books.key[l] : set.books.value[l];
        book.channels = c, book.bits = s.bits;
        book.centroids.assign(size_t(KVH) * G * k * c, 0.f);
        if (side == 1 && keys_only) continue;  // PQ: values live in another codec
        const bool metric = side == 0 && weighting != QueryWeighting::None;
        if (metric) book.metric.resize(size_t(KVH) * G * c * c);
        const std::vector<float>& src = side == 0 ? K[l] : V[l];
        for (int h = 0; h < KVH; ++h)
          for (int g = 0; g < G; ++g) {
            for (int t = 0; t < N; ++t)
              for (int e = 0; e < c; ++e) pts[size_t(t) * c + e] = src[size_t(t) * row + h * D + g * c + e];
            const uint64_t job_seed = seed * 1000003u + uint64_t(((l * 2 + side) * KVH + h) * G + g);
            std::vector<float> cen;
            if (metric) {
              // The c x c block of group g inside the cmax x cmax block that holds it.
              const int b = g * c / cmax * cmax, off = g * c - b;
              const double* sb = S[l].data() + (size_t(h) * D + b) * cmax;
              for (int i = 0; i < c; ++i)
                for (int j = 0; j < c; ++j) block[size_t(i) * c + j] = sb[size_t(off + i) * cmax + off + j];
              const std::vector<float> U = metric_factor(block.data(), c, weighting == QueryWeighting::Diagonal);
              std::copy(U.begin(), U.end(), book.metric.begin() + (size_t(h) * G + g) * c * c);
              cen = kmeans_in_metric(pts.data(), N, c, k, U.data(), job_seed, iters, engine.pool().size());
            } else {
              cen = kmeans(pts.data(), N, c, k, job_seed, iters, engine.pool().size());
            }
            std::copy(cen.begin(), cen.end(), book.centroids.begin() + (size_t(h) * G + g) * k * c);
            bar.update(++done);
          }
      }
    sets.push_back(std::move(set));
  }
  bar.finish();
  return sets;
}

}  // namespace leanlm
