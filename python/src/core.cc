// leanlm._core: the engine bound for Python (nanobind). The Python layer (python/leanlm/) adds the
// OpenAI shapes, argument checks and iterators; this file only moves between Python and the engine.
//
// Concurrency: one Engine serves every Generation of a Model, and its forward pass has one set of
// buffers, so each engine call holds the Model's mutex. The GIL is released for every engine call
// (model load, prompt chunks, decode steps, perplexity) and taken back between them to check for
// Ctrl-C (PyErr_CheckSignals), so a KeyboardInterrupt lands within one step.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <atomic>
#include <cmath>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "engine/model_registry.h"
#include "engine/text_stream.h"
#include "leanlm/leanlm.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace leanlm::py {

namespace {

// Raises the pending Python exception (KeyboardInterrupt) if a signal handler asked for one.
void check_signals() {
  if (PyErr_CheckSignals() != 0) throw nb::python_error();
}

struct ModelArgs {
  std::string model;  // path or short name ("" = the default model)
  std::vector<std::string> search;  // where else to look for models/ (the Python environment's prefix)
  int n_ctx = 4096, threads = 0, batch = 512;
  std::string kv_codec = "f16", kv_evict = "none", kv_budget, kv_codebooks;
  double kv_think = 0;
  int kv_topk = 0;
  size_t kv_mem = 0;  // bytes (0: no limit)
};

EngineOptions engine_options(const ModelArgs& a) {
  EngineOptions o;
  o.model_path = resolve_model_path(a.model, a.search);
  o.threads = a.threads;
  o.ctx = a.n_ctx;
  o.batch = a.batch;
  o.kv = parse_kv_config(a.kv_codec, a.kv_evict, a.kv_budget, a.kv_think, a.kv_topk, a.kv_codebooks);
  o.kv_mem = a.kv_mem;
  return o;
}

}  // namespace

class Model {
 public:
  explicit Model(const ModelArgs& a) {
    if (a.n_ctx < 1) throw nb::value_error("n_ctx must be at least 1");
    if (a.threads < 0) throw nb::value_error("threads must be 0 (one per core) or more");
    if (a.batch < 1) throw nb::value_error("batch must be at least 1");
    const EngineOptions o = engine_options(a);
    nb::gil_scoped_release release;
    engine_ = std::make_unique<Engine>(o);
    format_ = detect_chat_format(engine_->tokenizer(), engine_->model().config().arch);
  }

  Engine& engine() { return *engine_; }
  std::mutex& mu() { return mu_; }
  const Tokenizer& tok() const { return engine_->tokenizer(); }

  std::vector<int> tokenize(const std::string& text, bool add_bos, bool special) const {
    return tok().encode(text, add_bos, special);
  }
  void check_ids(const std::vector<int>& ids) const {
    for (int id : ids)
      if (id < 0 || id >= engine_->n_vocab())
        throw nb::value_error(strfmt("token id %d is out of range (the vocabulary has %d)", id, engine_->n_vocab()).c_str());
  }
  std::string detokenize(const std::vector<int>& ids, bool special) const {
    check_ids(ids);
    return utf8_sanitize(tok().decode(ids, special));
  }
  std::string format_chat(const std::vector<std::pair<std::string, std::string>>& msgs, bool add_generation_prompt) const {
    std::vector<ChatMessage> m;
    for (const auto& [role, content] : msgs) m.push_back({role, content});
    return leanlm::format_chat(format_, m, add_generation_prompt);
  }
  std::string chat_format() const { return chat_format_name(format_); }
  size_t kv_bytes_in_use() { return engine_->kv_pool().in_use(); }  // the pool has its own lock

  // llama-perplexity's method (engine/scoring.h): chunks of n_ctx tokens from an empty cache, the
  // second half of each scored. Returns (perplexity, tokens scored).
  std::pair<double, long long> perplexity(const std::vector<int>& tokens, int n_ctx, int max_chunks) {
    check_ids(tokens);
    if (n_ctx < 8) throw nb::value_error("perplexity needs n_ctx of at least 8 tokens");
    if (n_ctx > engine_->options().ctx)
      throw nb::value_error(strfmt("n_ctx=%d is larger than the model's context (%d)", n_ctx, engine_->options().ctx).c_str());
    int n_chunks = int(tokens.size() / size_t(n_ctx));
    if (max_chunks >= 0) n_chunks = std::min(n_chunks, max_chunks);
    if (n_chunks == 0) fail(strfmt("%zu tokens is less than one chunk of %d (lower n_ctx)", tokens.size(), n_ctx));
    const int V = engine_->n_vocab(), first = n_ctx / 2;
    double nll = 0;
    long long count = 0;
    for (int ci = 0; ci < n_chunks; ++ci) {
      const std::vector<int> chunk = perplexity_chunk(tokens, ci, n_ctx, tok());
      {
        nb::gil_scoped_release release;
        std::lock_guard lock(mu_);  // taken without the GIL, given up before the GIL is taken back
        auto seq = engine_->new_sequence(engine_->options().kv, n_ctx);
        const int max_batch = engine_->forward().max_batch();
        for (int start = 0; start < n_ctx; start += max_batch) {
          const int n = std::min(max_batch, n_ctx - start);
          const std::vector<BatchEntry> batch = perplexity_batch(seq.get(), chunk, start, n, first);
          const float* logits = engine_->forward().run(batch);
          int row = 0;
          for (int j = 0; j < n; ++j) {
            if (!batch[j].logits) continue;
            nll -= log_prob(logits + size_t(row++) * V, V, chunk[start + j + 1]);
            ++count;
          }
        }
      }
      check_signals();
    }
    return {std::exp(nll / double(count)), count};
  }

