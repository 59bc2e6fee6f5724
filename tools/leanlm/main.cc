// leanlm: run, chat with, evaluate and benchmark GGUF language models on the CPU.
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common.h"
#include "engine/model_registry.h"
#include "quant/dot.h"
#include "util/sysinfo.h"

namespace leanlm::cli {

const char* const kModelHelp =
    "GGUF model file, or a short name (`leanlm list`): gemma3-270m (default), smollm2-135m, qwen2.5-coder-1.5b";
const char* const kKvCodecHelp =
    "KV cache codec: f16, f32, q8_0, q4_0, kivi2, kivi4, cq-2c8b, cq-4c8b, cq-8c8b, cq-8c10b, pq; parameters as "
    "name:g=G:r=R:rot=1:sinks=N (g: tokens per block/group, r: recent tokens kept in fp16, rot=1: Hadamard rotation "
    "before quantizing, sinks: first N tokens kept in fp16; kivi defaults g=32 r=128); pq (product-quantized keys "
    "scored by lookups, codebooks from `leanlm calibrate`): pq:dsub=1|2|4:v=VALUE_CODEC, defaults dsub=2 v=f16 r=128 sinks=4";
const char* const kKvThinkHelp =
    "ThinK: fraction of key channels pruned, 0-0.9 (kept channels in multiples of 32, chosen from the prompt's queries and keys; the newest 32+ keys stay whole)";
const char* const kKvEvictHelp =
    "KV eviction policy when the cache reaches --kv-budget: none, streaming, h2o, scissorhands, snapkv; "
    "parameters as name:recent=N:sinks=N:history=N:window=N:pool=N:heads=any|mean (scissorhands); keep=CODEC keeps evicted tokens in "
    "CODEC (MiKV-style) instead of dropping them";
const char* const kKvTopkHelp =
    "sparse decode attention: each layer attends to the K slots with the highest scores (computed over every "
    "slot the cache's cheap way, e.g. PQ lookups), reading only their values; the first 32 slots (sinks) and the "
    "newest 32 are always kept; 0: all slots";
const char* const kKvBudgetHelp = "KV tokens kept per layer by the eviction policy: a count, or a percentage of -c like 20%";

void EngineFlags::add(CLI::App* app, int default_ctx, bool with_kv) {
  ctx = default_ctx;
  app->add_option("-m,--model", model, kModelHelp);
  app->add_option("-t,--threads", threads, "threads (default: one per core)")->check(CLI::Range(0, 1024));
  app->add_option("-c,--ctx", ctx, "context size in tokens")->check(CLI::Range(1, 1 << 22))->capture_default_str();
  app->add_option("-b,--batch", batch,
                  "most tokens per forward pass (default 512; perplexity with a compressed or evicting KV cache: the "
                  "codec's block size, eval: 32, so that every token sees older tokens as decoding would)")
      ->check(CLI::Range(1, 1 << 16));
  if (!with_kv) return;
  app->add_option("--kv-codec", kv_codec, kKvCodecHelp)->capture_default_str();
  app->add_option("--kv-evict", kv_evict, kKvEvictHelp)->capture_default_str();
  app->add_option("--kv-budget", kv_budget, kKvBudgetHelp);
  app->add_option("--kv-think", kv_think, kKvThinkHelp)->check(CLI::Range(0.0, 0.9));
  app->add_option("--kv-topk", kv_topk, kKvTopkHelp)->check(CLI::Range(0, 1 << 24));
  app->add_option("--kv-codebooks", kv_codebooks, "CQ codebook file written by `leanlm calibrate`");
  app->add_option("--kv-mem", kv_mem_mib, "most MiB of KV cache, every byte counted (pages, fp16 windows, dense rows, position tables; 0: no limit); a batch that does not fit is refused")->check(CLI::Range(0.0, 1e9));
}

EngineOptions EngineFlags::resolve(bool progress) const {
  EngineOptions o;
  o.model_path = model_path(model);
  o.threads = threads;
  o.ctx = ctx;
  o.batch = batch > 0 ? batch : 512;
  o.kv = parse_kv_config(kv_codec, kv_evict, kv_budget, kv_think, kv_topk, kv_codebooks);
  o.kv_mem = size_t(kv_mem_mib * 1024 * 1024);
  o.progress = progress;
  return o;
}

std::string model_path(const std::string& flag) { return resolve_model_path(flag); }

std::string read_text_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path + ": cannot open " + what);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  return strfmt(u ? "%.2f %s" : "%.0f %s", b, units[u]);
}

}  // namespace leanlm::cli

int main(int argc, char** argv) {
  using namespace leanlm::cli;
  CLI::App app{"leanlm: large language models on the CPU in a fraction of the memory"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "leanlm 0.1.0");
  add_run(app);
  add_info(app);
  add_perplexity(app);
  add_bench(app);
  add_tokenize(app);
  add_chat(app);
  add_eval(app);
  add_calibrate(app);
  add_pull(app);
  add_serve(app);
  add_quantize(app);
  try {
    leanlm::best_isa();  // a bad LEANLM_ISA fails here, before a command prints anything
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    // A bad flag is an error like any other: one line, status 1 (CLI11's own print is two lines, 105+).
    std::fprintf(stderr, "error: %s (see --help)\n", e.what());
    return 1;
  } catch (const leanlm::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
