#include "tokenizer/jinja/parser.h"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <set>

#include "core/error.h"
#include "tokenizer/jinja/lexer.h"

namespace nibble::jinja {
namespace {

using TK = Token::Kind;

class Parser {
 public:
  Parser(std::vector<Token> tokens, size_t max_depth)
      : tokens_(std::move(tokens)), max_depth_(max_depth) {}

  Body parse_all() {
    std::string end;
    Body body = parse_body({}, end);
    return body;
  }

 private:
  std::vector<Token> tokens_;
  size_t pos_ = 0;
  size_t depth_ = 0;
  size_t max_depth_;

  struct DepthGuard {
    Parser& p;
    explicit DepthGuard(Parser& parser) : p(parser) {
      if (++p.depth_ > p.max_depth_) p.error(p.cur(), "template nesting is too deep");
    }
    ~DepthGuard() { --p.depth_; }
  };

  const Token& cur() const { return tokens_[pos_]; }
  const Token& peek(size_t n = 1) const { return tokens_[std::min(pos_ + n, tokens_.size() - 1)]; }
  const Token& next() { return tokens_[pos_ < tokens_.size() - 1 ? pos_++ : pos_]; }
  [[noreturn]] void error(const Token& t, const std::string& msg) const {
    fail("chat template syntax error at {}:{}: {}", t.line, t.column, msg);
  }
  static std::string describe(const Token& t) {
    switch (t.kind) {
      case TK::Eof: return "end of template";
      case TK::BlockEnd: return "'%}'";
      case TK::VarEnd: return "'}}'";
      case TK::Text: return "text";
      case TK::String: return "string";
      default: return "'" + t.text + "'";
    }
  }
  bool is_op(const std::string& op) const { return cur().kind == TK::Op && cur().text == op; }
  bool is_name(const std::string& n) const { return cur().kind == TK::Name && cur().text == n; }
  bool skip_op(const std::string& op) {
    if (!is_op(op)) return false;
    ++pos_;
    return true;
  }
  bool skip_name(const std::string& n) {
    if (!is_name(n)) return false;
    ++pos_;
    return true;
  }
  void expect_op(const std::string& op) {
    if (!skip_op(op)) error(cur(), "expected '" + op + "', got " + describe(cur()));
  }
  std::string expect_name() {
    if (cur().kind != TK::Name) error(cur(), "expected a name, got " + describe(cur()));
    return next().text;
  }
  void expect_block_end() {
    if (cur().kind != TK::BlockEnd) error(cur(), "expected '%}', got " + describe(cur()));
    ++pos_;
  }

  ExprPtr make(Expr::Kind kind, const Token& at) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = at.line;
    e->column = at.column;
    return e;
  }
  NodePtr make_node(Node::Kind kind, const Token& at) {
    auto n = std::make_unique<Node>();
    n->kind = kind;
    n->line = at.line;
    n->column = at.column;
    return n;
  }

  // Parses nodes until a `{% name %}` with name in `ends`; leaves pos_ after that name.
  Body parse_body(const std::set<std::string>& ends, std::string& found_end) {
    DepthGuard guard(*this);
    Body body;
    while (true) {
      const Token& t = cur();
      if (t.kind == TK::Eof) {
        if (!ends.empty())
          error(t, "unexpected end of template, expected one of: " + join_names(ends));
        return body;
      }
      if (t.kind == TK::Text) {
        auto n = make_node(Node::Kind::Text, t);
        n->text = t.text;
        body.push_back(std::move(n));
        ++pos_;
      } else if (t.kind == TK::VarBegin) {
        ++pos_;
        auto n = make_node(Node::Kind::Output, t);
        n->expr = parse_tuple_or_expr();
        if (cur().kind != TK::VarEnd) error(cur(), "expected '}}', got " + describe(cur()));
        ++pos_;
        body.push_back(std::move(n));
      } else if (t.kind == TK::BlockBegin) {
        const Token& name = peek();
        if (name.kind != TK::Name) error(name, "expected a statement name");
        if (ends.count(name.text)) {
          pos_ += 2;
          found_end = name.text;
          return body;
        }
        pos_ += 2;
        body.push_back(parse_statement(name));
      } else {
        error(t, "unexpected " + describe(t));
      }
    }
  }

  static std::string join_names(const std::set<std::string>& names) {
    std::string out;
    for (const auto& n : names) out += (out.empty() ? "'" : ", '") + n + "'";
    return out;
  }

