#pragma once
// The parsed form of a template: expressions and statements, each remembering its
// line:column so runtime errors can point at the template source.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/jinja/value.h"

namespace nibble::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct ArgExprs {
  std::vector<ExprPtr> positional;
  std::vector<std::pair<std::string, ExprPtr>> keyword;
};

struct Expr {
  enum class Kind {
    Literal,
    Name,
    List,
    Tuple,
    Dict,
    Attr,
    Item,
    Slice,
    Call,
    Filter,
    Test,
    Neg,
    Pos,
    Not,
    And,
    Or,
    Binary,
    Compare,
    Cond
  };
  Kind kind;
  int line = 0, column = 0;
  std::string name;            // Name, Attr, Filter/Test name, Binary/Compare operator
  Value literal;               // Literal
  std::vector<ExprPtr> items;  // List/Tuple items, Dict keys/values interleaved
  ArgExprs args;               // Call, Filter, Test
  bool negated = false;        // `is not`
  ExprPtr a, b, c;             // operands; Slice: a=target, items = start/stop/step (may be null)
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

struct Node {
  enum class Kind {
    Text,
    Output,
    If,
    For,
    Set,
    SetBlock,
    Macro,
    CallBlock,
    Break,
    Continue,
    FilterBlock,
    Scope
  };
  Kind kind;
  int line = 0, column = 0;
  std::string text;                  // Text; Set/Macro name; FilterBlock filter name
  std::string attr;                  // Set: `ns.attr = ...`
  std::vector<std::string> targets;  // For/Set unpacking targets
  ExprPtr expr;                      // Output, Set value, For iterable, CallBlock call
  ExprPtr filter;                    // For: inline `if` filter
  std::vector<std::pair<ExprPtr, Body>> branches;  // If: condition/body pairs
  Body body, else_body;
  std::vector<std::pair<std::string, ExprPtr>> params;  // Macro / CallBlock caller params
  ArgExprs filter_args;                                 // FilterBlock
};

}  // namespace nibble::jinja
