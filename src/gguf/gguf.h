// GGUF model files: a validating parser over a read-only memory map.
//
// Every length, count, offset and type in the file is checked against the file's size before use,
// so a corrupt or truncated file produces an Error ("<path>: <what is wrong>"), never a crash.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "quant/quant_types.h"

namespace leanlm {

enum class GgufType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8, ARRAY = 9,
  U64 = 10, I64 = 11, F64 = 12,
};
const char* gguf_type_name(GgufType t);

struct GgufValue {
  GgufType type = GgufType::U8;
  // Scalars: integers in i (u64 values above INT64_MAX wrap), floats in f, bools in i.
  int64_t i = 0;
  double f = 0;
  std::string s;
  // Arrays: element type plus the elements (numbers in nums, strings in strs, nested in arr).
  GgufType elem_type = GgufType::U8;
  std::vector<double> nums;
  std::vector<std::string> strs;
  std::vector<GgufValue> arr;

  bool is_array() const { return type == GgufType::ARRAY; }
  size_t array_size() const;
  std::string to_string(size_t max_items = 8) const;
};

struct GgufTensor {
  std::string name;
  uint32_t type_id = 0;
  int n_dims = 0;
  int64_t ne[4] = {1, 1, 1, 1};  // ne[0] is the contiguous row length
  uint64_t offset = 0;            // relative to the data section
  const uint8_t* data = nullptr;
  uint64_t nbytes = 0;
  // ne[0] * ne[1] * ne[2] * ne[3], computed once by the parser with every product checked (a
  // product of four dimensions read from the file can exceed any integer type).
  int64_t n_elems = 1;

  GgmlType type() const { return GgmlType(type_id); }
  int64_t n_elements() const { return n_elems; }
  std::string shape_string() const;
};

class GgufFile {
 public:
  // Maps and parses a file. Throws Error naming the path on any problem.
  static std::unique_ptr<GgufFile> open(const std::string& path);
  // Parses a buffer the caller keeps alive (tests, fuzzing).
  static std::unique_ptr<GgufFile> parse(const uint8_t* data, size_t size, const std::string& name);
  ~GgufFile();

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  size_t file_size() const { return size_; }
  size_t alignment() const { return alignment_; }

  const std::map<std::string, GgufValue>& metadata() const { return kv_; }
  const std::vector<std::string>& metadata_order() const { return kv_order_; }
  const GgufValue* find(const std::string& key) const;
  bool has(const std::string& key) const { return find(key) != nullptr; }

  // Typed accessors: throw Error if the key is present with the wrong type; return def if absent.
  int64_t get_int(const std::string& key, int64_t def) const;
  double get_float(const std::string& key, double def) const;
  bool get_bool(const std::string& key, bool def) const;
  std::string get_string(const std::string& key, const std::string& def) const;
  // Throw Error if absent.
  int64_t require_int(const std::string& key) const;
  std::string require_string(const std::string& key) const;

  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* find_tensor(const std::string& name) const;

 private:
  GgufFile() = default;
  void parse_all();

  std::string path_;
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  void* map_ = nullptr;  // non-null when we own an mmap
  uint32_t version_ = 0;
  size_t alignment_ = 32;
  std::map<std::string, GgufValue> kv_;
  std::vector<std::string> kv_order_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

}  // namespace leanlm
