// libFuzzer target for the GGUF reader and the model loader's use of it. Any input either throws
// leanlm::Error from the parser, or parses into a file whose every metadata value reads through the
// accessor for its own type and whose every tensor view lies inside the input, sized as the loader
// assumes; the loader's metadata consumers (architecture, tokenizer) then accept it or throw Error.
// Anything else (a crash, a sanitizer report, another exception, a failed check) is a bug.
// Built and run briefly by tests/fuzz_gguf.sh. With LEANLM_FUZZ_VERBOSE set it says how far each
// input got, so the script can check that its seeds reach the tensor checks.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "gguf/gguf.h"
#include "model/model.h"
#include "quant/dequant.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace {

using namespace leanlm;

volatile uint64_t g_sink;  // keeps the reads below from being optimized away

// A failed check must stop the fuzzer with a report, like a sanitizer error.
void check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "fuzz_gguf: check failed: %s\n", what);
  std::abort();
}

template <typename F>
void expect_error(F&& f, const char* what) {
  try {
    f();
  } catch (const Error&) {
    return;
  }
  check(false, what);
}

void read_array(const GgufValue& v) {
  g_sink = g_sink + v.array_size() + v.to_string().size();
  for (const std::string& s : v.strs) g_sink = g_sink + s.size();
  for (double x : v.nums) g_sink = g_sink + (x != 0);
  for (const GgufValue& a : v.arr) read_array(a);
}

// Reads a value through the accessor for its type: for a parsed file none of them may throw, and
// reading a non-string as a string must throw Error.
void read_value(const GgufFile& f, const std::string& key, const GgufValue& v) {
  switch (v.type) {
    case GgufType::STRING: g_sink = g_sink + f.get_string(key, "").size(); return;
    case GgufType::ARRAY: read_array(v); break;
    case GgufType::BOOL: g_sink = g_sink + f.get_bool(key, false); break;
    case GgufType::F32:
    case GgufType::F64: g_sink = g_sink + (f.get_float(key, 0) != 0); break;
    default: g_sink = g_sink + uint64_t(f.require_int(key)) + (f.get_float(key, 0) != 0); break;
  }
  expect_error([&] { f.get_string(key, ""); }, "a non-string value read as a string");
}

// What the model loader relies on: the view lies inside the input and holds whole rows of
// row_bytes(type, ne[0]), n_elements / ne[0] of them; the first and last rows dequantize.
void read_tensor(const GgufTensor& t, const uint8_t* data, size_t size) {
  g_sink = g_sink + t.shape_string().size();
  check(t.data >= data && t.nbytes > 0 && t.nbytes <= size_t(data + size - t.data), "view inside the input");
  check(t.n_elements() > 0 && t.n_elements() % t.ne[0] == 0, "element count matches the shape");
  const int64_t rows = t.n_elements() / t.ne[0];
  const size_t rb = row_bytes(t.type(), t.ne[0]);
  check(rb * uint64_t(rows) == t.nbytes, "nbytes is rows * row_bytes");
  if (!type_traits(t.type_id)->supported) return;
  // ne[0] is bounded by the input size: supported types hold at most ~3 values per byte.
  std::vector<float> row(size_t(t.ne[0]));
  dequantize_row(t.type(), t.data, row.data(), t.ne[0]);
  dequantize_row(t.type(), t.data + (rows - 1) * rb, row.data(), t.ne[0]);
  g_sink = g_sink + (row[0] != 0);
}

// Runs one of the model loader's metadata consumers: it may reject the file, with an Error only.
template <typename F>
void run_loader_step(const char* name, F&& step, bool verbose) {
  try {
    step();
    if (verbose) std::fprintf(stderr, "fuzz_gguf: %s: accepted\n", name);
  } catch (const Error& e) {
    if (verbose) std::fprintf(stderr, "fuzz_gguf: %s: %s\n", name, e.what());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool verbose = std::getenv("LEANLM_FUZZ_VERBOSE") != nullptr;
  std::unique_ptr<GgufFile> f;
  try {
    f = GgufFile::parse(data, size, "fuzz-input");
  } catch (const Error& e) {
    if (verbose) std::fprintf(stderr, "fuzz_gguf: rejected: %s\n", e.what());
    return 0;
  }
  // The file is valid: from here on only the loader steps may throw, and only Error (anything
  // escaping is reported as a crash).
  for (const auto& key : f->metadata_order()) read_value(*f, key, *f->find(key));
  size_t n_read = 0;
  for (const auto& t : f->tensors()) {
    read_tensor(t, data, size);
    ++n_read;
  }
  if (verbose)
    std::fprintf(stderr, "fuzz_gguf: parsed: %zu metadata values, %zu tensors read\n", f->metadata_order().size(),
                 n_read);
  run_loader_step("architecture", [&] {
    ModelConfig c;
    configure_architecture(*f, c);
    g_sink = g_sink + c.n_layer;
  }, verbose);
  run_loader_step("tokenizer", [&] { g_sink = g_sink + Tokenizer::from_gguf(*f)->n_vocab(); }, verbose);
  return 0;
}
