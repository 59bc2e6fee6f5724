// y = W x for a batch of activation rows, with W a quantized weight matrix from the model file.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/threadpool.h"
#include "quant/act_quant.h"
#include "quant/gemm.h"
#include "quant/quant_types.h"

namespace leanlm {

// A weight matrix [n_out rows][n_in] stored row by row in `type` blocks (a view into the mmap).
struct WeightMat {
  GgmlType type = GgmlType::F32;
  int64_t n_in = 0, n_out = 0;
  const uint8_t* data = nullptr;
  size_t row_bytes = 0;
  explicit operator bool() const { return data != nullptr; }
};

// Scratch reused between calls (quantized activations).
struct MatmulScratch {
  ActBatch acts;      // per-row kernels
  ActPanels panels;   // GEMM
  AlignedVec<float> rounded;  // activations rounded to fp16/bf16 for half-precision weights
};

// Batches of at least this many tokens go through the GEMM (gemm.h) when the CPU has a fast one.
// Below it, the per-row dot kernels over an L1-sized tile of rows win: the GEMM unpacks each weight
// tile once per call, which a handful of tokens does not repay (leanlm serve, SmolLM2, 2 threads:
// 4 decoding clients 146 tok/s with the GEMM from 4 tokens, 189-193 from 8 or 16; 16 clients
// 387-409 from 4 or 8, 247 from 32).
constexpr int kMinGemmTokens = 8;

// y[t][r] = sum_i W[r][i] * x[t][i]   for t < n_tokens, r < W.n_out.
// x: [n_tokens][x_stride] (first W.n_in used), y: [n_tokens][y_stride].
void matmul(ThreadPool& pool, MatmulScratch& scratch, const WeightMat& w, const float* x, int n_tokens,
            int64_t x_stride, float* y, int64_t y_stride);

// One matrix of several that read the same input: y[t][r - row_begin] = W[r] . x[t].
struct MatmulJob {
  const WeightMat* w;
  float* y;
  int64_t y_stride;
  int64_t row_begin, row_end;
};
// Several products of the same input (Q, K and V; gate and up) in one parallel pass: the input is
// quantized once when the matrices share a weight type, and threads need one barrier, not several.
void matmul_multi(ThreadPool& pool, MatmulScratch& scratch, const std::vector<MatmulJob>& jobs, const float* x,
                  int n_tokens, int64_t x_stride);

// Same, but only output rows [row_begin, row_end) for every token (used for sharded logits).
void matmul_rows(ThreadPool& pool, MatmulScratch& scratch, const WeightMat& w, const float* x, int n_tokens,
                 int64_t x_stride, float* y, int64_t y_stride, int64_t row_begin, int64_t row_end);

}  // namespace leanlm
