// Every KV kernel of every ISA this CPU runs (the scalar table included) against references
// written here, in double, from the storage forms' definitions in kv_kernels.h: integer parts
// exactly, float sums within a few times their measured rounding, the fast kernels' int16
// coefficients (code rows) within a few times the rounding those give. The SIMD tables are also
// compared with the scalar one where they must agree bit for bit. Shapes cover partial token
// vectors, odd query counts and every head size the models use.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kv/kv_kernels.h"
#include "kv_test_util.h"
#include "util/fp16.h"
#include "isa_report.h"
#include "util/sysinfo.h"

namespace leanlm {
namespace {

using testing_kv::ErrorStats;
using testing_kv::half_to_double;
using testing_kv::kUnitRoundoff;

std::vector<Isa> all_isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512})
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

// The multiples of each check's error unit (kv_test_util.h, ErrorStats), measured with
// LEANLM_ERROR_STATS=1 over every shape below on the scalar, AVX2 and AVX-512 tables (AVX-512
// Xeon): median, 99th percentile and maximum of |error| / unit in each comment; the tolerance is
// about twice the largest ratio seen (every element of every shape must pass).
// Float sums, unit u * sum |terms|: 0.14-0.31 / 1.1-1.6 / 2.7-5.7 (scalar code rows the largest).
constexpr double kFloatSum = 12.0;
// exp(x - m), unit u * e (1 + |x - m|) (x - m itself is rounded in float): 0.31 / 0.94 / 1.18.
constexpr double kExp = 4.0;
// int16 coefficients of code rows, unit dq sqrt(sum_j code_j^2 / 12) + u * sum |terms|: 0.41 / 2.5 / 4.1.
constexpr double kCoefRounding = 8.0;
// int8 queries of KIVI keys, unit d sqrt(sum_c code_c^2 / 12) + u * sum |terms|: 0.71 / 2.5 / 3.5.
constexpr double kQueryRounding = 7.0;

class KvKernelTest : public ::testing::TestWithParam<Isa> {
 protected:
  const KvKernels& ref_ = kv_kernels(Isa::Scalar);
  const KvKernels& fast_ = kv_kernels(GetParam());
  std::string isa_ = isa_name(GetParam());
};

TEST_P(KvKernelTest, RowsScoresAndAccum) {
  ErrorStats st_scores("rows scores " + isa_), st_accum("rows accum " + isa_);
  for (int dim : {32, 64, 128, 256})
    for (int n : {1, 3, 4, 7, 33})
      for (int nq : {1, 2, 3, 4, 5, 9}) {
        const size_t stride = dim + 16;
        const int qs = dim + 8;
        const auto rows = randn(size_t(n) * stride, dim + n);
        const auto rows_h = to_half(rows);
        const auto q = randn(size_t(nq) * qs, 7 * nq);
        const int os = n + 5;
        for (bool half : {true, false}) {
          SCOPED_TRACE(half ? "f16" : "f32");
          auto x = [&](int j, int c) { return half ? half_to_double(rows_h[j * stride + c]) : double(rows[j * stride + c]); };
          std::vector<float> a(size_t(nq) * os, -1.f);
          if (half) fast_.rows_scores_f16(rows_h.data(), stride, n, dim, q.data(), nq, qs, a.data(), os);
          else fast_.rows_scores_f32(rows.data(), stride, n, dim, q.data(), nq, qs, a.data(), os);
          for (int i = 0; i < nq; ++i) {
            for (int j = 0; j < n; ++j) {
              double want = 0, mag = 0;
              for (int c = 0; c < dim; ++c) {
                want += q[size_t(i) * qs + c] * x(j, c);
                mag += std::fabs(q[size_t(i) * qs + c] * x(j, c));
              }
              ASSERT_TRUE(st_scores.check(a[size_t(i) * os + j], want, kUnitRoundoff * mag, kFloatSum))
                  << "scores dim " << dim << " n " << n << " row " << i << " token " << j << ": " << a[size_t(i) * os + j]
                  << " vs " << want;
            }
            for (int j = n; j < os; ++j) ASSERT_EQ(a[size_t(i) * os + j], -1.f) << "wrote past the tokens";
          }

          auto w = randn(size_t(nq) * os, 3 * n);
          for (size_t i = 0; i < w.size(); i += 3) w[i] = 0.f;  // masked slots
          const int oo = dim + 4;
          const std::vector<float> o0 = randn(size_t(nq) * oo, 11);
          std::vector<float> o = o0;
          if (half) fast_.rows_accum_f16(rows_h.data(), stride, n, dim, w.data(), nq, os, o.data(), oo);
          else fast_.rows_accum_f32(rows.data(), stride, n, dim, w.data(), nq, os, o.data(), oo);
          for (int i = 0; i < nq; ++i)
            for (int c = 0; c < oo; ++c) {
              const size_t k = size_t(i) * oo + c;
              if (c >= dim) {
                ASSERT_EQ(o[k], o0[k]) << "wrote past the channels";
                continue;
              }
              double want = o0[k], mag = std::fabs(o0[k]);
              for (int j = 0; j < n; ++j) {
                want += w[size_t(i) * os + j] * x(j, c);
                mag += std::fabs(w[size_t(i) * os + j] * x(j, c));
              }
              ASSERT_TRUE(st_accum.check(o[k], want, kUnitRoundoff * mag, kFloatSum))
                  << "accum dim " << dim << " n " << n << " row " << i << " channel " << c;
            }
        }
      }
}

