// Every SIMD kernel against its scalar reference, on random inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <utility>
#include <random>
#include <vector>

#include "kernels/ops.h"
#include "quant/dequant.h"
#include "quant/dot.h"
#include "quant/gemm.h"
#include "quant/random_blocks.h"
#include "kernels/matmul.h"
#include "util/fp16.h"
#include "util/error.h"
#include "util/sysinfo.h"
#include "isa_report.h"

namespace leanlm {
namespace {

const GgmlType kQuantTypes[] = {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0,
                                GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};
const GgmlType kFloatTypes[] = {GgmlType::F32, GgmlType::F16, GgmlType::BF16};

std::vector<Isa> available_isas() {
  std::vector<Isa> v{Isa::Scalar};
  if (int(best_isa()) >= int(Isa::Avx2)) v.push_back(Isa::Avx2);
  if (int(best_isa()) >= int(Isa::Avx512)) v.push_back(Isa::Avx512);
  return v;
}

CpuFeatures all_features() {
  CpuFeatures f;
  f.avx2 = f.fma = f.f16c = f.bmi2 = true;
  f.avx512f = f.avx512bw = f.avx512vl = f.avx512dq = f.avx512vnni = f.avx512bf16 = true;
  return f;
}

// The error choose_isa throws for (f, override), or "" when it returns.
std::string choose_error(const CpuFeatures& f, const char* override_value) {
  try {
    choose_isa(f, override_value);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Faked CPUs: every flag the AVX-512 (or AVX2) files are compiled with is required; asking for more
// than the CPU has is an error naming the request and the missing flag, never a silent lower set.
TEST(Dispatch, ChoiceFromFeaturesAndOverride) {
  const CpuFeatures full = all_features();
  EXPECT_EQ(choose_isa(full, nullptr), Isa::Avx512);
  EXPECT_EQ(choose_isa(full, ""), Isa::Avx512);
  EXPECT_EQ(choose_isa(full, "avx512"), Isa::Avx512);
  EXPECT_EQ(choose_isa(full, "avx2"), Isa::Avx2);
  EXPECT_EQ(choose_isa(full, "scalar"), Isa::Scalar);
  EXPECT_EQ(missing_isa_flags(full, Isa::Avx512), "");
  EXPECT_EQ(choose_error(full, "avx"), "LEANLM_ISA=avx is not scalar, avx2 or avx512");

  const std::pair<bool CpuFeatures::*, const char*> avx512_flags[] = {
      {&CpuFeatures::avx512f, "avx512f"},   {&CpuFeatures::avx512bw, "avx512bw"},     {&CpuFeatures::avx512vl, "avx512vl"},
      {&CpuFeatures::avx512dq, "avx512dq"}, {&CpuFeatures::avx512vnni, "avx512vnni"}, {&CpuFeatures::avx512bf16, "avx512bf16"}};
  for (auto [flag, name] : avx512_flags) {
    CpuFeatures f = full;
    f.*flag = false;
    EXPECT_EQ(missing_isa_flags(f, Isa::Avx512), name);
    EXPECT_EQ(missing_isa_flags(f, Isa::Avx2), "") << name;
    EXPECT_EQ(choose_isa(f, nullptr), Isa::Avx2) << "without " << name;
    EXPECT_EQ(choose_isa(f, "avx2"), Isa::Avx2) << name;
    EXPECT_EQ(choose_error(f, "avx512"),
              "LEANLM_ISA=avx512 asks for AVX-512 (F,BW,VL,DQ,VNNI,BF16) but this CPU lacks " + std::string(name));
  }
  const std::pair<bool CpuFeatures::*, const char*> avx2_flags[] = {
      {&CpuFeatures::avx2, "avx2"}, {&CpuFeatures::fma, "fma"}, {&CpuFeatures::f16c, "f16c"}, {&CpuFeatures::bmi2, "bmi2"}};
  for (auto [flag, name] : avx2_flags) {
    CpuFeatures f = full;
    f.*flag = false;
    EXPECT_EQ(choose_isa(f, nullptr), Isa::Scalar) << "without " << name;
    EXPECT_EQ(choose_isa(f, "scalar"), Isa::Scalar) << name;
    EXPECT_EQ(choose_error(f, "avx2"), "LEANLM_ISA=avx2 asks for AVX2 (AVX2,FMA,F16C,BMI2) but this CPU lacks " + std::string(name));
    EXPECT_NE(choose_error(f, "avx512").find("lacks " + std::string(name)), std::string::npos) << name;
  }
  // A CPU with AVX2 only (e.g. Zen 3): every AVX-512 flag named.
  CpuFeatures zen3;
  zen3.avx2 = zen3.fma = zen3.f16c = zen3.bmi2 = true;
  EXPECT_EQ(choose_isa(zen3, nullptr), Isa::Avx2);
  EXPECT_EQ(choose_error(zen3, "avx512"), "LEANLM_ISA=avx512 asks for AVX-512 (F,BW,VL,DQ,VNNI,BF16) but this CPU lacks "
                                          "avx512f, avx512bw, avx512vl, avx512dq, avx512vnni, avx512bf16");
  // The test log's line: on such a CPU it names the AVX-512 set as not run, and why.
  EXPECT_EQ(isa_paths_report(zen3, Isa::Avx2),
            "kernel sets run: scalar, avx2; NOT run: avx512 (this CPU lacks avx512f, avx512bw, avx512vl, avx512dq, "
            "avx512vnni, avx512bf16)");
  EXPECT_EQ(isa_paths_report(full, Isa::Avx512), "kernel sets run: scalar, avx2, avx512");
  EXPECT_EQ(isa_paths_report(full, Isa::Scalar),
            "kernel sets run: scalar; NOT run: avx2 (a lower set forced by LEANLM_ISA); avx512 (a lower set forced "
            "by LEANLM_ISA)");
}

// LEANLM_ISA (set by the ctest entries test_kernels_isa_*) must take effect: the kernels in use are
// the ones asked for, and a set the CPU cannot run is refused.
TEST(Dispatch, IsaOverrideTakesEffect) {
  const char* env = std::getenv("LEANLM_ISA");
  if (!env || !*env) {
    EXPECT_EQ(best_isa(), choose_isa(cpu_features(), nullptr));
    return;
  }
  if (!choose_error(cpu_features(), env).empty()) {  // not a set's name, or one this CPU lacks
    EXPECT_THROW(best_isa(), Error);
    return;
  }
  EXPECT_EQ(isa_name(best_isa()), std::string(env));
}

TEST(Fp16, ReferenceMatchesF16C) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float a = fp16_to_f32_ref(uint16_t(h)), b = fp16_to_f32(uint16_t(h));
    if (std::isnan(a)) ASSERT_TRUE(std::isnan(b));
    else ASSERT_EQ(a, b) << h;
  }
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-70000.f, 70000.f);
  for (int i = 0; i < 100000; ++i) {
    float f = u(rng) * (i % 3 == 0 ? 1e-6f : 1.f);
    ASSERT_EQ(f32_to_fp16_ref(f), f32_to_fp16(f)) << f;
  }
}

// The integer dot of each ISA equals the scalar reference, and both equal the float dot of the
// dequantized weights with the quantized activations.
class DotTest : public ::testing::TestWithParam<GgmlType> {};

// The dot of rows x n weights w with the activation x, through every ISA: the scalar reference
// must equal the float dot of the dequantized weights with the activation as its int8 codes
// represent it (summed in doubles), and each ISA the reference, within float rounding of the
// magnitudes summed.
void check_dot_rows(GgmlType t, int n, int rows, const std::vector<uint8_t>& w, const std::vector<float>& x,
                    const char* what) {
  const size_t rb = row_bytes(t, n);
  ActBatch acts;
  acts.quantize(x.data(), 1, n, n, act_scheme(t));
  const ActRow xr = acts.row(0);
  std::vector<float> xq(n);  // x as the int8 codes represent it
  for (int i = 0; i < n; ++i) xq[i] = xr.q[i] * xr.d[i / 32];

  std::vector<float> ref(rows);
  dot_table(Isa::Scalar).q[int(t)](n, w.data(), rb, rows, xr, ref.data());
  std::vector<double> mag(rows);
  std::vector<float> deq(n);
  for (int r = 0; r < rows; ++r) {
    dequantize_row(t, w.data() + r * rb, deq.data(), n);
    double exact = 0;
    for (int i = 0; i < n; ++i) {
      exact += double(deq[i]) * xq[i];
      mag[r] += std::fabs(double(deq[i]) * xq[i]);
    }
    EXPECT_NEAR(ref[r], exact, 1e-5 * mag[r] + 1e-6) << what << ": scalar reference vs dequantized, row " << r << " n " << n;
  }
  for (Isa isa : available_isas()) {
    std::vector<float> out(rows);
    dot_table(isa).q[int(t)](n, w.data(), rb, rows, xr, out.data());
    for (int r = 0; r < rows; ++r)
      EXPECT_NEAR(out[r], ref[r], 1e-5 * mag[r] + 1e-6) << what << ": " << isa_name(isa) << " row " << r << " n " << n;
  }
}

// saturate_sign != 0: every weight code byte 0xFF and every activation code +-127 (x constant with
// that sign): the largest unsigned codes and sub-block scales the kernels multiply.
void check_dot(GgmlType t, int n, int saturate_sign = 0) {
  std::mt19937 rng(42 + int(t) + n);
  const int rows = 7;
  const std::vector<uint8_t> w = saturate_sign ? saturated_matrix(t, rows, n, rng) : random_matrix(t, rows, n, rng);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(n);
  for (float& v : x) v = saturate_sign ? float(saturate_sign) : nd(rng);
  check_dot_rows(t, n, rows, w, x, saturate_sign ? "0xFF codes" : "random");
}

// Every code and sub-block scale at the largest magnitude its format holds (extreme_matrix: for
// Q8_0 -128 and 127, which 0xFF (-1) is not), blocks negative or positive at random, and every
// activation code +-127 with the sign of the weight it meets, so that every product adds to the
// same sum: the largest integer sums a kernel can be given. Activations both of unit size and of
// the size of real outliers (3e4, as Gemma's residual stream reaches).
void check_dot_extreme(GgmlType t, int n) {
  std::mt19937 rng(97 + int(t) + n);
  const int rows = 5;
  std::vector<bool> negative(n / traits(t).block_elems);
  for (size_t b = 0; b < negative.size(); ++b) negative[b] = rng() % 2;
  const std::vector<uint8_t> w = extreme_matrix(t, rows, n, negative, rng);
  std::vector<float> deq(n);
  dequantize_row(t, w.data(), deq.data(), n);
  for (float amplitude : {1.f, 3e4f})
    for (int flip : {1, -1}) {
      std::vector<float> x(n);
      for (int i = 0; i < n; ++i) x[i] = flip * amplitude * (deq[i] < 0 ? -1.f : 1.f);
      check_dot_rows(t, n, rows, w, x, "extreme codes, aligned activations");
    }
}

TEST_P(DotTest, AllIsasMatchReferenceAtSaturation) {
  const GgmlType t = GetParam();
  for (int n : traits(t).block_elems == 256 ? std::vector<int>{1024} : std::vector<int>{1024, 608}) {
    for (int sign : {1, -1}) check_dot(t, n, sign);
    check_dot_extreme(t, n);
  }
}

TEST_P(DotTest, AllIsasMatchReference) {
  const GgmlType t = GetParam();
  // Legacy formats also at lengths that leave partial groups of blocks (e.g. 19 blocks of 32).
  for (int n : traits(t).block_elems == 256 ? std::vector<int>{1024} : std::vector<int>{1024, 640, 608, 32})
    check_dot(t, n);
}

INSTANTIATE_TEST_SUITE_P(Types, DotTest, ::testing::ValuesIn(kQuantTypes),
                         [](const auto& info) { return type_name(uint32_t(info.param)); });

TEST(DotFloat, AllIsasMatchReference) {
  for (GgmlType t : kFloatTypes) {
    std::mt19937 rng(7);
    const int n = 333, rows = 5;
    const size_t rb = row_bytes(t, n);
    std::vector<uint8_t> w;
    for (int r = 0; r < rows; ++r) {
      auto row = random_row(t, n, rng);
      w.insert(w.end(), row.begin(), row.end());
    }
    std::vector<float> x(n);
    std::normal_distribution<float> nd(0.f, 1.f);
    for (float& v : x) v = nd(rng);
    std::vector<float> ref(rows), out(rows);
    dot_table(Isa::Scalar).f[int(t)](n, w.data(), rb, rows, x.data(), ref.data());
    for (Isa isa : available_isas()) {
      dot_table(isa).f[int(t)](n, w.data(), rb, rows, x.data(), out.data());
      for (int r = 0; r < rows; ++r) EXPECT_NEAR(out[r], ref[r], 1e-4) << type_name(uint32_t(t)) << " " << isa_name(isa);
    }
  }
}

TEST(ActQuant, RoundTripWithinHalfStep) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.f, 3.f);
  const int n = 512;
  std::vector<float> x(n);
  for (float& v : x) v = nd(rng);
  x[5] = 0;
  for (int i = 256; i < 256 + 32; ++i) x[i] = 0;  // an all-zero block
  for (ActScheme scheme : {ActScheme::Q8_0, ActScheme::Q8_K}) {
    ActBatch a;
    a.quantize(x.data(), 1, n, n, scheme);
    ActRow r = a.row(0);
    // Q8_0 stores its scale rounded to fp16 after computing the codes: up to 127 * 2^-11 steps more.
    const float slack = scheme == ActScheme::Q8_0 ? 0.5f + 127.f / 2048.f : 0.5f;
    for (int i = 0; i < n; ++i) EXPECT_LE(std::fabs(r.q[i] * r.d[i / 32] - x[i]), slack * r.d[i / 32] * 1.0001f) << i;
    for (int g = 0; g < n / 16; ++g) {
      int s = 0;
      for (int i = 0; i < 16; ++i) s += r.q[g * 16 + i];
      EXPECT_EQ(s, r.sum16[g]);
    }
    if (scheme == ActScheme::Q8_K)  // one scale per 256 elements
      for (int b = 0; b < n / 32; ++b) EXPECT_EQ(r.d[b], r.d[b / 8 * 8]);
  }
}

