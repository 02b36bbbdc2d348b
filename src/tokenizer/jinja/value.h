#pragma once
// The dynamic values a chat template computes with, modelled on the Python objects jinja2
// hands around, because output must match Python's printing byte for byte (True/None, 1.0,
// ['a'] reprs, json.dumps spacing) and Python's truthiness and equality rules.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace nibble::jinja {

struct Value;
using ValueList = std::vector<Value>;
struct Dict;
struct Namespace;
struct Callable;

struct Value {
  enum class Kind { Undefined, None, Bool, Int, Float, String, List, Dict, Namespace, Callable };
  Kind kind = Kind::Undefined;
  bool boolean = false;
  bool is_tuple = false;  // a List that Python would print as (a, b)
  int64_t integer = 0;
  double real = 0;
  std::string text;  // String contents, or the name of an Undefined
  std::shared_ptr<ValueList> list;
  std::shared_ptr<jinja::Dict> dict;
  std::shared_ptr<jinja::Namespace> ns;
  std::shared_ptr<jinja::Callable> func;

  static Value undefined(std::string name = {});
  static Value none();
  static Value from_bool(bool b);
  static Value from_int(int64_t i);
  static Value from_float(double d);
  static Value from_string(std::string s);
  static Value new_list(ValueList items = {});
  static Value new_tuple(ValueList items);
  static Value new_dict();
  static Value from_json(const nlohmann::json& j);
  static Value from_json(const nlohmann::ordered_json& j);

  bool is_undefined() const { return kind == Kind::Undefined; }
  bool is_none() const { return kind == Kind::None; }
  bool is_string() const { return kind == Kind::String; }
  bool is_number() const { return kind == Kind::Int || kind == Kind::Float || kind == Kind::Bool; }
  bool is_list() const { return kind == Kind::List; }
  bool is_dict() const { return kind == Kind::Dict; }

  bool truthy() const;
  double as_double() const;
  // Python's int() of a bool/int (callers check the kind first).
  int64_t as_int() const { return kind == Kind::Bool ? (boolean ? 1 : 0) : integer; }
  std::string type_name() const;  // Python's type name, for error messages
};

struct Dict {
  std::vector<std::pair<Value, Value>> entries;  // insertion order, as Python dicts keep
  const Value* find(const Value& key) const;
  void set(const Value& key, Value value);
};

struct Namespace {
  std::vector<std::pair<std::string, Value>> attrs;
  const Value* find(const std::string& name) const;
  void set(const std::string& name, Value value);
};

struct CallArgs {
  ValueList positional;
  std::vector<std::pair<std::string, Value>> keyword;
  const Value* keyword_arg(const std::string& name) const;
  // The argument at `index` or named `name`, else `fallback`.
  Value get(size_t index, const std::string& name, Value fallback = Value::undefined()) const;
};

struct Callable {
  std::string name;
  std::function<Value(const CallArgs&)> call;
};

bool values_equal(const Value& a, const Value& b);
// Python's str(): what {{ value }} prints.
std::string to_str(const Value& v);
// Python's repr(): how values print inside lists and dicts.
std::string to_repr(const Value& v);
std::string python_float_repr(double d);

struct JsonDumpOptions {
  bool ensure_ascii = false;
  int indent = -1;  // -1: no indent (None)
  bool sort_keys = false;
  std::string item_separator;  // empty: Python's default for the indent setting
  std::string key_separator;
  bool custom_separators = false;
};
// json.dumps as transformers' tojson filter calls it.
std::string json_dumps(const Value& v, const JsonDumpOptions& options);

// UTF-8 helpers: Python strings index by code point.
std::vector<std::string> utf8_chars(const std::string& s);
size_t utf8_length(const std::string& s);
void append_utf8(std::string& out, uint32_t cp);
bool is_python_space(uint32_t cp);
std::string python_strip(const std::string& s, bool left, bool right, const Value& chars);

}  // namespace nibble::jinja
