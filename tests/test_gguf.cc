// The GGUF reader on well-formed, truncated and corrupted files: every failure is an Error, never
// a crash, and well-formed files round-trip every metadata type.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <unistd.h>
#include <random>

#include "gguf/gguf.h"
#include "gguf/gguf_writer.h"
#include "util/error.h"

namespace leanlm {
namespace {

// A minimal GGUF writer for fixtures.
class Writer {
 public:
  template <typename T>
  void put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    buf.insert(buf.end(), p, p + sizeof(T));
  }
  void str(const std::string& s) {
    put<uint64_t>(s.size());
    buf.insert(buf.end(), s.begin(), s.end());
  }
  void kv(const std::string& key, GgufType t) {
    str(key);
    put<uint32_t>(uint32_t(t));
  }
  void align(size_t a) {
    while (buf.size() % a) buf.push_back(0);
  }
  std::vector<uint8_t> buf;
};

struct Fixture {
  std::vector<uint8_t> bytes;
  std::vector<size_t> boundaries;  // offsets where a section ends
};

Fixture make_fixture() {
  Fixture f;
  Writer w;
  w.buf.insert(w.buf.end(), {'G', 'G', 'U', 'F'});
  w.put<uint32_t>(3);
  w.put<uint64_t>(2);   // tensors
  w.put<uint64_t>(14);  // metadata
  f.boundaries.push_back(w.buf.size());
  w.kv("general.architecture", GgufType::STRING); w.str("llama");
  w.kv("u8", GgufType::U8); w.put<uint8_t>(200);
  w.kv("i8", GgufType::I8); w.put<int8_t>(-5);
  w.kv("u16", GgufType::U16); w.put<uint16_t>(60000);
  w.kv("i16", GgufType::I16); w.put<int16_t>(-30000);
  w.kv("u32", GgufType::U32); w.put<uint32_t>(4000000000u);
  w.kv("i32", GgufType::I32); w.put<int32_t>(-2000000000);
  w.kv("f32", GgufType::F32); w.put<float>(1.5f);
  w.kv("bool", GgufType::BOOL); w.put<uint8_t>(1);
  w.kv("u64", GgufType::U64); w.put<uint64_t>(1ull << 40);
  w.kv("i64", GgufType::I64); w.put<int64_t>(-(1ll << 40));
  w.kv("f64", GgufType::F64); w.put<double>(-2.25);
  w.kv("strings", GgufType::ARRAY); w.put<uint32_t>(uint32_t(GgufType::STRING)); w.put<uint64_t>(2);
  w.str("a"); w.str("bc");
  w.kv("nested", GgufType::ARRAY); w.put<uint32_t>(uint32_t(GgufType::ARRAY)); w.put<uint64_t>(1);
  w.put<uint32_t>(uint32_t(GgufType::I32)); w.put<uint64_t>(3);
  w.put<int32_t>(1); w.put<int32_t>(2); w.put<int32_t>(3);
  f.boundaries.push_back(w.buf.size());
  w.str("a.weight"); w.put<uint32_t>(2); w.put<uint64_t>(32); w.put<uint64_t>(2);
  w.put<uint32_t>(uint32_t(GgmlType::Q8_0)); w.put<uint64_t>(0);
  w.str("b.weight"); w.put<uint32_t>(1); w.put<uint64_t>(8);
  w.put<uint32_t>(uint32_t(GgmlType::F32)); w.put<uint64_t>(96);
  f.boundaries.push_back(w.buf.size());
  w.align(32);
  f.boundaries.push_back(w.buf.size());
  for (int i = 0; i < 68; ++i) w.buf.push_back(uint8_t(i));  // a: 2 rows of Q8_0
  w.align(32);
  for (int i = 0; i < 8; ++i) w.put<float>(float(i));
  f.bytes = w.buf;
  return f;
}

TEST(Gguf, ParsesEveryMetadataType) {
  Fixture fx = make_fixture();
  auto f = GgufFile::parse(fx.bytes.data(), fx.bytes.size(), "fixture");
  EXPECT_EQ(f->get_string("general.architecture", ""), "llama");
  EXPECT_EQ(f->get_int("u8", 0), 200);
  EXPECT_EQ(f->get_int("i8", 0), -5);
  EXPECT_EQ(f->get_int("u16", 0), 60000);
  EXPECT_EQ(f->get_int("i16", 0), -30000);
  EXPECT_EQ(f->get_int("u32", 0), 4000000000ll);
  EXPECT_EQ(f->get_int("i32", 0), -2000000000);
  EXPECT_FLOAT_EQ(f->get_float("f32", 0), 1.5);
  EXPECT_TRUE(f->get_bool("bool", false));
  EXPECT_EQ(f->get_int("u64", 0), 1ll << 40);
  EXPECT_EQ(f->get_int("i64", 0), -(1ll << 40));
  EXPECT_DOUBLE_EQ(f->get_float("f64", 0), -2.25);
  EXPECT_EQ(f->find("strings")->strs, (std::vector<std::string>{"a", "bc"}));
  EXPECT_EQ(f->find("nested")->arr.at(0).nums, (std::vector<double>{1, 2, 3}));
  ASSERT_EQ(f->tensors().size(), 2u);
  const GgufTensor* a = f->find_tensor("a.weight");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->nbytes, 68u);
  EXPECT_EQ(a->data[5], 5);
  const GgufTensor* b = f->find_tensor("b.weight");
  float v;
  std::memcpy(&v, b->data + 12, 4);
  EXPECT_EQ(v, 3.f);
  EXPECT_THROW(f->get_int("general.architecture", 0), Error);  // wrong type is an error
}

