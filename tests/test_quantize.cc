// quantize_row (the writer's side of every weight type) against dequantize_row: what is written
// reads back close to the input, data already on a type's grid reads back (nearly) unchanged, and
// degenerate rows (zeros, constants, large and tiny magnitudes) stay finite and right.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <unistd.h>
#include <cstdio>
#include <random>
#include <vector>

#include "engine/quantize_model.h"
#include "gguf/gguf_writer.h"
#include "quant/dequant.h"
#include "quant/quantize.h"
#include "quant/random_blocks.h"
#include "util/error.h"

namespace leanlm {
namespace {


std::vector<float> round_trip(GgmlType t, const std::vector<float>& x) {
  const int64_t n = int64_t(x.size());
  std::vector<uint8_t> q(row_bytes(t, n));
  quantize_row(t, x.data(), q.data(), n);
  std::vector<float> y(n);
  dequantize_row(t, q.data(), y.data(), n);
  return y;
}

// Mean squared error over mean square of x.
double nmse(const std::vector<float>& x, const std::vector<float>& y) {
  double e = 0, s = 0;
  for (size_t i = 0; i < x.size(); ++i) e += double(x[i] - y[i]) * (x[i] - y[i]), s += double(x[i]) * x[i];
  return e / s;
}

// Weights as trained matrices have them: normal, with a few outliers 8 sigma out.
std::vector<float> weight_like(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 0.02f);
  std::vector<float> x(n);
  for (float& v : x) v = nd(rng);
  for (int i = 0; i < n / 200; ++i) x[rng() % n] = (rng() % 2 ? 1 : -1) * 0.16f;
  return x;
}

// Measured normalised errors (16 rows of 1024, Gaussian with 0.5 % outliers; on a type's own grid:
// 16 dequantized random valid rows, which the legacy types find exactly: their scale candidates
// include the grid's own). quantize_row is plain scalar code, the same on every CPU; the
// bounds are 1.25 x these, so a worse fit or a misplaced code fails.
struct Measured {
  GgmlType type;
  double weights, own_grid;
};
const Measured kMeasured[] = {
    {GgmlType::Q8_0, 4.67e-05, 6.37e-06}, {GgmlType::Q4_0, 0.0134, 0},         {GgmlType::Q4_1, 0.00688, 4.04e-11},
    {GgmlType::Q5_0, 0.00326, 0},         {GgmlType::Q5_1, 0.00155, 9.68e-11}, {GgmlType::Q4_K, 0.00721, 4.7e-05},
    {GgmlType::Q5_K, 0.0018, 4.11e-05},   {GgmlType::Q6_K, 0.00046, 1.03e-05}, {GgmlType::F16, 4.35e-08, -1},
    {GgmlType::BF16, 2.31e-06, -1},     {GgmlType::Q2_K, 0.0925, 0.000513},   {GgmlType::Q3_K, 0.0341, 7.93e-05},
};

// The mixes and --tensor-type: the first override whose string the name contains wins, the mix's
// own after the user's; malformed specs and unknown types are errors.
TEST(QuantizeModel, MixesAndTensorTypesPickTheFirstMatch) {
  const QuantTarget m3 = parse_quant_target("LQ3_M");
  EXPECT_EQ(m3.type, GgmlType::LQ3);
  QuantizeOptions o;
  o.type = m3.type;
  o.tensor_types.push_back(parse_tensor_type("blk.0.ffn_down=q8_0"));
  o.tensor_types.insert(o.tensor_types.end(), m3.tensor_types.begin(), m3.tensor_types.end());
  EXPECT_EQ(matrix_type(o, "blk.0.ffn_down.weight"), GgmlType::Q8_0);
  EXPECT_EQ(matrix_type(o, "blk.1.ffn_down.weight"), GgmlType::LQ4);
  EXPECT_EQ(matrix_type(o, "blk.1.attn_v.weight"), GgmlType::LQ4);
  EXPECT_EQ(matrix_type(o, "blk.1.attn_output.weight"), GgmlType::LQ4);
  EXPECT_EQ(matrix_type(o, "blk.1.ffn_up.weight"), GgmlType::LQ3);
  EXPECT_EQ(matrix_type(o, "blk.1.attn_q.weight"), GgmlType::LQ3);
  EXPECT_TRUE(uses_lq(o));
  const QuantTarget m2 = parse_quant_target("lq2_m");
  EXPECT_EQ(m2.type, GgmlType::LQ2);
  QuantizeOptions o2;
  o2.type = m2.type, o2.tensor_types = m2.tensor_types;
  EXPECT_EQ(matrix_type(o2, "blk.3.ffn_down.weight"), GgmlType::LQ3);
  EXPECT_EQ(matrix_type(o2, "blk.3.ffn_gate.weight"), GgmlType::LQ2);
  const QuantTarget q = parse_quant_target("q4_k");
  EXPECT_EQ(q.type, GgmlType::Q4_K);
  EXPECT_TRUE(q.tensor_types.empty());
  QuantizeOptions o3;
  o3.type = GgmlType::Q4_K;
  EXPECT_FALSE(uses_lq(o3));
  o3.tensor_types.push_back(parse_tensor_type("attn_v=lq4"));
  EXPECT_TRUE(uses_lq(o3));
  for (const char* bad : {"attn_v", "=lq4", "attn_v=", "attn_v=q9_9"}) EXPECT_THROW(parse_tensor_type(bad), Error) << bad;
  EXPECT_THROW(parse_quant_target("lq5_m"), Error);
}

TEST(Quantize, WhatIsWrittenReadsBackClose) {
  for (const Measured& m : kMeasured) {
    double sum = 0;
    for (uint32_t r = 0; r < 16; ++r) {
      const std::vector<float> x = weight_like(1024, 100 + r);
      sum += nmse(x, round_trip(m.type, x));
    }
    std::printf("[ measured ] %-5s nmse %.3g\n", type_name(uint32_t(m.type)).c_str(), sum / 16);
    EXPECT_LE(sum / 16, 1.25 * m.weights) << type_name(uint32_t(m.type));
  }
}

// Data already on a type's grid: dequantized random valid blocks. Quantizing them again must find
// (nearly) the same values: a code in the wrong place or a scale packed wrongly reads back far off.
TEST(Quantize, DataOnTheGridReadsBackNearlyUnchanged) {
  for (const Measured& m : kMeasured) {
    if (m.own_grid < 0) continue;  // the float types
    std::mt19937 rng(7 + int(m.type));
    double sum = 0;
    for (int r = 0; r < 16; ++r) {
      const std::vector<uint8_t> w = random_row(m.type, 1024, rng);
      std::vector<float> x(1024);
      dequantize_row(m.type, w.data(), x.data(), 1024);
      sum += nmse(x, round_trip(m.type, x));
    }
    std::printf("[ measured ] %-5s on its own grid: nmse %.3g\n", type_name(uint32_t(m.type)).c_str(), sum / 16);
    EXPECT_LE(sum / 16, 1.25 * m.own_grid + 1e-9) << type_name(uint32_t(m.type));  // legacy types: exact
  }
}

// Rows no fit should trip on: all zeros (exactly zero back), a constant, large and tiny magnitudes
// (as good as at the usual magnitude).
TEST(Quantize, DegenerateRowsStayFiniteAndRight) {
  for (const Measured& m : kMeasured) {
    const GgmlType t = m.type;
    SCOPED_TRACE(type_name(uint32_t(t)));
    const std::vector<float> zeros(512, 0.f);
    for (float v : round_trip(t, zeros)) ASSERT_EQ(v, 0.f);
    const std::vector<float> constant(512, -0.75f);
    for (float v : round_trip(t, constant)) ASSERT_NEAR(v, -0.75f, 0.75f * 0.01f);
    for (float scale : {1e3f, 1e-3f}) {
      std::vector<float> x = weight_like(512, 5);
      for (float& v : x) v *= scale / 0.02f;
      const std::vector<float> y = round_trip(t, x);
      for (float v : y) ASSERT_TRUE(std::isfinite(v)) << scale;
      EXPECT_LT(nmse(x, y), 1.5 * m.weights + 1e-7) << scale;  // the fits do not depend on the scale (fp16 near its subnormals aside)
    }
  }
  std::vector<uint8_t> q(row_bytes(GgmlType::Q4_0, 48 + 16));
  EXPECT_THROW(quantize_row(GgmlType::Q4_0, std::vector<float>(48).data(), q.data(), 48), Error);  // not whole blocks
  EXPECT_THROW(quantize_row(GgmlType::Q8_K, std::vector<float>(256).data(), q.data(), 256), Error);  // activations only
}


// quantize_model on a small file of its own: matrices are rewritten and read back; a weight that is
// not finite, or too large for the target's fp16 scales, is an Error naming the tensor and row, and
// no file is left.
TEST(QuantizeModel, NonFiniteOrTooLargeWeightsAreErrorsNamingTheRow) {
  const std::string dir = (std::filesystem::temp_directory_path() / ("leanlm-qm-" + std::to_string(getpid()))).string();
  std::filesystem::create_directories(dir);
  const auto write_model = [&](const std::string& path, float poison, int row) {
    GgufWriter w;
    w.set_string("general.architecture", "llama");
    const int64_t ne[2] = {64, 4}, ne1[1] = {64};
    w.add_tensor("blk.0.ffn_up.weight", GgmlType::F32, 2, ne);
    w.add_tensor("blk.0.ffn_norm.weight", GgmlType::F32, 1, ne1);
    w.write(path, [&](size_t i, std::vector<uint8_t>& out) {
      std::vector<float> v(i == 0 ? 256 : 64);
      for (size_t k = 0; k < v.size(); ++k) v[k] = 0.01f * float(int(k % 17) - 8);
      if (i == 0) v[size_t(row) * 64 + 5] = poison;
      out.resize(v.size() * 4);
      std::memcpy(out.data(), v.data(), out.size());
    });
  };
  const std::string in = dir + "/in.gguf", out = dir + "/out.gguf";
  QuantizeOptions o;
  o.type = GgmlType::Q4_0;
  o.threads = 2;
  write_model(in, 0.5f, 0);
  QuantizeReport rep = quantize_model(in, out, o);
  ASSERT_EQ(rep.tensors.size(), 2u);
  EXPECT_EQ(rep.tensors[0].to, GgmlType::Q4_0);
  EXPECT_EQ(rep.tensors[1].to, GgmlType::F32);  // a norm is copied
  std::filesystem::remove(out);
  for (float poison : {NAN, INFINITY, 1e6f}) {
    write_model(in, poison, 2);
    try {
      quantize_model(in, out, o);
      ADD_FAILURE() << "no error for " << poison;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("tensor blk.0.ffn_up.weight row 2 "), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(std::isfinite(poison) ? "too large for Q4_0" : "not a finite number"),
                std::string::npos) << e.what();
    }
    EXPECT_FALSE(std::filesystem::exists(out)) << poison;
  }
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir), {}), 1);  // in.gguf alone: no part file
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace leanlm
