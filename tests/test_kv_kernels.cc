// Every KV kernel of every ISA this CPU runs against the plain reference (kv_kernels_scalar.cc):
// integer parts exactly, float sums to rounding. Shapes cover partial token vectors, odd query
// counts and every head size the models use.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kv/kv_kernels.h"
#include "util/fp16.h"
#include "util/sysinfo.h"

namespace leanlm {
namespace {

std::vector<Isa> simd_isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::Avx2, Isa::Avx512})
    if (int(isa) <= int(best_isa())) out.push_back(isa);
  return out;
}

std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, scale);
  std::vector<float> x(n);
  for (auto& v : x) v = nd(rng);
  return x;
}

std::vector<uint16_t> to_half(const std::vector<float>& x) {
  std::vector<uint16_t> h(x.size());
  for (size_t i = 0; i < x.size(); ++i) h[i] = f32_to_fp16(x[i]);
  return h;
}

// |got - want| within rel * (1 + |want|) everywhere.
void expect_close(const std::vector<float>& got, const std::vector<float>& want, float rel, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], rel * (1.f + std::fabs(want[i]))) << what << " at " << i;
}

class KvKernelTest : public ::testing::TestWithParam<Isa> {
 protected:
  const KvKernels& ref_ = kv_kernels(Isa::Scalar);
  const KvKernels& fast_ = kv_kernels(GetParam());
};

TEST_P(KvKernelTest, RowsScoresAndAccum) {
  for (int dim : {32, 64, 128, 256})
    for (int n : {1, 3, 4, 7, 33})
      for (int nq : {1, 2, 3, 4, 5, 9}) {
        const size_t stride = dim + 16;
        const auto rows = randn(size_t(n) * stride, dim + n);
        const auto rows_h = to_half(rows);
        const auto q = randn(size_t(nq) * (dim + 8), 7 * nq);
        const int os = n + 5;
        std::vector<float> a(size_t(nq) * os, 0.f), b(a);
        fast_.rows_scores_f16(rows_h.data(), stride, n, dim, q.data(), nq, dim + 8, a.data(), os);
        ref_.rows_scores_f16(rows_h.data(), stride, n, dim, q.data(), nq, dim + 8, b.data(), os);
        expect_close(a, b, 1e-4f, "scores f16");
        fast_.rows_scores_f32(rows.data(), stride, n, dim, q.data(), nq, dim + 8, a.data(), os);
        ref_.rows_scores_f32(rows.data(), stride, n, dim, q.data(), nq, dim + 8, b.data(), os);
        expect_close(a, b, 1e-4f, "scores f32");

        auto w = randn(size_t(nq) * os, 3 * n);
        for (size_t i = 0; i < w.size(); i += 3) w[i] = 0.f;  // masked slots
        const int oo = dim + 4;
        std::vector<float> o1 = randn(size_t(nq) * oo, 11), o2 = o1;
        fast_.rows_accum_f16(rows_h.data(), stride, n, dim, w.data(), nq, os, o1.data(), oo);
        ref_.rows_accum_f16(rows_h.data(), stride, n, dim, w.data(), nq, os, o2.data(), oo);
        expect_close(o1, o2, 1e-4f, "accum f16");
        fast_.rows_accum_f32(rows.data(), stride, n, dim, w.data(), nq, os, o1.data(), oo);
        ref_.rows_accum_f32(rows.data(), stride, n, dim, w.data(), nq, os, o2.data(), oo);
        expect_close(o1, o2, 1e-4f, "accum f32");
      }
}

TEST_P(KvKernelTest, TransposedKeys) {
  constexpr int ld = 32;
  for (int dim : {32, 64, 256})
    for (auto [j0, j1] : {std::pair{0, 32}, {5, 29}, {31, 32}, {0, 1}, {16, 32}})
      for (int nq : {1, 2, 3, 4, 6, 9}) {
        const auto kt = to_half(randn(size_t(dim) * ld, dim));
        const auto q = randn(size_t(nq) * dim, nq);
        const int os = 40;
        std::vector<float> a(size_t(nq) * os, -3.f), b(a);
        fast_.tkeys_scores_f16(kt.data(), ld, j0, j1, dim, q.data(), nq, dim, a.data(), os);
        ref_.tkeys_scores_f16(kt.data(), ld, j0, j1, dim, q.data(), nq, dim, b.data(), os);
        expect_close(a, b, 1e-4f, "tkeys");
      }
}

