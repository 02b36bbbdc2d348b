// jinja2's builtin filters and tests, plus transformers' tojson override and globals.
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <ctime>

#include "tokenizer/jinja/interpreter.h"

namespace nibble::jinja {

Value slice_value(const Value& target, const CallArgs& a);
std::string lower_text(const std::string& s);
std::string upper_text(const std::string& s);
std::string capitalize_text(const std::string& s);
int python_compare(const Value& a, const Value& b);

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

// `attribute=` arguments may be dotted paths ("a.b") or integer indices.
Value resolve_attribute(const Value& item, const Value& attribute) {
  if (attribute.is_number()) return get_item(item, attribute);
  Value cur = item;
  std::string path = to_str(attribute);
  size_t b = 0;
  while (true) {
    size_t dot = path.find('.', b);
    std::string part = path.substr(b, dot == std::string::npos ? std::string::npos : dot - b);
    bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    int64_t index = 0;
    if (numeric && std::from_chars(part.data(), part.data() + part.size(), index).ec != std::errc())
      fail("attribute index '{}' is out of range", part);
    cur = numeric ? get_item(cur, Value::from_int(index)) : get_item(cur, Value::from_string(part));
    if (dot == std::string::npos) return cur;
    b = dot + 1;
  }
}

CallArgs rest_args(const CallArgs& a, size_t from) {
  CallArgs out;
  for (size_t i = from; i < a.positional.size(); ++i) out.positional.push_back(a.positional[i]);
  out.keyword = a.keyword;
  return out;
}

std::string indent_text(const std::string& s, const std::string& pad, bool first, bool blank) {
  std::string out;
  size_t b = 0;
  bool is_first = true;
  while (true) {
    size_t nl = s.find('\n', b);
    std::string line = s.substr(b, nl == std::string::npos ? std::string::npos : nl - b);
    bool add = (is_first ? first : true) && (blank || !line.empty());
    if (!is_first) out += '\n';
    if (add && !(is_first && !first)) out += pad;
    out += line;
    is_first = false;
    if (nl == std::string::npos) break;
    b = nl + 1;
  }
  return out;
}

Value sort_values(ValueList items, bool reverse, bool case_sensitive, const Value& attribute) {
  auto key = [&](const Value& v) {
    Value k = attribute.is_undefined() || attribute.is_none() ? v : resolve_attribute(v, attribute);
    if (!case_sensitive && k.is_string()) k = Value::from_string(lower_text(k.text));
    return k;
  };
  std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
    return reverse ? python_compare(key(y), key(x)) < 0 : python_compare(key(x), key(y)) < 0;
  });
  return Value::new_list(std::move(items));
}

std::string jinja_title(const std::string& s) {
  // jinja2's do_title: a word starts after whitespace or one of -([{<
  std::string out;
  bool at_start = true;
  for (const auto& ch : utf8_chars(s)) {
    out += at_start ? upper_text(ch) : lower_text(ch);
    at_start = ch.size() == 1 && (std::isspace(static_cast<unsigned char>(ch[0])) ||
                                  std::string("-([{<").find(ch[0]) != std::string::npos);
  }
  return out;
}

// A float -> int64 cast is undefined for NaN and outside int64's range; Python's int() would
// give a big integer, which this engine does not have.
int64_t float_to_int(double d) {
  if (!(d >= -9.2233720368547758e18 && d < 9.2233720368547758e18))
    fail("{} does not fit in a 64-bit integer", d);
  return static_cast<int64_t>(d);
}

int64_t to_int(const Value& v, int64_t fallback) {
  if (v.kind == Value::Kind::Float) return float_to_int(v.real);
  if (v.is_number()) return v.as_int();
  if (v.is_string()) {
    std::string t = python_strip(v.text, true, true, Value::none());
    try {
      size_t used = 0;
      int64_t r = std::stoll(t, &used, 10);
      if (used == t.size()) return r;
      double d = std::stod(t, &used);
      if (used == t.size()) return float_to_int(d);
    } catch (const std::logic_error&) {  // stoll/stod: invalid_argument, out_of_range
    }
  }
  return fallback;
}

