// leanlm eval: compares KV cache configurations with the f16 cache in one run, on one model.
//
//   perplexity   llama-perplexity's chunks at each --ppl-ctx; tokens enter in blocks of the codec's
//                size (-b), so queries see older tokens compressed or evicted as decoding would;
//   KL, top-1    next-token distribution of each configuration against f16 at every scored
//                position (run in lockstep with the f16 cache, nothing stored);
//   passkey      a 5-digit key in synthetic filler at depths 10-90 %, greedy answer;
//   needle       the same with real text (the -f file) as the haystack;
//   KV bytes     allocated by the stores (pages, codes, scales, fp16 windows, position tables: what is
//                charged to the --kv-mem budget) per token at the end of each perplexity chunk.
// Prompts of the retrieval tests are processed in batches of up to 512 like `run`.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "common.h"
#include "engine/scoring.h"
#include "eval_plot.h"
#include "kv/kv_config.h"
#include "util/progress.h"
#include "util/sysinfo.h"

namespace leanlm::cli {

namespace {

struct EvalFlags {
  EngineFlags eng;
  std::string file;
  std::string codecs = "f16,q8_0,q4_0,kivi4,kivi2", evicts = "none", budgets = "20%";
  std::string codebooks;
  std::string thinks = "0";
  std::string topks = "0";
  std::string ppl_ctx = "512,4096";
  int ppl_tokens = 4096;
  std::string lengths = "1024,4096";
  int depths = 5;
  int retrieval_gen = 8;
  std::string json, png, markdown;
  uint64_t seed = 1234;
};

struct Result {
  KvConfig cfg;
  std::string label;  // the configuration's name, and which codebook file when several are compared
  std::map<int, double> ppl{}, kld{}, top1{};  // by perplexity context
  std::map<int, double> bytes_per_token{};  // KV bytes allocated / tokens, at the end of each perplexity chunk, by context
  std::map<int, double> retrieval_bytes_per_token{};  // the same after each retrieval prompt, by length (last prompt)
  double kld_sum = 0, top1_hits = 0;
  int64_t kl_count = 0;
  std::map<int, std::pair<int, int>> passkey{}, needle{};  // length -> (hits, trials)
};

std::vector<int> parse_ints(const std::string& text, const char* what) {
  std::vector<int> out;
  for (const std::string& s : split_list(text)) {
    char* end = nullptr;
    const long v = std::strtol(s.c_str(), &end, 10);
    if (*end != '\0' || v < 16 || v > (1 << 22)) fail(std::string(what) + ": '" + s + "' is not a length in tokens");
    out.push_back(int(v));
  }
  return out;
}

// A codebook file's short name for row labels: its file name without directory and extension.
std::string books_label(const std::string& path) {
  std::string n = path.substr(path.find_last_of('/') + 1);
  return n.substr(0, n.find_last_of('.'));
}

// Every configuration once, the f16 reference first. Configurations that read codebooks are run
// once per --kv-codebooks file (comma-separated: e.g. plain and query-aware books side by side).
std::vector<Result> build_configs(const EvalFlags& f) {
  std::vector<Result> out;
  KvConfig base;  // f16, no eviction: the reference every row is compared with
  out.push_back({base, base.name()});
  auto add = [&](const KvConfig& k) {
    const std::vector<std::string> books =
        k.codec.needs_codebooks() && !f.codebooks.empty() ? split_list(f.codebooks) : std::vector<std::string>{""};
    for (const std::string& b : books) {
      KvConfig c = k;
      c.codebooks = b;
      std::string label = c.name();
      if (books.size() > 1) label += " [" + books_label(b) + "]";
      bool seen = false;  // a configuration given twice (kivi2 and kivi2:r=128) is one row
      for (const Result& r : out) seen = seen || (r.cfg.name() == c.name() && r.cfg.codebooks == c.codebooks);
      if (seen) continue;
      for (const Result& r : out)  // two book files of the same name: tell them apart by position
        if (r.label == label) label += strfmt(" [file %zu]", size_t(&b - books.data()) + 1);
      out.push_back({c, label});
    }
  };
  std::vector<double> thinks;
  for (const std::string& t : split_list(f.thinks)) {
    char* end = nullptr;
    const double v = std::strtod(t.c_str(), &end);
    if (*end != '\0' || !(v >= 0 && v <= 0.9)) fail("--kv-think: '" + t + "' is not a fraction between 0 and 0.9");
    thinks.push_back(v);
  }
  std::vector<int> topks;
  for (const std::string& t : split_list(f.topks)) {
    char* end = nullptr;
    const long v = std::strtol(t.c_str(), &end, 10);
    if (*end != '\0' || v < 0 || v > (1 << 24)) fail("--kv-topk: '" + t + "' is not a slot count (0: all)");
    topks.push_back(int(v));
  }
  for (const std::string& c : split_list(f.codecs)) {
    for (const std::string& e : split_list(f.evicts)) {
      for (double th : thinks) for (int tk : topks) {
        KvConfig k;
        k.codec = parse_codec(c);
        k.evict = parse_evict(e);
        k.think = th;
        k.top_k = tk;
        if (tk > 0 && (k.evict.kind != EvictSpec::Kind::None || th > 0)) continue;  // sparse attention: plain caches
        if (k.evict.kind == EvictSpec::Kind::None) {
          add(k);
          continue;
        }
        for (const std::string& b : split_list(f.budgets)) {
          parse_budget(b, k);
          add(k);
        }
      }
    }
  }
  return out;
}


void eval_perplexity(Engine& engine, const std::vector<int>& text, int ctx, int n_chunks, int batch,
                     std::vector<Result>& res, ProgressBar& bar, int& done) {
  const Tokenizer& tok = engine.tokenizer();
  const int V = engine.n_vocab(), first = ctx / 2, C = int(res.size());
  std::vector<double> nll(C, 0.0), kld(C, 0.0), hits(C, 0.0), bytes(C, 0.0);
  int64_t count = 0;
  std::vector<std::vector<float>> base_lp;  // [row][V] of the current batch, f16 cache
  std::vector<int> base_top;
  std::vector<float> lp;
  for (int ci = 0; ci < n_chunks; ++ci) {
    const std::vector<int> chunk = perplexity_chunk(text, ci, ctx, tok);
    std::vector<std::unique_ptr<SequenceState>> seqs;
    for (const Result& r : res) seqs.push_back(engine.new_sequence(r.cfg, ctx));
    for (int start = 0; start < ctx; start += batch) {
      const int n = std::min(batch, ctx - start);
      for (int k = 0; k < C; ++k) {
        std::vector<BatchEntry> b;
        for (int j = 0; j < n; ++j) b.push_back({seqs[k].get(), chunk[start + j], start + j, start + j >= first && start + j < ctx - 1});
        // Sparse attention (--kv-topk) applies to decode steps: its rows go one token at a time.
        const bool one_by_one = res[k].cfg.top_k > 0;
        const float* logits = one_by_one ? nullptr : engine.forward().run(b);
        int row = 0;
        if (k == 0) base_lp.clear(), base_top.clear();
        for (int j = 0; j < n; ++j) {
          const float* lg = nullptr;
          if (one_by_one) {
            lg = engine.forward().run({b[j]});  // valid until the next run()
            if (!b[j].logits) continue;
          } else {
            if (!b[j].logits) continue;
            lg = logits + size_t(row) * V;
          }
          log_softmax(lg, V, lp);
          nll[k] -= lp[chunk[start + j + 1]];
          if (k == 0) {
            base_lp.push_back(lp);
            base_top.push_back(Sampler::argmax(lg, V));
            ++count;
          } else {
            kld[k] += kl_divergence(base_lp[row].data(), lp.data(), V);
            hits[k] += Sampler::argmax(lg, V) == base_top[row];
          }
          ++row;
        }
      }
    }
    for (int k = 0; k < C; ++k) bytes[k] += double(seqs[k]->kv_bytes()) / ctx;
    bar.update(++done);
  }
  for (int k = 0; k < C; ++k) {
    Result& r = res[k];
    r.ppl[ctx] = std::exp(nll[k] / count);
    r.bytes_per_token[ctx] = bytes[k] / n_chunks;
    if (k == 0) continue;
    r.kld[ctx] = kld[k] / count;
    r.top1[ctx] = hits[k] / count;
    r.kld_sum += kld[k];
    r.top1_hits += hits[k];
    r.kl_count += count;
  }
}

// A prompt of exactly `length` tokens: BOS, haystack tokens with the needle at `depth`, the question.
std::vector<int> retrieval_prompt(const Tokenizer& tok, const std::vector<int>& hay, const std::string& needle,
                                  const std::string& question, int length, double depth) {
  const std::vector<int> nd = tok.encode(needle, false, false), qs = tok.encode(question, false, false);
  const int room = length - 1 - int(nd.size()) - int(qs.size());
  if (room < 16) fail(strfmt("retrieval length %d is too short for the question", length));
  std::vector<int> out;
  if (tok.add_bos()) out.push_back(tok.bos());
  const int at = int(room * depth);
  for (int i = 0; i < room; ++i) {
    if (i == at) out.insert(out.end(), nd.begin(), nd.end());
    out.push_back(hay[i % hay.size()]);
  }
  out.insert(out.end(), qs.begin(), qs.end());
  return out;
}

bool retrieve(Engine& engine, const KvConfig& cfg, const std::vector<int>& prompt, const std::string& key, int gen,
              double& bytes_per_token) {
  auto seq = engine.new_sequence(cfg, int(prompt.size()) + gen);
  const float* logits = engine.feed(*seq, prompt);
  bytes_per_token = double(seq->kv_bytes()) / prompt.size();
  std::vector<int> out;
  for (int i = 0; i < gen; ++i) {
    const int next = Sampler::argmax(logits, engine.n_vocab());
    if (engine.tokenizer().is_eog(next)) break;
    out.push_back(next);
    if (i + 1 < gen) logits = engine.feed(*seq, {next});
  }
  return engine.tokenizer().decode(out).find(key) != std::string::npos;
}

std::string pct(double hits, double n) { return n > 0 ? strfmt("%.0f%%", 100.0 * hits / n) : "-"; }

std::string markdown_table(const std::vector<Result>& res, const std::vector<int>& ctxs, const std::vector<int>& lens) {
  std::string h = "| config | KV bytes allocated/token @" + std::to_string(ctxs.back()) + " | vs f16 |";
  std::string sep = "|---|---|---|";
  for (int c : ctxs) h += strfmt(" PPL@%d | ΔPPL |", c), sep += "---|---|";
  h += " KLD | top-1 |";
  sep += "---|---|";
  for (int l : lens) h += strfmt(" passkey@%d | needle@%d |", l, l), sep += "---|---|";
  std::string out = h + "\n" + sep + "\n";
  const double base_bpt = res[0].bytes_per_token.at(ctxs.back());
  for (const Result& r : res) {
    const double bpt = r.bytes_per_token.at(ctxs.back());
    std::string row = "| " + r.label + strfmt(" | %.0f | %.2fx |", bpt, base_bpt / bpt);
    for (int c : ctxs) {
      const double d = 100.0 * (r.ppl.at(c) / res[0].ppl.at(c) - 1.0);
      row += strfmt(" %.3f | %+.2f%% |", r.ppl.at(c), d);
    }
    if (r.kl_count > 0) row += strfmt(" %.4f | %.1f%% |", r.kld_sum / r.kl_count, 100.0 * r.top1_hits / r.kl_count);
    else row += " - | - |";
    for (int l : lens) {
      const auto pk = r.passkey.count(l) ? r.passkey.at(l) : std::pair{0, 0};
      const auto nd = r.needle.count(l) ? r.needle.at(l) : std::pair{0, 0};
      row += " " + pct(pk.first, pk.second) + " | " + pct(nd.first, nd.second) + " |";
    }
    out += row + "\n";
  }
  return out;
}

void eval(const EvalFlags& f) {
  const std::string file_text = read_text_file(f.file);
  const std::vector<int> ctxs = parse_ints(f.ppl_ctx, "--ppl-ctx");
  const std::vector<int> lens = f.lengths == "none" ? std::vector<int>{} : parse_ints(f.lengths, "--lengths");
  std::vector<Result> res = build_configs(f);

  EvalFlags ef = f;
  int max_len = *std::max_element(ctxs.begin(), ctxs.end());
  for (int l : lens) max_len = std::max(max_len, l + f.retrieval_gen);
  ef.eng.ctx = max_len;
  EngineOptions eo = ef.eng.resolve(true);
  Engine engine(eo);
  const Tokenizer& tok = engine.tokenizer();
  const std::vector<int> text = tok.encode(file_text, true, false);
  // Validate every configuration (names, codebooks, budgets) before the long part starts.
  for (const Result& r : res) engine.new_sequence(r.cfg, 512);

  int batch = f.eng.batch;
  if (batch == 0) batch = 32;  // a codec block: tokens meet older tokens compressed, as in decoding (see -b)
  int total = 0;
  std::vector<int> chunks;
  for (int c : ctxs) {
    const int n = std::min(int(text.size() / c), std::max(1, f.ppl_tokens / c));
    if (n == 0) fail(strfmt("%s: %zu tokens is less than one chunk of %d", f.file.c_str(), text.size(), c));
    chunks.push_back(n);
    total += n;
  }
  const int n_depths = f.depths;
  total += int(lens.size()) * n_depths * 2;
  std::fprintf(stderr, "eval: %zu configurations, perplexity at %s, retrieval at %s tokens\n", res.size(),
               f.ppl_ctx.c_str(), f.lengths.c_str());
  ProgressBar bar("eval", total);
  int done = 0;
  const double t0 = now_seconds();
  for (size_t i = 0; i < ctxs.size(); ++i) eval_perplexity(engine, text, ctxs[i], chunks[i], batch, res, bar, done);

  // Retrieval. Filler for the passkey, the text itself (from its middle) for the needle.
  const std::vector<int> filler = tok.encode(
      " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.", false, false);
  const std::vector<int> hay(text.begin() + text.size() / 2, text.end());
  std::mt19937_64 rng(f.seed);
  for (int len : lens) {
    for (int d = 0; d < n_depths; ++d) {
      const double depth = n_depths == 1 ? 0.5 : 0.1 + 0.8 * d / (n_depths - 1);
      const std::string key = std::to_string(10000 + rng() % 90000);
      const std::string key2 = std::to_string(10000 + rng() % 90000);
      const auto pk = retrieval_prompt(tok, filler, " The pass key is " + key + ". Remember it. " + key + " is the pass key.",
                                       " What is the pass key? The pass key is", len, depth);
      const auto nd = retrieval_prompt(tok, hay, " Remember this: the magic number of Elsinore is " + key2 + ".",
                                       "\nWhat is the magic number of Elsinore? The magic number of Elsinore is", len, depth);
      for (Result& r : res) {
        double bpt = 0;
        const bool ok = retrieve(engine, r.cfg, pk, key, f.retrieval_gen, bpt);
        r.passkey[len].first += ok;
        r.passkey[len].second += 1;
        r.retrieval_bytes_per_token[len] = bpt;
      }
      bar.update(++done);
      for (Result& r : res) {
        double bpt = 0;
        r.needle[len].first += retrieve(engine, r.cfg, nd, key2, f.retrieval_gen, bpt);
        r.needle[len].second += 1;
      }
      bar.update(++done);
    }
  }
  bar.finish();
  const double t1 = now_seconds();

  const std::string table = markdown_table(res, ctxs, lens);
  std::printf("%s", table.c_str());
  std::fprintf(stderr, "eval: %.0f s; %s, %d threads; perplexity batch %d\n", t1 - t0, eo.model_path.c_str(),
               engine.pool().size(), batch);
  if (!f.markdown.empty()) {
    std::ofstream md(f.markdown);
    md << table;
    if (!md) fail(f.markdown + ": cannot write");
  }

  std::vector<PlotPoint> points;
  nlohmann::json j = nlohmann::json::array();
  for (const Result& r : res) {
    nlohmann::json o;
    o["config"] = r.label;
    if (!r.cfg.codebooks.empty()) o["codebooks"] = r.cfg.codebooks;
    o["ppl"] = r.ppl.at(ctxs.front());
    nlohmann::json by_ctx, kb, rkb, pk, nd, kld_ctx, top_ctx;
    for (auto& [c, v] : r.ppl) by_ctx[std::to_string(c)] = v;
    for (auto& [c, v] : r.kld) kld_ctx[std::to_string(c)] = v;
    for (auto& [c, v] : r.top1) top_ctx[std::to_string(c)] = v;
    for (auto& [c, v] : r.bytes_per_token) kb[std::to_string(c)] = v;
    for (auto& [l, v] : r.retrieval_bytes_per_token) rkb[std::to_string(l)] = v;
    for (auto& [l, v] : r.passkey) pk[std::to_string(l)] = double(v.first) / v.second;
    for (auto& [l, v] : r.needle) nd[std::to_string(l)] = double(v.first) / v.second;
    o["ppl_by_ctx"] = by_ctx;
    o["kld"] = r.kl_count ? r.kld_sum / r.kl_count : 0.0;
    o["top1_agreement"] = r.kl_count ? r.top1_hits / r.kl_count : 1.0;
    o["kld_by_ctx"] = kld_ctx;
    o["top1_by_ctx"] = top_ctx;
    o["kv_bytes_per_token"] = r.bytes_per_token.at(ctxs.back());
    o["kv_bytes_per_token_by_ctx"] = kb;                  // allocated, end of each perplexity chunk
    o["kv_bytes_per_token_retrieval"] = rkb;              // allocated, after the last retrieval prompt of each length
    o["passkey_accuracy"] = pk;
    o["needle_accuracy"] = nd;
    j.push_back(o);
    points.push_back({r.label, r.bytes_per_token.at(ctxs.back()),
                      100.0 * (r.ppl.at(ctxs.back()) / res[0].ppl.at(ctxs.back()) - 1.0)});
  }
  if (!f.json.empty()) {
    std::ofstream js(f.json);
    js << j.dump(2) << "\n";
    if (!js) fail(f.json + ": cannot write");
  }
  if (!f.png.empty())
    write_quality_plot(f.png, points, strfmt("KV bytes per token at %d", ctxs.back()),
                       strfmt("PPL change at %d (%%)", ctxs.back()));
}

}  // namespace

void add_eval(CLI::App& app) {
  auto f = std::make_shared<EvalFlags>();
  CLI::App* c = app.add_subcommand("eval", "compare KV cache configurations with the f16 cache: quality and bytes");
  f->eng.add(c, 4096, /*with_kv=*/false);
  c->add_option("-f,--file", f->file, "real text for perplexity, KL divergence and the needle's haystack")->required();
  c->add_option("--kv-codec", f->codecs, std::string("comma-separated list; ") + kKvCodecHelp)->capture_default_str();
  c->add_option("--kv-evict", f->evicts, std::string("comma-separated list; ") + kKvEvictHelp)->capture_default_str();
  c->add_option("--kv-budget", f->budgets, std::string("comma-separated list; ") + kKvBudgetHelp)->capture_default_str();
  c->add_option("--kv-think", f->thinks, std::string("comma-separated list; ") + kKvThinkHelp)->capture_default_str();
  c->add_option("--kv-topk", f->topks, std::string("comma-separated list; ") + kKvTopkHelp)->capture_default_str();
  c->add_option("--kv-codebooks", f->codebooks,
                "CQ/PQ codebook files written by `leanlm calibrate` (comma-separated: each CQ/PQ row runs with each)");
  c->add_option("--ppl-ctx", f->ppl_ctx, "contexts for perplexity and KL")->capture_default_str();
  c->add_option("--ppl-tokens", f->ppl_tokens, "tokens scored per context (whole chunks, at least one)")
      ->check(CLI::Range(16, 1 << 24))->capture_default_str();
  c->add_option("--lengths", f->lengths, "passkey and needle prompt lengths, or none (e.g. 1024,4096,8192,16384,32768)")
      ->capture_default_str();
  c->add_option("--depths", f->depths, "needle depths between 10% and 90%")->check(CLI::Range(1, 20))->capture_default_str();
  c->add_option("--json", f->json, "write the results as a JSON list, one object per configuration");
  c->add_option("--png", f->png, "write a plot of PPL change against KV bytes per token");
  c->add_option("--markdown", f->markdown, "also write the table to this file");
  c->add_option("--seed", f->seed, "seed of the pass keys")->capture_default_str();
  c->callback([f] { eval(*f); });
}

}  // namespace leanlm::cli
