// A decoder-only transformer loaded from GGUF: hyper-parameters, weight views, tokenizer.
//
// The supported architectures (gemma3, llama, qwen2) share one forward pass (forward.h); what
// differs between them is captured in ModelConfig and filled in by arch.cc.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"

namespace leanlm {

class Tokenizer;

enum class FfnAct { GeluTanh, Silu };

struct ModelConfig {
  std::string arch;
  std::string name;
  int n_layer = 0;
  int n_embd = 0;
  int n_head = 0;
  int n_head_kv = 0;
  int head_dim = 0;    // key/query head size
  int head_dim_v = 0;  // value head size
  int n_ff = 0;
  int n_vocab = 0;
  int n_ctx_train = 0;
  float norm_eps = 1e-5f;

  // Attention
  float attn_scale = 0;  // multiplies q.k
  int n_rot = 0;         // rotated dims per head
  RopeStyle rope_style = RopeStyle::Normal;
  float rope_base = 10000.f;        // global (full-attention) layers
  float rope_base_local = 10000.f;  // sliding-window layers
  float rope_freq_scale = 1.f;      // global layers (linear scaling)
  int sliding_window = 0;           // 0: no sliding-window layers
  std::vector<bool> layer_is_local; // [n_layer]

  // Block structure
  bool qk_norm = false;      // per-head RMSNorm on q and k (gemma3)
  bool post_norms = false;   // norm after attention and after FFN (gemma3)
  bool qkv_bias = false;     // qwen2
  float embd_scale = 1.f;    // gemma: sqrt(n_embd)
  FfnAct ffn_act = FfnAct::Silu;
  float final_logit_softcap = 0.f;

  bool is_local(int layer) const { return sliding_window > 0 && layer_is_local[layer]; }
};

struct LayerWeights {
  std::vector<float> attn_norm, q_norm, k_norm, post_attn_norm, ffn_norm, post_ffn_norm;
  std::vector<float> bq, bk, bv;
  WeightMat wq, wk, wv, wo;
  WeightMat ffn_gate, ffn_up, ffn_down;
};

class Model {
 public:
  // Loads and validates a model; throws Error (one line, naming the file) on any problem.
  static std::unique_ptr<Model> load(const std::string& path, bool show_progress = false);
  ~Model();

  const ModelConfig& config() const { return cfg_; }
  const GgufFile& file() const { return *file_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const std::vector<LayerWeights>& layers() const { return layers_; }
  const WeightMat& tok_embd() const { return tok_embd_; }
  const WeightMat& output() const { return output_; }
  const std::vector<float>& output_norm() const { return output_norm_; }
  const float* rope_freq_factors() const { return rope_freqs_.empty() ? nullptr : rope_freqs_.data(); }
  // Bytes of weights read by one decode step (every matrix once; the embedding row is negligible).
  size_t weight_bytes_per_token() const;
  // Writes the (unscaled) embedding of token id into out[n_embd].
  void embed(int token, float* out) const;

 private:
  Model() = default;
  std::unique_ptr<GgufFile> file_;
  ModelConfig cfg_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::vector<LayerWeights> layers_;
  WeightMat tok_embd_, output_;
  std::vector<float> output_norm_, rope_freqs_;
};

// Filled by arch.cc: reads the architecture's hyper-parameters. Throws on an unknown architecture.
void configure_architecture(const GgufFile& f, ModelConfig& cfg);
std::vector<std::string> supported_architectures();

}  // namespace leanlm
