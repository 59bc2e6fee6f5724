#include "engine/quantize_model.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <map>
#include <mutex>

#include "engine/hessian.h"
#include "gguf/gguf.h"
#include "gguf/gguf_writer.h"
#include "kernels/threadpool.h"
#include "quant/dequant.h"
#include "quant/lq_format.h"
#include "quant/quantize.h"
#include "util/error.h"
#include "util/sysinfo.h"

namespace leanlm {
namespace {

const GgmlType kTargets[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q8_0,
                             GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1,
                             GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K,
                             GgmlType::Q6_K, GgmlType::LQ2,  GgmlType::LQ3,  GgmlType::LQ4};

// llama.cpp's general.file_type values for files whose matrices are all of one type.
uint32_t file_type_of(GgmlType t) {
  switch (t) {
    case GgmlType::F32: return 0;
    case GgmlType::F16: return 1;
    case GgmlType::Q4_0: return 2;
    case GgmlType::Q4_1: return 3;
    case GgmlType::Q8_0: return 7;
    case GgmlType::Q5_0: return 8;
    case GgmlType::Q5_1: return 9;
    case GgmlType::Q2_K: return 10;
    case GgmlType::Q3_K: return 11;  // Q3_K_S
    case GgmlType::Q4_K: return 14;  // Q4_K_S
    case GgmlType::Q5_K: return 16;  // Q5_K_S
    case GgmlType::Q6_K: return 18;
    case GgmlType::BF16: return 32;
    case GgmlType::LQ2: case GgmlType::LQ3: case GgmlType::LQ4:  // leanlm's own: no llama.cpp value
      return 1000 + uint32_t(lq_bits(t));
    default: return 0;
  }
}

bool is_matrix(const GgufTensor& t) {
  const std::string& n = t.name;
  return t.n_dims >= 2 && n.size() > 7 && n.compare(n.size() - 7, 7, ".weight") == 0;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return s;
}

}  // namespace

GgmlType parse_quant_type(const std::string& name) {
  const std::string want = lower(name);
  std::string all;
  for (GgmlType t : kTargets) {
    const std::string n = lower(type_name(uint32_t(t)));
    if (n == want) return t;
    if (!all.empty()) all += ", ";
    all += n;
  }
  fail("unknown weight type '" + name + "' (types: " + all + ")");
}

QuantTarget parse_quant_target(const std::string& name) {
  const std::string want = lower(name);
  // The mixes: the attention's value and output matrices and the FFN's down matrix are where the
  // second moment of the inputs concentrates most (and they are a third of the weights).
  if (want == "lq3_m")
    return {GgmlType::LQ3, {{"attn_v.", GgmlType::LQ4}, {"attn_output.", GgmlType::LQ4}, {"ffn_down.", GgmlType::LQ4}}};
  if (want == "lq2_m")
    return {GgmlType::LQ2, {{"attn_v.", GgmlType::LQ4}, {"attn_output.", GgmlType::LQ3}, {"ffn_down.", GgmlType::LQ3}}};
  try {
    return {parse_quant_type(name), {}};
  } catch (const Error& e) {
    fail(std::string(e.what()) + "; mixes: lq3_m, lq2_m");
  }
}

std::pair<std::string, GgmlType> parse_tensor_type(const std::string& spec) {
  const size_t eq = spec.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
    fail("--tensor-type '" + spec + "': expected NAME=TYPE (as attn_v=lq4)");
  return {spec.substr(0, eq), parse_quant_type(spec.substr(eq + 1))};
}

GgmlType type_for_rows(GgmlType t, int64_t n) {
  if (n % traits(t).block_elems == 0) return t;
  GgmlType fallback = GgmlType::F16;
  switch (t) {  // the legacy type of about the same size, 32-element blocks
    case GgmlType::Q2_K: case GgmlType::Q3_K: fallback = GgmlType::Q4_0; break;
    case GgmlType::Q4_K: fallback = GgmlType::Q5_0; break;
    case GgmlType::Q5_K: fallback = GgmlType::Q5_1; break;
    case GgmlType::Q6_K: fallback = GgmlType::Q8_0; break;
    case GgmlType::LQ2: case GgmlType::LQ3: case GgmlType::LQ4: fallback = GgmlType::Q4_0; break;
    default: break;
  }
  return n % traits(fallback).block_elems == 0 ? fallback : GgmlType::F16;
}

GgmlType output_matrix_type(const QuantizeOptions& o) {
  if (o.output_type_set) return o.output_type;
  // At least 6 bits: smaller targets give the output matrix Q6_K, larger ones their own type.
  const TypeTraits& t = traits(o.type);
  const double bits = 8.0 * t.block_bytes / t.block_elems;  // (the LQ row tables not counted)
  return bits < 6.5 ? GgmlType::Q6_K : o.type;
}

GgmlType matrix_type(const QuantizeOptions& o, const std::string& name) {
  for (const auto& [part, t] : o.tensor_types)
    if (name.find(part) != std::string::npos) return t;
  return o.type;
}

bool uses_lq(const QuantizeOptions& o) {
  if (is_lq(o.type) || is_lq(output_matrix_type(o))) return true;
  for (const auto& e : o.tensor_types)
    if (is_lq(e.second)) return true;
  return false;
}

QuantizeReport quantize_model(const std::string& in_path, const std::string& out_path, const QuantizeOptions& o,
                              const std::function<void(uint64_t, uint64_t)>& progress) {
  for (GgmlType t : {o.type, output_matrix_type(o)})
    if (!can_quantize(t)) fail("quantize: cannot write type " + type_name(uint32_t(t)));
  for (const auto& e : o.tensor_types)
    if (!can_quantize(e.second)) fail("quantize: cannot write type " + type_name(uint32_t(e.second)));
  std::error_code ec;
  if (std::filesystem::exists(out_path, ec) && std::filesystem::equivalent(in_path, out_path, ec))
    fail(out_path + ": the output would replace the input model");
  auto in = GgufFile::open(in_path);
  GgufWriter w(in->alignment());
  for (const std::string& k : in->metadata_order()) w.set(k, *in->find(k));
  w.set_u32("general.file_type", file_type_of(o.type));

  QuantizeReport rep;
  rep.file_bytes_in = in->file_size();
  std::vector<GgmlType> to;
  uint64_t total = 0;
  const std::string output_name = in->find_tensor("output.weight") ? "output.weight" : "token_embd.weight";
  for (const GgufTensor& t : in->tensors()) {
    if (!type_traits(t.type_id) || !type_traits(t.type_id)->supported)
      fail(in_path + ": tensor " + t.name + " has type " + type_name(t.type_id) + ", which leanlm cannot read");
    const GgmlType target = t.name == output_name ? output_matrix_type(o) : matrix_type(o, t.name);
    const GgmlType dst = is_matrix(t) ? type_for_rows(target, t.ne[0]) : t.type();
    to.push_back(dst);
    w.add_tensor(t.name, dst, t.n_dims, t.ne);
    const uint64_t out_bytes = GgufWriter::tensor_bytes(dst, t.n_dims, t.ne);
    rep.tensors.push_back({t.name, t.type(), dst, t.nbytes, out_bytes});
    if (dst != t.type()) rep.weights_quantized += t.n_elements();
    total += out_bytes;
  }

  ThreadPool pool(o.threads > 0 ? o.threads : physical_cores());
  set_blas_threads(pool.size());
  // LQ matrices with statistics: one factor per input, shared by the matrices that read it (Q, K,
  // V; gate, up) and dropped after its last one.
  std::map<std::string, int> uses_left;
  std::map<std::string, GptqFactor> factors;
  if (o.hessians)
    for (size_t i = 0; i < to.size(); ++i)
      if (is_lq(to[i]) && o.hessians->for_tensor(in->tensors()[i].name)) ++uses_left[HessianSet::input_of(in->tensors()[i].name)];
  uint64_t done = 0;
  w.write(out_path, [&](size_t i, std::vector<uint8_t>& out) {
    const GgufTensor& t = in->tensors()[i];
    const GgmlType dst = to[i];
    if (dst == t.type()) {
      out.assign(t.data, t.data + t.nbytes);
    } else {
      const int64_t n = t.ne[0], rows = t.n_elements() / n;
      const size_t rb_in = row_bytes(t.type(), n), rb_out = row_bytes(dst, n);
      out.resize(size_t(rows) * rb_out);
      // Every row is read back after writing (as llama.cpp's quantizer validates its output): a
      // weight that is not finite, or one too large for the type's fp16 scales, is an error naming
      // the tensor and row, never a file with NaN blocks. Problems are collected here and raised
      // after the loop (an exception must not leave a worker thread).
      // LQ: the whole matrix at once (GPTQ's feedback runs along rows, through the input's factor).
      const HessianSet::Entry* hess = o.hessians && is_lq(dst) ? o.hessians->for_tensor(t.name) : nullptr;
      std::vector<float> wf;  // LQ: the source matrix as floats, [rows][n]
      if (is_lq(dst)) {
        wf.resize(size_t(rows) * n);
        for (int64_t r = 0; r < rows; ++r) dequantize_row(t.type(), t.data + size_t(r) * rb_in, wf.data() + size_t(r) * n, n);
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < n; ++j)
            if (!std::isfinite(wf[size_t(r) * n + j]))
              fail(strfmt("%s: tensor %s row %lld has a weight that is not a finite number", in_path.c_str(), t.name.c_str(), (long long)r));
        if (hess && hess->n != n)
          fail(strfmt("quantize: the statistics for %s have %d inputs, the tensor %lld", t.name.c_str(), hess->n, (long long)n));
        const std::string key = hess ? HessianSet::input_of(t.name) : "";
        if (hess && !factors.count(key)) factors.emplace(key, gptq_factor(hess->H.data(), int(n), o.leanquant));
        lq_quantize_matrix(dst, wf.data(), rows, int(n), hess ? factors.at(key) : identity_factor(int(n)), o.leanquant,
                           out.data(), &pool);
        if (hess && --uses_left[key] == 0) factors.erase(key);
      }
      std::mutex mu;
      int64_t bad_row = -1;
      std::string problem;
      const auto report = [&](int64_t r, const std::string& what) {
        std::lock_guard<std::mutex> lock(mu);
        if (bad_row < 0 || r < bad_row) bad_row = r, problem = what;
      };
      pool.parallel_for(rows, [&](int64_t r0, int64_t r1) {
        try {
          std::vector<float> buf(n), back(n);
          for (int64_t r = r0; r < r1; ++r) {
            const float* row = wf.empty() ? buf.data() : wf.data() + size_t(r) * n;
            if (wf.empty()) dequantize_row(t.type(), t.data + size_t(r) * rb_in, buf.data(), n);
            float peak = 0;
            for (int64_t j = 0; j < n; ++j) {
              if (!std::isfinite(row[j])) return report(r, "has a weight that is not a finite number");
              peak = std::max(peak, std::fabs(row[j]));
            }
            uint8_t* q = out.data() + size_t(r) * rb_out;
            if (wf.empty()) quantize_row(dst, row, q, n);  // LQ rows are already written
            dequantize_row(dst, q, back.data(), n);
            for (float v : back)
              if (!std::isfinite(v))
                return report(r, strfmt("has weights up to %g, too large for %s", peak, type_name(uint32_t(dst)).c_str()));
          }
        } catch (const std::exception& e) {
          report(r0, e.what());
        }
      });
      if (bad_row >= 0) fail(strfmt("%s: tensor %s row %lld %s", in_path.c_str(), t.name.c_str(), (long long)bad_row, problem.c_str()));
    }
    done += out.size();
    if (progress) progress(done, total);
  });
  rep.file_bytes_out = std::filesystem::file_size(out_path);
  return rep;
}

}  // namespace leanlm
