#include "tokenizer/jinja/interpreter.h"

#include <fmt/format.h>

namespace nibble::jinja {

namespace {
[[noreturn]] void rethrow_located(int line, int column) {
  try {
    throw;
  } catch (const RaisedError&) {
    throw;
  } catch (const LocatedError&) {
    throw;
  } catch (const Error& e) {
    throw LocatedError(fmt::format("chat template error at {}:{}: {}", line, column, e.what()));
  }
}
}  // namespace

void Interpreter::check_size(size_t bytes) const {
  if (bytes > limits_.max_output_bytes)
    fail("output exceeds the limit of {} bytes", limits_.max_output_bytes);
}

void Interpreter::count_iteration() {
  if (++iterations_ > limits_.max_loop_iterations)
    fail("loop iterations exceed the limit of {}", limits_.max_loop_iterations);
}

void Interpreter::append(std::string& out, const std::string& s) const {
  check_size(out.size() + s.size());
  out += s;
}

std::string Interpreter::render(const Body& body, const Value& context) {
  install_globals(*this, globals_);
  auto top = std::make_shared<Scope>();
  if (context.is_dict())
    for (const auto& [k, v] : context.dict->entries) (*top)[to_str(k)] = v;
  Frame frame{top};
  std::string out;
  struct ReleaseMacros {
    std::vector<std::shared_ptr<Callable>>& macros;
    ~ReleaseMacros() {
      for (auto& m : macros) m->call = nullptr;
      macros.clear();
    }
  } release{macros_};
  exec(body, frame, out);
  return out;
}

Value Interpreter::lookup(const std::string& name, const Frame& frame) const {
  for (auto it = frame.rbegin(); it != frame.rend(); ++it) {
    auto found = (*it)->find(name);
    if (found != (*it)->end()) return found->second;
  }
  auto g = globals_.find(name);
  if (g != globals_.end()) return g->second;
  return Value::undefined(name);
}

void Interpreter::assign(Frame& frame, const std::string& name, Value v) {
  (*frame.back())[name] = std::move(v);
}

Interpreter::Flow Interpreter::exec(const Body& body, Frame& frame, std::string& out) {
  for (const auto& node : body) {
    Flow f = exec_node(*node, frame, out);
    if (f != Flow::Normal) return f;
  }
  return Flow::Normal;
}

Interpreter::Flow Interpreter::exec_node(const Node& node, Frame& frame, std::string& out) {
  try {
    switch (node.kind) {
      case Node::Kind::Text: append(out, node.text); return Flow::Normal;
      case Node::Kind::Output: append(out, to_str(eval(*node.expr, frame))); return Flow::Normal;
      case Node::Kind::If:
        for (const auto& [cond, body] : node.branches)
          if (eval(*cond, frame).truthy()) return exec(body, frame, out);
        return exec(node.else_body, frame, out);
      case Node::Kind::For: return exec_for(node, frame, out);
      case Node::Kind::Set: {
        Value v = eval(*node.expr, frame);
        if (!node.attr.empty()) {
          Value target = lookup(node.text, frame);
          if (target.kind != Value::Kind::Namespace)
            fail("can't assign attribute on non-namespace object '{}'", node.text);
          if (node.attr[0] == '_')
            fail("Chat templates cannot store underscore-prefixed attributes on a namespace");
          target.ns->set(node.attr, std::move(v));
        } else if (node.targets.size() == 1) {
          assign(frame, node.targets[0], std::move(v));
        } else {
          ValueList items = iterate(v);
          if (items.size() != node.targets.size())
            fail("cannot unpack {} values into {} names", items.size(), node.targets.size());
          for (size_t i = 0; i < items.size(); ++i) assign(frame, node.targets[i], items[i]);
        }
        return Flow::Normal;
      }
      case Node::Kind::SetBlock: {
        std::string captured;
        exec(node.body, frame, captured);
        assign(frame, node.text, Value::from_string(std::move(captured)));
        return Flow::Normal;
      }
      case Node::Kind::Macro:
        assign(frame, node.text, make_macro(node, frame));
        return Flow::Normal;
      case Node::Kind::CallBlock: {
        const Expr& call = *node.expr;
        Value callee = eval(*call.a, frame);
        CallArgs args = eval_args(call.args, frame);
        auto callee_frame = frame;
        const Node* caller_node = &node;
        auto caller = std::make_shared<Callable>();
        caller->name = "caller";
        caller->call = [this, caller_node, callee_frame](const CallArgs& a) mutable {
          Frame f = callee_frame;
          auto scope = std::make_shared<Scope>();
          for (size_t i = 0; i < caller_node->params.size(); ++i) {
            const auto& [pname, pdef] = caller_node->params[i];
            Value v = a.get(i, pname);
            if (v.is_undefined() && pdef) v = eval(*pdef, f);
            (*scope)[pname] = v;
          }
          f.push_back(scope);
          std::string s;
          exec(caller_node->body, f, s);
          return Value::from_string(s);
        };
        Value caller_value;
        caller_value.kind = Value::Kind::Callable;
        caller_value.func = caller;
        args.keyword.emplace_back("caller", caller_value);
        append(out, to_str(call_value_checked(callee, args)));
        return Flow::Normal;
      }
      case Node::Kind::FilterBlock: {
        std::string captured;
        exec(node.body, frame, captured);
        CallArgs args = eval_args(node.filter_args, frame);
        append(out, to_str(apply_filter(*this, node.text, Value::from_string(captured), args)));
        return Flow::Normal;
      }
      case Node::Kind::Scope: return exec(node.body, frame, out);
      case Node::Kind::Break: return Flow::Break;
      case Node::Kind::Continue: return Flow::Continue;
    }
  } catch (...) {
    rethrow_located(node.line, node.column);
  }
  return Flow::Normal;
}

Value Interpreter::call_value_checked(const Value& callee, const CallArgs& args) {
  return call(callee, args);
}

Interpreter::Flow Interpreter::exec_for(const Node& node, Frame& frame, std::string& out) {
  ValueList all = iterate(eval(*node.expr, frame));
  auto scope = std::make_shared<Scope>();
  frame.push_back(scope);
  struct Pop {
    Frame& f;
    ~Pop() { f.pop_back(); }
  } pop{frame};
  auto bind = [&](const Value& item) {
    if (node.targets.size() == 1) {
      (*scope)[node.targets[0]] = item;
      return;
    }
    ValueList parts = iterate(item);
    if (parts.size() != node.targets.size())
      fail("cannot unpack {} values into {} loop variables", parts.size(), node.targets.size());
    for (size_t i = 0; i < parts.size(); ++i) (*scope)[node.targets[i]] = parts[i];
  };
  ValueList items;
  if (node.filter) {
    for (const auto& item : all) {
      count_iteration();
      bind(item);
      if (eval(*node.filter, frame).truthy()) items.push_back(item);
    }
  } else {
    items = std::move(all);
  }
  if (items.empty()) {
    frame.pop_back();
    Flow f = exec(node.else_body, frame, out);
    frame.push_back(scope);
    return f == Flow::Normal ? Flow::Normal : f;
  }
  const int64_t n = static_cast<int64_t>(items.size());
  for (int64_t i = 0; i < n; ++i) {
    count_iteration();
    bind(items[i]);
    Value loop = Value::new_dict();
    auto& d = *loop.dict;
    d.set(Value::from_string("index"), Value::from_int(i + 1));
    d.set(Value::from_string("index0"), Value::from_int(i));
    d.set(Value::from_string("revindex"), Value::from_int(n - i));
    d.set(Value::from_string("revindex0"), Value::from_int(n - i - 1));
    d.set(Value::from_string("first"), Value::from_bool(i == 0));
    d.set(Value::from_string("last"), Value::from_bool(i == n - 1));
    d.set(Value::from_string("length"), Value::from_int(n));
    d.set(Value::from_string("depth"), Value::from_int(1));
    d.set(Value::from_string("depth0"), Value::from_int(0));
    d.set(Value::from_string("previtem"), i > 0 ? items[i - 1] : Value::undefined("previtem"));
    d.set(Value::from_string("nextitem"), i + 1 < n ? items[i + 1] : Value::undefined("nextitem"));
    auto cycle = std::make_shared<Callable>();
    cycle->name = "cycle";
    cycle->call = [i](const CallArgs& a) {
      if (a.positional.empty()) fail("no items for cycling given");
      return a.positional[static_cast<size_t>(i) % a.positional.size()];
    };
    Value cycle_value;
    cycle_value.kind = Value::Kind::Callable;
    cycle_value.func = cycle;
    d.set(Value::from_string("cycle"), cycle_value);
    (*scope)["loop"] = loop;
    Flow f = exec(node.body, frame, out);
    if (f == Flow::Break) break;
  }
  return Flow::Normal;
}

Value Interpreter::make_macro(const Node& node, const Frame& frame) {
  auto fn = std::make_shared<Callable>();
  macros_.push_back(fn);
  fn->name = node.text;
  const Node* macro = &node;
  Frame captured = frame;
  fn->call = [this, macro, captured](const CallArgs& a) {
    if (call_depth_ >= limits_.max_recursion_depth)
      fail("macro recursion exceeds the limit of {}", limits_.max_recursion_depth);
    ++call_depth_;
    struct Depth {
      size_t& d;
      ~Depth() { --d; }
    } depth{call_depth_};
    if (a.positional.size() > macro->params.size())
      fail("macro '{}' takes not more than {} argument(s)", macro->text, macro->params.size());
    Frame f = captured;
    auto scope = std::make_shared<Scope>();
    f.push_back(scope);
    for (size_t i = 0; i < macro->params.size(); ++i) {
      const auto& [pname, pdef] = macro->params[i];
      Value v = a.get(i, pname);
      if (v.is_undefined() && i >= a.positional.size() && !a.keyword_arg(pname) && pdef)
        v = eval(*pdef, f);
      if (v.is_undefined() && !v.text.size()) v.text = pname;
      (*scope)[pname] = v;
    }
    for (const auto& [k, v] : a.keyword) {
      bool known = k == "caller";
      for (const auto& p : macro->params) known = known || p.first == k;
      if (!known) fail("macro '{}' has no argument '{}'", macro->text, k);
      if (k == "caller") (*scope)["caller"] = v;
    }
    std::string s;
    exec(macro->body, f, s);
    return Value::from_string(std::move(s));
  };
  Value v;
  v.kind = Value::Kind::Callable;
  v.func = fn;
  return v;
}

Value Interpreter::call(const Value& callee, const CallArgs& args) {
  if (callee.kind != Value::Kind::Callable) {
    if (callee.is_undefined()) fail("'{}' is undefined", callee.text);
    fail("'{}' object is not callable", callee.type_name());
  }
  return callee.func->call(args);
}

CallArgs Interpreter::eval_args(const ArgExprs& args, Frame& frame) {
  CallArgs out;
  for (const auto& p : args.positional) out.positional.push_back(eval(*p, frame));
  for (const auto& [k, v] : args.keyword) out.keyword.emplace_back(k, eval(*v, frame));
  return out;
}

Value Interpreter::eval(const Expr& e, Frame& frame) {
  using K = Expr::Kind;
  switch (e.kind) {
    case K::Literal: return e.literal;
    case K::Name: return lookup(e.name, frame);
    case K::List:
    case K::Tuple: {
      ValueList items;
      for (const auto& item : e.items) items.push_back(eval(*item, frame));
      return e.kind == K::List ? Value::new_list(std::move(items))
                               : Value::new_tuple(std::move(items));
    }
    case K::Dict: {
      Value d = Value::new_dict();
      for (size_t i = 0; i + 1 < e.items.size(); i += 2)
        d.dict->set(eval(*e.items[i], frame), eval(*e.items[i + 1], frame));
      return d;
    }
    case K::Attr: return get_attribute(eval(*e.a, frame), e.name);
    case K::Item: return get_item(eval(*e.a, frame), eval(*e.b, frame));
    case K::Slice: {
      Value target = eval(*e.a, frame);
      ValueList parts;
      for (const auto& p : e.items) parts.push_back(p ? eval(*p, frame) : Value::none());
      CallArgs args;
      args.positional = std::move(parts);
      return apply_filter(*this, "__slice__", target, args);
    }
    case K::Call: {
      if (e.a->kind == K::Name && e.a->name == "caller" && lookup("caller", frame).is_undefined())
        fail("'caller' is undefined");
      Value callee = eval(*e.a, frame);
      return call(callee, eval_args(e.args, frame));
    }
    case K::Filter: {
      if (e.name == "default" || e.name == "d") {
        Value v = eval(*e.a, frame);
        return apply_filter(*this, e.name, v, eval_args(e.args, frame));
      }
      return apply_filter(*this, e.name, eval(*e.a, frame), eval_args(e.args, frame));
    }
    case K::Test: {
      bool r = apply_test(*this, e.name, eval(*e.a, frame), eval_args(e.args, frame));
      return Value::from_bool(e.negated ? !r : r);
    }
    case K::Neg:
    case K::Pos: {
      Value v = eval(*e.a, frame);
      if (!v.is_number())
        fail("bad operand type for unary {}: '{}'", e.kind == K::Neg ? '-' : '+', v.type_name());
      if (e.kind == K::Pos) return v.kind == Value::Kind::Float ? v : Value::from_int(v.as_int());
      if (v.kind == Value::Kind::Float) return Value::from_float(-v.real);
      return Value::from_int(-v.as_int());
    }
    case K::Not: return Value::from_bool(!eval(*e.a, frame).truthy());
    case K::And: {
      Value a = eval(*e.a, frame);
      return a.truthy() ? eval(*e.b, frame) : a;
    }
    case K::Or: {
      Value a = eval(*e.a, frame);
      return a.truthy() ? a : eval(*e.b, frame);
    }
    case K::Binary: return binary_op(*this, e.name, eval(*e.a, frame), eval(*e.b, frame));
    case K::Compare:
      return Value::from_bool(compare_op(e.name, eval(*e.a, frame), eval(*e.b, frame)));
    case K::Cond:
      if (eval(*e.b, frame).truthy()) return eval(*e.a, frame);
      return e.c ? eval(*e.c, frame) : Value::undefined();
  }
  return Value::undefined();
}

}  // namespace nibble::jinja
