#include "quant/leanquant.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>

#include "kernels/threadpool.h"
#include "quant/lq_format.h"
#include "util/error.h"

namespace leanlm {

// LAPACK (OpenBLAS's): Cholesky factorization and triangular inverse, column-major. The
// trailing lengths are the Fortran ABI's hidden lengths of the character arguments.
extern "C" {
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info, size_t uplo_len = 1);
void dtrtri_(const char* uplo, const char* diag, const int* n, double* a, const int* lda, int* info,
             size_t uplo_len = 1, size_t diag_len = 1);
void openblas_set_num_threads(int n);
}

GptqFactor identity_factor(int n) {
  GptqFactor f;
  f.n = n;
  f.weight.assign(n, 1.f);
  f.dead.assign(n, 0);
  return f;
}

void set_blas_threads(int n) { openblas_set_num_threads(std::max(1, n)); }

GptqFactor gptq_factor(const float* H, int n, const LeanQuantOptions& o) {
  GptqFactor f;
  f.n = n;
  f.identity = false;
  f.dead.assign(n, 0);
  // H = V V^T with V upper triangular (a Cholesky factorization run from the last index down),
  // so H^-1 = V^-T V^-1 and U = V^-1. With J the index reversal, J H J = (J V J)(J V J)^T is an
  // ordinary lower Cholesky factorization: LAPACK's dpotrf gives L = J V J, dtrtri L^-1, and
  // U = J L^-1 J. A holds J H J, column-major (symmetric, so the layout only matters from here).
  const auto rev = [n](int i) { return n - 1 - i; };
  std::vector<double> A(size_t(n) * n);
  for (int i = 0; i < n; ++i)
    for (int j = i; j < n; ++j) {
      const float h = H[size_t(i) * n + j];  // the upper triangle is the one read
      if (!std::isfinite(h)) fail("leanquant: the calibration Hessian holds a value that is not finite");
      A[size_t(rev(i)) * n + rev(j)] = A[size_t(rev(j)) * n + rev(i)] = h;
    }
  double mean = 0;
  for (int j = 0; j < n; ++j) {
    double& d = A[size_t(rev(j)) * n + rev(j)];
    if (d <= 0) f.dead[j] = 1, d = 1;  // an input that was always zero: its weights become 0
    mean += d;
  }
  mean /= n;
  for (int j = 0; j < n; ++j) A[size_t(j) * n + j] += o.damp * mean;
  const char lower = 'L', non_unit = 'N';
  int info = 0;
  dpotrf_(&lower, &n, A.data(), &n, &info);
  if (info > 0)
    fail(strfmt("leanquant: the damped Hessian is not positive definite at input %d (raise --damp)", rev(info - 1)));
  if (info == 0) dtrtri_(&lower, &non_unit, &n, A.data(), &n, &info);
  if (info != 0) fail(strfmt("leanquant: LAPACK failed on the damped Hessian (info %d)", info));
  // U[p][q] (p <= q) = L^-1(rev p, rev q), element (r, c) of the column-major A at A[r + c n].
  f.U.assign(size_t(n) * n, 0.f);
  for (int p = 0; p < n; ++p)
    for (int q = p; q < n; ++q) f.U[size_t(p) * n + q] = float(A[size_t(rev(p)) + size_t(rev(q)) * n]);
  // Rescaled to a mean of 1 (only ratios matter to k-means; this keeps them in float range).
  std::vector<double> wd(n);
  double wsum = 0;
  for (int j = 0; j < n; ++j) wsum += wd[j] = f.dead[j] ? 0.0 : std::pow(double(f.U[size_t(j) * n + j]), -o.exponent);
  f.weight.resize(n);
  for (int j = 0; j < n; ++j) f.weight[j] = wsum > 0 ? float(wd[j] * (n / wsum)) : 0.f;
  if (o.weight_cap > 0)
    for (float& v : f.weight) v = std::min(v, float(o.weight_cap));  // the mean is 1
  return f;
}

