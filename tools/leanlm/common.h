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
  int batch = 0;  // 0: 512, or what the command chooses (see -b help)
  // KV cache (see `leanlm eval` for comparing several of these at once).
  std::string kv_codec = "f16", kv_evict = "none", kv_budget, kv_codebooks;
  double kv_think = 0;
  int kv_topk = 0;
  double kv_mem_mib = 0;
  // with_kv: add the KV flags (eval takes lists instead and adds its own).
  void add(CLI::App* app, int default_ctx, bool with_kv = true);
  EngineOptions resolve(bool progress) const;
};

// Help text of the KV flags, shared with eval.
extern const char* const kModelHelp;
extern const char* const kKvCodecHelp;
extern const char* const kKvEvictHelp;
extern const char* const kKvThinkHelp;
extern const char* const kKvBudgetHelp;
extern const char* const kKvTopkHelp;

// -m: a file, or the short name of a known, installed model (`leanlm list`); empty: the default.
std::string model_path(const std::string& flag);
std::string human_bytes(double b);
// The whole file; `what` names it in the error ("text file", "prompt file").
std::string read_text_file(const std::string& path, const char* what = "text file");

// Subcommands (one file each).
void add_run(CLI::App& app);
void add_info(CLI::App& app);
void add_perplexity(CLI::App& app);
void add_bench(CLI::App& app);
void add_tokenize(CLI::App& app);
void add_chat(CLI::App& app);
void add_eval(CLI::App& app);
void add_calibrate(CLI::App& app);
void add_pull(CLI::App& app);  // pull and list
void add_serve(CLI::App& app);
void add_quantize(CLI::App& app);

}  // namespace leanlm::cli
