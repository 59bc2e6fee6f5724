// The LQ weight types and the LeanQuant fit: the row format, the dot kernels of every kernel set
// and the prompt GEMM against a plain double reference, the GPTQ factor against its definition,
// k-means at its fixed point, and GPTQ's feedback beating plain rounding on correlated inputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "engine/hessian.h"
#include "kernels/matmul.h"
#include "kernels/threadpool.h"
#include "quant/act_quant.h"
#include "quant/dequant.h"
#include "quant/dot.h"
#include "quant/leanquant.h"
#include "quant/lq_format.h"
#include "quant/quantize.h"
#include "util/fp16.h"
#include "util/sysinfo.h"

namespace leanlm {
namespace {

const GgmlType kLq[] = {GgmlType::LQ2, GgmlType::LQ3, GgmlType::LQ4};

// Random rows: levels anywhere in int8, which readers clamp to [-64, 63] (extreme: -128 and 127,
// beyond both ends), a positive scale, block scales anywhere in 0..255 (extreme: 255), codes.
std::vector<uint8_t> random_rows(GgmlType t, int rows, int n, std::mt19937& rng, bool extreme) {
  const int k = 1 << lq_bits(t);
  const size_t rb = row_bytes(t, n);
  std::vector<uint8_t> out(rb * rows);
  std::vector<int8_t> lv(k);
  std::vector<uint8_t> c(n), bs(n / 32);
  for (int r = 0; r < rows; ++r) {
    // extreme: beyond the 7-bit range, which the fit never writes but a file may hold
    for (int i = 0; i < k; ++i) lv[i] = extreme ? int8_t(i % 2 ? 127 : -128) : int8_t(int(rng() % 255) - 127);
    for (auto& v : c) v = uint8_t(rng() % k);
    for (auto& v : bs) v = extreme ? 255 : uint8_t(rng() % 256);
    const float scale = extreme ? 1.f : std::ldexp(1.f + float(rng() % 1000) / 1000.f, -int(rng() % 10));
    lq_pack_row(t, lv.data(), scale, bs.data(), c.data(), n, out.data() + r * rb);
  }
  return out;
}

TEST(LqFormat, CodesAndLevelsRoundTrip) {
  std::mt19937 rng(1);
  for (GgmlType t : kLq) {
    const int k = 1 << lq_bits(t), n = 96;
    std::vector<int8_t> lv(k);
    std::vector<uint8_t> c(n), back(n), bs(n / 32), row(row_bytes(t, n));
    for (auto& v : lv) v = int8_t(int(rng() % 255) - 127);
    for (auto& v : c) v = uint8_t(rng() % k);
    for (auto& v : bs) v = uint8_t(rng() % 256);
    lq_pack_row(t, lv.data(), 0.375f, bs.data(), c.data(), n, row.data());
    // header (levels, f32 scale), a scale byte and 4 b code bytes per block
    EXPECT_EQ(row.size(), size_t(k + 4) + size_t(n / 32) * (1 + 4 * lq_bits(t)));
    EXPECT_EQ(traits(t).row_header, lq_header_bytes(t));
    lq_unpack_codes(t, row.data(), n, back.data());
    EXPECT_EQ(back, c) << type_name(uint32_t(t));
    EXPECT_EQ(lq_scale(t, row.data()), 0.375f);
    for (int b = 0; b < n / 32; ++b) EXPECT_EQ(lq_block_scales(t, row.data())[b], bs[b]);
    std::vector<float> w(n);
    dequantize_row(t, row.data(), w.data(), n);
    for (int j = 0; j < n; ++j) {
      const int level = std::clamp<int>(lv[c[j]], kLqLevelMin, kLqLevelMax);  // readers clamp to 7 bits
      ASSERT_EQ(lq_level(row.data(), c[j]), level);
      ASSERT_EQ(w[j], 0.375f * float(bs[j / 32]) * float(level)) << type_name(uint32_t(t)) << " j " << j;
    }
  }
}

// Every kernel set's LQ dot against sum_j (scale * u_b * level[c_j]) * (d_b * q_j) in double.
TEST(LqKernels, DotsOfEveryKernelSetMatchThePlainReference) {
  std::mt19937 rng(2);
  const Isa best = best_isa();
  for (bool extreme : {false, true})
    for (GgmlType t : kLq)
      for (int n : {32, 96, 192, 640, 2048, 8960}) {  // groups of 1, 1, 2, 4, 8 blocks; 8960: two chunks
        const int rows = 7;
        const std::vector<uint8_t> w = random_rows(t, rows, n, rng, extreme);
        std::vector<float> x(n);
        std::normal_distribution<float> nd(0.f, 1.f);
        for (int j = 0; j < n; ++j) x[j] = extreme ? (j % 3 ? 3e4f : -3e4f) : nd(rng);
        std::vector<int8_t> q(n);
        std::vector<float> d(n / 32);
        std::vector<int16_t> s16(n / 16);
        quantize_act_row_ref(x.data(), n, q.data(), d.data(), s16.data(), act_scheme(t));
        const ActRow act{q.data(), d.data(), s16.data()};
        const size_t rb = row_bytes(t, n);
        std::vector<double> ref(rows), mag(rows);
        std::vector<uint8_t> c(n);
        for (int r = 0; r < rows; ++r) {
          const uint8_t* row = w.data() + r * rb;
          lq_unpack_codes(t, row, n, c.data());
          for (int j = 0; j < n; ++j) {
            const double p = double(lq_scale(t, row)) * lq_block_scales(t, row)[j / 32] * lq_level(row, c[j]) *
                             (double(d[j / 32]) * q[j]);
            ref[r] += p, mag[r] += std::fabs(p);
          }
        }
        for (int isa = 0; isa <= int(best); ++isa) {
          const DotRowsQ fn = dot_table(Isa(isa)).q[int(t)];
          ASSERT_NE(fn, nullptr);
          std::vector<float> out(rows);
          fn(n, w.data(), rb, rows, act, out.data());
          for (int r = 0; r < rows; ++r)
            EXPECT_NEAR(out[r], ref[r], 1e-5 * mag[r] + 1e-6)
                << type_name(uint32_t(t)) << " " << isa_name(Isa(isa)) << " n " << n << " row " << r << (extreme ? " extreme" : "");
        }
      }
}

// The prompt path (GEMM from 8 tokens where the CPU has one) against one token at a time. The
// GEMM adds (level + 128) * x and takes 128 * sum(x) off per block, so its float rounding scales
// with sum_j (|w_j| + 128 * unit_b) |x_j|, the bound's base: measured worst 2.3e-8 of it, bound 2e-7.
TEST(LqKernels, PromptGemmMatchesTheRowKernels) {
  std::mt19937 rng(3);
  ThreadPool pool(2);
  double worst = 0;
  for (GgmlType t : kLq) {
    const int n = 640, rows = 48, T = 24;
    const std::vector<uint8_t> data = random_rows(t, rows, n, rng, false);
    const size_t rb = row_bytes(t, n);
    WeightMat w;
    w.type = t, w.n_in = n, w.n_out = rows, w.data = data.data(), w.row_bytes = rb;
    std::vector<float> x(size_t(T) * n), y(size_t(T) * rows), y1(rows), wf(size_t(rows) * n);
    std::normal_distribution<float> nd(0.f, 1.f);
    for (float& v : x) v = nd(rng);
    for (int r = 0; r < rows; ++r) dequantize_row(t, data.data() + r * rb, wf.data() + size_t(r) * n, n);
    MatmulScratch s;
    matmul(pool, s, w, x.data(), T, n, y.data(), rows);
    for (int tk = 0; tk < T; ++tk) {
      matmul(pool, s, w, x.data() + size_t(tk) * n, 1, n, y1.data(), rows);
      for (int r = 0; r < rows; ++r) {
        const uint8_t* row = data.data() + r * rb;
        double base = 0;
        for (int j = 0; j < n; ++j)
          base += (std::fabs(wf[size_t(r) * n + j]) + 128.0 * lq_scale(t, row) * lq_block_scales(t, row)[j / 32]) *
                  std::fabs(x[size_t(tk) * n + j]);
        const double err = std::fabs(double(y[size_t(tk) * rows + r]) - y1[r]);
        worst = std::max(worst, err / base);
        EXPECT_LE(err, 2e-7 * base) << type_name(uint32_t(t)) << " token " << tk << " row " << r;
      }
    }
  }
  std::printf("worst error / base %.3g\n", worst);
}

// Correlated inputs, as a layer's activations are: x = A z with z standard normal.
std::vector<float> correlated_inputs(int T, int n, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> A(size_t(n) * n), z(n), X(size_t(T) * n);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) A[size_t(i) * n + j] = (i == j ? 1.f : 0.f) + 0.35f * nd(rng) / std::sqrt(float(n)) * 4.f;
  for (int t = 0; t < T; ++t) {
    for (float& v : z) v = nd(rng);
    for (int i = 0; i < n; ++i) {
      float s = 0;
      for (int j = 0; j < n; ++j) s += A[size_t(i) * n + j] * z[j];
      X[size_t(t) * n + i] = s * (i % 7 == 0 ? 4.f : 1.f);  // some inputs larger, as outlier channels are
    }
  }
  return X;
}

std::vector<float> second_moment(const std::vector<float>& X, int T, int n) {
  std::vector<float> H(size_t(n) * n, 0.f);
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) H[size_t(i) * n + j] += X[size_t(t) * n + i] * X[size_t(t) * n + j];
  return H;
}

