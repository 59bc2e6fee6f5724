// Attention over uncompressed rows (f32 or fp16), stored token-major with a row stride. Used by the
// dense KV store, by the full-precision recent window of compressed stores, and by the f16 codec.
#pragma once
#include <cstddef>
#include <cstdint>

namespace leanlm {

// out[i * out_stride + j] = q_i . row_j  for rows j in [0, n_rows); row j starts at rows + j * row_stride.
template <typename T>
void dense_dot(const T* rows, size_t row_stride, int n_rows, int dim, const float* q, int n_q, int q_stride,
               float* out, int out_stride);
// out[i * out_stride + c] += sum_j w[i * w_stride + j] * row_j[c]  (rows whose weights are all zero are skipped).
template <typename T>
void dense_axpy(const T* rows, size_t row_stride, int n_rows, int dim, const float* w, int n_q, int w_stride,
                float* out, int out_stride);

}  // namespace leanlm