std::vector<float> fit_levels(const float* w, const float* weight, int n, int k, int iters) {
  std::vector<int> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](int a, int b) { return w[a] < w[b] || (w[a] == w[b] && a < b); });
  std::vector<double> v(n), cw(n + 1, 0.0), cwv(n + 1, 0.0);  // sorted values, prefix sums
  for (int i = 0; i < n; ++i) {
    v[i] = w[idx[i]];
    cw[i + 1] = cw[i] + weight[idx[i]];
    cwv[i + 1] = cwv[i] + double(weight[idx[i]]) * v[i];
  }
  std::vector<double> c(k);
  const double total = cw[n];
  for (int i = 0; i < k; ++i) {
    if (total <= 0) {  // no weight anywhere: spread over the range
      c[i] = n ? v[0] + (v[n - 1] - v[0]) * (i + 0.5) / k : 0.0;
      continue;
    }
    const double target = total * (i + 0.5) / k;  // weighted quantile
    const int pos = int(std::lower_bound(cw.begin() + 1, cw.end(), target) - (cw.begin() + 1));
    c[i] = v[std::min(pos, n - 1)];
  }
  std::vector<int> edge(k + 1);  // level i takes sorted values [edge[i], edge[i+1])
  for (int it = 0; it < iters && total > 0; ++it) {
    std::sort(c.begin(), c.end());
    edge[0] = 0, edge[k] = n;
    for (int i = 1; i < k; ++i)
      edge[i] = int(std::upper_bound(v.begin(), v.end(), 0.5 * (c[i - 1] + c[i])) - v.begin());
    bool moved = false;
    for (int i = 0; i < k; ++i) {
      const double W = cw[edge[i + 1]] - cw[edge[i]];
      if (W <= 0) continue;  // an empty level stays where it is
      const double nc = (cwv[edge[i + 1]] - cwv[edge[i]]) / W;
      moved |= nc != c[i];
      c[i] = nc;
    }
    if (!moved) break;
  }
  std::sort(c.begin(), c.end());
  return std::vector<float>(c.begin(), c.end());
}

namespace {

// The block scale u (0..255, the block's unit d * u) whose nearest-level rounding of w[32] has the
// least importance-weighted squared error, among: the scale the grid was fitted for (the block's
// largest magnitude as 1, `fitted`), and a few multiples of the scale that puts that magnitude on
// the outermost level (the outer level is a cell mean, and a slightly smaller scale often trades the
// extreme weight's error for every other one's). The first of equal errors wins.
int best_block_scale(const float* w, const float* imp, const int8_t* L, int k, float d, float peak) {
  float amax = 0;
  for (int l = 0; l < 32; ++l) amax = std::max(amax, std::fabs(w[l]));
  int lmax = 0;
  for (int i = 0; i < k; ++i) lmax = std::max(lmax, std::abs(int(L[i])));
  if (amax == 0 || lmax == 0 || d == 0) return 0;
  const float u0 = amax / (d * float(lmax));  // the largest magnitude on the outermost level
  int best = 0;
  double best_err = -1;
  for (float f : {peak, 1.0f, 0.95f, 0.9f, 0.85f, 0.8f, 1.05f}) {
    const int u = int(std::clamp<long>(std::lround(u0 * f), 1, 255));
    const float s = d * float(u);
    double err = 0;
    for (int l = 0; l < 32; ++l) {
      float e = std::fabs(w[l] - s * float(L[0]));
      for (int i = 1; i < k; ++i) e = std::min(e, std::fabs(w[l] - s * float(L[i])));
      err += double(imp[l]) * double(e) * double(e);
    }
    if (best_err < 0 || err < best_err) best_err = err, best = u;
  }
  return best;
}

}  // namespace

