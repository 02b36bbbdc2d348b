// Filters, tests, operators, attribute access and the globals transformers installs
// (raise_exception, strftime_now, namespace, dict, range), with Python semantics.
#include <fmt/format.h>
#include <utf8proc.h>

#include <algorithm>
#include <cmath>
#include <ctime>

#include "tokenizer/jinja/interpreter.h"

namespace nibble::jinja {
namespace {

Value make_callable(std::string name, std::function<Value(const CallArgs&)> fn) {
  auto c = std::make_shared<Callable>();
  c->name = std::move(name);
  c->call = std::move(fn);
  Value v;
  v.kind = Value::Kind::Callable;
  v.func = c;
  return v;
}

[[noreturn]] void undefined_error(const Value& v) {
  if (v.text.empty()) fail("value is undefined");
  fail("'{}' is undefined", v.text);
}

const std::string& need_string(const Value& v, const char* what) {
  if (!v.is_string()) fail("{} expects a string, got {}", what, v.type_name());
  return v.text;
}

std::string map_case(const std::string& s, bool upper) {
  std::string out;
  auto chars = utf8_chars(s);
  for (const auto& ch : chars) {
    utf8proc_int32_t cp;
    utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(ch.data()),
                     static_cast<utf8proc_ssize_t>(ch.size()), &cp);
    if (cp < 0) {
      out += ch;
      continue;
    }
    append_utf8(out, static_cast<uint32_t>(upper ? utf8proc_toupper(cp) : utf8proc_tolower(cp)));
  }
  return out;
}

std::string capitalize(const std::string& s) {
  auto chars = utf8_chars(s);
  if (chars.empty()) return s;
  std::string rest;
  for (size_t i = 1; i < chars.size(); ++i) rest += chars[i];
  return map_case(chars[0], true) + map_case(rest, false);
}

// Python's str.title(): a letter following a non-letter starts a word.
std::string python_title(const std::string& s) {
  std::string out;
  bool prev_cased = false;
  for (const auto& ch : utf8_chars(s)) {
    bool alpha = ch.size() > 1 || std::isalpha(static_cast<unsigned char>(ch[0]));
    out += alpha ? map_case(ch, !prev_cased) : ch;
    prev_cased = alpha;
  }
  return out;
}

std::string replace_all(const std::string& s, const std::string& from, const std::string& to,
                        int64_t count) {
  std::string out;
  if (from.empty()) {
    auto chars = utf8_chars(s);
    int64_t done = 0;
    for (const auto& c : chars) {
      if (count < 0 || done < count) {
        out += to;
        ++done;
      }
      out += c;
    }
    if (count < 0 || done < count) out += to;
    return out;
  }
  size_t pos = 0;
  int64_t done = 0;
  while (true) {
    size_t hit = s.find(from, pos);
    if (hit == std::string::npos || (count >= 0 && done >= count)) break;
    out.append(s, pos, hit - pos);
    out += to;
    pos = hit + from.size();
    ++done;
  }
  out.append(s, pos, std::string::npos);
  return out;
}

Value split(const std::string& s, const Value& sep, int64_t maxsplit) {
  ValueList parts;
  if (sep.is_none() || sep.is_undefined()) {
    size_t i = 0;
    int64_t done = 0;
    while (true) {
      while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
      if (i >= s.size()) break;
      if (maxsplit >= 0 && done >= maxsplit) {
        std::string rest = s.substr(i);
        size_t end = rest.find_last_not_of(" \t\n\r\v\f");
        parts.push_back(Value::from_string(rest.substr(0, end + 1)));
        break;
      }
      size_t j = i;
      while (j < s.size() && !std::isspace(static_cast<unsigned char>(s[j]))) ++j;
      parts.push_back(Value::from_string(s.substr(i, j - i)));
      ++done;
      i = j;
    }
    return Value::new_list(std::move(parts));
  }
  const std::string& d = need_string(sep, "split");
  if (d.empty()) fail("split: empty separator");
  size_t pos = 0;
  int64_t done = 0;
  while (true) {
    size_t hit = s.find(d, pos);
    if (hit == std::string::npos || (maxsplit >= 0 && done >= maxsplit)) break;
    parts.push_back(Value::from_string(s.substr(pos, hit - pos)));
    pos = hit + d.size();
    ++done;
  }
  parts.push_back(Value::from_string(s.substr(pos)));
  return Value::new_list(std::move(parts));
}

bool affix_match(const std::string& s, const Value& affix, bool prefix) {
  auto one = [&](const std::string& a) {
    if (a.size() > s.size()) return false;
    return prefix ? s.compare(0, a.size(), a) == 0
                  : s.compare(s.size() - a.size(), a.size(), a) == 0;
  };
  if (affix.is_list()) {
    for (const auto& a : *affix.list)
      if (one(need_string(a, prefix ? "startswith" : "endswith"))) return true;
    return false;
  }
  return one(need_string(affix, prefix ? "startswith" : "endswith"));
}

Value string_method(const Value& self, const std::string& name) {
  const std::string s = self.text;
  auto m = [&](std::function<Value(const CallArgs&)> fn) { return make_callable(name, fn); };
  if (name == "strip" || name == "lstrip" || name == "rstrip")
    return m([s, name](const CallArgs& a) {
      return Value::from_string(
          python_strip(s, name != "rstrip", name != "lstrip", a.get(0, "chars")));
    });
  if (name == "upper")
    return m([s](const CallArgs&) { return Value::from_string(map_case(s, true)); });
  if (name == "lower")
    return m([s](const CallArgs&) { return Value::from_string(map_case(s, false)); });
  if (name == "title")
    return m([s](const CallArgs&) { return Value::from_string(python_title(s)); });
  if (name == "capitalize")
    return m([s](const CallArgs&) { return Value::from_string(capitalize(s)); });
  if (name == "startswith" || name == "endswith")
    return m([s, name](const CallArgs& a) {
      return Value::from_bool(affix_match(s, a.get(0, "prefix"), name == "startswith"));
    });
  if (name == "split")
    return m([s](const CallArgs& a) {
      Value maxsplit = a.get(1, "maxsplit", Value::from_int(-1));
      return split(s, a.get(0, "sep", Value::none()), maxsplit.as_int());
    });
  if (name == "replace")
    return m([s](const CallArgs& a) {
      Value count = a.get(2, "count", Value::from_int(-1));
      return Value::from_string(replace_all(s, need_string(a.get(0, "old"), "replace"),
                                            need_string(a.get(1, "new"), "replace"),
                                            count.as_int()));
    });
  if (name == "find")
    return m([s](const CallArgs& a) {
      size_t hit = s.find(need_string(a.get(0, "sub"), "find"));
      if (hit == std::string::npos) return Value::from_int(-1);
      return Value::from_int(static_cast<int64_t>(utf8_length(s.substr(0, hit))));
    });
  if (name == "count")
    return m([s](const CallArgs& a) {
      const std::string& sub = need_string(a.get(0, "sub"), "count");
      if (sub.empty()) return Value::from_int(static_cast<int64_t>(utf8_length(s) + 1));
      int64_t n = 0;
      for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
      return Value::from_int(n);
    });
  if (name == "join")
    return m([s](const CallArgs& a) {
      std::string out;
      bool first = true;
      for (const auto& item : iterate(a.get(0, "iterable"))) {
        if (!first) out += s;
        first = false;
        out += need_string(item, "join");
      }
      return Value::from_string(out);
    });
  if (name == "splitlines")
    return m([s](const CallArgs&) {
      ValueList lines;
      size_t b = 0;
      for (size_t i = 0; i < s.size(); ++i)
        if (s[i] == '\n' || s[i] == '\r') {
          lines.push_back(Value::from_string(s.substr(b, i - b)));
          if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
          b = i + 1;
        }
      if (b < s.size()) lines.push_back(Value::from_string(s.substr(b)));
      return Value::new_list(std::move(lines));
    });
  if (name == "isdigit" || name == "isalpha" || name == "isspace" || name == "isalnum")
    return m([s, name](const CallArgs&) {
      if (s.empty()) return Value::from_bool(false);
      for (unsigned char c : s) {
        bool ok = name == "isdigit"   ? std::isdigit(c) != 0
                  : name == "isalpha" ? std::isalpha(c) != 0
                  : name == "isspace" ? std::isspace(c) != 0
                                      : std::isalnum(c) != 0;
        if (!ok) return Value::from_bool(false);
      }
      return Value::from_bool(true);
    });
  return Value::undefined(name);
}

Value dict_method(const Value& self, const std::string& name) {
  auto d = self.dict;
  if (name == "items")
    return make_callable(name, [d](const CallArgs&) {
      ValueList out;
      for (const auto& [k, v] : d->entries) out.push_back(Value::new_tuple({k, v}));
      return Value::new_list(std::move(out));
    });
  if (name == "keys")
    return make_callable(name, [d](const CallArgs&) {
      ValueList out;
      for (const auto& e : d->entries) out.push_back(e.first);
      return Value::new_list(std::move(out));
    });
  if (name == "values")
    return make_callable(name, [d](const CallArgs&) {
      ValueList out;
      for (const auto& e : d->entries) out.push_back(e.second);
      return Value::new_list(std::move(out));
    });
  if (name == "get")
    return make_callable(name, [d](const CallArgs& a) {
      const Value* v = d->find(a.get(0, "key"));
      return v ? *v : a.get(1, "default", Value::none());
    });
  if (name == "pop" || name == "update" || name == "setdefault" || name == "clear" ||
      name == "popitem")
    return make_callable(name, [name](const CallArgs&) -> Value {
      fail("access to attribute '{}' of 'dict' object is unsafe (templates cannot mutate data)",
           name);
    });
  return Value::undefined(name);
}

int64_t normalize_index(int64_t i, size_t size) {
  return i < 0 ? i + static_cast<int64_t>(size) : i;
}

ValueList slice_list(const ValueList& items, const Value& start, const Value& stop,
                     const Value& step_v) {
  int64_t n = static_cast<int64_t>(items.size());
  int64_t step = step_v.is_none() ? 1 : step_v.as_int();
  if (step == 0) fail("slice step cannot be zero");
  auto clamp = [&](const Value& v, int64_t def) {
    if (v.is_none()) return def;
    if (!v.is_number() || v.kind == Value::Kind::Float)
      fail("slice indices must be integers or None");
    int64_t i = v.as_int();
    if (i < 0) i += n;
    if (step > 0) return std::clamp<int64_t>(i, 0, n);
    return std::clamp<int64_t>(i, -1, n - 1);
  };
  int64_t b = clamp(start, step > 0 ? 0 : n - 1);
  int64_t e = clamp(stop, step > 0 ? n : -1);
  ValueList out;
  for (int64_t i = b; step > 0 ? i < e : i > e; i += step)
    out.push_back(items[static_cast<size_t>(i)]);
  return out;
}

}  // namespace