TEST(ActQuant, FastEqualsReferenceBitForBit) {
  std::mt19937 rng(8);
  std::normal_distribution<float> nd(0.f, 2.f);
  const int n = 1024;
  std::vector<float> x(n);
  for (float& v : x) v = nd(rng);
  x[10] = -300.f;  // an outlier that sets a negative Q8_K max
  for (int i = 0; i < 32; ++i) x[512 + i] = (i % 8 - 4) * 0.5f;  // exact ties at 0.5 steps
  for (int i = 0; i < 32; ++i) x[800 + i] = 0.f;
  for (ActScheme scheme : {ActScheme::Q8_0, ActScheme::Q8_K}) {
    std::vector<int8_t> qa(n), qb(n);
    std::vector<float> da(n / 32), db(n / 32);
    std::vector<int16_t> sa(n / 16), sb(n / 16);
    quantize_act_row_ref(x.data(), n, qa.data(), da.data(), sa.data(), scheme);
    quantize_act_row(x.data(), n, qb.data(), db.data(), sb.data(), scheme);
    EXPECT_EQ(qa, qb);
    EXPECT_EQ(da, db);
    EXPECT_EQ(sa, sb);
  }
}

// The GEMM (unpacked weight tiles x token panels) against the per-row scalar reference, for every
// weight type, on sizes that leave partial row quads and a partial token panel.
class GemmTest : public ::testing::TestWithParam<GgmlType> {};

