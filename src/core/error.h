#pragma once
// Errors: every failure a user can cause (a bad file, a bad flag, a bad request) is an
// nibble::Error whose message names the file, tensor, field or parameter at fault.
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace nibble {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

// Checks a condition that depends on input data (never on programmer error).
#define NIBBLE_CHECK(cond, ...)    \
  do {                             \
    if (!(cond)) {                 \
      ::nibble::fail(__VA_ARGS__); \
    }                              \
  } while (0)

}  // namespace nibble
