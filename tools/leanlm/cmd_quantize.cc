// leanlm quantize: a model file with its weight matrices in another type.
#include <cstdio>
#include <map>

#include "common.h"
#include "engine/quantize_model.h"
#include "util/error.h"
#include "util/progress.h"

namespace leanlm::cli {

void add_quantize(CLI::App& app) {
  struct Flags {
    std::string model, out, type, output_type;
    int threads = 0;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* c = app.add_subcommand("quantize", "write a copy of a model with its weight matrices in another type");
  c->add_option("-m,--model", f->model, kModelHelp);
  c->add_option("-o,--output", f->out, "the GGUF file to write (written whole or not at all)")->required();
  c->add_option("--type", f->type,
                "weight type: q8_0, q6_k, q5_k, q5_1, q5_0, q4_k, q4_1, q4_0, q3_k, q2_k, f16, bf16, f32 (matrices "
                "whose rows are not whole blocks of a K type take q4_0, q5_0, q5_1 or q8_0)")
      ->required();
  c->add_option("--output-type", f->output_type,
                "type of the output matrix (output.weight, or the token embedding when tied to it); default: at "
                "least q6_k (the target type where it is larger)");
  c->add_option("-t,--threads", f->threads, "threads (default: one per core)")->check(CLI::Range(0, 1024));
  c->callback([f] {
    QuantizeOptions o;
    o.type = parse_quant_type(f->type);
    o.threads = f->threads;
    if (!f->output_type.empty()) o.output_type = parse_quant_type(f->output_type), o.output_type_set = true;
    const std::string in = model_path(f->model);
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
    std::printf("%s: %s -> %s (%s -> %s)\n", f->out.c_str(), in.c_str(), type_name(uint32_t(o.type)).c_str(),
                human_bytes(double(rep.file_bytes_in)).c_str(), human_bytes(double(rep.file_bytes_out)).c_str());
  });
}

}  // namespace leanlm::cli