// Saturated: every weight code byte 0xFF, tokens constant +1 or -1 (activation codes +-127).
// Extreme: every code and sub-block scale at its format's largest magnitude (extreme_matrix), each
// token's activations +-1 or +-3e4 with the sign of the weights they meet (see check_dot_extreme).
enum class GemmInput { Random, Saturated, Extreme };
void check_gemm(GgmlType t, GemmInput input) {
  std::mt19937 rng(11 + int(t));
  const int n = 512, rows = 37, tokens = 37;
  const size_t rb = row_bytes(t, n);
  std::vector<bool> negative(n / traits(t).block_elems);
  for (size_t b = 0; b < negative.size(); ++b) negative[b] = rng() % 2;
  std::vector<uint8_t> w = input == GemmInput::Saturated ? saturated_matrix(t, rows, n, rng)
                           : input == GemmInput::Extreme ? extreme_matrix(t, rows, n, negative, rng)
                                                         : random_matrix(t, rows, n, rng);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(size_t(tokens) * n);
  if (input == GemmInput::Saturated) {
    for (int tk = 0; tk < tokens; ++tk)
      for (int i = 0; i < n; ++i) x[size_t(tk) * n + i] = tk % 2 ? -1.f : 1.f;
  } else if (input == GemmInput::Extreme) {
    std::vector<float> deq(n);
    dequantize_row(t, w.data(), deq.data(), n);
    for (int tk = 0; tk < tokens; ++tk)
      for (int i = 0; i < n; ++i)
        x[size_t(tk) * n + i] = (tk % 2 ? -1.f : 1.f) * (tk % 3 ? 1.f : 3e4f) * (deq[i] < 0 ? -1.f : 1.f);
  } else {
    for (float& v : x) v = nd(rng);
    x[3 * n + 7] = 40.f;  // an outlier, as real activations have
  }

  // Unpacking is exact: dequantizing the unpacked form gives the type's own dequantization.
  UnpackedRows u;
  unpack_rows(t, w.data(), rb, rows, n, u);
  std::vector<float> deq(n);
  for (int r = 0; r < rows; ++r) {
    dequantize_row(t, w.data() + r * rb, deq.data(), n);
    for (int i = 0; i < n; ++i) {
      const float v = u.row_scale(r)[i / u.group] * u.row_codes(r)[i] + u.row_offset(r)[i / u.group];
      ASSERT_NEAR(v, deq[i], 1e-6f * (1 + std::fabs(deq[i]))) << "row " << r << " elem " << i;
    }
  }

  ActBatch acts;
  acts.quantize(x.data(), tokens, n, n, act_scheme(t));
  std::vector<float> ref(size_t(tokens) * rows);
  for (int tk = 0; tk < tokens; ++tk) dot_table(Isa::Scalar).q[int(t)](n, w.data(), rb, rows, acts.row(tk), &ref[size_t(tk) * rows]);

  // Tolerance: float rounding relative to the magnitudes summed (scale and offset terms cancel).
  std::vector<float> tol(size_t(tokens) * rows);
  for (int tk = 0; tk < tokens; ++tk)
    for (int r = 0; r < rows; ++r) {
      double mag = 0;
      for (int i = 0; i < n; ++i) {
        const double xi = std::fabs(double(acts.row(tk).q[i]) * acts.row(tk).d[i / 32]);
        mag += xi * (std::fabs(u.row_scale(r)[i / u.group] * u.row_codes(r)[i]) + std::fabs(u.row_offset(r)[i / u.group]));
      }
      tol[size_t(tk) * rows + r] = float(2e-6 * mag + 1e-6);
    }

  ActPanels panels;
  panels.pack(x.data(), tokens, n, n, act_scheme(t));
  const int cols = panels.n_panels * kPanelTokens;
  std::vector<std::pair<const char*, GemmPanelsFn>> kernels{{"scalar", gemm_panels_scalar}};
  if (int(best_isa()) >= int(Isa::Avx2) && t != GgmlType::Q8_0) kernels.push_back({"avx2", gemm_panels_avx2});
  if (best_isa() == Isa::Avx512) kernels.push_back({"avx512", gemm_panels_avx512});
  for (auto [name, fn] : kernels) {
    std::vector<float> out(size_t(rows) * cols);
    fn(u, panels, 0, panels.n_panels, out.data(), cols);
    for (int r = 0; r < rows; ++r)
      for (int tk = 0; tk < tokens; ++tk) {
        const float want = ref[size_t(tk) * rows + r];
        EXPECT_NEAR(out[size_t(r) * cols + tk], want, tol[size_t(tk) * rows + r]) << name << " row " << r << " token " << tk;
      }
  }

  // And through matmul(), which picks the GEMM for batches like this one.
  ThreadPool pool(2);
  MatmulScratch scratch;
  WeightMat wm{t, n, rows, w.data(), rb};
  std::vector<float> y(size_t(tokens) * rows);
  matmul(pool, scratch, wm, x.data(), tokens, n, y.data(), rows);
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], ref[i], tol[i]) << "matmul " << i;
}