std::string lower_text(const std::string& s) { return map_case(s, false); }
std::string upper_text(const std::string& s) { return map_case(s, true); }
std::string capitalize_text(const std::string& s) { return capitalize(s); }

ValueList iterate(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Undefined: return {};
    case Value::Kind::List: return *v.list;
    case Value::Kind::Dict: {
      ValueList keys;
      for (const auto& e : v.dict->entries) keys.push_back(e.first);
      return keys;
    }
    case Value::Kind::String: {
      ValueList chars;
      for (auto& c : utf8_chars(v.text)) chars.push_back(Value::from_string(std::move(c)));
      return chars;
    }
    default: fail("'{}' object is not iterable", v.type_name());
  }
}

Value get_attribute(const Value& obj, const std::string& name) {
  switch (obj.kind) {
    case Value::Kind::Undefined: undefined_error(obj);
    case Value::Kind::Dict: {
      Value m = dict_method(obj, name);
      if (!m.is_undefined()) return m;
      const Value* v = obj.dict->find(Value::from_string(name));
      return v ? *v : Value::undefined(name);
    }
    case Value::Kind::String: return string_method(obj, name);
    case Value::Kind::Namespace: {
      const Value* v = obj.ns->find(name);
      return v ? *v : Value::undefined(name);
    }
    case Value::Kind::List:
      if (name == "append" || name == "pop" || name == "extend" || name == "insert" ||
          name == "remove" || name == "sort" || name == "reverse" || name == "clear")
        return make_callable(name, [name](const CallArgs&) -> Value {
          fail("access to attribute '{}' of 'list' object is unsafe (templates cannot mutate data)",
               name);
        });
      return Value::undefined(name);
    default: return Value::undefined(name);
  }
}

