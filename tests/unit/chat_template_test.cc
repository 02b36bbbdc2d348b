// ChatTemplate: language features against outputs computed by Python's jinja2 in the
// environment transformers builds (trim_blocks, lstrip_blocks, loopcontrols, its tojson),
// sandbox limits, and syntax errors with line:column.
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "tokenizer/chat_template.h"

namespace nibble {
namespace {

std::string render(const std::string& source, const std::string& context_json,
                   ChatTemplateLimits limits = {}) {
  ChatTemplate tmpl(source, limits);
  return tmpl.render(nlohmann::ordered_json::parse(context_json));
}

std::string error_of(const std::string& source, const std::string& context_json = "{}",
                     ChatTemplateLimits limits = {}) {
  try {
    render(source, context_json, limits);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

struct JinjaCase {
  const char* source;
  const char* context;
  const char* expected;  // jinja2 3.1.6 via transformers' _cached_compile_jinja_template
};

const JinjaCase kCases[] = {
    {"{{ 1 }}|{{ 1.0 }}|{{ 2.5e20 }}|{{ 1e-5 }}|{{ true }}|{{ none }}|{{ [1, 'a', none, 1.5] }}|{{ "
     "{'k': 'v', 'n': [1]} }}",
     R"({})", "1|1.0|2.5e+20|1e-05|True|None|[1, 'a', None, 1.5]|{'k': 'v', 'n': [1]}"},
    {"{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 'ab' ~ 3 }} "
     "{{ 'x' * 3 }}",
     R"({})", "3 -4 1 2 3.5 1024 ab3 xxx"},
    {"{% for k, v in d.items() %}{{ loop.index }}{{ k }}={{ v }}{% if not loop.last %},{% endif "
     "%}{% endfor %}",
     R"({"d": {"b": 1, "a": 2}})", "1b=1,2a=2"},
    {"{% for x in xs if x is odd %}{{ x }}{{ loop.length }}{% else %}none{% endfor %}|{% for x in "
     "[] %}{% else %}empty{% endfor %}",
     R"({"xs": [1, 2, 3, 5]})", "133353|empty"},
    {"{% for x in xs %}{% if x == 3 %}{% break %}{% endif %}{% if x == 1 %}{% continue %}{% endif "
     "%}{{ x }}{% endfor %}",
     R"({"xs": [0, 1, 2, 3, 4]})", "02"},
    {"{% for x in xs %}{{ loop.previtem|default('^') }}{{ x }}{{ loop.nextitem|default('$') }}{{ "
     "loop.revindex }} {% endfor %}",
     R"({"xs": ["a", "b", "c"]})", "^ab3 abc2 bc$1 "},
    {"{% set ns = namespace(total=0) %}{% for x in [1, 2, 3] %}{% set ns.total = ns.total + x %}{% "
     "endfor %}{{ ns.total }}",
     R"({})", "6"},
    {"{% set y = 1 %}{% for x in [1] %}{% set y = 2 %}{% endfor %}{{ y }}", R"({})", "1"},
    {"{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }} {{ "
     "greet('B', punct='?') }}",
     R"({})", "Hi A! Hi B?"},
    {"{% macro wrap() %}[{{ caller() }}]{% endmacro %}{% call wrap() %}inner{% endcall %}", R"({})",
     "[inner]"},
    {"{{ '  hi  '|trim }}|{{ 'hello world'|title }}|{{ 'hELLO'|capitalize }}|{{ 'abc'|upper }}|{{ "
     "[3, 1, 2]|sort|join(',') }}|{{ 'a-b-c'|replace('-', '+') }}",
     R"({})", "hi|Hello World|Hello|ABC|1,2,3|a+b+c"},
    {"{{ xs|selectattr('role', 'equalto', 'user')|map(attribute='c')|join }}|{{ "
     "xs|rejectattr('role', 'equalto', 'user')|list|length }}|{{ [1, 2, 3, 4]|select('even')|list "
     "}}",
     R"({"xs": [{"role": "user", "c": "a"}, {"role": "bot", "c": "b"}, {"role": "user", "c": "c"}]})",
     "ac|1|[2, 4]"},
    {"{{ d|dictsort }}|{{ [1, 2, 2, 1]|unique|list }}|{{ 2.567|round(2) }}|{{ -3|abs }}|{{ [1, 2, "
     "3]|first }}{{ [1, 2, 3]|last }}|{{ '42'|int + 1 }}|{{ 3|float }}|{{ 5|string ~ '!' }}",
     R"({"d": {"b": 2, "a": 1}})", "[('a', 1), ('b', 2)]|[1, 2]|2.57|3|13|43|3.0|5!"},
    {"{{ 'a\\nb'|indent(2) }}|{{ 'a\\nb'|indent(2, true) }}|{{ [1, 2, 3, 4, 5]|batch(2)|list }}|{{ "
     "[1, 2]|reverse|list }}",
     R"({})", "a\n  b|  a\n  b|[[1, 2], [3, 4], [5]]|[2, 1]"},
    {"{{ x is defined }} {{ y is defined }} {{ y is undefined }} {{ none is none }} {{ 'a' is "
     "string }} {{ 1 is number }} {{ {} is mapping }} {{ [] is iterable }} {{ 'a' is sequence }} "
     "{{ true is boolean }} {{ 6 is divisibleby 3 }} {{ 2 is even }} {{ 1 in [1] }} {{ 'b' not in "
     "'abc' }}",
     R"({"x": 1})", "True False True True True True True True True True True True True False"},
    {"{{ 'abcdef'[1:4] }}|{{ 'abcdef'[::-1] }}|{{ [1, 2, 3, 4][-2:] }}|{{ 'héllo'[1] }}|{{ "
     "'héllo'|length }}|{{ xs[0] }}",
     R"({"xs": ["z"]})", "bcd|fedcba|[3, 4]|é|5|z"},
    {"{{ ' a b '.strip() }}|{{ 'a,b'.split(',') }}|{{ 'abc'.startswith('ab') }}|{{ "
     "'abc'.endswith(('x', 'c')) }}|{{ d.get('k', 'dflt') }}|{{ d.keys()|list }}|{{ 'ABC'.lower() "
     "}}",
     R"({"d": {"a": 1}})", "a b|['a', 'b']|True|True|dflt|['a']|abc"},
    {"{{ 'yes' if x else 'no' }}|{{ 'yes' if y }}|{{ x and 'A' or 'B' }}|{{ not x }}|{{ (1, 2) "
     "}}|{{ x.missing }}|{{ {'a': 1}.a }}",
     R"({"x": 0})", "no||B|True|(1, 2)||1"},
    {"{{ d|tojson }}|{{ d|tojson(indent=2) }}|{{ 'é\"<'|tojson }}|{{ [1.0, none, true]|tojson }}",
     R"({"d": {"z": [1, {}], "a": "ü"}})",
     "{\"z\": [1, {}], \"a\": \"ü\"}|{\n  \"z\": [\n    1,\n    {}\n  ],\n  \"a\": "
     "\"ü\"\n}|\"é\\\"<\"|[1.0, null, true]"},
    {"  {% if true %}\n    x\n  {% endif %}\n{%- if true %} y {% endif -%}\n  z {{- ' w ' -}} \n{# "
     "c #}\nq  {%+ if true %}p{% endif %}",
     R"({})", "    x\n y z w q  p"},
    {"{% set x %}captured {{ 1 + 1 }}{% endset %}[{{ x }}]{% filter upper %}shout{% endfilter %}",
     R"({})", "[captured 2]SHOUT"},
    {"{{ \"a\\tb\\\\c\\u00e9\" }}|{{ 'it''s' }}|{{ range(3)|list }}|{{ range(1, 10, 3)|list }}|{{ "
     "dict(a=1) }}",
     R"({})", "a\tb\\cé|its|[0, 1, 2]|[1, 4, 7]|{'a': 1}"},
};

TEST(ChatTemplateLanguage, MatchesJinja2) {
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.source);
    EXPECT_EQ(render(c.source, c.context), c.expected);
  }
}

TEST(ChatTemplateLanguage, UndefinedSemantics) {
  EXPECT_EQ(render("[{{ nope }}]", "{}"), "[]");
  EXPECT_EQ(render("{{ nope|length }}{{ nope|default('d') }}", "{}"), "0d");
  // Attribute of an undefined value is an error in jinja2's default Undefined.
  EXPECT_NE(error_of("{{ nope.attr }}").find("'nope' is undefined"), std::string::npos);
  EXPECT_NE(error_of("{{ nope['k'] }}").find("'nope' is undefined"), std::string::npos);
  EXPECT_NE(error_of("{{ nope + 1 }}").find("undefined"), std::string::npos);
}

TEST(ChatTemplateLanguage, RaiseExceptionPassesMessageThrough) {
  EXPECT_EQ(error_of("{{ raise_exception('roles must alternate') }}"), "roles must alternate");
}

TEST(ChatTemplateLanguage, StrftimeNowUsesGivenClock) {
  ChatTemplate tmpl("{{ strftime_now('%Y') }}");
  // 2001-09-09 in every time zone.
  EXPECT_EQ(tmpl.render(nlohmann::json::object(), 1000000000), "2001");
}

TEST(ChatTemplateLanguage, ListMutationIsRefusedLikeImmutableSandbox) {
  EXPECT_NE(error_of("{% set xs = [] %}{{ xs.append(1) }}").find("unsafe"), std::string::npos);
}

TEST(ChatTemplateSandbox, RefusesTemplateLoading) {
  for (const char* s : {"{% include 'x' %}", "{% import 'x' as y %}", "{% extends 'x' %}"})
    EXPECT_NE(error_of(s).find("not supported"), std::string::npos) << s;
}

TEST(ChatTemplateSandbox, BoundsLoopIterations) {
  EXPECT_NE(error_of("{% for i in range(10**9) %}{% endfor %}").find("limit"), std::string::npos);
  ChatTemplateLimits small;
  small.max_loop_iterations = 100;
  EXPECT_NE(error_of("{% for i in range(50) %}{% for j in range(50) %}{% endfor %}{% endfor %}",
                     "{}", small)
                .find("loop iterations exceed"),
            std::string::npos);
}

TEST(ChatTemplateSandbox, BoundsMacroRecursion) {
  std::string err = error_of("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  EXPECT_NE(err.find("recursion"), std::string::npos) << err;
}

TEST(ChatTemplateSandbox, BoundsOutputSize) {
  EXPECT_NE(error_of("{{ 'x' * 10**9 }}").find("output exceeds"), std::string::npos);
  ChatTemplateLimits small;
  small.max_output_bytes = 1000;
  EXPECT_NE(
      error_of("{% for i in range(10000) %}xx{% endfor %}", "{}", small).find("output exceeds"),
      std::string::npos);
  EXPECT_NE(error_of("{% set s = 'ab' %}{% for i in range(20) %}{% set s = s ~ s %}{% endfor %}",
                     "{}", small)
                .find("output exceeds"),
            std::string::npos);
}

TEST(ChatTemplateSandbox, DeepNestingIsASyntaxErrorNotACrash) {
  std::string deep = "{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}";
  EXPECT_NE(error_of(deep).find("too deep"), std::string::npos);
}

TEST(ChatTemplateSyntax, ErrorsNameLineAndColumn) {
  std::string err = error_of("line one\n{% if x %}\nunterminated");
  EXPECT_NE(err.find("3:"), std::string::npos) << err;
  err = error_of("ok\n  {{ 1 + }}");
  EXPECT_NE(err.find("2:10"), std::string::npos) << err;
  err = error_of("{% frobnicate %}");
  EXPECT_NE(err.find("1:4"), std::string::npos) << err;
  err = error_of("{{ 'open }}");
  EXPECT_NE(err.find("1:4"), std::string::npos) << err;
  err = error_of("{# never closed");
  EXPECT_NE(err.find("1:1"), std::string::npos) << err;
}

TEST(ChatTemplateSyntax, RuntimeErrorsNameLineAndColumn) {
  std::string err = error_of("\n\n  {{ 1 + 'a' }}");
  EXPECT_NE(err.find("3:3"), std::string::npos) << err;
}

}  // namespace
}  // namespace nibble
