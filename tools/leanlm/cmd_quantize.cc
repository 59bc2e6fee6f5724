// leanlm quantize: a model file with its weight matrices in another type.
#include <cstdio>
#include <map>

#include "common.h"
#include "engine/calibrate.h"
#include "engine/hessian.h"
#include "engine/quantize_model.h"
#include "quant/leanquant.h"
#include "quant/lq_format.h"
#include "util/error.h"
#include "util/progress.h"
#include "util/sysinfo.h"

namespace leanlm::cli {

void add_quantize(CLI::App& app) {
  struct Flags {
    std::string model, out, type, output_type, calib;
    std::vector<std::string> tensor_types;
    int threads = 0, tokens = 4096, ctx = 512;
    double damp = 0.01, exponent = 2, weight_cap = 10;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* c = app.add_subcommand("quantize", "write a copy of a model with its weight matrices in another type");
  c->add_option("-m,--model", f->model, kModelHelp);
  c->add_option("-o,--output", f->out, "the GGUF file to write (written whole or not at all)")->required();
  c->add_option("--type", f->type,
                "weight type: q8_0, q6_k, q5_k, q5_1, q5_0, q4_k, q4_1, q4_0, q3_k, q2_k, f16, bf16, f32, or the "
                "LeanQuant types lq4, lq3, lq2 (leanlm's own: a learned grid per row; use --calib), or the mixes "
                "lq3_m (attn_v, attn_output, ffn_down in lq4) and lq2_m (attn_v lq4; attn_output, ffn_down lq3) "
                "(matrices whose rows are not whole blocks take q4_0, q5_0, q5_1 or q8_0)")
      ->required();
  c->add_option("--output-type", f->output_type,
                "type of the output matrix (output.weight, or the token embedding when tied to it); default: at "
                "least q6_k (the target type where it is larger)");
  c->add_option("--tensor-type", f->tensor_types,
                "NAME=TYPE, repeatable: matrices whose name contains NAME get TYPE (ahead of a mix's own; "
                "the first that matches wins), as attn_v=lq4");
  c->add_option("-t,--threads", f->threads, "threads (default: one per core)")->check(CLI::Range(0, 1024));
  c->add_option("--calib", f->calib,
                "calibration text for the lq types: the model runs over it and each matrix's grid and rounding "
                "are fitted to its inputs (LeanQuant); without it lq rows get plain k-means");
  c->add_option("--tokens", f->tokens, "calibration tokens (whole chunks of --calib-ctx)")
      ->check(CLI::Range(16, 1 << 22))->capture_default_str();
  c->add_option("--calib-ctx", f->ctx, "calibration chunk length")->check(CLI::Range(16, 1 << 16))->capture_default_str();
  c->add_option("--damp", f->damp, "GPTQ dampening, a fraction of the Hessian's mean diagonal")
      ->check(CLI::Range(1e-6, 10.0))->capture_default_str();
  c->add_option("--weight-cap", f->weight_cap, "LeanQuant: grid sample weights cut to this multiple of their mean (0: none)")
      ->check(CLI::Range(0.0, 1e6))
      ->capture_default_str();
  c->add_option("--exponent", f->exponent, "LeanQuant's p: grid sample weights U_jj^-p")
      ->check(CLI::Range(0.0, 16.0))->capture_default_str();
  c->callback([f] {
    QuantizeOptions o;
    const QuantTarget target = parse_quant_target(f->type);
    o.type = target.type;
    for (const std::string& spec : f->tensor_types) o.tensor_types.push_back(parse_tensor_type(spec));
    o.tensor_types.insert(o.tensor_types.end(), target.tensor_types.begin(), target.tensor_types.end());
    o.threads = f->threads;
    if (!f->output_type.empty()) o.output_type = parse_quant_type(f->output_type), o.output_type_set = true;
    const std::string in = model_path(f->model);
    o.leanquant.damp = f->damp, o.leanquant.exponent = f->exponent, o.leanquant.weight_cap = f->weight_cap;
    HessianSet hessians;
    if (!f->calib.empty()) {
      if (!uses_lq(o)) fail("--calib is for the lq types (lq2, lq3, lq4); " + f->type + " does not use it");
      const std::string text_all = read_text_file(f->calib);
      EngineOptions eo;
      eo.model_path = in, eo.threads = f->threads, eo.ctx = f->ctx, eo.progress = true;
      Engine engine(eo);
      set_blas_threads(engine.pool().size());  // the statistics' BLAS updates on -t threads too
      const std::vector<int> text = calibration_tokens(engine, text_all, f->tokens);
      const double t0 = now_seconds();
      hessians = collect_hessians(engine, text, f->ctx, f->tokens, true);
      std::fprintf(stderr, "quantize: statistics of %zu matrix inputs from %lld tokens of %s in %.0f s\n",
                   hessians.by_input.size(), (long long)hessians.tokens, f->calib.c_str(), now_seconds() - t0);
      o.hessians = &hessians;
    }
    const double t_start = now_seconds();
    QuantizeReport rep;
    {
      ProgressBar bar("quantizing", 1000);
      rep = quantize_model(in, f->out, o, [&](uint64_t done, uint64_t total) {
        bar.update(total ? int64_t(done * 1000 / total) : 1000);
      });
    }
    std::map<std::string, int> counts;  // "Q5_0 -> Q4_K": tensors
    for (const auto& t : rep.tensors)
      if (t.from != t.to) ++counts[type_name(uint32_t(t.from)) + " -> " + type_name(uint32_t(t.to))];
    for (const auto& [what, n] : counts) std::fprintf(stderr, "quantize: %3d tensors %s\n", n, what.c_str());
    std::fflush(stderr);
    std::fprintf(stderr, "quantize: %.0f s\n", now_seconds() - t_start);
    std::printf("%s: %s -> %s (%s -> %s)\n", f->out.c_str(), in.c_str(), type_name(uint32_t(o.type)).c_str(),
                human_bytes(double(rep.file_bytes_in)).c_str(), human_bytes(double(rep.file_bytes_out)).c_str());
  });
}

}  // namespace leanlm::cli