TEST_P(GemmTest, MatchesPerRowReference) { check_gemm(GetParam(), GemmInput::Random); }
TEST_P(GemmTest, MatchesPerRowReferenceAtSaturation) {
  check_gemm(GetParam(), GemmInput::Saturated);
  check_gemm(GetParam(), GemmInput::Extreme);
}

// Q, K and V style: several matrices of one input in one call give exactly what separate calls give,
// for prompt batches (GEMM) and single tokens (row kernels), when types share an activation scheme
// (Q5_0 + Q8_0), when they do not (Q5_0 + Q4_K), and for float types.
TEST(Matmul, MultiEqualsSeparate) {
  std::mt19937 rng(21);
  const int n = 512;
  const std::vector<std::vector<GgmlType>> sets = {
      {GgmlType::Q5_0, GgmlType::Q5_0, GgmlType::Q8_0}, {GgmlType::Q5_0, GgmlType::Q4_K}, {GgmlType::F16, GgmlType::F16}};
  ThreadPool pool(2);
  for (const auto& types : sets)
    for (int tokens : {1, 21}) {
      std::vector<std::vector<uint8_t>> data;
      std::vector<WeightMat> mats;
      for (size_t i = 0; i < types.size(); ++i) {
        const int rows = 40 + 8 * int(i);
        data.push_back(random_matrix(types[i], rows, n, rng));
        mats.push_back({types[i], n, rows, nullptr, row_bytes(types[i], n)});
      }
      for (size_t i = 0; i < mats.size(); ++i) mats[i].data = data[i].data();
      std::vector<float> x(size_t(tokens) * n);
      std::normal_distribution<float> nd(0.f, 1.f);
      for (float& v : x) v = nd(rng);
      std::vector<std::vector<float>> sep(mats.size()), multi(mats.size());
      std::vector<MatmulJob> jobs;
      MatmulScratch scratch;
      for (size_t i = 0; i < mats.size(); ++i) {
        sep[i].resize(size_t(tokens) * mats[i].n_out);
        multi[i].resize(sep[i].size());
        matmul(pool, scratch, mats[i], x.data(), tokens, n, sep[i].data(), mats[i].n_out);
        jobs.push_back({&mats[i], multi[i].data(), mats[i].n_out, 0, mats[i].n_out});
      }
      matmul_multi(pool, scratch, jobs, x.data(), tokens, n);
      for (size_t i = 0; i < mats.size(); ++i) EXPECT_EQ(sep[i], multi[i]) << type_name(uint32_t(types[i])) << " tokens " << tokens;
    }
}