Value get_item(const Value& obj, const Value& key) {
  switch (obj.kind) {
    case Value::Kind::Undefined: undefined_error(obj);
    case Value::Kind::Dict: {
      const Value* v = obj.dict->find(key);
      if (v) return *v;
      return key.is_string() ? get_attribute(obj, key.text) : Value::undefined(to_str(key));
    }
    case Value::Kind::List: {
      if (!key.is_number() || key.kind == Value::Kind::Float) {
        if (key.is_string()) return get_attribute(obj, key.text);
        return Value::undefined();
      }
      int64_t i = normalize_index(key.as_int(), obj.list->size());
      if (i < 0 || i >= static_cast<int64_t>(obj.list->size())) return Value::undefined();
      return (*obj.list)[static_cast<size_t>(i)];
    }
    case Value::Kind::String: {
      if (!key.is_number() || key.kind == Value::Kind::Float) {
        if (key.is_string()) return get_attribute(obj, key.text);
        return Value::undefined();
      }
      auto chars = utf8_chars(obj.text);
      int64_t i = normalize_index(key.as_int(), chars.size());
      if (i < 0 || i >= static_cast<int64_t>(chars.size())) return Value::undefined();
      return Value::from_string(chars[static_cast<size_t>(i)]);
    }
    case Value::Kind::Namespace:
      if (key.is_string()) return get_attribute(obj, key.text);
      return Value::undefined();
    default: return Value::undefined();
  }
}

Value slice_value(const Value& target, const CallArgs& a) {
  const Value &b = a.positional[0], &e = a.positional[1], &s = a.positional[2];
  if (target.is_list()) {
    Value out = Value::new_list(slice_list(*target.list, b, e, s));
    out.is_tuple = target.is_tuple;
    return out;
  }
  if (target.is_string()) {
    ValueList chars;
    for (auto& c : utf8_chars(target.text)) chars.push_back(Value::from_string(std::move(c)));
    std::string out;
    for (const auto& c : slice_list(chars, b, e, s)) out += c.text;
    return Value::from_string(out);
  }
  if (target.is_undefined()) undefined_error(target);
  fail("'{}' object is not subscriptable", target.type_name());
}

}  // namespace nibble::jinja
