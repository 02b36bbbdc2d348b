#pragma once
// Helpers shared by the fuzz targets.
//
// What counts as a bug: any sanitizer report, any abort or assert, a hang or an allocation
// beyond libFuzzer's -rss_limit_mb, and any exception other than nibble::Error (or, for the
// server, a 4xx ApiError). Parsers promise an Error that names the file and field; a
// json::type_error or std::out_of_range escaping instead means a check is missing, so the
// targets let such exceptions propagate and libFuzzer reports them as crashes.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

namespace nibble::fuzz {

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Two-part inputs (tokenizer.json + text, template + context) are separated by the first NUL
// byte, which keeps seed files readable; without one, the second part is empty.
inline std::pair<std::string_view, std::string_view> split_at_nul(std::string_view text) {
  const size_t nul = text.find('\0');
  if (nul == std::string_view::npos) return {text, {}};
  return {text.substr(0, nul), text.substr(nul + 1)};
}

// JSON as a loader would read it: text that is not JSON is the caller's error path (it becomes
// a nibble::Error naming the file there), so the fuzzer skips it.
template <typename Json = nlohmann::json>
std::optional<Json> parse_json(std::string_view text) {
  Json value = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) return std::nullopt;
  return value;
}

}  // namespace nibble::fuzz
