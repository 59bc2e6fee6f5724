#include "kernels/matmul.h"

#include <algorithm>

#include "quant/dot.h"
#include "util/error.h"

namespace leanlm {

void matmul(ThreadPool& pool, MatmulScratch& scratch, const WeightMat& w, const float* x, int n_tokens,
            int64_t x_stride, float* y, int64_t y_stride) {
  matmul_rows(pool, scratch, w, x, n_tokens, x_stride, y, y_stride, 0, w.n_out);
}

void matmul_rows(ThreadPool& pool, MatmulScratch& scratch, const WeightMat& w, const float* x, int n_tokens,
                 int64_t x_stride, float* y, int64_t y_stride, int64_t row_begin, int64_t row_end) {
  const DotTable& table = best_dot_table();
  const int n = int(w.n_in);
  const bool int8 = uses_int8_acts(w.type);
  DotRowsQ fq = int8 ? table.q[int(w.type)] : nullptr;
  DotRowsF ff = int8 ? nullptr : table.f[int(w.type)];
  if (!fq && !ff) fail("matmul: no kernel for weight type " + type_name(uint32_t(w.type)));
  if (int8) scratch.acts.quantize(x, n_tokens, n, x_stride);

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
