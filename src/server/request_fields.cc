#include "server/request_fields.h"

#include <cmath>
#include <limits>

#include "server/api_error.h"

namespace nibble::server {

using nlohmann::json;

namespace {

constexpr size_t kMaxStopStrings = 4;
constexpr size_t kMaxStopBytes = 1024;

std::string param_name(std::string_view name, std::string_view param) {
  return std::string(param.empty() ? name : param);
}

}  // namespace

json parse_json_object(std::string_view body) {
  if (body.empty()) invalid_param("", "the request body is empty; expected a JSON object");
  json value;
  try {
    value = json::parse(body.begin(), body.end());
  } catch (const json::exception& error) {  // parse_error, or out_of_range for 1e400
    // The parser's message gives the byte position and reason; it does not echo the body.
    throw ApiError(400, "invalid_request_error", std::string("invalid JSON body: ") + error.what());
  }
  if (!value.is_object()) {
    invalid_param("", "the request body must be a JSON object, got {}", value.type_name());
  }
  return value;
}

void reject_unknown_fields(const json& body, std::initializer_list<std::string_view> known,
                           std::string_view where) {
  for (const auto& [key, value] : body.items()) {
    bool found = false;
    for (std::string_view k : known) found = found || k == key;
    if (!found) {
      const std::string param = where.empty() ? key : std::string(where) + "." + key;
      invalid_param(param, "unrecognized request argument supplied: {}", param);
    }
  }
}

const json* field(const json& body, std::string_view name) {
  const auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<double> read_number(const json& body, std::string_view name, double lo, double hi,
                                  std::string_view param) {
  const json* value = field(body, name);
  if (!value) return std::nullopt;
  const std::string p = param_name(name, param);
  if (!value->is_number()) invalid_param(p, "{} must be a number, got {}", p, value->type_name());
  const double x = value->get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) {
    invalid_param(p, "{} must be in [{}, {}], got {}", p, lo, hi, x);
  }
  return x;
}

std::optional<int64_t> read_integer(const json& body, std::string_view name, int64_t lo, int64_t hi,
                                    std::string_view param) {
  const json* value = field(body, name);
  if (!value) return std::nullopt;
  const std::string p = param_name(name, param);
  int64_t x = 0;
  if (value->is_number_integer()) {
    if (value->is_number_unsigned() &&
        value->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max())) {
      invalid_param(p, "{} must be at most {}, got {}", p, hi, value->dump());
    }
    x = value->get<int64_t>();
  } else if (value->is_number_float() && std::isfinite(value->get<double>()) &&
             std::floor(value->get<double>()) == value->get<double>() &&
             std::abs(value->get<double>()) < 9e15) {
    x = static_cast<int64_t>(value->get<double>());  // 16.0 is an integer in JSON's eyes
  } else {
    invalid_param(p, "{} must be an integer, got {}", p, value->dump());
  }
  if (x < lo) invalid_param(p, "{} must be at least {}, got {}", p, lo, x);
  if (x > hi) invalid_param(p, "{} must be at most {}, got {}", p, hi, x);
  return x;
}

std::optional<bool> read_bool(const json& body, std::string_view name, std::string_view param) {
  const json* value = field(body, name);
  if (!value) return std::nullopt;
  const std::string p = param_name(name, param);
  if (!value->is_boolean()) invalid_param(p, "{} must be a boolean, got {}", p, value->type_name());
  return value->get<bool>();
}

std::optional<std::string> read_string(const json& body, std::string_view name,
                                       std::string_view param) {
  const json* value = field(body, name);
  if (!value) return std::nullopt;
  const std::string p = param_name(name, param);
  if (!value->is_string()) invalid_param(p, "{} must be a string, got {}", p, value->type_name());
  return value->get<std::string>();
}

std::vector<std::string> read_stop(const json& body, std::string_view name,
                                   std::string_view param) {
  const json* value = field(body, name);
  if (!value) return {};
  const std::string p = param_name(name, param);
  std::vector<std::string> stops;
  if (value->is_string()) {
    stops.push_back(value->get<std::string>());
  } else if (value->is_array()) {
    if (value->size() > kMaxStopStrings) {
      invalid_param(p, "{} takes at most {} strings, got {}", p, kMaxStopStrings, value->size());
    }
    for (const auto& item : *value) {
      if (!item.is_string()) invalid_param(p, "{} must be a string or a list of strings", p);
      stops.push_back(item.get<std::string>());
    }
  } else {
    invalid_param(p, "{} must be a string or a list of strings, got {}", p, value->type_name());
  }
  for (const auto& stop : stops) {
    if (stop.empty()) invalid_param(p, "{} strings must not be empty", p);
    if (stop.size() > kMaxStopBytes) {
      invalid_param(p, "{} strings must be at most {} bytes, got {}", p, kMaxStopBytes,
                    stop.size());
    }
  }
  return stops;
}

std::vector<int32_t> read_token_ids(const json& value, int64_t vocab_size, std::string_view param) {
  const std::string p(param);
  if (!value.is_array()) invalid_param(p, "{} must be a list of token ids", p);
  std::vector<int32_t> ids;
  ids.reserve(value.size());
  for (const auto& item : value) {
    if (!item.is_number_integer()) invalid_param(p, "{} must hold integer token ids", p);
    const auto id = item.get<int64_t>();
    if (id < 0 || id >= vocab_size ||
        (item.is_number_unsigned() && item.get<uint64_t>() >= uint64_t(vocab_size))) {
      invalid_param(p, "token id {} in {} is out of vocabulary (size {})", item.dump(), p,
                    vocab_size);
    }
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

}  // namespace nibble::server
