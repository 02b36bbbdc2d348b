#pragma once
// Executes a parsed template against a context, with the sandbox's bounds.
#include <ctime>
#include <map>
#include <memory>
#include <string>

#include "core/error.h"
#include "tokenizer/jinja/ast.h"

namespace nibble::jinja {

struct Limits {
  size_t max_output_bytes;
  size_t max_loop_iterations;
  size_t max_recursion_depth;
};

// raise_exception() from the template: passed through to the caller unchanged.
class RaisedError : public Error {
 public:
  using Error::Error;
};
// An error that already names its template location.
class LocatedError : public Error {
 public:
  using Error::Error;
};

using Scope = std::map<std::string, Value>;
using Frame = std::vector<std::shared_ptr<Scope>>;

class Interpreter {
 public:
  Interpreter(const Limits& limits, std::time_t now) : limits_(limits), now_(now) {}
  std::string render(const Body& body, const Value& context);

  // Used by the builtins.
  void check_size(size_t bytes) const;
  void count_iteration();
  std::time_t now() const { return now_; }
  Value call(const Value& callee, const CallArgs& args);

 private:
  enum class Flow { Normal, Break, Continue };
  Limits limits_;
  std::time_t now_;
  size_t iterations_ = 0;
  size_t call_depth_ = 0;
  Scope globals_;
  // Macros capture the scopes they are defined in, which hold the macros: a reference cycle.
  // render() breaks it by dropping every macro's closure when it returns.
  std::vector<std::shared_ptr<Callable>> macros_;

  Flow exec(const Body& body, Frame& frame, std::string& out);
  Flow exec_node(const Node& node, Frame& frame, std::string& out);
  Flow exec_for(const Node& node, Frame& frame, std::string& out);
  Value eval(const Expr& e, Frame& frame);
  Value lookup(const std::string& name, const Frame& frame) const;
  void assign(Frame& frame, const std::string& name, Value v);
  CallArgs eval_args(const ArgExprs& args, Frame& frame);
  Value make_macro(const Node& node, const Frame& frame);
  Value call_value_checked(const Value& callee, const CallArgs& args);
  void append(std::string& out, const std::string& s) const;
};

// builtins.cc
Value get_attribute(const Value& obj, const std::string& name);
Value get_item(const Value& obj, const Value& key);
Value apply_filter(Interpreter& in, const std::string& name, const Value& v, const CallArgs& args);
bool apply_test(Interpreter& in, const std::string& name, const Value& v, const CallArgs& args);
Value binary_op(Interpreter& in, const std::string& op, const Value& a, const Value& b);
bool compare_op(const std::string& op, const Value& a, const Value& b);
ValueList iterate(const Value& v);
void install_globals(Interpreter& in, Scope& globals);

}  // namespace nibble::jinja
