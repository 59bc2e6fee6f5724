// Memory read bandwidth as this process sees it: the ceiling that decode speed is measured against.
#pragma once
#include <cstddef>

#include "kernels/threadpool.h"

namespace leanlm {

// GB/s (1e9 bytes) for the pool's threads each reading its share of a `bytes`-sized buffer with
// 256-bit loads, best of `passes` passes. The buffer is touched once before timing.
double measure_read_bandwidth(ThreadPool& pool, size_t bytes = size_t(512) << 20, int passes = 3);

}  // namespace leanlm
