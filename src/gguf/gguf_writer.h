// Writing GGUF files (the format gguf.h reads): metadata and tensor descriptions in the order
// given, tensor data aligned, the whole file written to PATH.part and renamed to PATH only once
// complete, so an error or an interrupted write never leaves a half-written model at PATH.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "gguf/gguf.h"
#include "quant/quant_types.h"

namespace leanlm {

class GgufWriter {
 public:
  explicit GgufWriter(size_t alignment = 32);

  // Sets key to v: an earlier key of that name keeps its place, a new one goes last. Values as
  // GgufFile reads them (numbers of arrays are doubles there, so 64-bit integers in arrays are
  // exact up to 2^53).
  void set(const std::string& key, const GgufValue& v);
  void set_u32(const std::string& key, uint32_t v);
  void set_string(const std::string& key, const std::string& v);
  void remove(const std::string& key);
  // A tensor of the given type and shape (ne[0] the contiguous row length, a multiple of the
  // type's block size); its bytes come from write()'s callback.
  void add_tensor(const std::string& name, GgmlType type, int n_dims, const int64_t* ne);
  size_t n_tensors() const { return tensors_.size(); }

  // Writes the file. tensor_bytes(i, out) fills out with tensor i's bytes (exactly its size, which
  // is checked), called once per tensor in order, so a model is written one tensor at a time.
  // Throws Error naming path on any failure, after removing the part file.
  void write(const std::string& path, const std::function<void(size_t, std::vector<uint8_t>&)>& tensor_bytes) const;

  // The size in bytes of a tensor of this type and shape.
  static uint64_t tensor_bytes(GgmlType type, int n_dims, const int64_t* ne);

 private:
  struct Tensor {
    std::string name;
    GgmlType type;
    int n_dims;
    int64_t ne[4];
    uint64_t nbytes;
  };
  size_t alignment_;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<Tensor> tensors_;
};

}  // namespace leanlm