bool string_is_cased(const std::string& s, bool upper) {
  bool any = false;
  for (const auto& ch : utf8_chars(s)) {
    std::string u = upper_text(ch), l = lower_text(ch);
    if (u == l) continue;
    any = true;
    if ((upper && ch != u) || (!upper && ch != l)) return false;
  }
  return any;
}

}  // namespace

bool apply_test(Interpreter& in, const std::string& name, const Value& v, const CallArgs& a) {
  using K = Value::Kind;
  auto arg = [&](size_t i) { return a.get(i, "value"); };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.kind == K::Int;
  if (name == "float") return v.kind == K::Float;
  if (name == "boolean") return v.kind == K::Bool;
  if (name == "true") return v.kind == K::Bool && v.boolean;
  if (name == "false") return v.kind == K::Bool && !v.boolean;
  if (name == "mapping") return v.is_dict();
  if (name == "iterable") return v.is_list() || v.is_dict() || v.is_string() || v.is_undefined();
  if (name == "sequence") return v.is_list() || v.is_dict() || v.is_string() || v.is_undefined();
  if (name == "callable") return v.kind == K::Callable;
  if (name == "equalto" || name == "eq" || name == "==") return values_equal(v, arg(0));
  if (name == "ne" || name == "!=") return !values_equal(v, arg(0));
  if (name == "sameas") {
    Value o = arg(0);
    if (v.kind != o.kind) return false;
    if (v.is_list()) return v.list == o.list;
    if (v.is_dict()) return v.dict == o.dict;
    return values_equal(v, o);
  }
  if (name == "lt" || name == "<") return compare_op("<", v, arg(0));
  if (name == "le" || name == "<=") return compare_op("<=", v, arg(0));
  if (name == "gt" || name == ">" || name == "greaterthan") return compare_op(">", v, arg(0));
  if (name == "ge" || name == ">=") return compare_op(">=", v, arg(0));
  if (name == "lessthan") return compare_op("<", v, arg(0));
  if (name == "in") return compare_op("in", v, arg(0));
  if (name == "odd" || name == "even" || name == "divisibleby") {
    if (!v.is_number() || v.kind == K::Float) fail("test '{}' needs an integer", name);
    if (name == "divisibleby") {
      Value d = a.get(0, "num");
      if (!d.is_number() || d.as_int() == 0) fail("divisibleby needs a non-zero integer");
      return v.as_int() % d.as_int() == 0;
    }
    return (v.as_int() % 2 != 0) == (name == "odd");
  }
  if (name == "lower") return v.is_string() && string_is_cased(v.text, false);
  if (name == "upper") return v.is_string() && string_is_cased(v.text, true);
  if (name == "filter" || name == "test") return v.is_string();
  (void)in;
  fail("no test named '{}'", name);
}