 private:
  std::unique_ptr<Engine> engine_;
  std::mutex mu_;
  ChatFormat format_ = ChatFormat::ChatML;
};

struct GenerateArgs {
  int max_tokens = 128;  // < 0: until the context is full
  SamplerOptions sampling;
  std::vector<std::string> stop;
  bool ignore_eos = false;
};

// One generation: its own sequence (KV cache), sampler and text stream. next() returns the next
// piece of text (whole UTF-8 characters, never part of a stop string) or None at the end.
class Generation {
 public:
  Generation(Model& m, std::vector<int> prompt, const GenerateArgs& a)
      : m_(m), prompt_(std::move(prompt)), args_(a), sampler_(a.sampling), stream_(a.stop) {
    if (prompt_.empty()) throw nb::value_error("the prompt is empty");
    m_.check_ids(prompt_);
    history_ = prompt_;
    nb::gil_scoped_release release;  // the lock is never waited for while holding the GIL
    std::lock_guard lock(m_.mu());
    seq_ = m_.engine().new_sequence();
    try {
      m_.engine().check_fits(*seq_, prompt_.size());  // a prompt longer than the context: a clear error
    } catch (...) {
      seq_.reset();  // under the lock
      throw;
    }
  }
  ~Generation() { close(); }

  std::optional<std::string> next() {
    while (!done_) {
      std::string out;
      {
        nb::gil_scoped_release release;
        out = step();
      }
      check_signals();
      if (!out.empty()) return out;
    }
    return std::nullopt;
  }

  // Frees the sequence's KV memory; the generation ends (finish reason kept if it had one).
  void close() {
    done_ = true;
    if (!seq_) return;
    nb::gil_scoped_release release;
    std::lock_guard lock(m_.mu());
    if (!seq_) return;  // closed by another thread meanwhile
    kv_bytes_last_ = seq_->kv_bytes();
    seq_.reset();
  }

  std::optional<std::string> finish_reason() const { return reason_.empty() ? std::nullopt : std::optional(reason_); }
  int prompt_tokens() const { return int(prompt_.size()); }
  int completion_tokens() const { return generated_; }
  size_t kv_bytes() {
    nb::gil_scoped_release release;  // next() may be feeding this sequence on another thread
    std::lock_guard lock(m_.mu());
    return seq_ ? seq_->kv_bytes() : kv_bytes_last_;
  }
  const std::string& text() const { return stream_.text(); }

 private:
  // One engine call (a prompt chunk or a decode step) and the text it releases. Runs without the GIL.
  std::string step() {
    std::lock_guard lock(m_.mu());
    if (done_ || !seq_) {  // closed, or finished by another thread meanwhile
      done_ = true;
      return "";
    }
    try {
      return decode_step();
    } catch (...) {  // an engine error ends the generation and frees its KV (we hold the lock)
      done_ = true;
      seq_.reset();
      throw;
    }
  }

  std::string decode_step() {
    Engine& e = m_.engine();
    if (fed_ < prompt_.size()) {  // the prompt, a batch at a time so that Ctrl-C is seen between batches
      const size_t n = std::min(prompt_.size() - fed_, size_t(e.forward().max_batch()));
      const std::vector<int> chunk(prompt_.begin() + fed_, prompt_.begin() + fed_ + n);
      const float* logits = e.feed(*seq_, chunk);
      fed_ += n;
      if (fed_ == prompt_.size()) {
        if (args_.max_tokens == 0) return finish("length");
        next_ = sampler_.sample(logits, e.n_vocab(), history_);
      }
      return "";
    }
    const int t = next_;
    if (!args_.ignore_eos && m_.tok().is_eog(t)) return finish("stop");
    history_.push_back(t);
    ++generated_;
    std::string out = stream_.push(m_.tok().token_to_piece(t));
    if (stream_.stopped()) return out + finish("stop");
    if (args_.max_tokens >= 0 && generated_ >= args_.max_tokens) return out + finish("length");
    if (seq_->n_past >= seq_->max_ctx) return out + finish("length");  // no room to feed it
    const float* logits = e.feed(*seq_, {t});
    next_ = sampler_.sample(logits, e.n_vocab(), history_);
    return out;
  }

