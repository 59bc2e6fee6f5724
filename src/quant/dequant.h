// Scalar dequantization of weight rows: the reference every other kernel is tested against.
#pragma once
#include <cstdint>

#include "quant/quant_types.h"

namespace leanlm {

// dst[n] = dequantized src row; n must be a multiple of the type's block size.
void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n);


}  // namespace leanlm