TEST(LeanQuant, FactorIsTheUpperCholeskyOfTheDampedInverse) {
  std::mt19937 rng(4);
  const int n = 64, T = 256;
  const std::vector<float> H = second_moment(correlated_inputs(T, n, rng), T, n);
  LeanQuantOptions o;
  o.damp = 0.05;
  std::vector<float> upper = H;  // only the upper triangle is read (add_second_moment fills no more)
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < i; ++j) upper[size_t(i) * n + j] = 0.f;
  const GptqFactor f = gptq_factor(upper.data(), n, o);
  double mean = 0;
  for (int j = 0; j < n; ++j) mean += H[size_t(j) * n + j];
  mean /= n;
  // (U^T U)(H + damp I) = I, and U is upper triangular with a positive diagonal.
  for (int i = 0; i < n; ++i) {
    EXPECT_GT(f.U[size_t(i) * n + i], 0.f);
    for (int j = 0; j < n; ++j) {
      double s = 0;
      for (int k = 0; k < n; ++k) {
        double hinv = 0;  // (U^T U)[i][k]
        for (int m = 0; m <= std::min(i, k); ++m) hinv += double(f.U[size_t(m) * n + i]) * f.U[size_t(m) * n + k];
        s += hinv * (H[size_t(k) * n + j] + (k == j ? o.damp * mean : 0.0));
      }
      EXPECT_NEAR(s, i == j ? 1.0 : 0.0, 2e-4) << i << "," << j;
    }
  }
}

