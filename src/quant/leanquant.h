// LeanQuant (Zhang & Shrivastava, ICLR 2025), written from the paper: a weight matrix quantized
// to the LQ types (lq_format.h) with a loss-aware non-uniform grid per output row and GPTQ's
// error feedback.
//
// For a matrix W [rows][n] whose input x has second moment H = sum x x^T over calibration tokens:
//   1. H is damped (H + damp * mean(diag H) * I; an input that is always zero gets H_jj = 1 and
//      its weights 0) and factored: U upper triangular with H^-1 = U^T U.
//   2. Each row's 2^b levels: 1-D k-means over the row's weights, weight j counting U_jj^-p
//      (the columns whose rounding error the feedback cannot repair weigh most).
//   3. GPTQ sweep, column by column: w_j rounds to the nearest level, and the error, divided by
//      U_jj, is taken off the later columns in proportion to U_j,k (rows are independent).
// Without H (identity) this is plain k-means and rounding to the nearest level per row.
#pragma once
#include <cstdint>
#include <vector>

#include "quant/quant_types.h"

namespace leanlm {

class ThreadPool;

struct LeanQuantOptions {
  // p in U_jj^-p. The paper recommends 3-4; on Gemma 3 270M (lq3, 2,048 calibration tokens,
  // perplexity on Hamlet, source 47.9) p = 0: 96.6, 1: 79.9, 2: 79.6, 4: 297: a few inputs with
  // very large activations take every level at 4.
  double exponent = 2;
  double damp = 0.01;     // of mean(diag H)
  // Sample weights above cap x their mean are cut to it (0: no cap), so that a few inputs with
  // huge activations cannot draw a row's levels to their weights alone. Measured (lq3, 2,048
  // calibration tokens, KLD to the source on Hamlet): Qwen2.5-Coder-1.5B p = 2 without a cap 1.53,
  // p = 0 0.216, p = 2 cap 10 0.183; Gemma 3 270M p = 2 0.315, cap 10 0.292.
  double weight_cap = 10;
  int kmeans_iters = 100;
};

// Threads of the BLAS/LAPACK calls (OpenBLAS's own pool: the factor, the sweep's block updates and
// the calibration statistics); `leanlm quantize` sets it to its -t.
void set_blas_threads(int n);

// U with H^-1 = U^T U (H damped as above), and which inputs were dead.
struct GptqFactor {
  int n = 0;
  std::vector<float> U;       // [n][n], upper triangle used
  std::vector<float> weight;  // [n]: U_jj^-p, the k-means sample weights
  std::vector<uint8_t> dead;  // [n]: H_jj was 0
  bool identity = true;       // no H: plain rounding
};
// H: [n][n] (symmetric; only the upper triangle is read). Throws Error if it is not positive
// definite even after damping (NaN or inf in it).
GptqFactor gptq_factor(const float* H, int n, const LeanQuantOptions& o);
GptqFactor identity_factor(int n);

// One row's grid: 2^b levels, ascending, by weighted k-means over w[n] (deterministic: weighted
// quantiles to start, Lloyd's steps on the sorted values until no level moves).
std::vector<float> fit_levels(const float* w, const float* weight, int n, int k, int iters);

// Quantizes W [rows][n] (row-major) to type t (an LQ type) with factor f: out holds rows *
// row_bytes(t, n) bytes. Rows are spread over pool's threads (or run here without one).
void lq_quantize_matrix(GgmlType t, const float* W, int64_t rows, int n, const GptqFactor& f,
                        const LeanQuantOptions& o, uint8_t* out, ThreadPool* pool = nullptr);

// The proxy loss GPTQ minimises, tr((W - Q) H (W - Q)^T) / rows, for tests and reports; H [n][n].
double weighted_error(const float* W, const float* Q, int64_t rows, int n, const float* H);

}  // namespace leanlm
