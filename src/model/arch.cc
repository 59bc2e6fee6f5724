// Architecture-specific hyper-parameters. Adding an architecture that fits the shared forward pass
// means adding one configure function and one table row here.
#include <cmath>

#include "model/model.h"
#include "util/error.h"

namespace leanlm {

namespace {

void read_common(const GgufFile& f, ModelConfig& c) {
  const std::string a = c.arch + ".";
  c.n_layer = int(f.require_int(a + "block_count"));
  c.n_embd = int(f.require_int(a + "embedding_length"));
  c.n_ff = int(f.require_int(a + "feed_forward_length"));
  c.n_head = int(f.require_int(a + "attention.head_count"));
  c.n_head_kv = int(f.get_int(a + "attention.head_count_kv", c.n_head));
  c.n_ctx_train = int(f.get_int(a + "context_length", 2048));
  if (c.n_layer <= 0 || c.n_embd <= 0 || c.n_ff <= 0 || c.n_head <= 0 || c.n_head_kv <= 0 ||
      c.n_head % c.n_head_kv != 0 || c.n_layer > 1024)
    fail(f.path() + ": inconsistent attention/layer hyper-parameters");
  c.head_dim = int(f.get_int(a + "attention.key_length", c.n_embd / c.n_head));
  c.head_dim_v = int(f.get_int(a + "attention.value_length", c.head_dim));
  if (c.head_dim <= 0 || c.head_dim_v != c.head_dim || c.head_dim % 2 != 0 || c.head_dim > 1024)
    fail(f.path() + ": unsupported head size");
  c.n_rot = int(f.get_int(a + "rope.dimension_count", c.head_dim));
  if (c.n_rot <= 0 || c.n_rot > c.head_dim || c.n_rot % 2) fail(f.path() + ": invalid rope.dimension_count");
  c.norm_eps = float(f.get_float(a + "attention.layer_norm_rms_epsilon", 1e-5));
  c.rope_base = float(f.get_float(a + "rope.freq_base", 10000.0));
  c.rope_base_local = c.rope_base;
  const double scale = f.get_float(a + "rope.scaling.factor", 0.0);
  const std::string kind = f.get_string(a + "rope.scaling.type", "");
  if (scale > 0 && (kind == "linear" || kind.empty())) c.rope_freq_scale = float(1.0 / scale);
  c.attn_scale = 1.f / std::sqrt(float(c.head_dim));
  c.layer_is_local.assign(c.n_layer, false);
}

void configure_llama(const GgufFile& f, ModelConfig& c) {
  read_common(f, c);
  c.rope_style = RopeStyle::Normal;
  c.ffn_act = FfnAct::Silu;
}

void configure_qwen2(const GgufFile& f, ModelConfig& c) {
  read_common(f, c);
  c.rope_style = RopeStyle::NeoX;
  c.ffn_act = FfnAct::Silu;
  c.qkv_bias = true;
}

void configure_gemma3(const GgufFile& f, ModelConfig& c) {
  read_common(f, c);
  c.rope_style = RopeStyle::NeoX;
  c.ffn_act = FfnAct::GeluTanh;
  c.qk_norm = true;
  c.post_norms = true;
  c.embd_scale = std::sqrt(float(c.n_embd));
  c.final_logit_softcap = float(f.get_float("gemma3.final_logit_softcapping", 0.0));
  // Gemma 3: five sliding-window layers then one global layer; local layers use RoPE base 10k and
  // no frequency scaling.
  c.sliding_window = int(f.get_int("gemma3.attention.sliding_window", 0));
  const int pattern = int(f.get_int("gemma3.attention.sliding_window_pattern", 6));
  if (pattern <= 0) fail(f.path() + ": invalid sliding_window_pattern");
  for (int l = 0; l < c.n_layer; ++l) c.layer_is_local[l] = (l % pattern) < pattern - 1;
  c.rope_base_local = 10000.f;
  if (c.sliding_window < 0) fail(f.path() + ": invalid sliding_window");
}

struct ArchEntry {
  const char* name;
  void (*configure)(const GgufFile&, ModelConfig&);
};
const ArchEntry kArchs[] = {
    {"gemma3", configure_gemma3},
    {"llama", configure_llama},
    {"qwen2", configure_qwen2},
};

}  // namespace

std::vector<std::string> supported_architectures() {
  std::vector<std::string> out;
  for (const auto& a : kArchs) out.push_back(a.name);
  return out;
}

void configure_architecture(const GgufFile& f, ModelConfig& cfg) {
  cfg.arch = f.require_string("general.architecture");
  cfg.name = f.get_string("general.name", "");
  for (const auto& a : kArchs)
    if (cfg.arch == a.name) return a.configure(f, cfg);
  std::string list;
  for (const auto& a : kArchs) list += (list.empty() ? "" : ", ") + std::string(a.name);
  fail(f.path() + ": unsupported architecture '" + cfg.arch + "' (supported: " + list + ")");
}

}  // namespace leanlm