void lq_quantize_matrix(GgmlType t, const float* W, int64_t rows, int n, const GptqFactor& f,
                        const LeanQuantOptions& o, uint8_t* out, ThreadPool* pool) {
  if (!is_lq(t)) fail("leanquant: " + type_name(uint32_t(t)) + " is not an LQ type");
  if (n % 32 || f.n != n) fail(strfmt("leanquant: rows of %d do not fit the factor (%d) or 32-blocks", n, f.n));
  const int k = 1 << lq_bits(t), nb = n / 32;
  const size_t rb = row_bytes(t, n);
  const auto each_row = [&](const std::function<void(int64_t)>& fn) {
    if (pool) {
      pool->parallel_for(rows, [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) fn(r);
      });
    } else {
      for (int64_t r = 0; r < rows; ++r) fn(r);
    }
  };
  std::vector<float> w(size_t(rows) * n);  // [rows][n]: the weights as the feedback leaves them
  std::vector<int8_t> table(size_t(rows) * k);
  std::vector<float> scale(rows), peak_of(rows);  // peak: the grid's largest |level| in block magnitudes
  std::vector<uint8_t> codes(size_t(rows) * n), bscale(size_t(rows) * nb);

  // 1. Each row's grid, fitted to its weights in units of their block's largest magnitude, each
  //    weighing its importance times that magnitude squared (its error in weight units).
  each_row([&](int64_t r) {
    float* wr = w.data() + r * n;
    std::vector<float> v(n), kw(n);
    float amax_row = 0;
    for (int j = 0; j < n; ++j) wr[j] = f.dead[j] ? 0.f : W[r * n + j];
    for (int b = 0; b < nb; ++b) {
      float amax = 0;
      for (int l = 0; l < 32; ++l) amax = std::max(amax, std::fabs(wr[32 * b + l]));
      amax_row = std::max(amax_row, amax);
      for (int l = 0; l < 32; ++l) {
        const int j = 32 * b + l;
        v[j] = amax > 0 ? wr[j] / amax : 0.f;
        kw[j] = f.weight[j] * amax * amax;
      }
    }
    const std::vector<float> c = fit_levels(v.data(), kw.data(), n, k, o.kmeans_iters);
    float peak = 0;
    for (float x : c) peak = std::max(peak, std::fabs(x));
    const float G = peak / float(kLqLevelMax);  // level i is G * L[i] block magnitudes
    for (int i = 0; i < k; ++i)
      table[r * k + i] = G > 0 ? int8_t(std::clamp<long>(std::lround(c[i] / G), -kLqLevelMax, kLqLevelMax)) : 0;
    // The unit: the largest block's magnitude on the outermost level at u = 255, so every candidate
    // of best_block_scale up to that fits (blocks the feedback grows past it clamp there).
    scale[r] = amax_row / (255.f * float(kLqLevelMax));
    peak_of[r] = peak;
  });

  // 2. GPTQ's sweep in column blocks of 128 (its lazy batch updates): within a block each weight
  //    rounds to its row's nearest level and its error, over U_jj, is taken off the block's later
  //    columns; the block's errors E then reach every later column at once, W[:, j1:] -= E U[j0:j1, j1:]
  //    (one BLAS product instead of a pass over U per column: U of an 8960-wide input is 320 MB).
  constexpr int kColBlock = 128;
  std::vector<float> E(f.identity ? 0 : size_t(rows) * kColBlock);
  for (int j0 = 0; j0 < n; j0 += kColBlock) {
    const int j1 = std::min(n, j0 + kColBlock);
    each_row([&](int64_t r) {
      float* wr = w.data() + r * n;
      const int8_t* L = table.data() + r * k;
      float lev[16], mid[16];
      for (int j = j0; j < j1; ++j) {
        if (j % 32 == 0) {  // block start: its scale from the weights as the feedback left them
          const int u = best_block_scale(wr + j, f.weight.data() + j, L, k, scale[r], peak_of[r]);
          bscale[r * nb + j / 32] = uint8_t(u);
          const float sc = scale[r] * float(u);
          for (int i = 0; i < k; ++i) lev[i] = sc * float(L[i]);
          for (int i = 0; i + 1 < k; ++i) mid[i] = 0.5f * (lev[i] + lev[i + 1]);
        }
        const float x = wr[j];
        int c = 0;
        while (c + 1 < k && x > mid[c]) ++c;  // levels ascend: the nearest one
        codes[r * n + j] = uint8_t(c);
        if (f.identity) continue;
        const float* uj = f.U.data() + size_t(j) * n;
        const float e = (x - lev[c]) / uj[j];
        E[r * kColBlock + (j - j0)] = e;
        for (int kk = j + 1; kk < j1; ++kk) wr[kk] -= e * uj[kk];
      }
    });
    if (!f.identity && j1 < n)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), n - j1, j1 - j0, -1.f, E.data(), kColBlock,
                  f.U.data() + size_t(j0) * n + j1, n, 1.f, w.data() + j1, n);
  }
  each_row([&](int64_t r) {
    lq_pack_row(t, table.data() + r * k, scale[r], bscale.data() + r * nb, codes.data() + r * n, n, out + size_t(r) * rb);
  });
}

double weighted_error(const float* W, const float* Q, int64_t rows, int n, const float* H) {
  double total = 0;
  std::vector<double> d(n);
  for (int64_t r = 0; r < rows; ++r) {
    for (int j = 0; j < n; ++j) d[j] = double(W[r * n + j]) - Q[r * n + j];
    for (int i = 0; i < n; ++i) {
      double s = 0;
      for (int j = 0; j < n; ++j) s += double(H[size_t(i) * n + j]) * d[j];
      total += d[i] * s;
    }
  }
  return total / double(rows);
}

}  // namespace leanlm