TEST(LeanQuant, KMeansLevelsAreTheWeightedMeansOfTheirCells) {
  std::mt19937 rng(5);
  const int n = 640;
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> w(n), wt(n);
  for (int j = 0; j < n; ++j) w[j] = nd(rng) * (j % 50 == 0 ? 6.f : 1.f), wt[j] = 0.1f + float(rng() % 100) / 10.f;
  for (int k : {4, 8, 16}) {
    const std::vector<float> c = fit_levels(w.data(), wt.data(), n, k, 1000);
    ASSERT_EQ(int(c.size()), k);
    std::vector<double> sw(k, 0), swx(k, 0);
    for (int j = 0; j < n; ++j) {
      int best = 0;
      for (int i = 1; i < k; ++i)
        if (std::fabs(w[j] - c[i]) < std::fabs(w[j] - c[best])) best = i;
      sw[best] += wt[j], swx[best] += double(wt[j]) * w[j];
    }
    for (int i = 0; i < k; ++i) {
      if (i) EXPECT_LE(c[i - 1], c[i]);
      if (sw[i] > 0) EXPECT_NEAR(c[i], swx[i] / sw[i], 1e-5) << "k " << k << " level " << i;
    }
  }
  // As many levels as distinct values: each value is a level.
  std::vector<float> few = {0.5f, -1.f, 2.f, 0.5f, -1.f, 2.f, 3.f, 3.f};
  std::vector<float> ones(few.size(), 1.f);
  const std::vector<float> c = fit_levels(few.data(), ones.data(), int(few.size()), 4, 100);
  EXPECT_EQ(c, (std::vector<float>{-1.f, 0.5f, 2.f, 3.f}));
}

