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
// rows rows whose every code and sub-block scale is the largest in magnitude the format holds:
// block b at its negative extreme where negative[b] and the format has one (Q8_0 -128, Q4_0 -8,
// Q5_0 -16, Q3_K -4 with scales -32, Q6_K -32 with scales -128), else at its positive extreme
// (Q8_0 127, Q6_K 31 with scales 127, every other format its 0xFF codes). negative has one entry
// per block of a row; fp16 scales as above.
std::vector<uint8_t> extreme_matrix(GgmlType t, int rows, int n, const std::vector<bool>& negative,
                                    std::mt19937& rng);

}  // namespace leanlm
