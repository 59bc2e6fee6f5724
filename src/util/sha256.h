// SHA-256 (OpenSSL's implementation), for checking downloaded models and reference data.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

namespace leanlm {

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

// The hex digest of one buffer.
std::string sha256_hex(const void* data, size_t n);

}  // namespace leanlm
