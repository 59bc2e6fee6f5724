// Shared pieces of the leanlm subcommands: model/engine flags, default model path, reporting.
#pragma once
#include <CLI/CLI.hpp>
#include <string>

#include "leanlm/leanlm.h"

namespace leanlm::cli {

struct EngineFlags {
  std::string model;
  int threads = 0;
  int ctx = 4096;
  int batch = 512;
  std::string kv_type = "f16";
  void add(CLI::App* app, int default_ctx);
  EngineOptions resolve(bool progress) const;
};

// -m, else $LEANLM_MODEL, else the model that setup installs.
std::string default_model_path();
std::string human_bytes(double b);

// Subcommands (one file each).
void add_run(CLI::App& app);
void add_info(CLI::App& app);
void add_perplexity(CLI::App& app);
void add_bench(CLI::App& app);
void add_tokenize(CLI::App& app);
void add_chat(CLI::App& app);

}  // namespace leanlm::cli