TEST(Gguf, EveryTruncationIsAnError) {
  Fixture fx = make_fixture();
  for (size_t n = 0; n < fx.bytes.size(); ++n) {
    std::vector<uint8_t> cut(fx.bytes.begin(), fx.bytes.begin() + n);
    EXPECT_THROW(GgufFile::parse(cut.data(), cut.size(), "cut"), Error) << "truncated at " << n;
  }
  for (size_t b : fx.boundaries) {  // and the messages name the problem
    try {
      GgufFile::parse(fx.bytes.data(), b, "cut");
      ADD_FAILURE();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("cut: "), std::string::npos);
    }
  }
}

TEST(Gguf, RandomCorruptionNeverCrashes) {
  Fixture fx = make_fixture();
  std::mt19937 rng(99);
  int errors = 0;
  for (int it = 0; it < 20000; ++it) {
    std::vector<uint8_t> bad = fx.bytes;
    const int flips = 1 + int(rng() % 4);
    for (int k = 0; k < flips; ++k) bad[rng() % bad.size()] ^= uint8_t(1u << (rng() % 8));
    try {
      auto f = GgufFile::parse(bad.data(), bad.size(), "flipped");
      for (const auto& t : f->tensors()) ASSERT_LE(t.data + t.nbytes, bad.data() + bad.size());
    } catch (const Error&) {
      ++errors;
    }
  }
  EXPECT_GT(errors, 0);
}

// One F32 tensor of shape 2^40 x 2^40 x 2^40 x 2^6: its byte size (2^130) is a multiple of 2^128,
// so a size product that may wrap reads 0 and the tensor would pass as empty.
std::vector<uint8_t> make_overflowing_shape() {
  Writer w;
  w.buf.insert(w.buf.end(), {'G', 'G', 'U', 'F'});
  w.put<uint32_t>(3);
  w.put<uint64_t>(1);  // tensors
  w.put<uint64_t>(0);  // metadata
  w.str("huge.weight");
  w.put<uint32_t>(4);
  for (uint64_t d : {1ull << 40, 1ull << 40, 1ull << 40, 1ull << 6}) w.put<uint64_t>(d);
  w.put<uint32_t>(uint32_t(GgmlType::F32));
  w.put<uint64_t>(0);
  w.align(32);
  return w.buf;
}

