// Errors that reach the user: one line, naming what failed. The CLI prints them and exits 1.
#pragma once
#include <stdexcept>
#include <string>

namespace leanlm {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

// printf-style formatting into a std::string.
std::string strfmt(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

[[noreturn]] void fail(const std::string& msg);

}  // namespace leanlm
