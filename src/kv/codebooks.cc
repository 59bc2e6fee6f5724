#include "kv/codebooks.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "util/error.h"

namespace leanlm {

namespace {

// Version 1 files have no flags word and no metrics; they are still read.
constexpr char kMagic[8] = {'L', 'L', 'M', 'C', 'Q', 0, 0, 2};
constexpr char kMagicV1[8] = {'L', 'L', 'M', 'C', 'Q', 0, 0, 1};
constexpr uint32_t kHasKeyMetric = 1;

float dist2(const float* a, const float* b, int d) {
  float s = 0;
  for (int e = 0; e < d; ++e) s += (a[e] - b[e]) * (a[e] - b[e]);
  return s;
}

}  // namespace

std::vector<float> kmeans(const float* x, int n, int d, int k, uint64_t seed, int iters, int n_threads) {
  if (n <= 0) fail("k-means: no calibration points");
  std::mt19937_64 rng(seed);
  std::vector<float> cen(size_t(k) * d);
  // k-means++: each next centre drawn with probability proportional to the squared distance to
  // the nearest centre chosen so far.
  std::vector<float> best(n, FLT_MAX);
  int first = int(rng() % uint64_t(n));
  std::copy(x + size_t(first) * d, x + size_t(first + 1) * d, cen.begin());
  for (int c = 1; c < k; ++c) {
    double total = 0;
    const float* prev = &cen[size_t(c - 1) * d];
    for (int i = 0; i < n; ++i) {
      best[i] = std::min(best[i], dist2(x + size_t(i) * d, prev, d));
      total += best[i];
    }
    int pick = int(rng() % uint64_t(n));
    if (total > 0) {
      double r = std::uniform_real_distribution<double>(0, total)(rng);
      for (int i = 0; i < n; ++i) {
        r -= best[i];
        if (r <= 0) {
          pick = i;
          break;
        }
      }
    }
    std::copy(x + size_t(pick) * d, x + size_t(pick + 1) * d, cen.begin() + size_t(c) * d);
  }
  // Lloyd iterations; the assignment step is split between threads (deterministic: each point's
  // nearest centre does not depend on the split).
  std::vector<int> assign(n, -1);
  const int nth = std::max(1, std::min(n_threads, n / 1024 + 1));
  for (int it = 0; it < iters; ++it) {
    std::vector<int> changed(nth, 0);
    // |x - c|^2 = |x|^2 - 2 x.c + |c|^2; centroids transposed ([d][k]) so the loop over them vectorises.
    std::vector<float> ct(size_t(d) * k), cn(k, 0.f);
    for (int c = 0; c < k; ++c)
      for (int e = 0; e < d; ++e) {
        ct[size_t(e) * k + c] = cen[size_t(c) * d + e];
        cn[c] += cen[size_t(c) * d + e] * cen[size_t(c) * d + e];
      }
    auto work = [&](int t) {
      std::vector<float> dist(k);
      for (int i = int(int64_t(n) * t / nth); i < int(int64_t(n) * (t + 1) / nth); ++i) {
        const float* p = x + size_t(i) * d;
        std::copy(cn.begin(), cn.end(), dist.begin());
        for (int e = 0; e < d; ++e) {
          const float m = -2.f * p[e];
          const float* row = &ct[size_t(e) * k];
          for (int c = 0; c < k; ++c) dist[c] += m * row[c];
        }
        const int bi = int(std::min_element(dist.begin(), dist.end()) - dist.begin());
        if (bi != assign[i]) assign[i] = bi, ++changed[t];
      }
    };
    std::vector<std::thread> pool;
    for (int t = 1; t < nth; ++t) pool.emplace_back(work, t);
    work(0);
    for (auto& th : pool) th.join();
    int n_changed = 0;
    for (int c : changed) n_changed += c;
    if (n_changed == 0) break;
    std::vector<double> sum(size_t(k) * d, 0.0);
    std::vector<int> cnt(k, 0);
    for (int i = 0; i < n; ++i) {
      ++cnt[assign[i]];
      for (int e = 0; e < d; ++e) sum[size_t(assign[i]) * d + e] += x[size_t(i) * d + e];
    }
    for (int c = 0; c < k; ++c)
      if (cnt[c] > 0)  // an empty cluster keeps its centre
        for (int e = 0; e < d; ++e) cen[size_t(c) * d + e] = float(sum[size_t(c) * d + e] / cnt[c]);
  }
  return cen;
}

std::vector<float> metric_factor(const double* S, int d, bool diagonal) {
  double mean_diag = 0;
  for (int e = 0; e < d; ++e) mean_diag += S[e * d + e] / d;
  const double ridge = mean_diag > 0 ? 1e-3 * mean_diag : 1.0;
  std::vector<double> L(size_t(d) * d, 0.0);  // lower Cholesky factor of S + ridge I
  for (int i = 0; i < d; ++i)
    for (int j = 0; j <= i; ++j) {
      if (diagonal && i != j) continue;
      double v = S[i * d + j] + (i == j ? ridge : 0.0);
      if (!diagonal)
        for (int k = 0; k < j; ++k) v -= L[i * d + k] * L[j * d + k];
      L[i * d + j] = i == j ? std::sqrt(std::max(v, ridge)) : v / L[j * d + j];
    }
  std::vector<float> U(size_t(d) * d, 0.f);
  for (int i = 0; i < d; ++i)
    for (int j = 0; j <= i; ++j) U[size_t(j) * d + i] = float(L[size_t(i) * d + j]);
  return U;
}

std::vector<float> kmeans_in_metric(const float* x, int n, int d, int k, const float* U, uint64_t seed, int iters,
                                    int n_threads) {
  std::vector<float> y(size_t(n) * d);
  for (int i = 0; i < n; ++i)
    for (int r = 0; r < d; ++r) {
      float v = 0;
      for (int e = r; e < d; ++e) v += U[r * d + e] * x[size_t(i) * d + e];
      y[size_t(i) * d + r] = v;
    }
  std::vector<float> cen = kmeans(y.data(), n, d, k, seed, iters, n_threads);
  for (int c = 0; c < k; ++c) {  // back-substitution: U z = y_c
    float* z = &cen[size_t(c) * d];
    for (int r = d - 1; r >= 0; --r) {
      float v = z[r];
      for (int e = r + 1; e < d; ++e) v -= U[r * d + e] * z[e];
      z[r] = v / U[r * d + r];
    }
  }
  return cen;
}

void save_codebooks(const std::string& path, const CodebookKey& key, const std::vector<CodebookSet>& sets) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail(path + ": cannot write");
    auto u32 = [&](uint32_t v) { out.write(reinterpret_cast<const char*>(&v), 4); };
    out.write(kMagic, 8);
    out.write(reinterpret_cast<const char*>(&key.fingerprint), 8);
    u32(key.n_layer), u32(key.n_kv_head), u32(key.head_dim), u32(uint32_t(sets.size()));
    auto floats = [&](const std::vector<float>& v) {
      out.write(reinterpret_cast<const char*>(v.data()), std::streamsize(v.size() * 4));
    };
    for (const CodebookSet& s : sets) {
      const bool metric = !s.books.key.empty() && !s.books.key[0].metric.empty();
      u32(s.channels), u32(s.bits), u32(metric ? kHasKeyMetric : 0);
      for (int l = 0; l < key.n_layer; ++l) {
        floats(s.books.key[l].centroids);
        if (metric) floats(s.books.key[l].metric);
        floats(s.books.value[l].centroids);
      }
    }
    if (!out.flush()) fail(path + ": write failed");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) fail(path + ": cannot rename the finished file into place: " + ec.message());
}