TEST_P(KvKernelTest, TransposedKeys) {
  ErrorStats st("tkeys " + isa_);
  constexpr int ld = 32;
  for (int dim : {32, 64, 256})
    for (auto [j0, j1] : {std::pair{0, 32}, {5, 29}, {31, 32}, {0, 1}, {16, 32}})
      for (int nq : {1, 2, 3, 4, 6, 9}) {
        const auto kt = to_half(randn(size_t(dim) * ld, dim));
        const auto q = randn(size_t(nq) * dim, nq);
        const int os = 40;
        std::vector<float> a(size_t(nq) * os, -3.f);
        fast_.tkeys_scores_f16(kt.data(), ld, j0, j1, dim, q.data(), nq, dim, a.data(), os);
        for (int i = 0; i < nq; ++i) {
          for (int j = j0; j < j1; ++j) {
            double want = 0, mag = 0;
            for (int c = 0; c < dim; ++c) {
              const double t = q[size_t(i) * dim + c] * half_to_double(kt[size_t(c) * ld + j]);
              want += t, mag += std::fabs(t);
            }
            ASSERT_TRUE(st.check(a[size_t(i) * os + (j - j0)], want, kUnitRoundoff * mag, kFloatSum))
                << "dim " << dim << " [" << j0 << ", " << j1 << ") row " << i << " token " << j;
          }
          for (int j = j1 - j0; j < os; ++j) ASSERT_EQ(a[size_t(i) * os + j], -3.f) << "wrote past the range";
        }
      }
}

// The int8 queries themselves: d = max |x mul| / 127, every code within half a step of x mul / d,
// and the per-32 sums of the codes.
void check_quantized_queries(const std::vector<float>& x, int nq, int dim, const float* mul, const QuantQueries& q) {
  ASSERT_EQ(q.n, nq);
  for (int i = 0; i < nq; ++i) {
    float amax = 0.f;
    for (int c = 0; c < dim; ++c) amax = std::max(amax, std::fabs(x[size_t(i) * dim + c] * (mul ? mul[c] : 1.f)));
    ASSERT_FLOAT_EQ(q.d[i], amax / 127.f);
    for (int g = 0; g < dim / 32; ++g) {
      int sum = 0;
      for (int c = g * 32; c < g * 32 + 32; ++c) {
        const double v = double(x[size_t(i) * dim + c]) * (mul ? mul[c] : 1.f);
        const int code = q.codes[size_t(i) * dim + c];
        ASSERT_LE(std::fabs(code * double(q.d[i]) - v), 0.5 * q.d[i] * (1 + 1e-5)) << "row " << i << " channel " << c;
        sum += code;
      }
      ASSERT_EQ(q.sum[size_t(i) * (dim / 32) + g], sum);
    }
  }
}

