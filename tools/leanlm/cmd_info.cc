// leanlm info: what a model file holds.
#include <cstdio>

#include "common.h"
#include "gguf/gguf.h"
#include "quant/dot.h"
#include "util/sysinfo.h"

namespace leanlm::cli {

namespace {

void info(const std::string& model_flag, bool show_metadata) {
  const std::string path = model_path(model_flag);
  std::unique_ptr<Model> m = Model::load(path);
  const ModelConfig& c = m->config();
  const GgufFile& f = m->file();
  std::printf("file:          %s (%s, GGUF v%u)\n", path.c_str(), human_bytes(double(f.file_size())).c_str(), f.version());
  std::printf("name:          %s\n", c.name.c_str());
  std::printf("architecture:  %s\n", c.arch.c_str());
  std::printf("layers:        %d\n", c.n_layer);
  std::printf("embedding:     %d\n", c.n_embd);
  std::printf("heads:         %d query, %d KV, head size %d\n", c.n_head, c.n_head_kv, c.head_dim);
  std::printf("feed-forward:  %d (%s)\n", c.n_ff, c.ffn_act == FfnAct::GeluTanh ? "GeGLU" : "SwiGLU");
  std::printf("vocabulary:    %d (%s tokenizer, chat format %s)\n", c.n_vocab,
              m->tokenizer().kind() == Tokenizer::Kind::Spm ? "SentencePiece" : "byte-level BPE",
              chat_format_name(detect_chat_format(m->tokenizer(), c.arch)));
  std::printf("context:       %d (trained)\n", c.n_ctx_train);
  std::printf("rope:          %s, base %g", c.rope_style == RopeStyle::NeoX ? "neox" : "normal", c.rope_base);
  if (c.sliding_window) std::printf(" (sliding-window layers: base %g)", c.rope_base_local);
  std::printf("\n");
  if (c.sliding_window) {
    int local = 0;
    for (int l = 0; l < c.n_layer; ++l) local += c.is_local(l);
    std::printf("attention:     %d sliding-window layers (window %d), %d global\n", local, c.sliding_window,
                c.n_layer - local);
  }
  std::printf("weights/token: %s read per decode step\n", human_bytes(double(m->weight_bytes_per_token())).c_str());
  std::printf("kernels:       %s (LEANLM_ISA=scalar|avx2|avx512 selects a lower set)\n", isa_name(best_isa()));
  std::printf("               %s\n", isa_paths_report(cpu_features(), best_isa()).c_str());
  if (show_metadata) {
    std::printf("\nmetadata (%zu keys):\n", f.metadata().size());
    for (const auto& k : f.metadata_order()) std::printf("  %-40s %s\n", k.c_str(), f.find(k)->to_string().c_str());
  }
  std::printf("\ntensors (%zu):\n", f.tensors().size());
  for (const auto& t : f.tensors())
    std::printf("  %-32s %-6s %-16s %s\n", t.name.c_str(), type_name(t.type_id).c_str(), t.shape_string().c_str(),
                human_bytes(double(t.nbytes)).c_str());
}

}  // namespace

void add_info(CLI::App& app) {
  auto model = std::make_shared<std::string>();
  auto meta = std::make_shared<bool>(false);
  CLI::App* c = app.add_subcommand("info", "show a model file's architecture, hyper-parameters and tensors");
  c->add_option("-m,--model", *model, kModelHelp);
  c->add_flag("--metadata", *meta, "also list every metadata key");
  c->callback([model, meta] { info(*model, *meta); });
}

}  // namespace leanlm::cli
