// libFuzzer target for the GGUF reader: any input either parses into a file whose every metadata
// value and tensor view can be read, or throws leanlm::Error. Anything else (a crash, a sanitizer
// report, another exception type) is a bug. Built and run briefly by tests/fuzz_gguf.sh.
#include <cstddef>
#include <cstdint>

#include "gguf/gguf.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto f = leanlm::GgufFile::parse(data, size, "fuzz-input");
    volatile uint64_t sink = 0;
    for (const auto& key : f->metadata_order()) {
      sink = sink + key.size();
      (void)f->get_string(key, "");  // wrong-type access must throw Error, nothing worse
    }
    for (const auto& t : f->tensors()) {
      sink = sink + uint64_t(t.n_elements()) + t.shape_string().size();
      if (t.nbytes) sink = sink + t.data[0] + t.data[t.nbytes - 1];  // views stay inside the buffer
    }
  } catch (const leanlm::Error&) {
  }
  return 0;
}
