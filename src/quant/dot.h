// Dot products of quantized weight rows with activations: the kernel table and its dispatch.
//
// Every weight type has one entry per ISA: scalar (the reference), AVX2, AVX-512 (VNNI). An entry
// computes out[r] = W[r] . x for nrows consecutive weight rows of n elements.
#pragma once
#include <cstddef>
#include <cstdint>

#include "quant/act_quant.h"
#include "quant/quant_types.h"

namespace leanlm {

// Integer types: x is an int8-quantized activation row.
using DotRowsQ = void (*)(int n, const void* w, size_t row_bytes, int nrows, const ActRow& x, float* out);
// Float types (F32, F16, BF16): x is the float activation row.
using DotRowsF = void (*)(int n, const void* w, size_t row_bytes, int nrows, const float* x, float* out);

enum class Isa { Scalar = 0, Avx2 = 1, Avx512 = 2 };
const char* isa_name(Isa isa);

struct DotTable {
  DotRowsQ q[32] = {};
  DotRowsF f[32] = {};
};

// Tables per ISA; an entry an ISA does not specialise falls back to the one below it.
const DotTable& dot_table(Isa isa);
// Whether this CPU runs the AVX-512 kernels (AVX-512 F/BW/VL and VNNI).
bool avx512_capable();
// The best ISA this CPU supports (LEANLM_ISA=scalar|avx2|avx512 overrides, for testing).
Isa best_isa();
const DotTable& best_dot_table();

// True when the weight type is multiplied through int8 activations.
inline bool uses_int8_acts(GgmlType t) {
  return !(t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16);
}

// A kernel table per ISA, each starting as a copy of the one below and overwriting what its ISA
// specialises (the weight dots here, the KV kernels in kv/kv_kernels.cc). Code compiled for AVX-512
// runs only where the CPU has it: even filling a table there may use AVX-512 instructions.
template <typename Table>
struct IsaTables {
  Table t[3];
  IsaTables(void (*scalar)(Table&), void (*avx2)(Table&), void (*avx512)(Table&)) {
    scalar(t[0]);
    t[1] = t[0];
    avx2(t[1]);
    t[2] = t[1];
    if (avx512_capable()) avx512(t[2]);
  }
  const Table& operator[](Isa isa) const { return t[int(isa)]; }
};

// Per-ISA registration (defined in dot_scalar.cc, dot_avx2.cc, dot_avx512.cc).
void fill_scalar_table(DotTable& t);
void fill_avx2_table(DotTable& t);
void fill_avx512_table(DotTable& t);

}  // namespace leanlm