// Random lane blocks of each width, with per-token scales and offsets (q8_0, q4_0) or without
// (KIVI keys: plain codes, scales folded into the query, q . min as the bias). The reference reads
// the codes from the test's own copy, not from the lanes.
TEST_P(KvKernelTest, LaneKeyScores) {
  ErrorStats st("lane scores " + isa_);
  std::mt19937 rng(5);
  for (int T : {32, 256})
  for (int bits : {2, 4, 8})
    for (bool scaled : {true, false})
      for (int dim : {32, 64, 128, 256})
        for (int nq : {1, 3, 4, 6}) {
          if (T == 256 && dim < 128) continue;
          std::vector<uint8_t> lanes(size_t(dim) * bits / 8 * T);
          std::vector<int> all(size_t(T) * dim);  // [token][channel] the codes as numbers
          std::vector<uint8_t> codes(dim);
          for (int j = 0; j < T; ++j) {
            for (auto& c : codes) c = bits == 8 ? uint8_t(int8_t(int(rng() % 255) - 127)) : uint8_t(rng() % (1u << bits));
            pack_lane_key(codes.data(), dim, bits, T, j, lanes.data());
            for (int c = 0; c < dim; ++c) {  // the layout round-trips
              const int want = bits == 8 ? int(int8_t(codes[c])) : codes[c];
              all[size_t(j) * dim + c] = want;
              ASSERT_EQ(lane_key_code(lanes.data(), dim, bits, T, j, c), want);
            }
          }
          const auto scale = to_half(randn(size_t(dim / 32) * T, 9, 0.05f));
          const int zero = scaled && bits == 4 ? 8 : 0;
          LaneKeys k{lanes.data(), T, bits, scaled ? scale.data() : nullptr, zero};
          const auto x = randn(size_t(nq) * dim, 17 + nq);
          const auto mul = randn(dim, 23);
          QuantQueries q;
          quantize_queries(x.data(), nq, dim, dim, scaled ? nullptr : mul.data(), q);
          check_quantized_queries(x, nq, dim, scaled ? nullptr : mul.data(), q);
          if (!scaled) q.bias = randn(nq, 29);
          const int group = scaled ? 32 : dim;
          for (auto [j0, j1] : {std::pair{0, T}, {3, 30}, {17, 18}, {T - 21, T}}) {
            const int os = T + 4;
            std::vector<float> a(size_t(nq) * os, -1.f);
            fast_.lane_scores(k, j0, j1, dim, q, a.data(), os);
            for (int i = 0; i < nq; ++i) {
              for (int j = j0; j < j1; ++j) {
                double s = 0, mag = 0;
                for (int g = 0; g < dim / group; ++g) {
                  int64_t acc = 0;
                  for (int c = g * group; c < (g + 1) * group; ++c)
                    acc += int64_t(q.codes[size_t(i) * dim + c]) * (all[size_t(j) * dim + c] - zero);
                  const double d = scaled ? half_to_double(scale[size_t(g) * T + j]) : 1.0;
                  s += d * double(acc), mag += std::fabs(d * double(acc));
                }
                const double bias = q.bias.empty() ? 0.0 : q.bias[i];
                const double want = q.d[i] * s + bias, unit = kUnitRoundoff * (q.d[i] * mag + std::fabs(bias));
                ASSERT_TRUE(st.check(a[size_t(i) * os + (j - j0)], want, unit, kFloatSum))
                    << "bits " << bits << " dim " << dim << " row " << i << " token " << j;
              }
              for (int j = j1 - j0; j < os; ++j) ASSERT_EQ(a[size_t(i) * os + j], -1.f) << "wrote past the range";
            }
          }
        }
}

