#include "gguf/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstring>

#include "util/error.h"

namespace leanlm {

const char* gguf_type_name(GgufType t) {
  static const char* names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
                                "string", "array", "u64", "i64", "f64"};
  return uint32_t(t) < 13 ? names[uint32_t(t)] : "?";
}

size_t GgufValue::array_size() const {
  if (!is_array()) return 0;
  if (elem_type == GgufType::STRING) return strs.size();
  if (elem_type == GgufType::ARRAY) return arr.size();
  return nums.size();
}

std::string GgufValue::to_string(size_t max_items) const {
  switch (type) {
    case GgufType::STRING: return s;
    case GgufType::F32:
    case GgufType::F64: return strfmt("%g", f);
    case GgufType::BOOL: return i ? "true" : "false";
    case GgufType::ARRAY: {
      std::string out = strfmt("[%s x %zu]", gguf_type_name(elem_type), array_size());
      size_t n = std::min(array_size(), max_items);
      if (n) out += " ";
      for (size_t k = 0; k < n; ++k) {
        if (k) out += ", ";
        if (elem_type == GgufType::STRING) out += "\"" + strs[k] + "\"";
        else if (elem_type == GgufType::ARRAY) out += arr[k].to_string(2);
        else out += strfmt("%g", nums[k]);
      }
      if (array_size() > n) out += ", ...";
      return out;
    }
    default: return strfmt("%lld", (long long)i);
  }
}

std::string GgufTensor::shape_string() const {
  std::string s = "[";
  for (int d = 0; d < n_dims; ++d) s += (d ? ", " : "") + std::to_string(ne[d]);
  return s + "]";
}

namespace {

constexpr int kMaxArrayDepth = 4;

// Bounds-checked little-endian reader; every failure names the section being read.
class Cursor {
 public:
  Cursor(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  size_t pos() const { return pos_; }
  size_t remaining() const { return n_ - pos_; }
  void need(size_t k, const char* what) {
    if (k > remaining()) fail(strfmt("truncated file: %s at byte %zu (needs %zu bytes, %zu left)", what, pos_, k,
                                     remaining()));
  }
  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string read_string(const char* what) {
    uint64_t len = read<uint64_t>(what);
    need(len, what);
    std::string s(reinterpret_cast<const char*>(p_ + pos_), len);
    pos_ += len;
    return s;
  }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
};

size_t scalar_size(GgufType t) {
  switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::BOOL: return 1;
    case GgufType::U16: case GgufType::I16: return 2;
    case GgufType::U32: case GgufType::I32: case GgufType::F32: return 4;
    case GgufType::U64: case GgufType::I64: case GgufType::F64: return 8;
    case GgufType::STRING: return 8;  // at least the length
    case GgufType::ARRAY: return 12;  // at least type + count
  }
  return 0;
}

void read_scalar(Cursor& c, GgufType t, GgufValue& v, const char* what) {
  switch (t) {
    case GgufType::U8: v.i = c.read<uint8_t>(what); break;
    case GgufType::I8: v.i = c.read<int8_t>(what); break;
    case GgufType::U16: v.i = c.read<uint16_t>(what); break;
    case GgufType::I16: v.i = c.read<int16_t>(what); break;
    case GgufType::U32: v.i = c.read<uint32_t>(what); break;
    case GgufType::I32: v.i = c.read<int32_t>(what); break;
    case GgufType::U64: v.i = int64_t(c.read<uint64_t>(what)); break;
    case GgufType::I64: v.i = c.read<int64_t>(what); break;
    case GgufType::F32: v.f = c.read<float>(what); break;
    case GgufType::F64: v.f = c.read<double>(what); break;
    case GgufType::BOOL: {
      uint8_t b = c.read<uint8_t>(what);
      if (b > 1) fail(strfmt("invalid bool value %u in %s", b, what));
      v.i = b;
      break;
    }
    case GgufType::STRING: v.s = c.read_string(what); break;
    default: fail(strfmt("invalid value type %u in %s", uint32_t(t), what));
  }
  if (t == GgufType::F32 || t == GgufType::F64) {
    // Integer view of a float value: saturated, NaN as 0 (a plain cast is undefined out of range).
    if (std::isnan(v.f)) v.i = 0;
    else if (v.f >= 9.2e18) v.i = INT64_MAX;
    else if (v.f <= -9.2e18) v.i = INT64_MIN;
    else v.i = int64_t(v.f);
  } else {
    v.f = double(v.i);
  }
}

void read_value(Cursor& c, GgufType t, GgufValue& v, const char* what, int depth) {
  v.type = t;
  if (t != GgufType::ARRAY) {
    read_scalar(c, t, v, what);
    return;
  }
  if (depth >= kMaxArrayDepth) fail(strfmt("arrays nested too deeply in %s", what));
  uint32_t et = c.read<uint32_t>(what);
  if (et > uint32_t(GgufType::F64)) fail(strfmt("invalid array element type %u in %s", et, what));
  v.elem_type = GgufType(et);
  uint64_t count = c.read<uint64_t>(what);
  // Every element takes at least scalar_size bytes, so a count beyond that is corrupt.
  if (count > c.remaining() / scalar_size(v.elem_type))
    fail(strfmt("truncated or corrupt file: array count %llu exceeds its size in %s", (unsigned long long)count, what));
  if (v.elem_type == GgufType::STRING) {
    v.strs.reserve(count);
    for (uint64_t k = 0; k < count; ++k) v.strs.push_back(c.read_string(what));
  } else if (v.elem_type == GgufType::ARRAY) {
    v.arr.resize(count);
    for (uint64_t k = 0; k < count; ++k) read_value(c, GgufType::ARRAY, v.arr[k], what, depth + 1);
  } else {
    v.nums.resize(count);
    GgufValue tmp;
    for (uint64_t k = 0; k < count; ++k) {
      read_scalar(c, v.elem_type, tmp, what);
      v.nums[k] = (v.elem_type == GgufType::F32 || v.elem_type == GgufType::F64) ? tmp.f : double(tmp.i);
    }
  }
}

// Sets t.nbytes and t.n_elems from the shape (dimensions already checked to be 1..2^40), or fails.
// The byte count is compared with the file size after every multiplication, and every product is
// overflow-checked: a product allowed to wrap can come out small, even 0, and pass as a tensor that
// fits (2^40 x 2^40 x 2^40 x 2^6 F32 is 2^130 bytes).
void size_tensor(GgufTensor& t, const TypeTraits& tr, size_t file_size, const std::string& what) {
  uint64_t bytes = uint64_t(tr.row_header) + uint64_t(t.ne[0] / tr.block_elems) * uint64_t(tr.block_bytes);  // < 2^40 * 2^9
  int64_t elems = t.ne[0];
  bool too_big = bytes > file_size;
  for (int d = 1; d < t.n_dims && !too_big; ++d)
    too_big = __builtin_mul_overflow(bytes, uint64_t(t.ne[d]), &bytes) || bytes > file_size ||
              __builtin_mul_overflow(elems, t.ne[d], &elems);
  if (too_big) fail(strfmt("%s of shape %s is larger than the file", what.c_str(), t.shape_string().c_str()));
  t.nbytes = bytes;
  t.n_elems = elems;
}

}  // namespace

