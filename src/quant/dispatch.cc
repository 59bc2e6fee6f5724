#include "quant/dot.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "util/sysinfo.h"

namespace leanlm {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
  }
  return "?";
}

bool avx512_capable() {
  const auto& f = cpu_features();
  return f.avx2 && f.fma && f.f16c && f.avx512f && f.avx512bw && f.avx512vl && f.avx512vnni;
}

const DotTable& dot_table(Isa isa) {
  static const IsaTables<DotTable> tables(fill_scalar_table, fill_avx2_table, fill_avx512_table);
  return tables[isa];
}

Isa best_isa() {
  static const Isa isa = [] {
    const auto& f = cpu_features();
    Isa best = Isa::Scalar;
    if (f.avx2 && f.fma && f.f16c) best = Isa::Avx2;
    if (best == Isa::Avx2 && avx512_capable()) best = Isa::Avx512;
    if (const char* env = std::getenv("LEANLM_ISA"); env && *env) {
      Isa want = best;
      if (!std::strcmp(env, "scalar")) want = Isa::Scalar;
      else if (!std::strcmp(env, "avx2")) want = Isa::Avx2;
      else if (!std::strcmp(env, "avx512")) want = Isa::Avx512;
      else std::fprintf(stderr, "warning: LEANLM_ISA=%s is not scalar, avx2 or avx512; ignored\n", env);
      if (int(want) < int(best)) best = want;
    }
    return best;
  }();
  return isa;
}

const DotTable& best_dot_table() { return dot_table(best_isa()); }

}  // namespace leanlm