  // Ends the generation; returns the text still held back (a partial stop string that never completed).
  std::string finish(const char* reason) {
    reason_ = reason;
    done_ = true;
    return stream_.stopped() ? "" : stream_.flush();
  }

  Model& m_;
  std::vector<int> prompt_, history_;
  GenerateArgs args_;
  Sampler sampler_;
  TextStream stream_;
  std::unique_ptr<SequenceState> seq_;
  size_t fed_ = 0;
  int next_ = -1, generated_ = 0;
  std::atomic<bool> done_{false};
  std::string reason_;
  size_t kv_bytes_last_ = 0;
};

}  // namespace leanlm::py

NB_MODULE(_core, m) {
  using namespace leanlm::py;
  m.doc() = "leanlm's engine (use the leanlm package, not this module)";
  nb::exception<leanlm::Error>(m, "LeanlmError", PyExc_RuntimeError);

  nb::class_<Model>(m, "Model")
      .def(
          "__init__",
          [](Model* self, const std::string& model, const std::vector<std::string>& search, int n_ctx, int threads, int batch, const std::string& kv_codec,
             const std::string& kv_evict, const std::string& kv_budget, double kv_think, int kv_topk,
             const std::string& kv_codebooks, size_t kv_mem) {
            ModelArgs a{model, search, n_ctx, threads, batch, kv_codec, kv_evict, kv_budget, kv_codebooks, kv_think, kv_topk, kv_mem};
            new (self) Model(a);
          },
          "model"_a, "search"_a, "n_ctx"_a, "threads"_a, "batch"_a, "kv_codec"_a, "kv_evict"_a, "kv_budget"_a, "kv_think"_a,
          "kv_topk"_a, "kv_codebooks"_a, "kv_mem"_a)
      .def_prop_ro("path", [](Model& s) { return s.engine().options().model_path; })
      .def_prop_ro("arch", [](Model& s) { return s.engine().model().config().arch; })
      .def_prop_ro("n_ctx", [](Model& s) { return s.engine().options().ctx; })
      .def_prop_ro("n_vocab", [](Model& s) { return s.engine().n_vocab(); })
      .def_prop_ro("threads", [](Model& s) { return s.engine().pool().size(); })
      .def_prop_ro("kv_config", [](Model& s) { return s.engine().options().kv.name(); })
      .def_prop_ro("chat_format", &Model::chat_format)
      .def_prop_ro("bos", [](Model& s) { return s.tok().bos(); })
      .def_prop_ro("eos", [](Model& s) { return s.tok().eos(); })
      .def_prop_ro("kv_bytes_in_use", &Model::kv_bytes_in_use)
      .def("tokenize", &Model::tokenize, "text"_a, "add_bos"_a, "special"_a)
      .def("detokenize", &Model::detokenize, "ids"_a, "special"_a)
      .def("format_chat", &Model::format_chat, "messages"_a, "add_generation_prompt"_a)
      .def("perplexity", &Model::perplexity, "tokens"_a, "n_ctx"_a, "max_chunks"_a)
      .def(
          "start",
          [](Model& s, std::vector<int> prompt, int max_tokens, float temperature, int top_k, float top_p, float min_p,
             float repeat_penalty, int repeat_last_n, uint64_t seed, std::vector<std::string> stop, bool ignore_eos) {
            GenerateArgs a;
            a.max_tokens = max_tokens;
            a.sampling.temperature = temperature;
            a.sampling.top_k = top_k;
            a.sampling.top_p = top_p;
            a.sampling.min_p = min_p;
            a.sampling.repeat_penalty = repeat_penalty;
            a.sampling.repeat_last_n = repeat_last_n;
            a.sampling.seed = seed;
            a.stop = std::move(stop);
            a.ignore_eos = ignore_eos;
            return new Generation(s, std::move(prompt), a);
          },
          "prompt"_a, "max_tokens"_a, "temperature"_a, "top_k"_a, "top_p"_a, "min_p"_a, "repeat_penalty"_a,
          "repeat_last_n"_a, "seed"_a, "stop"_a, "ignore_eos"_a, nb::keep_alive<0, 1>(), nb::rv_policy::take_ownership);

  nb::class_<Generation>(m, "Generation")
      .def("next", &Generation::next)
      .def("close", &Generation::close)
      .def_prop_ro("finish_reason", &Generation::finish_reason)
      .def_prop_ro("prompt_tokens", &Generation::prompt_tokens)
      .def_prop_ro("completion_tokens", &Generation::completion_tokens)
      .def_prop_ro("kv_bytes", &Generation::kv_bytes)
      .def_prop_ro("text", &Generation::text);
}