// Random lane blocks of each width, with per-token scales and offsets (q8_0, q4_0) or without
// (KIVI keys: plain codes, scales folded into the query, q . min as the bias).
TEST_P(KvKernelTest, LaneKeyScores) {
  std::mt19937 rng(5);
  for (int T : {32, 256})
  for (int bits : {2, 4, 8})
    for (bool scaled : {true, false})
      for (int dim : {32, 64, 128, 256})
        for (int nq : {1, 3, 4, 6}) {
          if (T == 256 && dim < 128) continue;
          std::vector<uint8_t> lanes(size_t(dim) * bits / 8 * T);
          std::vector<uint8_t> codes(dim);
          for (int j = 0; j < T; ++j) {
            for (auto& c : codes) c = bits == 8 ? uint8_t(int8_t(int(rng() % 255) - 127)) : uint8_t(rng() % (1u << bits));
            pack_lane_key(codes.data(), dim, bits, T, j, lanes.data());
            for (int c = 0; c < dim; ++c) {  // the layout round-trips
              const int want = bits == 8 ? int(int8_t(codes[c])) : codes[c];
              ASSERT_EQ(lane_key_code(lanes.data(), dim, bits, T, j, c), want);
            }
          }
          const auto scale = to_half(randn(size_t(dim / 32) * T, 9, 0.05f));
          LaneKeys k{lanes.data(), T, bits, scaled ? scale.data() : nullptr, scaled && bits == 4 ? 8 : 0};
          const auto x = randn(size_t(nq) * dim, 17 + nq);
          const auto mul = randn(dim, 23);
          QuantQueries q;
          quantize_queries(x.data(), nq, dim, dim, scaled ? nullptr : mul.data(), q);
          if (!scaled) q.bias = randn(nq, 29);
          for (auto [j0, j1] : {std::pair{0, T}, {3, 30}, {17, 18}, {T - 21, T}}) {
            const int os = T + 4;
            std::vector<float> a(size_t(nq) * os, -1.f), b(a);
            fast_.lane_scores(k, j0, j1, dim, q, a.data(), os);
            ref_.lane_scores(k, j0, j1, dim, q, b.data(), os);
            expect_close(a, b, 1e-5f, "lane bits " + std::to_string(bits));
          }
        }
}

// KIVI keys: the query times the block's channel scales is quantized inside the kernel, exactly as
// quantize_queries does it, so the integer part agrees exactly and only q . min's float sum may differ.
TEST_P(KvKernelTest, KiviKeyScores) {
  constexpr int T = 32;
  std::mt19937 rng(12);
  for (int bits : {2, 4})
    for (int dim : {64, 128, 256})
      for (int nq : {1, 3, 4, 7}) {
        std::vector<uint8_t> lanes(size_t(dim) * bits / 8 * T), codes(dim);
        for (int j = 0; j < T; ++j) {
          for (auto& c : codes) c = uint8_t(rng() % (1u << bits));
          pack_lane_key(codes.data(), dim, bits, T, j, lanes.data());
        }
        const auto scale = to_half(randn(dim, 5, 0.2f)), mn = to_half(randn(dim, 6));
        const auto q = randn(size_t(nq) * (dim + 4), 40 + nq);
        const LaneKeys k{lanes.data(), T, bits, nullptr, 0};
        for (auto [j0, j1] : {std::pair{0, T}, {7, 25}}) {
          std::vector<float> a(size_t(nq) * T, -1.f), b(a);
          fast_.kivi_key_scores(k, scale.data(), mn.data(), j0, j1, dim, q.data(), nq, dim + 4, a.data(), T);
          ref_.kivi_key_scores(k, scale.data(), mn.data(), j0, j1, dim, q.data(), nq, dim + 4, b.data(), T);
          expect_close(a, b, 1e-5f, "kivi keys bits " + std::to_string(bits));
        }
      }
}