  NodePtr parse_statement(const Token& name) {
    const std::string& s = name.text;
    if (s == "if") return parse_if(name);
    if (s == "for") return parse_for(name);
    if (s == "set") return parse_set(name);
    if (s == "macro") return parse_macro(name);
    if (s == "call") return parse_call_block(name);
    if (s == "filter") return parse_filter_block(name);
    if (s == "break" || s == "continue") {
      expect_block_end();
      return make_node(s == "break" ? Node::Kind::Break : Node::Kind::Continue, name);
    }
    if (s == "generation") {  // transformers' assistant-mask extension: renders its body
      expect_block_end();
      auto n = make_node(Node::Kind::Scope, name);
      std::string end;
      n->body = parse_body({"endgeneration"}, end);
      expect_block_end();
      return n;
    }
    if (s == "include" || s == "import" || s == "from" || s == "extends" || s == "block")
      error(name, "'" + s + "' is not supported: chat templates cannot load other templates");
    error(name, "unknown statement '" + s + "'");
  }

  NodePtr parse_if(const Token& at) {
    auto n = make_node(Node::Kind::If, at);
    ExprPtr cond = parse_tuple_or_expr();
    expect_block_end();
    while (true) {
      std::string end;
      Body body = parse_body({"elif", "else", "endif"}, end);
      n->branches.emplace_back(std::move(cond), std::move(body));
      if (end == "elif") {
        cond = parse_tuple_or_expr();
        expect_block_end();
        continue;
      }
      if (end == "else") {
        expect_block_end();
        n->else_body = parse_body({"endif"}, end);
      }
      expect_block_end();
      return n;
    }
  }

  std::vector<std::string> parse_targets() {
    std::vector<std::string> targets;
    bool paren = skip_op("(");
    do {
      targets.push_back(expect_name());
    } while (skip_op(","));
    if (paren) expect_op(")");
    return targets;
  }

  NodePtr parse_for(const Token& at) {
    auto n = make_node(Node::Kind::For, at);
    n->targets = parse_targets();
    if (!skip_name("in")) error(cur(), "expected 'in', got " + describe(cur()));
    n->expr = parse_tuple_or_expr(/*allow_cond=*/false);
    if (skip_name("if")) n->filter = parse_expression();
    if (is_name("recursive")) error(cur(), "recursive loops are not supported");
    expect_block_end();
    std::string end;
    n->body = parse_body({"else", "endfor"}, end);
    if (end == "else") {
      expect_block_end();
      n->else_body = parse_body({"endfor"}, end);
    }
    expect_block_end();
    return n;
  }

  NodePtr parse_set(const Token& at) {
    std::string first = expect_name();
    if (skip_op(".")) {
      auto n = make_node(Node::Kind::Set, at);
      n->text = first;
      n->attr = expect_name();
      expect_op("=");
      n->expr = parse_tuple_or_expr();
      expect_block_end();
      return n;
    }
    std::vector<std::string> targets{first};
    while (skip_op(",")) targets.push_back(expect_name());
    if (cur().kind == TK::BlockEnd && targets.size() == 1) {
      ++pos_;
      auto n = make_node(Node::Kind::SetBlock, at);
      n->text = first;
      std::string end;
      n->body = parse_body({"endset"}, end);
      expect_block_end();
      return n;
    }
    expect_op("=");
    auto n = make_node(Node::Kind::Set, at);
    n->targets = std::move(targets);
    n->text = first;
    n->expr = parse_tuple_or_expr();
    expect_block_end();
    return n;
  }

  void parse_params(std::vector<std::pair<std::string, ExprPtr>>& params) {
    expect_op("(");
    while (!is_op(")")) {
      if (!params.empty()) expect_op(",");
      if (is_op(")")) break;
      std::string name = expect_name();
      ExprPtr def;
      if (skip_op("=")) def = parse_expression();
      params.emplace_back(name, std::move(def));
    }
    expect_op(")");
  }

  NodePtr parse_macro(const Token& at) {
    auto n = make_node(Node::Kind::Macro, at);
    n->text = expect_name();
    parse_params(n->params);
    expect_block_end();
    std::string end;
    n->body = parse_body({"endmacro"}, end);
    if (cur().kind == TK::Name) ++pos_;  // `{% endmacro name %}`
    expect_block_end();
    return n;
  }

  NodePtr parse_call_block(const Token& at) {
    auto n = make_node(Node::Kind::CallBlock, at);
    if (is_op("(")) parse_params(n->params);
    n->expr = parse_expression();
    if (n->expr->kind != Expr::Kind::Call) error(at, "expected a call after 'call'");
    expect_block_end();
    std::string end;
    n->body = parse_body({"endcall"}, end);
    expect_block_end();
    return n;
  }

  NodePtr parse_filter_block(const Token& at) {
    auto n = make_node(Node::Kind::FilterBlock, at);
    n->text = expect_name();
    if (is_op("(")) parse_call_args(n->filter_args);
    expect_block_end();
    std::string end;
    n->body = parse_body({"endfilter"}, end);
    expect_block_end();
    return n;
  }

  // ---- expressions (precedence as in jinja2's parser) ----

