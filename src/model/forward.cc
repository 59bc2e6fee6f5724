#include "model/forward.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <map>

#include "util/error.h"

namespace leanlm {

size_t SequenceState::kv_bytes() const {
  size_t b = 0;
  for (const auto& l : layers) b += l->bytes();
  return b;
}

size_t SequenceState::kv_bytes_to_append(int n) const {
  size_t b = 0;
  for (const auto& l : layers) b += l->bytes_to_append(n);
  return b;
}

void SequenceState::clear() {
  for (auto& l : layers) l->clear();
  n_past = 0;
}

std::shared_ptr<const KvPrefix> SequenceState::freeze(bool go_on) {
  if (!make_store) fail("this sequence's KV configuration cannot share prefixes (eviction or ThinK)");
  std::vector<std::unique_ptr<KvStore>> fresh;
  if (go_on)
    for (size_t l = 0; l < layers.size(); ++l) fresh.push_back(make_store(int(l)));  // may throw: nothing changed yet
  auto p = std::make_shared<KvPrefix>();
  p->n_tokens = n_past;
  for (size_t l = 0; l < layers.size(); ++l) {
    std::vector<KvPart> parts;
    std::unique_ptr<KvStore> tail;
    if (auto* seg = dynamic_cast<SegmentedKvStore*>(layers[l].get())) {
      parts = seg->parts();
      tail = seg->take_tail();
    } else {
      tail = std::move(layers[l]);
    }
    tail->shrink_to_fit();
    if (tail->n_live() > 0) parts.push_back({std::shared_ptr<const KvStore>(std::move(tail)), INT_MAX});
    if (go_on) layers[l] = std::make_unique<SegmentedKvStore>(parts, std::move(fresh[l]), layer_window[l]);
    p->layers.push_back(std::move(parts));
  }
  if (!go_on) layers.clear(), n_past = 0;
  return p;
}

Forward::Forward(const Model& model, ThreadPool& pool, int max_batch)
    : m_(model), c_(model.config()), pool_(pool), max_batch_(max_batch), attn_(pool.size()) {
  const size_t T = max_batch;
  x_.resize(T * c_.n_embd);
  h_.resize(T * c_.n_embd);
  o_.resize(T * c_.n_embd);
  q_.resize(T * c_.n_head * c_.head_dim);
  att_.resize(T * c_.n_head * c_.head_dim);
  k_.resize(T * c_.n_head_kv * c_.head_dim);
  v_.resize(T * c_.n_head_kv * c_.head_dim);
  gate_.resize(T * c_.n_ff);
  up_.resize(T * c_.n_ff);
  act_.resize(T * c_.n_ff);
}

std::unique_ptr<SequenceState> Forward::new_sequence(int max_ctx, const KvConfig& kv, BlockPool& pool,
                                                     const ModelCodebooks* books, const KvPrefix* prefix,
                                                     int n_use) const {
  if (max_ctx <= 0) fail("context size must be positive");
  auto s = std::make_unique<SequenceState>();
  s->pool = &pool;
  s->max_ctx = max_ctx;
  kv.check();
  s->attn_top_k = kv.top_k;
  for (int l = 0; l < c_.n_layer; ++l) s->layer_window.push_back(c_.is_local(l) ? c_.sliding_window : 0);
  // The factory outlives this call (freeze() uses it): it holds copies, the pool and the
  // engine-owned codebooks.
  auto make_store = [kv, pool = &pool, books, max_ctx, this](int l) {
    KvShape shape;
    shape.n_kv_head = c_.n_head_kv;
    shape.head_dim = c_.head_dim;
    shape.window = c_.is_local(l) ? c_.sliding_window : 0;
    shape.max_batch = max_batch_;
    shape.max_ctx = max_ctx;
    const Codebook* kb = books && l < int(books->key.size()) ? &books->key[l] : nullptr;
    const Codebook* vb = books && l < int(books->value.size()) ? &books->value[l] : nullptr;
    return make_kv_store(kv, shape, *pool, kb, vb);
  };
  if (kv.shareable()) s->make_store = make_store;
  if (prefix) {
    if (!s->make_store) fail("KV configuration " + kv.name() + " cannot share prefixes (eviction or ThinK)");
    if (int(prefix->layers.size()) != c_.n_layer || n_use < 0 || n_use > max_ctx ||
        !prefix->can_continue_at(n_use, s->layer_window))
      fail("KV prefix does not fit this model or position");
  }
  for (int l = 0; l < c_.n_layer; ++l) {
    if (!prefix) {
      s->layers.push_back(make_store(l));
      continue;
    }
    std::vector<KvPart> parts = prefix->layers[l];
    for (auto& p : parts) p.limit = std::min(p.limit, n_use);
    s->layers.push_back(std::make_unique<SegmentedKvStore>(std::move(parts), make_store(l), s->layer_window[l]));
  }
  s->n_past = prefix ? n_use : 0;
  return s;
}

void Forward::attention(int layer, const std::vector<BatchEntry>& batch) {
  AttnShape shape;
  shape.n_head = c_.n_head;
  shape.n_head_kv = c_.n_head_kv;
  shape.head_dim = c_.head_dim;
  shape.window = c_.is_local(layer) ? c_.sliding_window : 0;
  attn_tokens_.resize(batch.size());
  for (size_t t = 0; t < batch.size(); ++t) {
    KvStore* kv = batch[t].seq->layers[layer].get();
    attn_tokens_[t] = {kv, batch[t].pos, kv->observer(), batch[t].seq->attn_top_k};
  }
  attn_.run(pool_, shape, attn_tokens_, q_.data(), att_.data());
  // Eviction: each store applies its budget once its attention for this pass is done.
  for (size_t t = 0; t < batch.size(); ++t)
    if (t == 0 || batch[t].seq != batch[t - 1].seq) batch[t].seq->layers[layer]->after_pass();
}

// Every sequence of the batch must take its tokens within its own context, and the KV memory the
// pass may need must fit the budgets of the pools involved: checked before anything is appended.
void Forward::check_room(const std::vector<BatchEntry>& batch) const {
  std::map<SequenceState*, int> tokens;
  for (const auto& b : batch) {
    if (b.pos < 0 || b.pos >= b.seq->max_ctx)
      fail(strfmt("position %d is outside the sequence's context of %d tokens", b.pos, b.seq->max_ctx));
    ++tokens[b.seq];
  }
  std::map<BlockPool*, size_t> need;
  for (const auto& [seq, n] : tokens) need[seq->pool] += seq->kv_bytes_to_append(n);
  for (const auto& [pool, bytes] : need)
    if (pool) pool->require_room(bytes, "this batch");
  for (const auto& [seq, n] : tokens)
    for (auto& l : seq->layers) l->reserve(n);
}

const float* Forward::run(const std::vector<BatchEntry>& batch) {
  const int T = int(batch.size());
  if (T == 0) return nullptr;
  if (T > max_batch_) fail(strfmt("internal error: batch of %d exceeds max_batch %d", T, max_batch_));
  const int E = c_.n_embd, D = c_.head_dim, H = c_.n_head, KVH = c_.n_head_kv, F = c_.n_ff;
  const int QD = H * D, KVD = KVH * D;
  for (const auto& b : batch)
    if (b.token < 0 || b.token >= c_.n_vocab) fail(strfmt("token id %d is out of range", b.token));
  check_room(batch);

  for (int t = 0; t < T; ++t) {
    m_.embed(batch[t].token, x_.data() + size_t(t) * E);
    if (c_.embd_scale != 1.f) scale(x_.data() + size_t(t) * E, c_.embd_scale, E);
  }

  // RoPE angles of every token, once per pass: global layers, and sliding-window layers (own base).
  rope_global_.resize(size_t(T) * c_.n_rot);
  for (int t = 0; t < T; ++t)
    rope_angles(batch[t].pos, c_.n_rot, c_.rope_base, c_.rope_freq_scale, m_.rope_freq_factors(),
                rope_global_.data() + size_t(t) * c_.n_rot);
  if (c_.sliding_window > 0) {
    rope_local_.resize(size_t(T) * c_.n_rot);
    for (int t = 0; t < T; ++t)
      rope_angles(batch[t].pos, c_.n_rot, c_.rope_base_local, 1.f, nullptr, rope_local_.data() + size_t(t) * c_.n_rot);
  }

  for (int l = 0; l < c_.n_layer; ++l) {
    const LayerWeights& w = m_.layers()[l];
    const bool local = c_.is_local(l);
    for (int t = 0; t < T; ++t) rms_norm(x_.data() + t * E, w.attn_norm.data(), h_.data() + t * E, E, c_.norm_eps);
    if (mat_tap_) mat_tap_(l, MatInput::AttnIn, h_.data(), T, E, E);
    matmul_multi(pool_, mm_, {{&w.wq, q_.data(), QD, 0, w.wq.n_out}, {&w.wk, k_.data(), KVD, 0, w.wk.n_out},
                              {&w.wv, v_.data(), KVD, 0, w.wv.n_out}}, h_.data(), T, E);

    const float* angles = local ? rope_local_.data() : rope_global_.data();  // [T][n_rot]
    for (int t = 0; t < T; ++t) {
      float* q = q_.data() + size_t(t) * QD;
      float* k = k_.data() + size_t(t) * KVD;
      float* v = v_.data() + size_t(t) * KVD;
      if (c_.qkv_bias) {
        axpy(1.f, w.bq.data(), q, QD);
        axpy(1.f, w.bk.data(), k, KVD);
        axpy(1.f, w.bv.data(), v, KVD);
      }
      const int pos = batch[t].pos;
      const float* cs = angles + size_t(t) * c_.n_rot;
      for (int hd = 0; hd < H; ++hd) {
        float* qh = q + hd * D;
        if (c_.qk_norm) rms_norm(qh, w.q_norm.data(), qh, D, c_.norm_eps);
        rope_apply(qh, c_.n_rot, c_.rope_style, cs);
        scale(qh, c_.attn_scale, D);
      }
      for (int hd = 0; hd < KVH; ++hd) {
        float* kh = k + hd * D;
        if (c_.qk_norm) rms_norm(kh, w.k_norm.data(), kh, D, c_.norm_eps);
        rope_apply(kh, c_.n_rot, c_.rope_style, cs);
      }
      if (kv_tap_) kv_tap_(l, pos, q, k, v);
      batch[t].seq->layers[l]->append(pos, k, v);
    }

    attention(l, batch);
    if (mat_tap_) mat_tap_(l, MatInput::AttnOut, att_.data(), T, QD, QD);
    matmul(pool_, mm_, w.wo, att_.data(), T, QD, o_.data(), E);
    for (int t = 0; t < T; ++t) {
      float* o = o_.data() + size_t(t) * E;
      if (c_.post_norms) rms_norm(o, w.post_attn_norm.data(), o, E, c_.norm_eps);
      axpy(1.f, o, x_.data() + size_t(t) * E, E);
      rms_norm(x_.data() + size_t(t) * E, w.ffn_norm.data(), h_.data() + size_t(t) * E, E, c_.norm_eps);
    }

    if (mat_tap_) mat_tap_(l, MatInput::FfnIn, h_.data(), T, E, E);
    matmul_multi(pool_, mm_, {{&w.ffn_gate, gate_.data(), F, 0, w.ffn_gate.n_out},
                              {&w.ffn_up, up_.data(), F, 0, w.ffn_up.n_out}}, h_.data(), T, E);
    for (int t = 0; t < T; ++t) {
      const size_t off = size_t(t) * F;
      if (c_.ffn_act == FfnAct::GeluTanh) geglu(gate_.data() + off, up_.data() + off, act_.data() + off, F);
      else swiglu(gate_.data() + off, up_.data() + off, act_.data() + off, F);
    }
    if (mat_tap_) mat_tap_(l, MatInput::FfnDown, act_.data(), T, F, F);
    matmul(pool_, mm_, w.ffn_down, act_.data(), T, F, o_.data(), E);
    for (int t = 0; t < T; ++t) {
      float* o = o_.data() + size_t(t) * E;
      if (c_.post_norms) rms_norm(o, w.post_ffn_norm.data(), o, E, c_.norm_eps);
      axpy(1.f, o, x_.data() + size_t(t) * E, E);
    }
  }

  for (const auto& b : batch) b.seq->n_past = std::max(b.seq->n_past, b.pos + 1);

  // Final norm and logits, only for the rows that asked for them.
  int n_out = 0;
  for (const auto& b : batch) n_out += b.logits;
  if (n_out == 0) return nullptr;
  hsel_.resize(size_t(n_out) * E);
  for (int t = 0, r = 0; t < T; ++t)
    if (batch[t].logits) rms_norm(x_.data() + size_t(t) * E, m_.output_norm().data(), hsel_.data() + size_t(r++) * E, E, c_.norm_eps);
  logits_.resize(size_t(n_out) * c_.n_vocab);
  matmul(pool_, mm_, m_.output(), hsel_.data(), n_out, E, logits_.data(), c_.n_vocab);
  if (c_.final_logit_softcap > 0.f) {
    const float cap = c_.final_logit_softcap;
    for (float& v : logits_) v = cap * std::tanh(v / cap);
  }
  return logits_.data();
}

}  // namespace leanlm