// KIVI keys: against the exact float score q . (min + scale * code), within the rounding of the
// int8 query the kernel quantizes inside (d = max_c |q_c scale_c| / 127); and against the scalar
// table, which quantizes the same way, within float rounding only.
TEST_P(KvKernelTest, KiviKeyScores) {
  ErrorStats st("kivi keys " + isa_), st_same("kivi keys vs scalar " + isa_);
  constexpr int T = 32;
  std::mt19937 rng(12);
  for (int bits : {2, 4})
    for (int dim : {64, 128, 256})
      for (int nq : {1, 3, 4, 7}) {
        std::vector<uint8_t> lanes(size_t(dim) * bits / 8 * T), codes(dim);
        std::vector<int> all(size_t(T) * dim);
        for (int j = 0; j < T; ++j) {
          for (auto& c : codes) c = uint8_t(rng() % (1u << bits));
          pack_lane_key(codes.data(), dim, bits, T, j, lanes.data());
          for (int c = 0; c < dim; ++c) all[size_t(j) * dim + c] = codes[c];
        }
        const auto scale = to_half(randn(dim, 5, 0.2f)), mn = to_half(randn(dim, 6));
        const int qs = dim + 4;
        const auto q = randn(size_t(nq) * qs, 40 + nq);
        const LaneKeys k{lanes.data(), T, bits, nullptr, 0};
        for (auto [j0, j1] : {std::pair{0, T}, {7, 25}}) {
          std::vector<float> a(size_t(nq) * T, -1.f), b(a);
          fast_.kivi_key_scores(k, scale.data(), mn.data(), j0, j1, dim, q.data(), nq, qs, a.data(), T);
          ref_.kivi_key_scores(k, scale.data(), mn.data(), j0, j1, dim, q.data(), nq, qs, b.data(), T);
          for (int i = 0; i < nq; ++i) {
            double amax = 0;
            for (int c = 0; c < dim; ++c) amax = std::max(amax, std::fabs(q[size_t(i) * qs + c] * half_to_double(scale[c])));
            const double dq = amax / 127;
            for (int j = j0; j < j1; ++j) {
              double want = 0, mag = 0, codes2 = 0;
              for (int c = 0; c < dim; ++c) {
                const double qc = q[size_t(i) * qs + c], code = all[size_t(j) * dim + c];
                want += qc * (half_to_double(mn[c]) + half_to_double(scale[c]) * code);
                mag += std::fabs(qc * half_to_double(mn[c])) + std::fabs(qc * half_to_double(scale[c]) * code);
                codes2 += code * code;
              }
              const size_t o = size_t(i) * T + (j - j0);
              ASSERT_TRUE(st.check(a[o], want, dq * std::sqrt(codes2 / 12) + kUnitRoundoff * mag, kQueryRounding))
                  << "bits " << bits << " dim " << dim << " row " << i << " token " << j << ": " << a[o] << " vs " << want;
              ASSERT_TRUE(st_same.check(a[o], b[o], kUnitRoundoff * mag, kFloatSum)) << "vs scalar, token " << j;
            }
            for (int j = j1 - j0; j < T; ++j) ASSERT_EQ(a[size_t(i) * T + j], -1.f) << "wrote past the range";
          }
        }
      }
}

// Element c of a code row, from the layout in kv_kernels.h (code rows).
int code_of(const uint8_t* row, int bits, int c) {
  const uint8_t* unit = row + size_t(c / 32) * (32 * bits / 8);
  const int e = c % 32;
  if (bits == 8) return int8_t(unit[e]);
  if (bits == 4) return e < 16 ? unit[e] & 15 : unit[e - 16] >> 4;
  return (unit[e % 8] >> (2 * (e / 8))) & 3;
}

// Values on their codes. The SIMD kernels round each row's coefficients w_j * scale_jg to int16
// with one step dq = max_j |w_j scale_jg| / 32767 per (row, group): an output is then off by the
// sum over tokens of a rounding error of at most dq / 2 times the code, whose standard deviation
// dq sqrt(sum_j code_j^2 / 12) is the unit. The scalar table computes in float.
TEST_P(KvKernelTest, CodeRowAccum) {
  ErrorStats st("code rows " + isa_);
  const bool int16_coefs = GetParam() != Isa::Scalar;
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
              const int zero = bits == 4 && !with_min ? 8 : 0;
              CodeRows v{codes.data(), stride, bits, group, scale.data(), with_min ? mn.data() : nullptr, ss, zero};
              const std::vector<float> o0 = randn(size_t(nq) * (dim + 3), 2);
              std::vector<float> o = o0;
              fast_.code_accum(v, n, dim, w.data(), nq, n, o.data(), dim + 3);
              for (int i = 0; i < nq; ++i)
                for (int c = 0; c < dim + 3; ++c) {
                  const size_t k = size_t(i) * (dim + 3) + c;
                  if (c >= dim) {
                    ASSERT_EQ(o[k], o0[k]) << "wrote past the channels";
                    continue;
                  }
                  const size_t g = size_t(c / group) * ss;
                  double want = o0[k], mag = std::fabs(o0[k]), cmax = 0, codes2 = 0;
                  for (int j = 0; j < n; ++j) {
                    const double wj = w[size_t(i) * n + j];
                    if (wj == 0) continue;
                    const double sc = half_to_double(scale[g + j]), m = with_min ? half_to_double(mn[g + j]) : 0.0;
                    const int code = code_of(codes.data() + j * stride, bits, c);
                    want += wj * (sc * (code - zero) + m);
                    mag += std::fabs(wj) * (std::fabs(sc * code) + std::fabs(sc * zero) + std::fabs(m));
                    cmax = std::max(cmax, std::fabs(wj * sc));
                    codes2 += double(code) * code;
                  }
                  const double unit = (int16_coefs ? cmax / 32767 * std::sqrt(codes2 / 12) : 0.0) + kUnitRoundoff * mag;
                  ASSERT_TRUE(st.check(o[k], want, unit, int16_coefs ? kCoefRounding : kFloatSum))
                      << "bits " << bits << " group " << group << " dim " << dim << " n " << n << " row " << i
                      << " channel " << c << ": " << o[k] << " vs " << want;
                }
            }
}

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> b(n);
  for (auto& v : b) v = uint8_t(rng());
  return b;
}

