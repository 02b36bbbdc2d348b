#pragma once
// Typed, range-checked reads of JSON request fields. Every failure is a 400 naming the field,
// and floats are checked with isfinite first (NaN compares false to every bound).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace nibble::server {

// Parses a request body that must be a JSON object (400 on malformed JSON, empty body,
// invalid UTF-8 or a non-object).
nlohmann::json parse_json_object(std::string_view body);

// Rejects fields outside `known`: a misspelt parameter should fail loudly, not be ignored.
void reject_unknown_fields(const nlohmann::json& body,
                           std::initializer_list<std::string_view> known,
                           std::string_view where = {});

// A JSON null counts as absent.
const nlohmann::json* field(const nlohmann::json& body, std::string_view name);

std::optional<double> read_number(const nlohmann::json& body, std::string_view name, double lo,
                                  double hi, std::string_view param = {});
std::optional<int64_t> read_integer(const nlohmann::json& body, std::string_view name, int64_t lo,
                                    int64_t hi, std::string_view param = {});
std::optional<bool> read_bool(const nlohmann::json& body, std::string_view name,
                              std::string_view param = {});
std::optional<std::string> read_string(const nlohmann::json& body, std::string_view name,
                                       std::string_view param = {});

// `stop`: a string or a list of at most 4 non-empty strings.
std::vector<std::string> read_stop(const nlohmann::json& body, std::string_view name,
                                   std::string_view param = {});

// A list of token ids, each in [0, vocab_size).
std::vector<int32_t> read_token_ids(const nlohmann::json& value, int64_t vocab_size,
                                    std::string_view param);

}  // namespace nibble::server
