#pragma once
// Errors a route handler raises for the client: each carries the HTTP status and the fields of
// OpenAI's error object, so every failure reaches the client as
// {"error": {"message", "type", "param", "code"}} with the right status.
#include <fmt/format.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace nibble::server {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string type, std::string message, std::string param = {},
           std::string code = {})
      : std::runtime_error(message),
        status_(status),
        type_(std::move(type)),
        param_(std::move(param)),
        code_(std::move(code)) {}

  int status() const { return status_; }
  const std::string& type() const { return type_; }
  const std::string& param() const { return param_; }
  const std::string& code() const { return code_; }
  // Extra response headers, such as Retry-After on 503 and Allow on 405.
  std::vector<std::pair<std::string, std::string>> headers;

  nlohmann::json to_json() const;

 private:
  int status_;
  std::string type_, param_, code_;
};

nlohmann::json error_json(int status, const std::string& type, const std::string& message,
                          const std::string& param = {}, const std::string& code = {});

// 400 invalid_request_error naming the parameter at fault.
template <typename... Args>
[[noreturn]] void invalid_param(const std::string& param, fmt::format_string<Args...> format,
                                Args&&... args) {
  throw ApiError(400, "invalid_request_error", fmt::format(format, std::forward<Args>(args)...),
                 param);
}

}  // namespace nibble::server