Value apply_filter(Interpreter& in, const std::string& name, const Value& v, const CallArgs& a) {
  using K = Value::Kind;
  auto need_defined = [&] {
    if (v.is_undefined()) {
      if (v.text.empty()) fail("filter '{}' got an undefined value", name);
      fail("'{}' is undefined", v.text);
    }
  };
  if (name == "__slice__") return slice_value(v, a);
  if (name == "default" || name == "d") {
    bool boolean = a.get(1, "boolean", Value::from_bool(false)).truthy();
    if (v.is_undefined() || (boolean && !v.truthy()))
      return a.get(0, "default_value", Value::from_string(""));
    return v;
  }
  if (name == "safe" || name == "string") {
    return v.is_string() ? v : Value::from_string(to_str(v));
  }
  if (name == "trim")
    return Value::from_string(python_strip(to_str(v), true, true, a.get(0, "chars")));
  if (name == "upper") return Value::from_string(upper_text(to_str(v)));
  if (name == "lower") return Value::from_string(lower_text(to_str(v)));
  if (name == "capitalize") return Value::from_string(capitalize_text(to_str(v)));
  if (name == "title") return Value::from_string(jinja_title(to_str(v)));
  if (name == "length" || name == "count") {
    if (v.is_string()) return Value::from_int(static_cast<int64_t>(utf8_length(v.text)));
    if (v.is_list()) return Value::from_int(static_cast<int64_t>(v.list->size()));
    if (v.is_dict()) return Value::from_int(static_cast<int64_t>(v.dict->entries.size()));
    if (v.is_undefined()) return Value::from_int(0);
    if (v.kind == K::Namespace) return Value::from_int(static_cast<int64_t>(v.ns->attrs.size()));
    fail("object of type '{}' has no len()", v.type_name());
  }
  if (name == "first" || name == "last") {
    ValueList items = iterate(v);
    if (items.empty()) return Value::undefined();
    return name == "first" ? items.front() : items.back();
  }
  if (name == "join") {
    std::string sep = to_str(a.get(0, "d", Value::from_string("")));
    Value attribute = a.get(1, "attribute");
    std::string out;
    bool first = true;
    for (const auto& item : iterate(v)) {
      if (!first) out += sep;
      first = false;
      out += to_str(attribute.is_undefined() ? item : resolve_attribute(item, attribute));
      in.check_size(out.size());
    }
    return Value::from_string(out);
  }
  if (name == "replace") {
    std::string s = to_str(v);
    Value count = a.get(2, "count", Value::none());
    std::string from = to_str(a.get(0, "old")), to = to_str(a.get(1, "new"));
    size_t hits = 0;
    if (!from.empty())
      for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + from.size()))
        ++hits;
    in.check_size(s.size() + hits * to.size());
    Value method = get_attribute(Value::from_string(s), "replace");
    CallArgs m;
    m.positional = {Value::from_string(from), Value::from_string(to),
                    count.is_none() ? Value::from_int(-1) : count};
    return in.call(method, m);
  }
  if (name == "tojson") {
    JsonDumpOptions o;
    o.ensure_ascii = a.get(0, "ensure_ascii", Value::from_bool(false)).truthy();
    Value indent = a.get(1, "indent", Value::none());
    if (indent.is_number())
      o.indent = static_cast<int>(std::max<int64_t>(0, indent.as_int()));
    else if (indent.is_string())
      fail("tojson: string indents are not supported");
    Value seps = a.get(2, "separators", Value::none());
    if (seps.is_list() && seps.list->size() == 2) {
      o.custom_separators = true;
      o.item_separator = to_str((*seps.list)[0]);
      o.key_separator = to_str((*seps.list)[1]);
    }
    o.sort_keys = a.get(3, "sort_keys", Value::from_bool(false)).truthy();
    std::string out = json_dumps(v, o);
    in.check_size(out.size());
    return Value::from_string(out);
  }
  if (name == "int")
    return Value::from_int(to_int(v, a.get(0, "default", Value::from_int(0)).as_int()));
  if (name == "float") {
    if (v.is_number()) return Value::from_float(v.as_double());
    if (v.is_string()) {
      try {
        size_t used = 0;
        std::string t = python_strip(v.text, true, true, Value::none());
        double d = std::stod(t, &used);
        if (used == t.size()) return Value::from_float(d);
      } catch (...) {
      }
    }
    Value def = a.get(0, "default", Value::from_float(0.0));
    return def;
  }
  if (name == "abs") {
    if (v.kind == K::Float) return Value::from_float(std::fabs(v.real));
    if (v.is_number()) return Value::from_int(std::llabs(v.as_int()));
    fail("bad operand type for abs(): '{}'", v.type_name());
  }
  if (name == "round") {
    int64_t precision = a.get(0, "precision", Value::from_int(0)).as_int();
    std::string method = to_str(a.get(1, "method", Value::from_string("common")));
    double scale = std::pow(10.0, static_cast<double>(precision));
    double x = v.as_double() * scale;
    double r = method == "ceil" ? std::ceil(x) : method == "floor" ? std::floor(x) : std::round(x);
    return Value::from_float(r / scale);
  }
  if (name == "list") return Value::new_list(iterate(v));
  if (name == "items") {
    if (v.is_undefined()) return Value::new_list();
    if (!v.is_dict())
      fail("items filter: can only get item pairs from a mapping, not {}", v.type_name());
    ValueList out;
    for (const auto& [k, val] : v.dict->entries) out.push_back(Value::new_tuple({k, val}));
    return Value::new_list(std::move(out));
  }
  if (name == "dictsort") {
    if (!v.is_dict()) fail("dictsort expects a mapping, got {}", v.type_name());
    bool case_sensitive = a.get(0, "case_sensitive", Value::from_bool(false)).truthy();
    std::string by = to_str(a.get(1, "by", Value::from_string("key")));
    bool reverse = a.get(2, "reverse", Value::from_bool(false)).truthy();
    ValueList pairs;
    for (const auto& [k, val] : v.dict->entries) pairs.push_back(Value::new_tuple({k, val}));
    return sort_values(std::move(pairs), reverse, case_sensitive,
                       Value::from_int(by == "value" ? 1 : 0));
  }
  if (name == "sort") {
    return sort_values(iterate(v), a.get(0, "reverse", Value::from_bool(false)).truthy(),
                       a.get(1, "case_sensitive", Value::from_bool(false)).truthy(),
                       a.get(2, "attribute"));
  }
  if (name == "reverse") {
    if (v.is_string()) {
      auto chars = utf8_chars(v.text);
      std::string out;
      for (auto it = chars.rbegin(); it != chars.rend(); ++it) out += *it;
      return Value::from_string(out);
    }
    ValueList items = iterate(v);
    std::reverse(items.begin(), items.end());
    return Value::new_list(std::move(items));
  }
  if (name == "unique") {
    bool case_sensitive = a.get(0, "case_sensitive", Value::from_bool(false)).truthy();
    Value attribute = a.get(1, "attribute");
    ValueList out, seen;
    for (const auto& item : iterate(v)) {
      Value key = attribute.is_undefined() ? item : resolve_attribute(item, attribute);
      if (!case_sensitive && key.is_string()) key = Value::from_string(lower_text(key.text));
      bool dup = false;
      for (const auto& s : seen) dup = dup || values_equal(s, key);
      if (!dup) {
        seen.push_back(key);
        out.push_back(item);
      }
    }
    return Value::new_list(std::move(out));
  }
  if (name == "min" || name == "max" || name == "sum") {
    ValueList items = iterate(v);
    Value attribute = a.get(name == "sum" ? 0 : 1, "attribute");
    if (!attribute.is_undefined())
      for (auto& item : items) item = resolve_attribute(item, attribute);
    if (name == "sum") {
      Value total = a.get(1, "start", Value::from_int(0));
      for (const auto& item : items) total = binary_op(in, "+", total, item);
      return total;
    }
    if (items.empty()) return Value::undefined();
    Value best = items[0];
    for (const auto& item : items)
      if ((name == "min") ? python_compare(item, best) < 0 : python_compare(item, best) > 0)
        best = item;
    return best;
  }
  if (name == "indent") {
    Value width = a.get(0, "width", Value::from_int(4));
    std::string pad =
        width.is_string()
            ? width.text
            : std::string(static_cast<size_t>(std::max<int64_t>(0, width.as_int())), ' ');
    std::string out =
        indent_text(to_str(v), pad, a.get(1, "first", Value::from_bool(false)).truthy(),
                    a.get(2, "blank", Value::from_bool(false)).truthy());
    in.check_size(out.size());
    return Value::from_string(out);
  }
  if (name == "batch") {
    int64_t size = a.get(0, "linecount").as_int();
    if (size <= 0) fail("batch size must be positive");
    Value fill = a.get(1, "fill_with", Value::none());
    ValueList out, cur;
    for (const auto& item : iterate(v)) {
      cur.push_back(item);
      if (static_cast<int64_t>(cur.size()) == size) {
        out.push_back(Value::new_list(std::move(cur)));
        cur.clear();
      }
    }
    if (!cur.empty()) {
      if (!fill.is_none())
        while (static_cast<int64_t>(cur.size()) < size) cur.push_back(fill);
      out.push_back(Value::new_list(std::move(cur)));
    }
    return Value::new_list(std::move(out));
  }
  if (name == "map") {
    ValueList out;
    const Value* attribute = a.keyword_arg("attribute");
    for (const auto& item : iterate(v)) {
      if (attribute) {
        Value r = resolve_attribute(item, *attribute);
        if (r.is_undefined())
          if (const Value* def = a.keyword_arg("default")) r = *def;
        out.push_back(r);
      } else {
        if (a.positional.empty()) fail("map: no filter or attribute given");
        out.push_back(apply_filter(in, to_str(a.positional[0]), item, rest_args(a, 1)));
      }
    }
    return Value::new_list(std::move(out));
  }
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    bool by_attr = name == "selectattr" || name == "rejectattr";
    bool keep_when = name == "select" || name == "selectattr";
    size_t test_index = by_attr ? 1 : 0;
    ValueList out;
    for (const auto& item : iterate(v)) {
      Value subject = by_attr ? resolve_attribute(item, a.get(0, "attribute")) : item;
      bool r = a.positional.size() > test_index ? apply_test(in, to_str(a.positional[test_index]),
                                                             subject, rest_args(a, test_index + 1))
                                                : subject.truthy();
      if (r == keep_when) out.push_back(item);
    }
    return Value::new_list(std::move(out));
  }
  if (name == "e" || name == "escape" || name == "forceescape") {
    std::string out;
    for (char c : to_str(v)) {
      switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&#34;"; break;
        case '\'': out += "&#39;"; break;
        default: out += c;
      }
    }
    return Value::from_string(out);
  }
  if (name == "wordcount") {
    Value parts = in.call(get_attribute(Value::from_string(to_str(v)), "split"), CallArgs{});
    return Value::from_int(static_cast<int64_t>(parts.list->size()));
  }
  need_defined();
  fail("no filter named '{}'", name);
}

