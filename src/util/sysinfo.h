// Facts about the running process and CPU.
#pragma once
#include <cstdint>
#include <string>

namespace leanlm {

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512vnni = false;
  bool avxvnni = false;
};
const CpuFeatures& cpu_features();
// Throws leanlm::Error when the CPU lacks the AVX2 baseline the project is compiled for.
void require_cpu_baseline();

int64_t peak_rss_bytes();
int64_t current_rss_bytes();
int physical_cores();
// MemAvailable of /proc/meminfo (bytes), or 0 when unknown.
int64_t available_memory_bytes();
double now_seconds();

}  // namespace leanlm
