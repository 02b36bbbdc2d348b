#include "server/auth.h"

#include <array>
#include <cstdint>

#include "server/api_error.h"

namespace nibble::server {

namespace {

// Compares every byte of the longer input, so the time does not depend on where the first
// difference is nor (beyond the length of the presented key) on the real key's length.
bool constant_time_equal(std::string_view presented, std::string_view expected) {
  const size_t n = std::max(presented.size(), expected.size());
  uint8_t diff = presented.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t a = i < presented.size() ? uint8_t(presented[i]) : 0;
    const uint8_t b = i < expected.size() ? uint8_t(expected[i]) : 0;
    diff |= uint8_t(a ^ b);
  }
  return diff == 0;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

ApiKeyAuth::ApiKeyAuth(std::string key) : key_(std::move(key)) {}

void ApiKeyAuth::check(const HttpMessage& request) const {
  if (!enabled()) return;
  std::string_view presented;
  const auto authorization = request[boost::beast::http::field::authorization];
  const std::string_view auth(authorization.data(), authorization.size());
  const auto prefix = auth.substr(0, 7);
  if (auth.size() > 7 && boost::beast::iequals({prefix.data(), prefix.size()}, "Bearer ")) {
    presented = trim(auth.substr(7));
  } else {
    const auto header = request["X-Api-Key"];
    presented = trim(std::string_view(header.data(), header.size()));
  }
  if (presented.empty()) {
    throw ApiError(401, "authentication_error",
                   "missing API key: send 'Authorization: Bearer <key>'", "", "invalid_api_key");
  }
  if (!constant_time_equal(presented, key_)) {
    throw ApiError(401, "authentication_error", "invalid API key", "", "invalid_api_key");
  }
}

}  // namespace nibble::server