std::unique_ptr<GgufFile> GgufFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail(path + ": cannot open: " + std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path + ": not a regular file");
  }
  const size_t size = size_t(st.st_size);
  if (size == 0) {
    ::close(fd);
    fail(path + ": empty file, not a GGUF model");
  }
  void* map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) fail(path + ": mmap failed: " + std::strerror(errno));
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = path;
  f->map_ = map;
  f->base_ = static_cast<const uint8_t*>(map);
  f->size_ = size;
  try {
    f->parse_all();
  } catch (const Error& e) {
    fail(path + ": " + e.what());
  }
  return f;
}

std::unique_ptr<GgufFile> GgufFile::parse(const uint8_t* data, size_t size, const std::string& name) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = name;
  f->base_ = data;
  f->size_ = size;
  try {
    f->parse_all();
  } catch (const Error& e) {
    fail(name + ": " + e.what());
  }
  return f;
}

GgufFile::~GgufFile() {
  if (map_) munmap(map_, size_);
}

void GgufFile::parse_all() {
  Cursor c(base_, size_);
  if (size_ < 4 || std::memcmp(base_, "GGUF", 4) != 0) fail("not a GGUF file (bad magic)");
  c.read<uint32_t>("magic");
  version_ = c.read<uint32_t>("header");
  if (version_ != 2 && version_ != 3) fail(strfmt("unsupported GGUF version %u (expected 2 or 3)", version_));
  const uint64_t n_tensors = c.read<uint64_t>("header");
  const uint64_t n_kv = c.read<uint64_t>("header");
  // A key/value takes at least 8+4+1 bytes and a tensor entry at least 8+4+8+4+8.
  if (n_kv > c.remaining() / 13) fail(strfmt("truncated or corrupt file: metadata count %llu exceeds its size", (unsigned long long)n_kv));
  if (n_tensors > c.remaining() / 32)
    fail(strfmt("truncated or corrupt file: tensor count %llu exceeds its size", (unsigned long long)n_tensors));

  for (uint64_t k = 0; k < n_kv; ++k) {
    const std::string what = strfmt("metadata entry %llu", (unsigned long long)k);
    std::string key = c.read_string(what.c_str());
    const std::string what_key = "metadata '" + key + "'";
    uint32_t t = c.read<uint32_t>(what_key.c_str());
    if (t > uint32_t(GgufType::F64)) fail(strfmt("invalid value type %u for %s", t, what_key.c_str()));
    GgufValue v;
    read_value(c, GgufType(t), v, what_key.c_str(), 0);
    if (kv_.count(key)) fail("duplicate " + what_key);
    kv_order_.push_back(key);
    kv_.emplace(std::move(key), std::move(v));
  }

  if (const GgufValue* a = find("general.alignment")) {
    if (a->is_array() || a->type == GgufType::STRING) fail("general.alignment has the wrong type");
    if (a->i <= 0 || a->i > (1 << 20) || (a->i & (a->i - 1)))
      fail(strfmt("invalid general.alignment %lld", (long long)a->i));
    alignment_ = size_t(a->i);
  }

  tensors_.resize(n_tensors);
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensor& t = tensors_[k];
    const std::string what = strfmt("tensor info %llu", (unsigned long long)k);
    t.name = c.read_string(what.c_str());
    const std::string what_t = "tensor '" + t.name + "'";
    uint32_t nd = c.read<uint32_t>(what_t.c_str());
    if (nd == 0 || nd > 4) fail(strfmt("%s has %u dimensions (1 to 4 allowed)", what_t.c_str(), nd));
    t.n_dims = int(nd);
    for (uint32_t d = 0; d < nd; ++d) {
      uint64_t v = c.read<uint64_t>(what_t.c_str());
      if (v == 0 || v > (uint64_t(1) << 40)) fail(strfmt("%s has invalid dimension %llu", what_t.c_str(),
                                                         (unsigned long long)v));
      t.ne[d] = int64_t(v);
    }
    t.type_id = c.read<uint32_t>(what_t.c_str());
    t.offset = c.read<uint64_t>(what_t.c_str());
    const TypeTraits* tr = type_traits(t.type_id);
    if (!tr) fail(strfmt("%s has unknown tensor type %u", what_t.c_str(), t.type_id));
    if (t.ne[0] % tr->block_elems != 0)
      fail(strfmt("%s: row length %lld is not a multiple of the %s block size %d", what_t.c_str(),
                  (long long)t.ne[0], tr->name, tr->block_elems));
    size_tensor(t, *tr, size_, what_t);
    if (t.offset % alignment_ != 0) fail(what_t + " data offset is not aligned");
    if (tensor_index_.count(t.name)) fail("duplicate " + what_t);
    tensor_index_[t.name] = k;
  }

  const size_t data_start = (c.pos() + alignment_ - 1) / alignment_ * alignment_;
  for (GgufTensor& t : tensors_) {
    if (data_start > size_ || t.offset > size_ - data_start || t.nbytes > size_ - data_start - t.offset)
      fail(strfmt("truncated file: tensor '%s' data (%llu bytes at offset %llu) lies past the end of the file",
                  t.name.c_str(), (unsigned long long)t.nbytes, (unsigned long long)(data_start + t.offset)));
    t.data = base_ + data_start + t.offset;
  }
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = kv_.find(key);
  return it == kv_.end() ? nullptr : &it->second;
}