// GPTQ's error feedback against rounding each weight to its row's nearest level (the same
// grids): the loss it minimises, tr((W - Q) H (W - Q)^T), measured on held-out inputs.
TEST(LeanQuant, ErrorFeedbackBeatsNearestLevelOnCorrelatedInputs) {
  // n = 128 is one column block of the sweep; 320 is three (the last partial), so the errors also
  // travel between blocks through the BLAS update.
  for (int n : {128, 320}) {
    std::mt19937 rng(6);
    const int rows = 64, T = 2048;
    const std::vector<float> X = correlated_inputs(2 * T, n, rng);
    const std::vector<float> Hcal = second_moment(std::vector<float>(X.begin(), X.begin() + size_t(T) * n), T, n);
    const std::vector<float> Heval = second_moment(std::vector<float>(X.begin() + size_t(T) * n, X.end()), T, n);
    std::normal_distribution<float> nd(0.f, 0.02f);
    std::vector<float> W(size_t(rows) * n);
    for (float& v : W) v = nd(rng);
    ThreadPool pool(2);
    LeanQuantOptions o;
    o.exponent = 0;  // unweighted k-means: the same grids as the nearest-level rows, so only the feedback differs
    for (GgmlType t : kLq) {
      const size_t rb = row_bytes(t, n);
      std::vector<uint8_t> a(rb * rows), b(rb * rows);
      lq_quantize_matrix(t, W.data(), rows, n, gptq_factor(Hcal.data(), n, o), o, a.data(), &pool);
      lq_quantize_matrix(t, W.data(), rows, n, identity_factor(n), o, b.data(), &pool);
      std::vector<float> Qa(W.size()), Qb(W.size());
      for (int r = 0; r < rows; ++r) {
        dequantize_row(t, a.data() + r * rb, Qa.data() + size_t(r) * n, n);
        dequantize_row(t, b.data() + r * rb, Qb.data() + size_t(r) * n, n);
      }
      const double eg = weighted_error(W.data(), Qa.data(), rows, n, Heval.data());
      const double er = weighted_error(W.data(), Qb.data(), rows, n, Heval.data());
      std::printf("n %d %s feedback / nearest %.3f\n", n, type_name(uint32_t(t)).c_str(), eg / er);
      // Measured ratios (lq2, lq3, lq4): n 128 0.696, 0.578, 0.641; n 320 0.735, 0.630, 0.621; bound 1.1x
      // (half-strength feedback fails it at n 128; no update between column blocks at n 320).
      const double measured = n == 128 ? (t == GgmlType::LQ2 ? 0.696 : t == GgmlType::LQ3 ? 0.578 : 0.641)
                                       : (t == GgmlType::LQ2 ? 0.735 : t == GgmlType::LQ3 ? 0.630 : 0.621);
      EXPECT_LT(eg, 1.1 * measured * er) << type_name(uint32_t(t)) << " n " << n << " gptq " << eg << " nearest " << er;
    }
  }
}