// Codebook keys: lookups added in the order of g on every ISA (kv_kernels.h), so the scores equal,
// bit for bit, the float sum written here in that order.
TEST_P(KvKernelTest, LookupTableScores) {
  for (int T : {32, 64})
    for (int ng : {8, 16, 32, 128})
      for (int nq : {1, 3, 5, 9})
        for (auto [j0, j1] : {std::pair{0, T}, {5, 21}, {0, 1}, {T - 3, T}, {17, T - 1}}) {
          const auto codes = random_bytes(size_t(ng) * T, T + ng);
          const auto lut = randn(size_t(nq) * ng * 256, nq + ng);
          const int os = j1 - j0 + 3;
          std::vector<float> a(size_t(nq) * os, -1.f);
          fast_.lut_scores(codes.data(), T, j0, j1, ng, lut.data(), nq, a.data(), os);
          for (int i = 0; i < nq; ++i) {
            for (int j = j0; j < j1; ++j) {
              float want = 0.f;
              for (int g = 0; g < ng; ++g) want += lut[(size_t(i) * ng + g) * 256 + codes[size_t(g) * T + j]];
              ASSERT_EQ(a[size_t(i) * os + (j - j0)], want) << "T " << T << " ng " << ng << " row " << i << " token " << j;
            }
            for (int j = j1 - j0; j < os; ++j) ASSERT_EQ(a[size_t(i) * os + j], -1.f) << "wrote past the range";
          }
        }
  ErrorStats st("lut build " + isa_);
  for (int C : {1, 2, 4, 8})
    for (int dim : {32, 64, 256}) {
      const int ng = dim / C, nq = 3, qs = dim + 8;
      const auto cen_t = randn(size_t(dim) * 256, C + dim);
      const auto q = randn(size_t(nq) * qs, dim);
      std::vector<float> a(size_t(nq) * ng * 256);
      fast_.lut_build(cen_t.data(), ng, C, q.data(), nq, qs, a.data());
      for (int i = 0; i < nq; ++i)
        for (int g = 0; g < ng; ++g)
          for (int k = 0; k < 256; ++k) {
            double want = 0, mag = 0;
            for (int e = 0; e < C; ++e) {
              const double t = double(q[size_t(i) * qs + g * C + e]) * cen_t[(size_t(g) * C + e) * 256 + k];
              want += t, mag += std::fabs(t);
            }
            ASSERT_TRUE(st.check(a[(size_t(i) * ng + g) * 256 + k], want, kUnitRoundoff * mag, kFloatSum))
                << "C " << C << " dim " << dim << " row " << i << " group " << g << " centroid " << k;
          }
    }
}

TEST_P(KvKernelTest, CentroidAccum) {
  ErrorStats st("centroid accum " + isa_);
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
          const std::vector<float> o0 = randn(size_t(nq) * os, 5);
          std::vector<float> o = o0;
          fast_.centroid_accum(codes.data(), stride, n, dim, C, cen.data(), w.data(), nq, ws, o.data(), os);
          for (int i = 0; i < nq; ++i)
            for (int c = 0; c < os; ++c) {
              const size_t k = size_t(i) * os + c;
              if (c >= dim) {
                ASSERT_EQ(o[k], o0[k]) << "wrote past the channels";
                continue;
              }
              double want = o0[k], mag = std::fabs(o0[k]);
              for (int j = 0; j < n; ++j) {
                const double t = double(w[size_t(i) * ws + j]) * cen[(size_t(c / C) * 256 + codes[j * stride + c / C]) * C + c % C];
                want += t, mag += std::fabs(t);
              }
              ASSERT_TRUE(st.check(o[k], want, kUnitRoundoff * mag, kFloatSum))
                  << "C " << C << " dim " << dim << " n " << n << " row " << i << " channel " << c;
            }
        }
}