  ExprPtr parse_tuple_or_expr(bool allow_cond = true) {
    const Token& at = cur();
    ExprPtr first = allow_cond ? parse_expression() : parse_or();
    if (!is_op(",")) return first;
    auto t = make(Expr::Kind::Tuple, at);
    t->items.push_back(std::move(first));
    while (skip_op(",")) {
      if (cur().kind == TK::BlockEnd || cur().kind == TK::VarEnd || is_op(")")) break;
      t->items.push_back(allow_cond ? parse_expression() : parse_or());
    }
    return t;
  }

  ExprPtr parse_expression() {
    DepthGuard guard(*this);
    const Token& at = cur();
    ExprPtr expr = parse_or();
    while (skip_name("if")) {
      auto cond = make(Expr::Kind::Cond, at);
      cond->b = parse_or();
      cond->a = std::move(expr);
      if (skip_name("else")) cond->c = parse_expression();
      expr = std::move(cond);
    }
    return expr;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (is_name("or")) {
      auto e = make(Expr::Kind::Or, next());
      e->a = std::move(left);
      e->b = parse_and();
      left = std::move(e);
    }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (is_name("and")) {
      auto e = make(Expr::Kind::And, next());
      e->a = std::move(left);
      e->b = parse_not();
      left = std::move(e);
    }
    return left;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      DepthGuard guard(*this);
      auto e = make(Expr::Kind::Not, next());
      e->a = parse_not();
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    const Token& at = cur();
    ExprPtr left = parse_math1();
    static const std::set<std::string> kOps{"==", "!=", "<", "<=", ">", ">="};
    while (true) {
      std::string op;
      if (cur().kind == TK::Op && kOps.count(cur().text)) {
        op = next().text;
      } else if (is_name("in")) {
        ++pos_;
        op = "in";
      } else if (is_name("not") && peek().kind == TK::Name && peek().text == "in") {
        pos_ += 2;
        op = "not in";
      } else {
        return left;
      }
      auto e = make(Expr::Kind::Compare, at);
      e->name = op;
      e->a = std::move(left);
      e->b = parse_math1();
      left = std::move(e);
    }
  }

