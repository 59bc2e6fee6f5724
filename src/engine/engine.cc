#include "engine/engine.h"

#include <algorithm>
#include <cstring>

#include "engine/calibrate.h"
#include "kv/codebooks.h"
#include "util/error.h"
#include "util/sysinfo.h"

namespace leanlm {

Engine::Engine(const EngineOptions& o) : opts_(o) {
  require_cpu_baseline();
  if (opts_.ctx <= 0) fail("context size must be positive");
  if (opts_.batch <= 0) fail("batch size must be positive");
  model_ = Model::load(o.model_path, o.progress);
  const int threads = o.threads > 0 ? o.threads : physical_cores();
  pool_ = std::make_unique<ThreadPool>(threads);
  forward_ = std::make_unique<Forward>(*model_, *pool_, std::min(opts_.batch, opts_.ctx));
  kv_pool_ = std::make_unique<BlockPool>(opts_.kv_mem);
  default_books_ = codebooks_for(opts_.kv);  // a missing or wrong sidecar is an error at start-up
}

const ModelCodebooks* Engine::codebooks_for(const KvConfig& kv) {
  if (!kv.codec.needs_codebooks()) return nullptr;
  if (kv.codebooks.empty())
    fail(kv.codec.name() + " needs codebooks: run `leanlm calibrate -f TEXT --out FILE` and pass --kv-codebooks FILE");
  std::lock_guard<std::mutex> lk(books_mu_);  // entries are never removed: the pointer stays valid
  auto& slot = codebooks_[kv.codebooks + "|" + kv.codec.name()];
  if (!slot) slot = std::make_unique<ModelCodebooks>(load_codebooks(kv.codebooks, codebook_key(*model_), kv.codec));
  return slot.get();
}

std::vector<int> Engine::layer_windows() const {
  const ModelConfig& c = model_->config();
  std::vector<int> w;
  for (int l = 0; l < c.n_layer; ++l) w.push_back(c.is_local(l) ? c.sliding_window : 0);
  return w;
}

std::unique_ptr<SequenceState> Engine::new_sequence() const {
  return forward_->new_sequence(opts_.ctx, opts_.kv, *kv_pool_, default_books_);
}

std::unique_ptr<SequenceState> Engine::new_sequence(const KvConfig& kv, int max_ctx, const KvPrefix* prefix,
                                                    int n_use) {
  return forward_->new_sequence(max_ctx, kv, *kv_pool_, codebooks_for(kv), prefix, n_use);
}

void Engine::check_kv(const KvConfig& kv, int max_ctx) {
  BlockPool scratch;  // no budget, and not the engine's: the check takes nothing from running sequences
  forward_->new_sequence(max_ctx, kv, scratch, codebooks_for(kv));  // built and dropped at once
}

void Engine::check_fits(const SequenceState& seq, size_t n) const {
  if (seq.n_past + n > size_t(seq.max_ctx))
    fail(strfmt("prompt too long: %zu tokens after %d already in the context exceed the context size %d (raise -c)",
                n, seq.n_past, seq.max_ctx));
}

const float* Engine::feed(SequenceState& seq, const std::vector<int>& tokens, std::vector<float>* all_logits,
                          const std::function<void(int)>& progress) {
  check_fits(seq, tokens.size());
  // A request of several passes is checked whole, so it cannot run out of KV memory halfway.
  if (seq.pool) seq.pool->require_room(seq.kv_bytes_to_append(int(tokens.size())), "these tokens");
  for (auto& layer : seq.layers) layer->reserve(int(tokens.size()));  // the room that bound counted, at once
  const int V = n_vocab();
  if (all_logits) all_logits->resize(tokens.size() * size_t(V));
  const float* last = nullptr;
  std::vector<BatchEntry> batch;
  for (size_t i = 0; i < tokens.size(); i += forward_->max_batch()) {
    const size_t n = std::min<size_t>(forward_->max_batch(), tokens.size() - i);
    batch.clear();
    for (size_t j = 0; j < n; ++j) {
      const bool is_last = i + j + 1 == tokens.size();
      batch.push_back({&seq, tokens[i + j], seq.n_past + int(j), all_logits != nullptr || is_last});
    }
    const float* lg = forward_->run(batch);
    if (all_logits) std::memcpy(all_logits->data() + i * V, lg, n * V * sizeof(float));
    last = all_logits ? all_logits->data() + (i + n - 1) * V : lg;
    if (progress) progress(int(i + n));
  }
  return last;
}

}  // namespace leanlm
