#pragma once
// API-key check: `Authorization: Bearer KEY` or `X-Api-Key: KEY`, compared in constant time
// (see auth.cc).
#include <string>
#include <string_view>

#include "server/http_server.h"

namespace nibble::server {

class ApiKeyAuth {
 public:
  explicit ApiKeyAuth(std::string key);
  bool enabled() const { return !key_.empty(); }
  // Throws ApiError 401 when the request carries no key or a wrong one.
  void check(const HttpMessage& request) const;

 private:
  std::string key_;
};

}  // namespace nibble::server
