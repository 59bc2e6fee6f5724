#include "gguf/gguf_writer.h"

#include <cstdio>
#include <cstring>
#include <filesystem>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/error.h"

namespace leanlm {
namespace {

// Little-endian serialisation into a byte buffer (the header and metadata, written first).
struct Out {
  std::vector<uint8_t> b;
  template <class T>
  void put(T v) {
    const size_t at = b.size();
    b.resize(at + sizeof(T));
    std::memcpy(b.data() + at, &v, sizeof(T));
  }
  void str(const std::string& s) {
    put<uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
  }
};

// One number of type t, from the integer or float view GgufValue keeps.
void put_number(Out& o, GgufType t, int64_t i, double f) {
  switch (t) {
    case GgufType::U8: o.put<uint8_t>(uint8_t(i)); break;
    case GgufType::I8: o.put<int8_t>(int8_t(i)); break;
    case GgufType::U16: o.put<uint16_t>(uint16_t(i)); break;
    case GgufType::I16: o.put<int16_t>(int16_t(i)); break;
    case GgufType::U32: o.put<uint32_t>(uint32_t(i)); break;
    case GgufType::I32: o.put<int32_t>(int32_t(i)); break;
    case GgufType::U64: o.put<uint64_t>(uint64_t(i)); break;
    case GgufType::I64: o.put<int64_t>(i); break;
    case GgufType::F32: o.put<float>(float(f)); break;
    case GgufType::F64: o.put<double>(f); break;
    case GgufType::BOOL: o.put<uint8_t>(i ? 1 : 0); break;
    default: fail(strfmt("gguf writer: %s is not a number type", gguf_type_name(t)));
  }
}

void put_value(Out& o, const GgufValue& v) {
  if (v.type == GgufType::STRING) return o.str(v.s);
  if (v.type != GgufType::ARRAY) return put_number(o, v.type, v.i, v.f);
  o.put<uint32_t>(uint32_t(v.elem_type));
  o.put<uint64_t>(v.array_size());
  if (v.elem_type == GgufType::STRING) {
    for (const std::string& s : v.strs) o.str(s);
  } else if (v.elem_type == GgufType::ARRAY) {
    for (const GgufValue& e : v.arr) put_value(o, e);
  } else {
    const bool is_float = v.elem_type == GgufType::F32 || v.elem_type == GgufType::F64;
    for (double x : v.nums) put_number(o, v.elem_type, is_float ? 0 : int64_t(x), x);
  }
}

}  // namespace

GgufWriter::GgufWriter(size_t alignment) : alignment_(alignment) {
  if (alignment == 0 || (alignment & (alignment - 1))) fail(strfmt("gguf writer: alignment %zu is not a power of two", alignment));
  if (alignment != 32) set_u32("general.alignment", uint32_t(alignment));
}

void GgufWriter::set(const std::string& key, const GgufValue& v) {
  for (auto& [k, old] : kv_)
    if (k == key) {
      old = v;
      return;
    }
  kv_.emplace_back(key, v);
}

void GgufWriter::set_u32(const std::string& key, uint32_t v) {
  GgufValue x;
  x.type = GgufType::U32;
  x.i = v, x.f = v;
  set(key, x);
}

void GgufWriter::set_string(const std::string& key, const std::string& v) {
  GgufValue x;
  x.type = GgufType::STRING;
  x.s = v;
  set(key, x);
}

void GgufWriter::remove(const std::string& key) {
  std::erase_if(kv_, [&](const auto& e) { return e.first == key; });
}

uint64_t GgufWriter::tensor_bytes(GgmlType type, int n_dims, const int64_t* ne) {
  if (!type_traits(uint32_t(type))) fail(strfmt("gguf writer: unknown tensor type %u", uint32_t(type)));
  if (ne[0] % traits(type).block_elems)
    fail(strfmt("gguf writer: rows of %lld elements are not whole %s blocks", (long long)ne[0], type_name(uint32_t(type)).c_str()));
  uint64_t rows = 1;
  for (int d = 1; d < n_dims; ++d) rows *= uint64_t(ne[d]);
  return uint64_t(row_bytes(type, ne[0])) * rows;
}

void GgufWriter::add_tensor(const std::string& name, GgmlType type, int n_dims, const int64_t* ne) {
  if (n_dims < 1 || n_dims > 4) fail(strfmt("gguf writer: %s has %d dimensions", name.c_str(), n_dims));
  Tensor t{name, type, n_dims, {1, 1, 1, 1}, 0};
  for (int d = 0; d < n_dims; ++d) {
    if (ne[d] < 1) fail(strfmt("gguf writer: %s has dimension %d of %lld", name.c_str(), d, (long long)ne[d]));
    t.ne[d] = ne[d];
  }
  t.nbytes = tensor_bytes(type, n_dims, t.ne);
  for (const Tensor& o : tensors_)
    if (o.name == name) fail("gguf writer: tensor " + name + " added twice");
  tensors_.push_back(t);
}

void GgufWriter::write(const std::string& path,
                       const std::function<void(size_t, std::vector<uint8_t>&)>& tensor_bytes) const {
  const auto align = [&](uint64_t x) { return (x + alignment_ - 1) / alignment_ * alignment_; };
  Out h;
  h.b = {'G', 'G', 'U', 'F'};
  h.put<uint32_t>(3);
  h.put<uint64_t>(tensors_.size());
  h.put<uint64_t>(kv_.size());
  for (const auto& [k, v] : kv_) {
    h.str(k);
    h.put<uint32_t>(uint32_t(v.type));
    put_value(h, v);
  }
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    h.str(t.name);
    h.put<uint32_t>(uint32_t(t.n_dims));
    for (int d = 0; d < t.n_dims; ++d) h.put<uint64_t>(uint64_t(t.ne[d]));
    h.put<uint32_t>(uint32_t(t.type));
    h.put<uint64_t>(offset);
    offset = align(offset + t.nbytes);
  }
  h.b.resize(align(h.b.size()), 0);

