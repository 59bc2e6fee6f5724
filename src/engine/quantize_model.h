// Rewriting a GGUF model with its weight matrices in another type (`leanlm quantize`): every
// 2-D ".weight" tensor is dequantized and quantized to the target type (a matrix whose rows are
// not whole blocks of it takes the nearest legacy type, as llama.cpp's quantizer does); norms,
// biases and every metadata key are copied; general.file_type names the new type.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "quant/leanquant.h"
#include "quant/quant_types.h"

namespace leanlm {

struct HessianSet;

// The target type for a name as users write it ("q4_k", "Q8_0", "f16"); Error listing the types
// quantize can write otherwise.
GgmlType parse_quant_type(const std::string& name);
// A target as users write it: a type name, or a mix ("lq3_m", "lq2_m": the type for most matrices
// and more bits for the ones that measure most sensitive, as llama.cpp's _M types do).
struct QuantTarget {
  GgmlType type;
  std::vector<std::pair<std::string, GgmlType>> tensor_types;  // QuantizeOptions::tensor_types
};
QuantTarget parse_quant_target(const std::string& name);
// "NAME=TYPE" (--tensor-type): matrices whose name contains NAME get TYPE; Error otherwise.
std::pair<std::string, GgmlType> parse_tensor_type(const std::string& spec);

// The type a matrix with rows of n elements gets when the target is t.
GgmlType type_for_rows(GgmlType t, int64_t n);

struct QuantizeOptions {
  GgmlType type = GgmlType::Q8_0;
  // The output matrix (output.weight, or token_embd.weight when the output is tied to it): the
  // logits are the most sensitive product, so by default it keeps at least Q6_K where the target is
  // smaller (as llama.cpp's quantizer does); set to override.
  bool output_type_set = false;
  GgmlType output_type = GgmlType::Q6_K;
  // Per-matrix overrides: the first whose string the tensor name contains sets its type (the
  // output matrix keeps output_type).
  std::vector<std::pair<std::string, GgmlType>> tensor_types;
  int threads = 0;  // 0: one per core
  // LQ targets: the calibration statistics (engine/hessian.h) and the fit's settings; a matrix
  // without statistics (or with none given) gets plain k-means and nearest-level rounding.
  const HessianSet* hessians = nullptr;
  LeanQuantOptions leanquant;
};

// The type the output matrix gets under o.
GgmlType output_matrix_type(const QuantizeOptions& o);
// The type the matrix `name` (not the output matrix) gets under o, before type_for_rows.
GgmlType matrix_type(const QuantizeOptions& o, const std::string& name);
// Whether any matrix may get an LQ type under o (calibration statistics are of use).
bool uses_lq(const QuantizeOptions& o);

struct QuantizeReport {
  struct Tensor {
    std::string name;
    GgmlType from, to;
    uint64_t bytes_in, bytes_out;
  };
  std::vector<Tensor> tensors;
  uint64_t file_bytes_in = 0, file_bytes_out = 0;
  int64_t weights_quantized = 0;  // elements of the rewritten matrices
};

// Writes out_path (atomically: a failure leaves no file there, nor a part file) from in_path.
// progress(done, total) is called as tensor bytes are written. Throws Error on any problem.
QuantizeReport quantize_model(const std::string& in_path, const std::string& out_path, const QuantizeOptions& o,
                              const std::function<void(uint64_t, uint64_t)>& progress = {});

}  // namespace leanlm
