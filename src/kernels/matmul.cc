#include "kernels/matmul.h"

#include <immintrin.h>

#include <algorithm>

#include "quant/dot.h"
#include "util/error.h"
#include "util/fp16.h"

namespace leanlm {

namespace {

// A piece of work for one thread: rows [r0, r0 + nr) of one job's matrix.
struct Tile {
  int job;
  int64_t r0;
  int nr;
};

// y[t][r] = out[r][t] for r < rows, t < tokens: 8x8 blocks through registers, the edges one by one.
void transpose_out(const float* out, int cols, int rows, int tokens, float* y, int64_t y_stride) {
  int r0 = 0;
  for (; r0 + 8 <= rows; r0 += 8) {
    int t0 = 0;
    for (; t0 + 8 <= tokens; t0 += 8) {
      __m256 v[8];
      for (int i = 0; i < 8; ++i) v[i] = _mm256_loadu_ps(out + size_t(r0 + i) * cols + t0);
      // 8x8 transpose: unpack pairs, then 64-bit pairs, then 128-bit halves
      const __m256 a0 = _mm256_unpacklo_ps(v[0], v[1]), a1 = _mm256_unpackhi_ps(v[0], v[1]);
      const __m256 a2 = _mm256_unpacklo_ps(v[2], v[3]), a3 = _mm256_unpackhi_ps(v[2], v[3]);
      const __m256 a4 = _mm256_unpacklo_ps(v[4], v[5]), a5 = _mm256_unpackhi_ps(v[4], v[5]);
      const __m256 a6 = _mm256_unpacklo_ps(v[6], v[7]), a7 = _mm256_unpackhi_ps(v[6], v[7]);
      const __m256 b0 = _mm256_shuffle_ps(a0, a2, 0x44), b1 = _mm256_shuffle_ps(a0, a2, 0xEE);
      const __m256 b2 = _mm256_shuffle_ps(a1, a3, 0x44), b3 = _mm256_shuffle_ps(a1, a3, 0xEE);
      const __m256 b4 = _mm256_shuffle_ps(a4, a6, 0x44), b5 = _mm256_shuffle_ps(a4, a6, 0xEE);
      const __m256 b6 = _mm256_shuffle_ps(a5, a7, 0x44), b7 = _mm256_shuffle_ps(a5, a7, 0xEE);
      const __m256 c[8] = {_mm256_permute2f128_ps(b0, b4, 0x20), _mm256_permute2f128_ps(b1, b5, 0x20),
                           _mm256_permute2f128_ps(b2, b6, 0x20), _mm256_permute2f128_ps(b3, b7, 0x20),
                           _mm256_permute2f128_ps(b0, b4, 0x31), _mm256_permute2f128_ps(b1, b5, 0x31),
                           _mm256_permute2f128_ps(b2, b6, 0x31), _mm256_permute2f128_ps(b3, b7, 0x31)};
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(y + (t0 + i) * y_stride + r0, c[i]);
    }
    for (; t0 < tokens; ++t0)
      for (int i = 0; i < 8; ++i) y[t0 * y_stride + r0 + i] = out[size_t(r0 + i) * cols + t0];
  }
  for (; r0 < rows; ++r0)
    for (int t = 0; t < tokens; ++t) y[t * y_stride + r0] = out[size_t(r0) * cols + t];
}

// Prompt-sized batches: tiles of weight rows are unpacked once and every token panel streams past.
void run_gemm(ThreadPool& pool, const ActPanels& panels, const std::vector<GemmPanelsFn>& kernels,
              const std::vector<MatmulJob>& jobs, int n_tokens) {
  constexpr int kTileRows = 32;
  std::vector<Tile> tiles;
  for (size_t j = 0; j < jobs.size(); ++j)
    for (int64_t r = jobs[j].row_begin; r < jobs[j].row_end; r += kTileRows)
      tiles.push_back({int(j), r, int(std::min<int64_t>(kTileRows, jobs[j].row_end - r))});
  const int cols = panels.n_panels * kPanelTokens;
  pool.parallel_for(int64_t(tiles.size()), [&](int64_t tb, int64_t te) {
    thread_local UnpackedRows unpacked;
    thread_local AlignedVec<float> out;  // [kTileRows][cols]
    if (out.size() < size_t(kTileRows) * cols) out.resize(size_t(kTileRows) * cols);
    for (int64_t ti = tb; ti < te; ++ti) {
      const Tile& tl = tiles[ti];
      const MatmulJob& jb = jobs[tl.job];
      const WeightMat& w = *jb.w;
      unpack_rows(w.type, w.data + tl.r0 * w.row_bytes, w.row_bytes, tl.nr, int(w.n_in), unpacked);
      kernels[tl.job](unpacked, panels, 0, panels.n_panels, out.data(), cols);
      transpose_out(out.data(), cols, tl.nr, n_tokens, jb.y + (tl.r0 - jb.row_begin), jb.y_stride);
    }
  });
}

// Decode-sized batches: each weight row meets every token through the per-row dot kernels.
void run_rows(ThreadPool& pool, MatmulScratch& scratch, const std::vector<MatmulJob>& jobs, const float* x,
              int n_tokens, int64_t x_stride) {
  const DotTable& table = best_dot_table();
  std::vector<Tile> tiles;
  for (size_t j = 0; j < jobs.size(); ++j) {
    const WeightMat& w = *jobs[j].w;
    // Tiles small enough to stay in L1 while every token passes over them.
    const int64_t tile = n_tokens == 1 ? 64 : std::max<int64_t>(1, 16384 / int64_t(w.row_bytes));
    for (int64_t r = jobs[j].row_begin; r < jobs[j].row_end; r += tile)
      tiles.push_back({int(j), r, int(std::min<int64_t>(tile, jobs[j].row_end - r))});
  }
  const ActBatch& acts = scratch.acts;
  pool.parallel_for(int64_t(tiles.size()), [&](int64_t tb, int64_t te) {
    for (int64_t ti = tb; ti < te; ++ti) {
      const Tile& tl = tiles[ti];
      const MatmulJob& jb = jobs[tl.job];
      const WeightMat& w = *jb.w;
      const int n = int(w.n_in);
      const uint8_t* wp = w.data + tl.r0 * w.row_bytes;
      for (int t = 0; t < n_tokens; ++t) {
        float* out = jb.y + t * jb.y_stride + (tl.r0 - jb.row_begin);
        if (uses_int8_acts(w.type)) table.q[int(w.type)](n, wp, w.row_bytes, tl.nr, acts.row(t), out);
        else table.f[int(w.type)](n, wp, w.row_bytes, tl.nr, x + t * x_stride, out);
      }
    }
  });
}

}  // namespace

void matmul_multi(ThreadPool& pool, MatmulScratch& scratch, const std::vector<MatmulJob>& jobs, const float* x,
                  int n_tokens, int64_t x_stride) {
  if (jobs.empty()) return;
  const WeightMat& w0 = *jobs[0].w;
  const DotTable& table = best_dot_table();
  // One prepared copy of x serves every job when they all take it in the same form: the same
  // activation quantization for integer types, the same type for float ones.
  bool same_input = true;
  for (const MatmulJob& j : jobs) {
    const WeightMat& w = *j.w;
    if (uses_int8_acts(w.type) ? !table.q[int(w.type)] : !table.f[int(w.type)])
      fail("matmul: no kernel for weight type " + type_name(uint32_t(w.type)));
    const bool int8 = uses_int8_acts(w.type);
    same_input &= w.n_in == w0.n_in && int8 == uses_int8_acts(w0.type) &&
                  (int8 ? act_scheme(w.type) == act_scheme(w0.type) : w.type == w0.type);
  }
  if (!same_input) {
    for (const MatmulJob& j : jobs) matmul_multi(pool, scratch, {j}, x, n_tokens, x_stride);
    return;
  }
  const int n = int(w0.n_in);
  if (n_tokens >= kMinGemmTokens) {
    std::vector<GemmPanelsFn> kernels;
    for (const MatmulJob& j : jobs)
      if (GemmPanelsFn k = best_gemm_kernel(j.w->type)) kernels.push_back(k);
    if (kernels.size() == jobs.size()) {
      scratch.panels.pack(x, n_tokens, n, x_stride, act_scheme(w0.type));
      return run_gemm(pool, scratch.panels, kernels, jobs, n_tokens);
    }
    if (jobs.size() > 1) {  // some matrix lacks a GEMM kernel: each takes its own path
      for (const MatmulJob& j : jobs) matmul_multi(pool, scratch, {j}, x, n_tokens, x_stride);
      return;
    }
  }
  if (uses_int8_acts(w0.type)) {
    scratch.acts.quantize(x, n_tokens, n, x_stride, act_scheme(w0.type));
  } else if (w0.type == GgmlType::F16 || w0.type == GgmlType::BF16) {
    // Half-precision weights meet activations rounded to the same format, as in llama.cpp (whose
    // f16/bf16 dot products take both operands in that format).
    scratch.rounded.resize(size_t(n_tokens) * n);
    for (int t = 0; t < n_tokens; ++t) {
      const float* src = x + t * x_stride;
      float* dst = scratch.rounded.data() + size_t(t) * n;
      if (w0.type == GgmlType::F16)
        for (int i = 0; i < n; ++i) dst[i] = fp16_to_f32(f32_to_fp16(src[i]));
      else
        for (int i = 0; i < n; ++i) dst[i] = bf16_to_f32(f32_to_bf16(src[i]));
    }
    x = scratch.rounded.data();
    x_stride = n;
  }
  run_rows(pool, scratch, jobs, x, n_tokens, x_stride);
}

void matmul_rows(ThreadPool& pool, MatmulScratch& scratch, const WeightMat& w, const float* x, int n_tokens,
                 int64_t x_stride, float* y, int64_t y_stride, int64_t row_begin, int64_t row_end) {
  matmul_multi(pool, scratch, {{&w, y, y_stride, row_begin, row_end}}, x, n_tokens, x_stride);
}

void matmul(ThreadPool& pool, MatmulScratch& scratch, const WeightMat& w, const float* x, int n_tokens,
            int64_t x_stride, float* y, int64_t y_stride) {
  matmul_rows(pool, scratch, w, x, n_tokens, x_stride, y, y_stride, 0, w.n_out);
}

}  // namespace leanlm