  // A part file of its own (PATH.part-XXXXXX, created exclusively): never an existing file, not even
  // the input being rewritten or another writer's part file.
  std::string part = path + ".part-XXXXXX";
  const int fd = mkstemp(part.data());
  if (fd < 0) fail(path + ": cannot write (" + std::strerror(errno) + ")");
  std::FILE* f = fdopen(fd, "wb");
  if (!f) {
    ::close(fd);
    std::error_code ec;
    std::filesystem::remove(part, ec);
    fail(path + ": cannot write (" + std::strerror(errno) + ")");
  }
  const auto give_up = [&](const std::string& why) {
    std::fclose(f);
    std::error_code ec;
    std::filesystem::remove(part, ec);
    fail(path + ": " + why);
  };
  const auto put = [&](const uint8_t* p, size_t n) {
    if (n && std::fwrite(p, 1, n, f) != n) give_up(std::string("write failed (") + std::strerror(errno) + ")");
  };
  put(h.b.data(), h.b.size());
  std::vector<uint8_t> bytes;
  const std::vector<uint8_t> pad(alignment_, 0);
  for (size_t i = 0; i < tensors_.size(); ++i) {
    bytes.clear();
    try {
      tensor_bytes(i, bytes);
    } catch (const std::exception& e) {
      give_up(e.what());
    }
    if (bytes.size() != tensors_[i].nbytes)
      give_up(strfmt("tensor %s: %zu bytes given for %llu", tensors_[i].name.c_str(), bytes.size(),
                     (unsigned long long)tensors_[i].nbytes));
    put(bytes.data(), bytes.size());
    if (i + 1 < tensors_.size()) put(pad.data(), align(bytes.size()) - bytes.size());
  }
  // On disk before the rename, so that a crash never leaves a short file under the final name.
  if (std::fflush(f) != 0 || fsync(fileno(f)) != 0) give_up(std::string("write failed (") + std::strerror(errno) + ")");
  if (std::fclose(f) != 0) {
    std::error_code ec;
    std::filesystem::remove(part, ec);
    fail(path + ": write failed");
  }
  // mkstemp made the file 0600; a model file is as readable as any other file the user writes.
  const mode_t mask = umask(0);
  umask(mask);
  chmod(part.c_str(), 0666 & ~mask);
  std::error_code ec;
  std::filesystem::rename(part, path, ec);
  if (ec) {
    std::filesystem::remove(part, ec);
    fail(path + ": cannot rename the finished file into place: " + ec.message());
  }
}

}  // namespace leanlm