namespace {
bool is_int_type(GgufType t) {
  return t == GgufType::U8 || t == GgufType::I8 || t == GgufType::U16 || t == GgufType::I16 ||
         t == GgufType::U32 || t == GgufType::I32 || t == GgufType::U64 || t == GgufType::I64;
}
}  // namespace

int64_t GgufFile::get_int(const std::string& key, int64_t def) const {
  const GgufValue* v = find(key);
  if (!v) return def;
  if (!is_int_type(v->type)) fail(path_ + ": metadata '" + key + "' is not an integer");
  return v->i;
}

double GgufFile::get_float(const std::string& key, double def) const {
  const GgufValue* v = find(key);
  if (!v) return def;
  if (v->type != GgufType::F32 && v->type != GgufType::F64 && !is_int_type(v->type))
    fail(path_ + ": metadata '" + key + "' is not a number");
  return v->f;
}

bool GgufFile::get_bool(const std::string& key, bool def) const {
  const GgufValue* v = find(key);
  if (!v) return def;
  if (v->type != GgufType::BOOL && !is_int_type(v->type)) fail(path_ + ": metadata '" + key + "' is not a bool");
  return v->i != 0;
}

std::string GgufFile::get_string(const std::string& key, const std::string& def) const {
  const GgufValue* v = find(key);
  if (!v) return def;
  if (v->type != GgufType::STRING) fail(path_ + ": metadata '" + key + "' is not a string");
  return v->s;
}

int64_t GgufFile::require_int(const std::string& key) const {
  if (!has(key)) fail(path_ + ": missing metadata '" + key + "'");
  return get_int(key, 0);
}

std::string GgufFile::require_string(const std::string& key) const {
  if (!has(key)) fail(path_ + ": missing metadata '" + key + "'");
  return get_string(key, "");
}

const GgufTensor* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace leanlm
