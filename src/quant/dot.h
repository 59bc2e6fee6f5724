// Dot products of quantized weight rows with activations: the kernel table and its dispatch.
//
// Every weight type has one entry per ISA: scalar (the reference), AVX2, AVX-512 (VNNI). An entry
// computes out[r] = W[r] . x for nrows consecutive weight rows of n elements.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "quant/act_quant.h"
#include "quant/quant_types.h"

namespace leanlm {

struct CpuFeatures;

// Integer types: x is an int8-quantized activation row.
using DotRowsQ = void (*)(int n, const void* w, size_t row_bytes, int nrows, const ActRow& x, float* out);
// Float types (F32, F16, BF16): x is the float activation row.
using DotRowsF = void (*)(int n, const void* w, size_t row_bytes, int nrows, const float* x, float* out);

enum class Isa { Scalar = 0, Avx2 = 1, Avx512 = 2 };
const char* isa_name(Isa isa);

struct DotTable {
  DotRowsQ q[kTypeSlots] = {};
  DotRowsF f[kTypeSlots] = {};
};

// Tables per ISA; an entry an ISA does not specialise falls back to the one below it.
const DotTable& dot_table(Isa isa);
// The CPU flags of `isa`'s kernel set (the -m flags it is compiled with) that f lacks, as
// "avx512dq, avx512bf16"; empty when f runs that set.
std::string missing_isa_flags(const CpuFeatures& f, Isa isa);
// Whether this CPU runs the AVX-512 kernels (every flag of LEANLM_AVX512_FLAGS).
bool avx512_capable();
// The kernel set for a CPU with features f and a LEANLM_ISA value (null or empty: the best f runs).
// Throws leanlm::Error, one line, for a value other than scalar|avx2|avx512 or one asking for a set
// the CPU cannot run: running a lower set silently would make a forced-ISA test pass untested.
Isa choose_isa(const CpuFeatures& f, const char* isa_override);
// choose_isa(cpu_features(), getenv("LEANLM_ISA")), once (LEANLM_ISA forces a lower set, for testing).
Isa best_isa();
const DotTable& best_dot_table();
// "kernel sets run: scalar, avx2; NOT run: avx512 (this CPU lacks avx512f, ...)": what a test run
// with kernel set `in_use` compared, so a green log on a smaller CPU says what it did not test.
std::string isa_paths_report(const CpuFeatures& f, Isa in_use);

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
void fill_lq_avx512(DotTable& t);  // lq_dot_avx512.cc

}  // namespace leanlm