// PQ keys (4-bit codes, byte-shuffle lookups): with scale 1 and bias 0 the outputs are the integer
// sums themselves, which must equal a direct sum over a token-major copy of the codes exactly, on
// every ISA, up to the largest sums the tables allow (M = 256 entries of 255: 65280 needs all 16
// bits, unsigned). Then a scale and bias are applied as one fma, exactly.
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
          auto sum_of = [&](int i, int j) {
            uint32_t want = 0;
            for (int m = 0; m < M; ++m) want += lut[(size_t(i) * M + m) * 16 + code[size_t(j) * M + m]];
            return want;
          };
          const std::vector<float> one(nq, 1.f), zero(nq, 0.f);
          for (auto [j0, j1] : {std::pair{0, T}, {5, 21}, {0, 1}, {T - 3, T}, {17, T - 1}, {16, T}}) {
            const int os = j1 - j0 + 2;
            std::vector<float> a(size_t(nq) * os, -1.f);
            fast_.pq_scores(packed.data(), j0, j1, M, lut.data(), nq, one.data(), zero.data(), a.data(), os);
            for (int i = 0; i < nq; ++i) {
              for (int j = j0; j < j1; ++j)
                ASSERT_EQ(a[size_t(i) * os + (j - j0)], float(sum_of(i, j))) << "M " << M << " row " << i << " token " << j;
              for (int j = j1 - j0; j < os; ++j) ASSERT_EQ(a[size_t(i) * os + j], -1.f) << "wrote past the range";
            }
          }
          const auto sc = randn(nq, M, 0.01f), bias = randn(nq, M + 1, 10.f);
          std::vector<float> a(size_t(nq) * T);
          fast_.pq_scores(packed.data(), 0, T, M, lut.data(), nq, sc.data(), bias.data(), a.data(), T);
          for (int i = 0; i < nq; ++i)
            for (int j = 0; j < T; ++j)
              ASSERT_EQ(a[size_t(i) * T + j], std::fma(sc[i], float(sum_of(i, j)), bias[i])) << "scaled, M " << M;
        }
}

TEST_P(KvKernelTest, SoftmaxPieces) {
  ErrorStats st_exp("exp " + isa_), st_sum("exp sum " + isa_);
  for (int n : {1, 7, 16, 33, 2048}) {
    auto x = randn(n, n, 4.f);
    if (n > 1) x[n / 2] = -INFINITY;  // a masked slot
    float mx = -INFINITY;
    for (float v : x) mx = std::max(mx, v);
    EXPECT_EQ(fast_.max_of(x.data(), n), mx);
    const std::vector<float> x0 = x;
    const float s = fast_.exp_shift_sum(x.data(), n, mx);
    double want_sum = 0, exp_err = 0;
    for (int i = 0; i < n; ++i) {
      const double e = std::exp(double(x0[i]) - mx);
      want_sum += e;
      if (x0[i] == -INFINITY) {
        ASSERT_EQ(x[i], 0.f) << "a masked slot";
        continue;
      }
      const double unit = kUnitRoundoff * e * (1 + std::fabs(double(x0[i]) - mx));
      ASSERT_TRUE(st_exp.check(x[i], e, unit, kExp)) << "n " << n << " at " << i << ": " << x[i] << " vs " << e;
      exp_err += unit;
    }
    ASSERT_TRUE(st_sum.check(s, want_sum, kUnitRoundoff * want_sum + exp_err, kFloatSum)) << "n " << n;
  }
}

INSTANTIATE_TEST_SUITE_P(Isas, KvKernelTest, ::testing::ValuesIn(all_isas()),
                         [](const auto& info) { return std::string(isa_name(info.param)); });

}  // namespace
}  // namespace leanlm