TEST(Gguf, RejectsShapesWhoseSizeOverflows) {
  std::vector<uint8_t> bytes = make_overflowing_shape();
  try {
    auto f = GgufFile::parse(bytes.data(), bytes.size(), "huge");
    ADD_FAILURE() << "parsed; tensor bytes " << f->tensors().at(0).nbytes;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("huge: tensor 'huge.weight'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("larger than the file"), std::string::npos) << e.what();
  }
}

TEST(Gguf, ElementCountsMatchShapes) {
  Fixture fx = make_fixture();
  auto f = GgufFile::parse(fx.bytes.data(), fx.bytes.size(), "fixture");
  EXPECT_EQ(f->find_tensor("a.weight")->n_elements(), 64);
  EXPECT_EQ(f->find_tensor("b.weight")->n_elements(), 8);
}

TEST(Gguf, RejectsBadMagicAndVersion) {
  Fixture fx = make_fixture();
  auto bad = fx.bytes;
  bad[0] = 'X';
  EXPECT_THROW(GgufFile::parse(bad.data(), bad.size(), "x"), Error);
  bad = fx.bytes;
  bad[4] = 9;
  EXPECT_THROW(GgufFile::parse(bad.data(), bad.size(), "x"), Error);
  EXPECT_THROW(GgufFile::open("/nonexistent/model.gguf"), Error);
}


// ---- The writer ------------------------------------------------------------------------------

// A writer given a file's metadata (in the file's order) and tensors, with the tensors' bytes.
GgufWriter writer_for(const GgufFile& f) {
  GgufWriter w(f.alignment());
  for (const std::string& k : f.metadata_order()) w.set(k, *f.find(k));
  for (const GgufTensor& t : f.tensors()) w.add_tensor(t.name, t.type(), t.n_dims, t.ne);
  return w;
}

std::string temp_path(const char* name) {
  return (std::filesystem::temp_directory_path() / (std::string("leanlm-test-") + std::to_string(getpid()) + "-" + name)).string();
}

// Part files the writer left beside path (PATH.part-XXXXXX).
int part_files(const std::string& path) {
  const std::filesystem::path p(path);
  const std::string prefix = p.filename().string() + ".part";
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(p.parent_path()))
    n += e.path().filename().string().rfind(prefix, 0) == 0;
  return n;
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

TEST(GgufWriter, RewritesAFileByteForByte) {
  Fixture fx = make_fixture();
  auto f = GgufFile::parse(fx.bytes.data(), fx.bytes.size(), "fixture");
  const GgufWriter w = writer_for(*f);
  const std::string path = temp_path("copy.gguf");
  w.write(path, [&](size_t i, std::vector<uint8_t>& out) {
    const GgufTensor& t = f->tensors()[i];
    out.assign(t.data, t.data + t.nbytes);
  });
  EXPECT_EQ(read_file(path), fx.bytes);  // every metadata type, nesting, alignment and offset
  EXPECT_EQ(part_files(path), 0);
  auto g = GgufFile::open(path);
  EXPECT_EQ(g->get_int("u64", 0), 1ll << 40);
  std::filesystem::remove(path);
}

TEST(GgufWriter, SetKeepsThePlaceAndAlignmentIsWritten) {
  GgufWriter w(64);
  w.set_string("general.architecture", "llama");
  w.set_u32("general.file_type", 7);
  w.set_string("general.architecture", "qwen2");  // replaces, keeps the first place
  w.remove("general.file_type");
  const int64_t ne[2] = {32, 3};
  w.add_tensor("w", GgmlType::Q8_0, 2, ne);
  w.add_tensor("n", GgmlType::F32, 1, ne);
  EXPECT_THROW(w.add_tensor("w", GgmlType::F32, 1, ne), Error);  // a name twice
  const int64_t odd[1] = {33};
  EXPECT_THROW(w.add_tensor("x", GgmlType::Q8_0, 1, odd), Error);  // not whole blocks
  const std::string path = temp_path("align.gguf");
  w.write(path, [&](size_t i, std::vector<uint8_t>& out) { out.assign(i == 0 ? 3 * 34 : 32 * 4, uint8_t(i + 1)); });
  auto f = GgufFile::open(path);
  EXPECT_EQ(f->metadata_order(), (std::vector<std::string>{"general.alignment", "general.architecture"}));
  EXPECT_EQ(f->alignment(), 64u);
  EXPECT_EQ(f->get_string("general.architecture", ""), "qwen2");
  ASSERT_EQ(f->tensors().size(), 2u);
  EXPECT_EQ(f->tensors()[1].offset, 128u);  // 102 bytes, padded to 64
  EXPECT_EQ(f->tensors()[1].data[0], 2);
  std::filesystem::remove(path);
}

// A write that fails (a tensor's bytes cannot be produced, the wrong number of bytes, a directory
// that does not exist) is an Error naming the path, leaves no part file, and leaves a file already
// at the path as it was.
TEST(GgufWriter, AFailedWriteLeavesNothingHalfWritten) {
  GgufWriter w;
  const int64_t ne[1] = {64};
  w.add_tensor("a", GgmlType::F32, 1, ne);
  w.add_tensor("b", GgmlType::F32, 1, ne);
  const std::string path = temp_path("fail.gguf");
  {
    std::ofstream old(path);
    old << "the previous model";
  }
  const auto expect_failure = [&](const std::function<void(size_t, std::vector<uint8_t>&)>& fill, const char* why) {
    try {
      w.write(path, fill);
      ADD_FAILURE() << "no error: " << why;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
    }
    EXPECT_EQ(part_files(path), 0) << why;
    const std::vector<uint8_t> now = read_file(path);
    EXPECT_EQ(std::string(now.begin(), now.end()), "the previous model") << why;
  };
  expect_failure([](size_t i, std::vector<uint8_t>& out) {
    if (i == 1) throw Error("cannot dequantize b");
    out.assign(256, 0);
  }, "cannot dequantize b");
  expect_failure([](size_t i, std::vector<uint8_t>& out) { out.assign(i == 0 ? 256 : 255, 0); }, "255 bytes given for 256");
  std::filesystem::remove(path);
  EXPECT_THROW(w.write("/nonexistent-dir/x.gguf", [](size_t, std::vector<uint8_t>& out) { out.assign(256, 0); }), Error);
}

}  // namespace
}  // namespace leanlm
