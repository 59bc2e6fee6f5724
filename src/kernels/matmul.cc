#include "kernels/matmul.h"

#include <algorithm>

#include "quant/dot.h"
#include "util/error.h"
#include "util/fp16.h"

namespace leanlm {

void matmul(ThreadPool& pool, MatmulScratch& scratch, const WeightMat& w, const float* x, int n_tokens,
            int64_t x_stride, float* y, int64_t y_stride) {
  matmul_rows(pool, scratch, w, x, n_tokens, x_stride, y, y_stride, 0, w.n_out);
}

namespace {

// Prompt-sized batches: tiles of weight rows are unpacked once and every token panel streams past.
void matmul_gemm(ThreadPool& pool, MatmulScratch& scratch, GemmPanelsFn kernel, const WeightMat& w, const float* x,
                 int n_tokens, int64_t x_stride, float* y, int64_t y_stride, int64_t row_begin, int64_t row_end) {
  const int n = int(w.n_in);
  scratch.panels.pack(x, n_tokens, n, x_stride, act_scheme(w.type));
  const ActPanels& panels = scratch.panels;
  const int cols = panels.n_panels * kPanelTokens;
  constexpr int64_t kTileRows = 32;
  const int64_t n_tiles = (row_end - row_begin + kTileRows - 1) / kTileRows;
  pool.parallel_for(n_tiles, [&](int64_t tb, int64_t te) {
    thread_local UnpackedRows unpacked;
    thread_local AlignedVec<float> out;  // [kTileRows][cols]
    if (out.size() < size_t(kTileRows) * cols) out.resize(size_t(kTileRows) * cols);
    for (int64_t ti = tb; ti < te; ++ti) {
      const int64_t r0 = row_begin + ti * kTileRows;
      const int nr = int(std::min<int64_t>(kTileRows, row_end - r0));
      unpack_rows(w.type, w.data + r0 * w.row_bytes, w.row_bytes, nr, n, unpacked);
      kernel(unpacked, panels, 0, panels.n_panels, out.data(), cols);
      for (int t = 0; t < n_tokens; ++t) {
        float* yt = y + t * y_stride + (r0 - row_begin);
        for (int r = 0; r < nr; ++r) yt[r] = out[size_t(r) * cols + t];
      }
    }
  });
}

}  // namespace

void matmul_rows(ThreadPool& pool, MatmulScratch& scratch, const WeightMat& w, const float* x, int n_tokens,
                 int64_t x_stride, float* y, int64_t y_stride, int64_t row_begin, int64_t row_end) {
  if (n_tokens >= kMinGemmTokens) {
    if (GemmPanelsFn kernel = best_gemm_kernel(w.type))
      return matmul_gemm(pool, scratch, kernel, w, x, n_tokens, x_stride, y, y_stride, row_begin, row_end);
  }
  const DotTable& table = best_dot_table();
  const int n = int(w.n_in);
  const bool int8 = uses_int8_acts(w.type);
  DotRowsQ fq = int8 ? table.q[int(w.type)] : nullptr;
  DotRowsF ff = int8 ? nullptr : table.f[int(w.type)];
  if (!fq && !ff) fail("matmul: no kernel for weight type " + type_name(uint32_t(w.type)));
  if (int8) scratch.acts.quantize(x, n_tokens, n, x_stride, act_scheme(w.type));
  if (w.type == GgmlType::F16 || w.type == GgmlType::BF16) {
    // Half-precision weights meet activations rounded to the same format, as in llama.cpp (whose
    // f16/bf16 dot products take both operands in that format).
    scratch.rounded.resize(size_t(n_tokens) * n);
    for (int t = 0; t < n_tokens; ++t) {
      const float* src = x + t * x_stride;
      float* dst = scratch.rounded.data() + size_t(t) * n;
      if (w.type == GgmlType::F16)
        for (int i = 0; i < n; ++i) dst[i] = fp16_to_f32(f32_to_fp16(src[i]));
      else
        for (int i = 0; i < n; ++i) dst[i] = bf16_to_f32(f32_to_bf16(src[i]));
    }
    x = scratch.rounded.data();
    x_stride = n;
  }

  // Rows are cut into tiles small enough to stay in L1 while every token passes over them.
  const int64_t rows = row_end - row_begin;
  const int64_t tile = n_tokens == 1 ? 64 : std::max<int64_t>(1, 16384 / int64_t(w.row_bytes));
  const int64_t n_tiles = (rows + tile - 1) / tile;
  const ActBatch& acts = scratch.acts;
  pool.parallel_for(n_tiles, [&](int64_t tb, int64_t te) {
    for (int64_t ti = tb; ti < te; ++ti) {
      const int64_t r0 = row_begin + ti * tile;
      const int nr = int(std::min<int64_t>(tile, row_end - r0));
      const uint8_t* wp = w.data + r0 * w.row_bytes;
      for (int t = 0; t < n_tokens; ++t) {
        float* out = y + t * y_stride + (r0 - row_begin);
        if (int8) fq(n, wp, w.row_bytes, nr, acts.row(t), out);
        else ff(n, wp, w.row_bytes, nr, x + t * x_stride, out);
      }
    }
  });
}

}  // namespace leanlm
