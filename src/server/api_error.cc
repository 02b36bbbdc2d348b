#include "server/api_error.h"

namespace nibble::server {

nlohmann::json error_json(int status, const std::string& type, const std::string& message,
                          const std::string& param, const std::string& code) {
  nlohmann::json error = {
      {"message", message},
      {"type", type},
      {"param", param.empty() ? nlohmann::json(nullptr) : nlohmann::json(param)},
      {"code", code.empty() ? nlohmann::json(status) : nlohmann::json(code)}};
  return {{"error", std::move(error)}};
}

nlohmann::json ApiError::to_json() const {
  return error_json(status_, type_, what(), param_, code_);
}

}  // namespace nibble::server