TEST_P(KvKernelTest, CodeRowAccum) {
  std::mt19937 rng(8);
  for (int bits : {2, 4, 8})
    for (int group : {32, 64})
      for (bool with_min : {false, true})
        for (int dim : {64, 96, 128, 256})
          for (int n : {1, 5, 32, 255, 256, 300})  // 300: more than one call's 256 tokens
            for (int nq : {1, 3, 4, 5}) {
              if (dim % group != 0 || (n > 32 && nq > 3)) continue;
              const size_t stride = size_t(dim) * bits / 8 + 8;
              std::vector<uint8_t> codes(stride * n);
              for (auto& c : codes) c = uint8_t(rng());
              if (bits == 8)
                for (auto& c : codes) c = c == 0x80 ? 0 : c;  // int8 codes stay in -127..127
              const int ng = dim / group;
              const size_t ss = size_t(n) + 3;  // group stride of the scales
              auto scale = to_half(randn(ss * ng, 3, 0.1f)), mn = to_half(randn(ss * ng, 4));
              auto w = randn(size_t(nq) * n, 6);
              for (size_t i = 0; i < w.size(); i += 4) w[i] = 0.f;
              if (n > 1)  // an empty slot: no weight, and whatever bits its scales hold (NaN here)
                for (int g = 0; g < ng; ++g) {
                  scale[g * ss + 1] = mn[g * ss + 1] = 0x7e00;
                  for (int i = 0; i < nq; ++i) w[size_t(i) * n + 1] = 0.f;
                }
              CodeRows v{codes.data(), stride, bits, group, scale.data(), with_min ? mn.data() : nullptr, ss,
                         bits == 4 && !with_min ? 8 : 0};
              std::vector<float> o1 = randn(size_t(nq) * (dim + 3), 2), o2 = o1;
              fast_.code_accum(v, n, dim, w.data(), nq, n, o1.data(), dim + 3);
              ref_.code_accum(v, n, dim, w.data(), nq, n, o2.data(), dim + 3);
              // The fast kernels round each row's coefficients w_j * scale_jg to int16 with the step
              // dq = max_j |w_j scale_jg| / 32767: an output moves by at most dq / 2 * n * max |code|.
              const float max_code = bits == 8 ? 127.f : float((1 << bits) - 1);
              for (int i = 0; i < nq; ++i)
                for (int c = 0; c < dim; ++c) {
                  float cmax = 0.f;
                  for (int j = 0; j < n; ++j)
                    if (w[size_t(i) * n + j] != 0.f)
                      cmax = std::max(cmax, std::fabs(w[size_t(i) * n + j] * fp16_to_f32(scale[size_t(c / group) * ss + j])));
                  const size_t k = size_t(i) * (dim + 3) + c;
                  ASSERT_NEAR(o1[k], o2[k], cmax / 32767.f / 2 * n * max_code * 1.01f + 1e-4f * (1 + std::fabs(o2[k])))
                      << "code rows bits " << bits << " row " << i << " channel " << c;
                }
            }
}

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> b(n);
  for (auto& v : b) v = uint8_t(rng());
  return b;
}

// Codebook keys: lookups added in the same order on every ISA, so the scores agree bit for bit.
TEST_P(KvKernelTest, LookupTableScores) {
  for (int T : {32, 64})
    for (int ng : {8, 16, 32, 128})
      for (int nq : {1, 3, 5, 9})
        for (auto [j0, j1] : {std::pair{0, T}, {5, 21}, {0, 1}, {T - 3, T}, {17, T - 1}}) {
          const auto codes = random_bytes(size_t(ng) * T, T + ng);
          const auto lut = randn(size_t(nq) * ng * 256, nq + ng);
          const int os = j1 - j0 + 3;
          std::vector<float> a(size_t(nq) * os, -1.f), b(a);
          fast_.lut_scores(codes.data(), T, j0, j1, ng, lut.data(), nq, a.data(), os);
          ref_.lut_scores(codes.data(), T, j0, j1, ng, lut.data(), nq, b.data(), os);
          ASSERT_EQ(a, b) << "T " << T << " ng " << ng << " nq " << nq << " [" << j0 << ", " << j1 << ")";
        }
  for (int C : {1, 2, 4, 8})
    for (int dim : {32, 64, 256}) {
      const int ng = dim / C, nq = 3, qs = dim + 8;
      const auto cen_t = randn(size_t(dim) * 256, C + dim);
      const auto q = randn(size_t(nq) * qs, dim);
      std::vector<float> a(size_t(nq) * ng * 256), b(a);
      fast_.lut_build(cen_t.data(), ng, C, q.data(), nq, qs, a.data());
      ref_.lut_build(cen_t.data(), ng, C, q.data(), nq, qs, b.data());
      expect_close(a, b, 1e-5f, "lookup tables");
    }
}

TEST_P(KvKernelTest, CentroidAccum) {
  for (int C : {1, 2, 4, 8})
    for (int dim : {32, 64, 256})
      for (int n : {1, 7, 32, 33})
        for (int nq : {1, 3, 5, 9}) {
          const int ng = dim / C;
          const size_t stride = ng + 3;
          const auto codes = random_bytes(stride * n, C * n + dim);
          const auto cen = randn(size_t(dim) * 256, dim + C);
          const int ws = n + 2, os = dim + 4;
          auto w = randn(size_t(nq) * ws, nq + n);
          for (size_t i = 0; i < w.size(); i += 3) w[i] = 0.f;  // masked slots
          std::vector<float> o1 = randn(size_t(nq) * os, 5), o2 = o1;
          fast_.centroid_accum(codes.data(), stride, n, dim, C, cen.data(), w.data(), nq, ws, o1.data(), os);
          ref_.centroid_accum(codes.data(), stride, n, dim, C, cen.data(), w.data(), nq, ws, o2.data(), os);
          expect_close(o1, o2, 1e-5f, "centroid accum C " + std::to_string(C));
        }
}

