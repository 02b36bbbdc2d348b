// Python's arithmetic, comparison and membership rules for template operators.
#include <cmath>

#include "tokenizer/jinja/interpreter.h"

namespace nibble::jinja {
namespace {

[[noreturn]] void type_error(const std::string& op, const Value& a, const Value& b) {
  if (a.is_undefined() || b.is_undefined()) {
    const Value& u = a.is_undefined() ? a : b;
    if (u.text.empty()) fail("unsupported operand: value is undefined");
    fail("'{}' is undefined", u.text);
  }
  fail("unsupported operand type(s) for {}: '{}' and '{}'", op, a.type_name(), b.type_name());
}

bool both_int(const Value& a, const Value& b) {
  return a.is_number() && b.is_number() && a.kind != Value::Kind::Float &&
         b.kind != Value::Kind::Float;
}

Value repeat(Interpreter& in, const Value& seq, int64_t n) {
  if (n <= 0) return seq.is_string() ? Value::from_string("") : Value::new_list();
  if (seq.is_string()) {
    in.check_size(seq.text.size() * static_cast<size_t>(n));
    std::string out;
    for (int64_t i = 0; i < n; ++i) out += seq.text;
    return Value::from_string(out);
  }
  in.check_size(seq.list->size() * static_cast<size_t>(n));
  ValueList out;
  for (int64_t i = 0; i < n; ++i) out.insert(out.end(), seq.list->begin(), seq.list->end());
  return Value::new_list(std::move(out));
}

int compare_values(const Value& a, const Value& b, const std::string& op) {
  if (a.is_number() && b.is_number()) {
    if (both_int(a, b)) return a.as_int() < b.as_int() ? -1 : a.as_int() > b.as_int() ? 1 : 0;
    double x = a.as_double(), y = b.as_double();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) return a.text < b.text ? -1 : a.text > b.text ? 1 : 0;
  if (a.is_list() && b.is_list()) {
    size_t n = std::min(a.list->size(), b.list->size());
    for (size_t i = 0; i < n; ++i)
      if (!values_equal((*a.list)[i], (*b.list)[i]))
        return compare_values((*a.list)[i], (*b.list)[i], op);
    return a.list->size() < b.list->size() ? -1 : a.list->size() > b.list->size() ? 1 : 0;
  }
  fail("'{}' not supported between instances of '{}' and '{}'", op, a.type_name(), b.type_name());
}

}  // namespace

int python_compare(const Value& a, const Value& b) { return compare_values(a, b, "<"); }

bool compare_op(const std::string& op, const Value& a, const Value& b) {
  if (op == "==") return values_equal(a, b);
  if (op == "!=") return !values_equal(a, b);
  if (op == "in" || op == "not in") {
    bool found = false;
    if (b.is_string()) {
      if (!a.is_string())
        fail("'in <string>' requires string as left operand, not {}", a.type_name());
      found = b.text.find(a.text) != std::string::npos;
    } else if (b.is_dict()) {
      found = b.dict->find(a) != nullptr;
    } else if (b.is_list()) {
      for (const auto& item : *b.list) found = found || values_equal(item, a);
    } else if (b.is_undefined()) {
      found = false;
    } else {
      fail("argument of type '{}' is not iterable", b.type_name());
    }
    return op == "in" ? found : !found;
  }
  int c = compare_values(a, b, op);
  if (op == "<") return c < 0;
  if (op == "<=") return c <= 0;
  if (op == ">") return c > 0;
  return c >= 0;
}

Value binary_op(Interpreter& in, const std::string& op, const Value& a, const Value& b) {
  if (op == "~") {
    std::string s = to_str(a);
    std::string t = to_str(b);
    in.check_size(s.size() + t.size());
    return Value::from_string(s + t);
  }
  if (op == "+") {
    if (both_int(a, b)) {
      int64_t r;
      if (__builtin_add_overflow(a.as_int(), b.as_int(), &r)) fail("integer overflow in +");
      return Value::from_int(r);
    }
    if (a.is_number() && b.is_number()) return Value::from_float(a.as_double() + b.as_double());
    if (a.is_string() && b.is_string()) {
      in.check_size(a.text.size() + b.text.size());
      return Value::from_string(a.text + b.text);
    }
    if (a.is_list() && b.is_list() && a.is_tuple == b.is_tuple) {
      ValueList out = *a.list;
      out.insert(out.end(), b.list->begin(), b.list->end());
      Value v = Value::new_list(std::move(out));
      v.is_tuple = a.is_tuple;
      return v;
    }
    type_error(op, a, b);
  }
  if (op == "*") {
    if (both_int(a, b)) {
      int64_t r;
      if (__builtin_mul_overflow(a.as_int(), b.as_int(), &r)) fail("integer overflow in *");
      return Value::from_int(r);
    }
    if (a.is_number() && b.is_number()) return Value::from_float(a.as_double() * b.as_double());
    if ((a.is_string() || a.is_list()) && b.is_number() && b.kind != Value::Kind::Float)
      return repeat(in, a, b.as_int());
    if ((b.is_string() || b.is_list()) && a.is_number() && a.kind != Value::Kind::Float)
      return repeat(in, b, a.as_int());
    type_error(op, a, b);
  }
  if (!a.is_number() || !b.is_number()) type_error(op, a, b);
  if (op == "-") {
    if (both_int(a, b)) {
      int64_t r;
      if (__builtin_sub_overflow(a.as_int(), b.as_int(), &r)) fail("integer overflow in -");
      return Value::from_int(r);
    }
    return Value::from_float(a.as_double() - b.as_double());
  }
  if (op == "/") {
    if (b.as_double() == 0) fail("division by zero");
    return Value::from_float(a.as_double() / b.as_double());
  }
  if (op == "//" || op == "%") {
    if (b.as_double() == 0)
      fail("{}", op == "%" ? "modulo by zero" : "integer division or modulo by zero");
    if (both_int(a, b)) {
      int64_t x = a.as_int(), y = b.as_int();
      int64_t q = x / y, r = x % y;
      if (r != 0 && ((r < 0) != (y < 0))) {
        --q;
        r += y;
      }
      return Value::from_int(op == "//" ? q : r);
    }
    double x = a.as_double(), y = b.as_double();
    double q = std::floor(x / y);
    return Value::from_float(op == "//" ? q : x - q * y);
  }
  if (op == "**") {
    if (both_int(a, b) && b.as_int() >= 0) {
      int64_t base = a.as_int(), e = b.as_int(), r = 1;
      if (base == 0 || base == 1) return Value::from_int(e == 0 ? 1 : base);
      if (base == -1) return Value::from_int(e % 2 ? -1 : 1);
      for (; e > 0; --e)
        if (__builtin_mul_overflow(r, base, &r)) fail("integer overflow in **");
      return Value::from_int(r);
    }
    return Value::from_float(std::pow(a.as_double(), b.as_double()));
  }
  fail("unknown operator {}", op);
}

}  // namespace nibble::jinja
