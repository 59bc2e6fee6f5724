#include "quant/dot.h"

#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "util/error.h"
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

std::string missing_isa_flags(const CpuFeatures& f, Isa isa) {
  std::vector<std::pair<bool, const char*>> need;
  if (isa >= Isa::Avx2) need = {{f.avx2, "avx2"}, {f.fma, "fma"}, {f.f16c, "f16c"}, {f.bmi2, "bmi2"}};
  if (isa >= Isa::Avx512)
    need.insert(need.end(), {{f.avx512f, "avx512f"},
                             {f.avx512bw, "avx512bw"},
                             {f.avx512vl, "avx512vl"},
                             {f.avx512dq, "avx512dq"},
                             {f.avx512vnni, "avx512vnni"},
                             {f.avx512bf16, "avx512bf16"}});
  std::string missing;
  for (auto [has, name] : need)
    if (!has) missing += (missing.empty() ? "" : ", ") + std::string(name);
  return missing;
}

bool avx512_capable() { return missing_isa_flags(cpu_features(), Isa::Avx512).empty(); }

const DotTable& dot_table(Isa isa) {
  static const IsaTables<DotTable> tables(fill_scalar_table, fill_avx2_table, fill_avx512_table);
  return tables[isa];
}

Isa choose_isa(const CpuFeatures& f, const char* isa_override) {
  Isa best = Isa::Scalar;
  if (missing_isa_flags(f, Isa::Avx2).empty()) best = Isa::Avx2;
  if (missing_isa_flags(f, Isa::Avx512).empty()) best = Isa::Avx512;
  if (!isa_override || !*isa_override) return best;
  Isa want;
  const char* needs;
  if (!std::strcmp(isa_override, "scalar")) return Isa::Scalar;
  if (!std::strcmp(isa_override, "avx2")) {
    want = Isa::Avx2;
    needs = "AVX2 (AVX2,FMA,F16C,BMI2)";
  } else if (!std::strcmp(isa_override, "avx512")) {
    want = Isa::Avx512;
    needs = "AVX-512 (F,BW,VL,DQ,VNNI,BF16)";
  } else {
    fail(strfmt("LEANLM_ISA=%s is not scalar, avx2 or avx512", isa_override));
  }
  if (int(want) > int(best))
    fail(strfmt("LEANLM_ISA=%s asks for %s but this CPU lacks %s", isa_override, needs,
                missing_isa_flags(f, want).c_str()));
  return want;
}

Isa best_isa() {
  static const Isa isa = choose_isa(cpu_features(), std::getenv("LEANLM_ISA"));
  return isa;
}

const DotTable& best_dot_table() { return dot_table(best_isa()); }

std::string isa_paths_report(const CpuFeatures& f, Isa in_use) {
  std::string run, not_run;
  for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512}) {
    if (int(isa) <= int(in_use)) {
      run += (run.empty() ? "" : ", ") + std::string(isa_name(isa));
      continue;
    }
    const std::string missing = missing_isa_flags(f, isa);
    not_run += (not_run.empty() ? "" : "; ") + std::string(isa_name(isa)) +
               (missing.empty() ? " (a lower set forced by LEANLM_ISA)" : " (this CPU lacks " + missing + ")");
  }
  return "kernel sets run: " + run + (not_run.empty() ? "" : "; NOT run: " + not_run);
}

}  // namespace leanlm