  ExprPtr binary(const std::string& op, ExprPtr left, ExprPtr right, const Token& at) {
    auto e = make(Expr::Kind::Binary, at);
    e->name = op;
    e->a = std::move(left);
    e->b = std::move(right);
    return e;
  }

  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      const Token& op = next();
      left = binary(op.text, std::move(left), parse_concat(), op);
    }
    return left;
  }

  ExprPtr parse_concat() {
    ExprPtr left = parse_math2();
    while (is_op("~")) {
      const Token& op = next();
      left = binary("~", std::move(left), parse_math2(), op);
    }
    return left;
  }

  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& op = next();
      left = binary(op.text, std::move(left), parse_pow(), op);
    }
    return left;
  }

  ExprPtr parse_pow() {
    ExprPtr left = parse_unary(true);
    while (is_op("**")) {
      const Token& op = next();
      left = binary("**", std::move(left), parse_unary(true), op);
    }
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
    DepthGuard guard(*this);
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      const Token& op = next();
      node = make(op.text == "-" ? Expr::Kind::Neg : Expr::Kind::Pos, op);
      node->a = parse_unary(false);
    } else {
      node = parse_postfix(parse_primary());
    }
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    switch (t.kind) {
      case TK::Name: {
        ++pos_;
        if (t.text == "true" || t.text == "True") return literal(Value::from_bool(true), t);
        if (t.text == "false" || t.text == "False") return literal(Value::from_bool(false), t);
        if (t.text == "none" || t.text == "None") return literal(Value::none(), t);
        auto e = make(Expr::Kind::Name, t);
        e->name = t.text;
        return e;
      }
      case TK::String: {
        std::string s;
        while (cur().kind == TK::String) s += next().text;  // adjacent literals concatenate
        return literal(Value::from_string(std::move(s)), t);
      }
      case TK::Int: {
        ++pos_;
        int64_t v = 0;
        auto res = std::from_chars(t.text.data(), t.text.data() + t.text.size(), v);
        if (res.ec != std::errc()) error(t, "integer literal out of range: " + t.text);
        return literal(Value::from_int(v), t);
      }
      case TK::Float: {
        ++pos_;
        // strtod, not stod: 1e999 is inf in Python, and stod would throw out_of_range.
        return literal(Value::from_float(std::strtod(t.text.c_str(), nullptr)), t);
      }
      case TK::Op:
        if (t.text == "(") {
          ++pos_;
          if (skip_op(")")) return make(Expr::Kind::Tuple, t);
          ExprPtr inner = parse_tuple_or_expr();
          expect_op(")");
          return inner;
        }
        if (t.text == "[") {
          ++pos_;
          auto e = make(Expr::Kind::List, t);
          while (!is_op("]")) {
            if (!e->items.empty()) expect_op(",");
            if (is_op("]")) break;
            e->items.push_back(parse_expression());
          }
          expect_op("]");
          return e;
        }
        if (t.text == "{") {
          ++pos_;
          auto e = make(Expr::Kind::Dict, t);
          while (!is_op("}")) {
            if (!e->items.empty()) expect_op(",");
            if (is_op("}")) break;
            e->items.push_back(parse_expression());
            expect_op(":");
            e->items.push_back(parse_expression());
          }
          expect_op("}");
          return e;
        }
        break;
      default: break;
    }
    error(t, "unexpected " + describe(t));
  }

  ExprPtr literal(Value v, const Token& at) {
    auto e = make(Expr::Kind::Literal, at);
    e->literal = std::move(v);
    return e;
  }

  void parse_call_args(ArgExprs& args) {
    expect_op("(");
    while (!is_op(")")) {
      if (!args.positional.empty() || !args.keyword.empty()) expect_op(",");
      if (is_op(")")) break;
      if (is_op("*") || is_op("**")) error(cur(), "*args and **kwargs are not supported");
      if (cur().kind == TK::Name && peek().kind == TK::Op && peek().text == "=") {
        std::string name = next().text;
        ++pos_;
        args.keyword.emplace_back(name, parse_expression());
      } else {
        if (!args.keyword.empty()) error(cur(), "positional argument follows keyword argument");
        args.positional.push_back(parse_expression());
      }
    }
    expect_op(")");
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      const Token& t = cur();
      if (is_op(".")) {
        ++pos_;
        auto e = make(Expr::Kind::Attr, t);
        if (cur().kind == TK::Int) {
          e->kind = Expr::Kind::Item;
          const Token& index = next();
          int64_t v = 0;
          const auto res =
              std::from_chars(index.text.data(), index.text.data() + index.text.size(), v);
          if (res.ec != std::errc()) error(index, "integer index out of range: " + index.text);
          e->b = literal(Value::from_int(v), t);
        } else {
          e->name = expect_name();
        }
        e->a = std::move(node);
        node = std::move(e);
      } else if (is_op("[")) {
        ++pos_;
        node = parse_subscript(std::move(node), t);
      } else if (is_op("(")) {
        auto e = make(Expr::Kind::Call, t);
        parse_call_args(e->args);
        e->a = std::move(node);
        node = std::move(e);
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr target, const Token& at) {
    ExprPtr parts[3];
    int part = 0;
    bool is_slice = false;
    while (!is_op("]")) {
      if (is_op(":")) {
        ++pos_;
        is_slice = true;
        if (++part > 2) error(cur(), "too many ':' in slice");
        continue;
      }
      if (parts[part]) error(cur(), "expected ']' or ':', got " + describe(cur()));
      parts[part] = parse_expression();
    }
    expect_op("]");
    if (!is_slice) {
      if (!parts[0]) error(at, "empty subscript");
      auto e = make(Expr::Kind::Item, at);
      e->a = std::move(target);
      e->b = std::move(parts[0]);
      return e;
    }
    auto e = make(Expr::Kind::Slice, at);
    e->a = std::move(target);
    for (auto& p : parts) e->items.push_back(std::move(p));
    return e;
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      const Token& t = cur();
      if (is_op("|")) {
        ++pos_;
        auto e = make(Expr::Kind::Filter, t);
        e->name = expect_name();
        while (skip_op(".")) e->name += "." + expect_name();
        if (is_op("(")) parse_call_args(e->args);
        e->a = std::move(node);
        node = std::move(e);
      } else if (is_name("is")) {
        ++pos_;
        auto e = make(Expr::Kind::Test, t);
        e->negated = skip_name("not");
        e->name = expect_name();
        if (is_op("(")) {
          parse_call_args(e->args);
        } else if ((cur().kind == TK::Name || cur().kind == TK::String || cur().kind == TK::Int ||
                    cur().kind == TK::Float || is_op("[") || is_op("{")) &&
                   !(is_name("else") || is_name("or") || is_name("and"))) {
          if (is_name("is")) error(cur(), "you cannot chain multiple tests with 'is'");
          e->args.positional.push_back(parse_postfix(parse_primary()));
        }
        e->a = std::move(node);
        node = std::move(e);
      } else if (is_op("(")) {
        auto e = make(Expr::Kind::Call, t);
        parse_call_args(e->args);
        e->a = std::move(node);
        node = std::move(e);
      } else {
        return node;
      }
    }
  }
};

}  // namespace

Body parse_template(const std::string& source, size_t max_depth) {
  return Parser(tokenize(source), max_depth).parse_all();
}

}  // namespace nibble::jinja