// PQ keys (4-bit codes, byte-shuffle lookups): with scale 1 and bias 0 the outputs are the integer
// sums themselves, which must equal a direct sum over a token-major copy of the codes exactly, on
// every ISA, up to the largest sums the tables allow (M = 256 entries of 255: 65280 needs all 16
// bits, unsigned). Then a scale and bias are applied the same way everywhere.
TEST_P(KvKernelTest, ProductQuantizedScores) {
  for (int M : {16, 32, 64, 128, 256})
    for (int nblk : {1, 3})
      for (int nq : {1, 3, 6})
        for (bool full : {false, true}) {
          const int T = 32 * nblk;
          std::mt19937 rng(M * 7 + nblk * 3 + nq + full);
          std::vector<uint8_t> code(size_t(T) * M);  // [token][m], 0..15
          for (auto& c : code) c = uint8_t(rng() % 16);
          std::vector<uint8_t> packed(size_t(T / 32) * M * 16, 0);
          for (int j = 0; j < T; ++j)
            for (int m = 0; m < M; ++m) {
              uint8_t& byte = packed[(size_t(j / 32) * M + m) * 16 + j % 16];
              byte |= uint8_t(j % 32 < 16 ? code[size_t(j) * M + m] : code[size_t(j) * M + m] << 4);
            }
          std::vector<uint8_t> lut(size_t(nq) * M * 16);
          for (auto& v : lut) v = full ? 255 : uint8_t(rng() % 256);
          const std::vector<float> one(nq, 1.f), zero(nq, 0.f);
          for (auto [j0, j1] : {std::pair{0, T}, {5, 21}, {0, 1}, {T - 3, T}, {17, T - 1}, {16, T}}) {
            const int os = j1 - j0 + 2;
            std::vector<float> a(size_t(nq) * os, -1.f), b(a);
            fast_.pq_scores(packed.data(), j0, j1, M, lut.data(), nq, one.data(), zero.data(), a.data(), os);
            ref_.pq_scores(packed.data(), j0, j1, M, lut.data(), nq, one.data(), zero.data(), b.data(), os);
            ASSERT_EQ(a, b) << "M " << M << " nq " << nq << " [" << j0 << ", " << j1 << ")";
            for (int i = 0; i < nq; ++i)
              for (int j = j0; j < j1; ++j) {
                uint32_t want = 0;
                for (int m = 0; m < M; ++m) want += lut[(size_t(i) * M + m) * 16 + code[size_t(j) * M + m]];
                ASSERT_EQ(b[size_t(i) * os + (j - j0)], float(want)) << "reference, M " << M << " token " << j;
              }
            EXPECT_EQ(a[size_t(nq - 1) * os + j1 - j0], -1.f) << "wrote past the range";
          }
          const auto sc = randn(nq, M, 0.01f), bias = randn(nq, M + 1, 10.f);
          std::vector<float> a(size_t(nq) * T), b(a);
          fast_.pq_scores(packed.data(), 0, T, M, lut.data(), nq, sc.data(), bias.data(), a.data(), T);
          ref_.pq_scores(packed.data(), 0, T, M, lut.data(), nq, sc.data(), bias.data(), b.data(), T);
          ASSERT_EQ(a, b) << "scaled, M " << M;
        }
}

TEST_P(KvKernelTest, SoftmaxPieces) {
  for (int n : {1, 7, 16, 33, 2048}) {
    auto x = randn(n, n, 4.f), y = x;
    if (n > 1) x[n / 2] = -INFINITY, y[n / 2] = -INFINITY;  // a masked slot
    EXPECT_EQ(fast_.max_of(x.data(), n), ref_.max_of(y.data(), n));
    const float m = ref_.max_of(y.data(), n);
    const float s1 = fast_.exp_shift_sum(x.data(), n, m), s2 = ref_.exp_shift_sum(y.data(), n, m);
    EXPECT_NEAR(s1, s2, 1e-5f * s2);
    expect_close(x, y, 1e-6f, "exp");
  }
}

INSTANTIATE_TEST_SUITE_P(Isas, KvKernelTest, ::testing::ValuesIn(simd_isas()),
                         [](const auto& info) { return std::string(isa_name(info.param)); });

}  // namespace
}  // namespace leanlm
