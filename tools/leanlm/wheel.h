// Reading one member of a wheel (a zip archive) as a stream, and SHA-256 of what passes.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace leanlm::cli {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t n);
  std::string hex_digest();  // finishes the hash

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Calls sink(data, n) for the bytes of `member` in the zip file `wheel`, in order; returns their
// count. Throws leanlm::Error (a one-line message) if the archive or member cannot be read.
uint64_t read_wheel_member(const std::string& wheel, const std::string& member,
                           const std::function<void(const uint8_t*, size_t)>& sink);

}  // namespace leanlm::cli
