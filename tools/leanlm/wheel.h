// Reading one member of a wheel (a zip archive) as a stream.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

namespace leanlm::cli {

// Calls sink(data, n) for the bytes of `member` in the zip file `wheel`, in order; returns their
// count. Throws leanlm::Error (a one-line message) if the archive or member cannot be read.
uint64_t read_wheel_member(const std::string& wheel, const std::string& member,
                           const std::function<void(const uint8_t*, size_t)>& sink);

}  // namespace leanlm::cli
