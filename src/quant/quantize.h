// Scalar quantization of float rows into the GGUF weight types: the writer's side of dequant.h
// (what `leanlm quantize` stores). Each type's codes follow its definition in dequant.cc; the
// scales are fitted to the row by least squares over a few candidates, so dequantize_row of the
// result is close to the input (tests: quantize_test in tests/test_quantize.cc).
#pragma once
#include <cstdint>

#include "quant/quant_types.h"

namespace leanlm {

// Whether quantize_row can write type t.
bool can_quantize(GgmlType t);
// dst = t's blocks for x[n] (n a multiple of t's block size; dst row_bytes(t, n) bytes).
void quantize_row(GgmlType t, const float* x, void* dst, int64_t n);

}  // namespace leanlm
