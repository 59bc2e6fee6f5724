// A gtest environment that prints, before the tests, which kernel sets the run compares and which it
// does not and why: on a CPU without AVX-512 a green log has not tested the AVX-512 kernels, and says so.
#pragma once
#include <gtest/gtest.h>

#include <cstdio>

#include "quant/dot.h"
#include "util/error.h"
#include "util/sysinfo.h"

namespace leanlm {

class IsaReport : public ::testing::Environment {
 public:
  void SetUp() override {
    try {
      std::printf("%s\n", isa_paths_report(cpu_features(), best_isa()).c_str());
    } catch (const Error& e) {  // LEANLM_ISA asks for a set this CPU lacks; Dispatch tests check the error
      std::printf("kernel sets run: none (%s)\n", e.what());
    }
  }
};

inline const auto* const kIsaReport = ::testing::AddGlobalTestEnvironment(new IsaReport);

}  // namespace leanlm
