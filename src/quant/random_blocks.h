// Random but valid weight rows of any type, for kernel tests and microbenchmarks: random code
// bytes with every fp16 scale replaced by a small finite value (random bytes would give NaNs,
// infinities and denormals, which neither test nor time anything real).
#pragma once
#include <cstdint>
#include <random>
#include <vector>

#include "quant/quant_types.h"

namespace leanlm {

// One row of n elements (n a multiple of the type's block size).
std::vector<uint8_t> random_row(GgmlType t, int n, std::mt19937& rng);
// rows such rows, back to back.
std::vector<uint8_t> random_matrix(GgmlType t, int rows, int n, std::mt19937& rng);
// rows rows whose code bytes are all 0xFF (the largest codes and scales the format holds; -1 for
// Q8_0), scales as above: the worst case for integer overflow and saturation in the kernels.
std::vector<uint8_t> saturated_matrix(GgmlType t, int rows, int n, std::mt19937& rng);

}  // namespace leanlm
