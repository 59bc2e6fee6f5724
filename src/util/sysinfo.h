// Facts about the running process and CPU.
#pragma once
#include <cstdint>
#include <string>

namespace leanlm {

// What the kernel sets are compiled for (CMakeLists.txt: LEANLM_BASE_FLAGS, LEANLM_AVX512_FLAGS);
// quant/dot.h's dispatch runs a set only where every one of its flags is here.
struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false, bmi2 = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512vnni = false,
       avx512bf16 = false;
  bool avxvnni = false;
};
const CpuFeatures& cpu_features();
// Throws leanlm::Error when the CPU lacks the AVX2/FMA/F16C/BMI2 baseline the project is compiled for.
void require_cpu_baseline();

int64_t peak_rss_bytes();
int64_t current_rss_bytes();
int physical_cores();
// MemAvailable of /proc/meminfo (bytes), or 0 when unknown.
int64_t available_memory_bytes();
double now_seconds();

}  // namespace leanlm
