#pragma once
// Typed access to tokenizer.json fields; errors name the source file and the field path.
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace nibble::tokenizer_json {

struct Context {
  std::string source;  // file name (or "<memory>")
  std::string path;    // JSON path of the object, e.g. "pre_tokenizer.pretokenizers[1]"
  Context child(std::string_view key) const {
    return {source, path.empty() ? std::string(key) : path + "." + std::string(key)};
  }
  Context index(size_t i) const { return {source, path + "[" + std::to_string(i) + "]"}; }
  [[noreturn]] void error(std::string_view message) const {
    fail("{}: {}: {}", source, path.empty() ? "<root>" : path, message);
  }
};

inline const nlohmann::json& require(const nlohmann::json& object, const char* key,
                                     const Context& ctx) {
  if (!object.is_object()) ctx.error("expected an object");
  auto it = object.find(key);
  if (it == object.end()) ctx.error(fmt::format("missing field '{}'", key));
  return *it;
}

inline std::string get_string(const nlohmann::json& object, const char* key, const Context& ctx) {
  const auto& value = require(object, key, ctx);
  if (!value.is_string()) ctx.child(key).error("expected a string");
  return value.get<std::string>();
}

inline std::string get_string_or(const nlohmann::json& object, const char* key,
                                 const std::string& fallback, const Context& ctx) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  if (!it->is_string()) ctx.child(key).error("expected a string");
  return it->get<std::string>();
}

inline bool get_bool_or(const nlohmann::json& object, const char* key, bool fallback,
                        const Context& ctx) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) ctx.child(key).error("expected true or false");
  return it->get<bool>();
}

inline int64_t get_int_or(const nlohmann::json& object, const char* key, int64_t fallback,
                          const Context& ctx) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  if (!it->is_number_integer()) ctx.child(key).error("expected an integer");
  return it->get<int64_t>();
}

// Largest token id accepted from a file: far above any real vocabulary, small enough that
// tables indexed by id stay allocatable.
constexpr int64_t kMaxTokenId = (int64_t{1} << 24) - 1;

inline int32_t check_token_id(const nlohmann::json& value, const Context& ctx) {
  if (!value.is_number_integer()) ctx.error("expected an integer token id");
  int64_t id = value.get<int64_t>();
  if (id < 0 || id > kMaxTokenId)
    ctx.error(fmt::format("token id {} out of range [0, {}]", id, kMaxTokenId));
  return static_cast<int32_t>(id);
}

}  // namespace nibble::tokenizer_json