ModelCodebooks load_codebooks(const std::string& path, const CodebookKey& key, const CodecSpec& spec) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path + ": cannot open the codebook file");
  struct {
    int n_layer, n_head_kv, head_dim;
  } c{key.n_layer, key.n_kv_head, key.head_dim};
  char magic[8];
  uint64_t fp = 0;
  uint32_t hdr[4] = {};
  in.read(magic, 8);
  in.read(reinterpret_cast<char*>(&fp), 8);
  in.read(reinterpret_cast<char*>(hdr), 16);
  const bool v1 = in && std::memcmp(magic, kMagicV1, 8) == 0;
  if (!in || (!v1 && std::memcmp(magic, kMagic, 8) != 0)) fail(path + ": not a leanlm codebook file");
  if (fp != key.fingerprint || hdr[0] != uint32_t(c.n_layer) || hdr[1] != uint32_t(c.n_head_kv) ||
      hdr[2] != uint32_t(c.head_dim))
    fail(path + ": these codebooks were calibrated for a different model; run `leanlm calibrate` for " +
         key.model_path);
  std::vector<std::string> have;
  for (uint32_t i = 0; i < hdr[3]; ++i) {
    uint32_t cb[3] = {0, 0, 0};
    in.read(reinterpret_cast<char*>(cb), v1 ? 8 : 12);
    if (!in || cb[0] == 0 || cb[1] == 0 || cb[1] > 16 || c.head_dim % cb[0] != 0 || (cb[2] & ~kHasKeyMetric) != 0)
      fail(path + ": damaged codebook file");
    const size_t per = size_t(c.n_head_kv) * (c.head_dim / cb[0]) * (size_t(1) << cb[1]) * cb[0];
    const size_t per_metric = cb[2] & kHasKeyMetric ? size_t(c.n_head_kv) * c.head_dim * cb[0] : 0;
    const bool wanted = int(cb[0]) == spec.cq_channels && int(cb[1]) == spec.bits;
    have.push_back(cb[1] == 4 ? strfmt("pq:dsub=%u", cb[0]) : strfmt("cq-%uc%ub", cb[0], cb[1]));
    if (!wanted) {
      in.seekg(std::streamoff((per * 2 + per_metric) * 4 * c.n_layer), std::ios::cur);
      continue;
    }
    ModelCodebooks books;
    books.key.resize(c.n_layer);
    books.value.resize(c.n_layer);
    auto floats = [&](std::vector<float>& v, size_t n) {
      v.resize(n);
      in.read(reinterpret_cast<char*>(v.data()), std::streamsize(n * 4));
    };
    for (int l = 0; l < c.n_layer; ++l) {
      for (Codebook* b : {&books.key[l], &books.value[l]}) b->channels = int(cb[0]), b->bits = int(cb[1]);
      floats(books.key[l].centroids, per);
      if (per_metric) floats(books.key[l].metric, per_metric);
      floats(books.value[l].centroids, per);
    }
    if (!in) fail(path + ": truncated codebook file");
    return books;
  }
  std::string list;
  for (const auto& h : have) list += (list.empty() ? "" : ", ") + h;
  fail(path + " has no codebooks for " + spec.name() + " (it holds: " + (list.empty() ? "none" : list) + ")");
}

}  // namespace leanlm