void install_globals(Interpreter& in, Scope& globals) {
  globals["raise_exception"] = make_callable("raise_exception", [](const CallArgs& a) -> Value {
    throw RaisedError(to_str(a.get(0, "message")));
  });
  std::time_t now = in.now();
  globals["strftime_now"] = make_callable("strftime_now", [now](const CallArgs& a) {
    std::string format = to_str(a.get(0, "format"));
    std::tm tm{};
    localtime_r(&now, &tm);
    char buf[512];
    size_t n = format.empty() ? 0 : std::strftime(buf, sizeof(buf), format.c_str(), &tm);
    if (n == 0 && !format.empty()) fail("strftime_now: format too long or empty result");
    return Value::from_string(std::string(buf, n));
  });
  globals["namespace"] = make_callable("namespace", [](const CallArgs& a) {
    Value v;
    v.kind = Value::Kind::Namespace;
    v.ns = std::make_shared<Namespace>();
    for (const auto& p : a.positional) {
      if (!p.is_dict()) fail("namespace() positional argument must be a mapping");
      for (const auto& [k, val] : p.dict->entries) v.ns->set(to_str(k), val);
    }
    for (const auto& [k, val] : a.keyword) {
      if (!k.empty() && k[0] == '_')
        fail(
            "Chat templates cannot store underscore-prefixed attributes on a namespace, but got "
            "'{}'",
            k);
      v.ns->set(k, val);
    }
    return v;
  });
  globals["dict"] = make_callable("dict", [](const CallArgs& a) {
    Value d = Value::new_dict();
    for (const auto& p : a.positional) {
      if (p.is_dict()) {
        for (const auto& [k, val] : p.dict->entries) d.dict->set(k, val);
      } else {
        for (const auto& pair : iterate(p)) {
          ValueList kv = iterate(pair);
          if (kv.size() != 2) fail("dict() sequence elements must have length 2");
          d.dict->set(kv[0], kv[1]);
        }
      }
    }
    for (const auto& [k, val] : a.keyword) d.dict->set(Value::from_string(k), val);
    return d;
  });
  Interpreter* self = &in;
  globals["range"] = make_callable("range", [self](const CallArgs& a) {
    int64_t start = 0, stop = 0, step = 1;
    for (const auto& p : a.positional)
      if (!p.is_number() || p.kind == Value::Kind::Float)
        fail("range() arguments must be integers");
    if (a.positional.size() == 1) {
      stop = a.positional[0].as_int();
    } else if (a.positional.size() >= 2) {
      start = a.positional[0].as_int();
      stop = a.positional[1].as_int();
      if (a.positional.size() > 2) step = a.positional[2].as_int();
    } else {
      fail("range expected at least 1 argument");
    }
    if (step == 0) fail("range() arg 3 must not be zero");
    ValueList out;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      self->count_iteration();
      out.push_back(Value::from_int(i));
    }
    return Value::new_list(std::move(out));
  });
}

}  // namespace nibble::jinja