INSTANTIATE_TEST_SUITE_P(Types, GemmTest, ::testing::ValuesIn(kQuantTypes),
                         [](const auto& info) { return type_name(uint32_t(info.param)); });

TEST(Ops, FastMatchReference) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.f, 2.f);
  for (int n : {1, 7, 8, 64, 257, 2048}) {
    std::vector<float> x(n), w(n), a(n), b(n);
    for (int i = 0; i < n; ++i) {
      x[i] = nd(rng);
      w[i] = nd(rng);
    }
    ref::rms_norm(x.data(), w.data(), a.data(), n, 1e-6f);
    rms_norm(x.data(), w.data(), b.data(), n, 1e-6f);
    for (int i = 0; i < n; ++i) EXPECT_NEAR(a[i], b[i], 1e-4f * (1 + std::fabs(a[i])));
    ref::gelu_tanh(x.data(), a.data(), n);
    gelu_tanh(x.data(), b.data(), n);  // fp16 table: input and output rounded to fp16
    for (int i = 0; i < n; ++i) EXPECT_NEAR(a[i], b[i], 2e-3f * (std::fabs(a[i]) + std::fabs(x[i])) + 1e-6f) << x[i];
    ref::silu(x.data(), a.data(), n);
    silu(x.data(), b.data(), n);
    for (int i = 0; i < n; ++i) EXPECT_NEAR(a[i], b[i], 1e-5f * (1 + std::fabs(a[i])));
    a = x;
    b = x;
    a[0] = -INFINITY;
    b[0] = -INFINITY;
    ref::softmax(a.data(), n);
    softmax(b.data(), n);
    for (int i = 0; i < n; ++i) EXPECT_NEAR(a[i], b[i], 1e-6f);
  }
  // RoPE: rotation preserves each pair's norm and position 0 is the identity.
  std::vector<float> v(256), v0(256);
  for (float& e : v) e = nd(rng);
  v0 = v;
  rope(v.data(), 256, 256, 0, 10000.f, 1.f, nullptr, RopeStyle::NeoX);
  for (int i = 0; i < 256; ++i) EXPECT_FLOAT_EQ(v[i], v0[i]);
  rope(v.data(), 256, 256, 1234, 10000.f, 1.f, nullptr, RopeStyle::NeoX);
  for (int i = 0; i < 128; ++i)
    EXPECT_NEAR(std::hypot(v[i], v[i + 128]), std::hypot(v0[i], v0[i + 128]), 1e-4);
  // Float angles (llama.cpp's recurrence) against the double-precision reference, both styles.
  for (RopeStyle style : {RopeStyle::Normal, RopeStyle::NeoX})
    for (int pos : {1, 77, 4000, 32000}) {
      std::vector<float> a = v0, b = v0;
      ref::rope(a.data(), 256, 256, pos, 1e6f, 1.f, nullptr, style);
      rope(b.data(), 256, 256, pos, 1e6f, 1.f, nullptr, style);
      for (int i = 0; i < 256; ++i) EXPECT_NEAR(a[i], b[i], 2e-3f * (1 + std::fabs(a[i]))) << "pos " << pos;
    }
}

}  // namespace
}  // namespace leanlm