TEST(LeanQuant, SameBytesOnAnyThreadCount) {
  std::mt19937 rng(7);
  const int n = 320, rows = 37, T = 512;  // three column blocks: the BLAS block update runs
  const std::vector<float> H = second_moment(correlated_inputs(T, n, rng), T, n);
  std::normal_distribution<float> nd(0.f, 0.02f);
  std::vector<float> W(size_t(rows) * n);
  for (float& v : W) v = nd(rng);
  LeanQuantOptions o;
  std::vector<uint8_t> first;
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    set_blas_threads(threads);
    std::vector<uint8_t> out(row_bytes(GgmlType::LQ3, n) * rows);
    lq_quantize_matrix(GgmlType::LQ3, W.data(), rows, n, gptq_factor(H.data(), n, o), o, out.data(), &pool);
    if (first.empty()) first = out;
    EXPECT_EQ(out, first) << threads << " threads";
  }
}

TEST(LeanQuant, DeadInputsGetNoWeightAndNaNIsAnError) {
  const int n = 64;
  std::vector<float> H(size_t(n) * n, 0.f);
  for (int j = 0; j < n; ++j) H[size_t(j) * n + j] = j == 5 ? 0.f : 1.f + j;
  LeanQuantOptions o;
  const GptqFactor f = gptq_factor(H.data(), n, o);
  EXPECT_TRUE(f.dead[5]);
  EXPECT_EQ(f.weight[5], 0.f);
  H[3] = NAN;
  H[size_t(3) * n + 3] = NAN;
  EXPECT_THROW(gptq_factor(H.data(), n, o), std::exception);
}

// The calibration statistics' update against a double loop: rows `stride` apart, the upper
// triangle accumulated onto what is there, the lower left alone.
TEST(Hessians, SecondMomentIsTheUpperTriangleOfXtX) {
  std::mt19937 rng(9);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (int n : {1, 7, 130}) {
    const int T = 37, stride = n + 5;
    std::vector<float> x(size_t(T) * stride), H(size_t(n) * n);
    for (float& v : x) v = nd(rng);
    for (float& v : H) v = nd(rng);
    const std::vector<float> H0 = H;
    add_second_moment(H.data(), x.data(), T, n, stride);
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) {
        double want = H0[size_t(i) * n + j];
        if (j >= i)
          for (int t = 0; t < T; ++t) want += double(x[size_t(t) * stride + i]) * x[size_t(t) * stride + j];
        ASSERT_NEAR(H[size_t(i) * n + j], want, 1e-4 * (std::fabs(want) + 1)) << "n " << n << " i " << i << " j " << j;
      }
  }
}

TEST(Hessians, TensorsMapToTheInputTheyRead) {
  EXPECT_EQ(HessianSet::input_of("blk.3.attn_q.weight"), "blk.3.attn_in");
  EXPECT_EQ(HessianSet::input_of("blk.3.attn_v.weight"), "blk.3.attn_in");
  EXPECT_EQ(HessianSet::input_of("blk.12.attn_output.weight"), "blk.12.attn_out");
  EXPECT_EQ(HessianSet::input_of("blk.0.ffn_up.weight"), "blk.0.ffn_in");
  EXPECT_EQ(HessianSet::input_of("blk.0.ffn_down.weight"), "blk.0.ffn_down");
  EXPECT_EQ(HessianSet::input_of("token_embd.weight"), "");
  EXPECT_EQ(HessianSet::input_of("blk.0.attn_norm.weight"), "");
  EXPECT_EQ(HessianSet::input_of("blk.0.ffn_down.weight.extra"), "");
}

}  // namespace
}  // namespace leanlm
