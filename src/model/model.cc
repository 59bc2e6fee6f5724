#include "model/model.h"

#include "quant/dequant.h"
#include "quant/dot.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/progress.h"

namespace leanlm {

namespace {

class TensorLoader {
 public:
  explicit TensorLoader(const GgufFile& f) : f_(f) {}

  const GgufTensor* get(const std::string& name, bool required) {
    const GgufTensor* t = f_.find_tensor(name);
    if (!t && required) fail(f_.path() + ": missing tensor '" + name + "'");
    return t;
  }

  WeightMat mat(const std::string& name, int64_t n_in, int64_t n_out, bool required = true) {
    const GgufTensor* t = get(name, required);
    if (!t) return {};
    if (t->n_dims != 2 || t->ne[0] != n_in || t->ne[1] != n_out)
      fail(strfmt("%s: tensor '%s' has shape %s, expected [%lld, %lld]", f_.path().c_str(), name.c_str(),
                  t->shape_string().c_str(), (long long)n_in, (long long)n_out));
    const TypeTraits* tr = type_traits(t->type_id);
    if (!tr->supported || (uses_int8_acts(t->type()) && n_in % 32 != 0))
      fail(f_.path() + ": tensor '" + name + "' has unsupported type " + tr->name);
    WeightMat w;
    w.type = t->type();
    w.n_in = n_in;
    w.n_out = n_out;
    w.data = t->data;
    w.row_bytes = row_bytes(w.type, n_in);
    return w;
  }

  std::vector<float> vec(const std::string& name, int64_t n, bool required = true) {
    const GgufTensor* t = get(name, required);
    if (!t) return {};
    if (t->n_elements() != n || t->ne[0] != n)
      fail(strfmt("%s: tensor '%s' has shape %s, expected [%lld]", f_.path().c_str(), name.c_str(),
                  t->shape_string().c_str(), (long long)n));
    if (!type_traits(t->type_id)->supported)
      fail(f_.path() + ": tensor '" + name + "' has unsupported type " + type_name(t->type_id));
    std::vector<float> v(n);
    dequantize_row(t->type(), t->data, v.data(), n);
    return v;
  }

 private:
  const GgufFile& f_;
};

}  // namespace

Model::~Model() = default;

std::unique_ptr<Model> Model::load(const std::string& path, bool show_progress) {
  std::unique_ptr<Model> m(new Model());
  m->file_ = GgufFile::open(path);
  const GgufFile& f = *m->file_;
  ModelConfig& c = m->cfg_;
  configure_architecture(f, c);
  m->tokenizer_ = Tokenizer::from_gguf(f);
  c.n_vocab = m->tokenizer_->n_vocab();

  TensorLoader L(f);
  const int qd = c.n_head * c.head_dim, kvd = c.n_head_kv * c.head_dim;
  m->tok_embd_ = L.mat("token_embd.weight", c.n_embd, c.n_vocab);
  m->output_ = L.mat("output.weight", c.n_embd, c.n_vocab, false);
  if (!m->output_) m->output_ = m->tok_embd_;  // tied embeddings
  m->output_norm_ = L.vec("output_norm.weight", c.n_embd);
  if (f.find_tensor("rope_freqs.weight")) m->rope_freqs_ = L.vec("rope_freqs.weight", c.n_rot / 2);

  ProgressBar bar("loading", c.n_layer);
  m->layers_.resize(c.n_layer);
  for (int l = 0; l < c.n_layer; ++l) {
    LayerWeights& w = m->layers_[l];
    const std::string p = "blk." + std::to_string(l) + ".";
    w.attn_norm = L.vec(p + "attn_norm.weight", c.n_embd);
    w.wq = L.mat(p + "attn_q.weight", c.n_embd, qd);
    w.wk = L.mat(p + "attn_k.weight", c.n_embd, kvd);
    w.wv = L.mat(p + "attn_v.weight", c.n_embd, kvd);
    w.wo = L.mat(p + "attn_output.weight", qd, c.n_embd);
    if (c.qkv_bias) {
      w.bq = L.vec(p + "attn_q.bias", qd);
      w.bk = L.vec(p + "attn_k.bias", kvd);
      w.bv = L.vec(p + "attn_v.bias", kvd);
    }
    if (c.qk_norm) {
      w.q_norm = L.vec(p + "attn_q_norm.weight", c.head_dim);
      w.k_norm = L.vec(p + "attn_k_norm.weight", c.head_dim);
    }
    if (c.post_norms) {
      w.post_attn_norm = L.vec(p + "post_attention_norm.weight", c.n_embd);
      w.post_ffn_norm = L.vec(p + "post_ffw_norm.weight", c.n_embd);
    }
    w.ffn_norm = L.vec(p + "ffn_norm.weight", c.n_embd);
    w.ffn_gate = L.mat(p + "ffn_gate.weight", c.n_embd, c.n_ff);
    w.ffn_up = L.mat(p + "ffn_up.weight", c.n_embd, c.n_ff);
    w.ffn_down = L.mat(p + "ffn_down.weight", c.n_ff, c.n_embd);
    if (show_progress) bar.update(l + 1);
  }
  return m;
}

size_t Model::weight_bytes_per_token() const {
  size_t b = output_.row_bytes * output_.n_out;
  for (const auto& w : layers_)
    for (const WeightMat* m : {&w.wq, &w.wk, &w.wv, &w.wo, &w.ffn_gate, &w.ffn_up, &w.ffn_down})
      b += m->row_bytes * m->n_out;
  return b;
}

void Model::embed(int token, float* out) const {
  dequantize_row(tok_embd_.type, tok_embd_.data + size_t(token) * tok_embd_.row_bytes, out, cfg_.n_embd);
}

}  // namespace leanlm
