"""Parity: nibble's chat-template renderer against transformers' own jinja environment.

Every fixture in tests/data/chat_templates is rendered over many conversations by both, and the
outputs must be byte-identical; where transformers raises (e.g. Mistral's role alternation
check), nibble must fail too.
"""
import datetime
import json
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "tests" / "data" / "chat_templates"
# strftime_now() must report the same instant on both sides: a fixed, timezone-free timestamp.
FIXED_NOW = 1700000000


def _compile_like_transformers(source: str):
    """The template compiled by transformers' own function, with strftime_now pinned."""
    from transformers.utils import chat_template_utils as ctu

    compiled = ctu._cached_compile_jinja_template(source)
    fixed = datetime.datetime.fromtimestamp(FIXED_NOW)
    compiled.globals["strftime_now"] = lambda fmt: fixed.strftime(fmt)
    return compiled


def _render_transformers(source: str, context: dict):
    compiled = _compile_like_transformers(source)
    try:
        return True, compiled.render(**context)
    except Exception as e:  # noqa: BLE001 - any template failure counts as a failure
        return False, f"{type(e).__name__}: {e}"


def _render_nibble(nibble_bin, tmp_path, source: str, context: dict):
    tpl = tmp_path / "t.jinja"
    ctx = tmp_path / "ctx.json"
    tpl.write_text(source, encoding="utf-8", newline="")
    ctx.write_text(json.dumps(context, ensure_ascii=False), encoding="utf-8")
    proc = subprocess.run(
        [str(nibble_bin), "chat-template", "--template", str(tpl), "--context", str(ctx),
         "--now", str(FIXED_NOW)],
        capture_output=True,
        timeout=60,
    )
    if proc.returncode == 0:
        return True, proc.stdout.decode("utf-8")
    return False, proc.stderr.decode("utf-8", "replace")


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city — with ünïcode",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7.5},
            },
            "required": ["city"],
        },
    },
}
SEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the web",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": []},
    },
}

BASIC = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}],
    [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ],
    [
        {"role": "system", "content": "  Be nice.  \n"},
        {"role": "user", "content": "  padded question \n\n"},
        {"role": "assistant", "content": "\tpadded answer  "},
        {"role": "user", "content": "ok"},
    ],
    [{"role": "user", "content": "Ünïcödé: 日本語, emoji 🎉, RTL שלום, combining é"}],
    [{"role": "user", "content": "Jinja-looking text: {{ x }} and {% if %} and {# c #} and {%- raw -%}"}],
    [{"role": "user", "content": ""}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "empty system"}],
    [{"role": "user", "content": "quotes ' \" and backslash \\ and newline\nsecond line"}],
    [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
        {"role": "user", "content": "e"},
    ],
]

TOOL_CONVERSATIONS = [
    [{"role": "user", "content": "Weather in Paris?"}],
    [
        {"role": "system", "content": "Use tools wisely."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "call12345", "type": "function",
                 "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}
            ],
        },
        {"role": "tool", "tool_call_id": "call12345", "content": "{\"temp\": 21.5, \"sky\": \"clear\"}"},
        {"role": "assistant", "content": "It is 21.5°C and clear."},
        {"role": "user", "content": "Thanks"},
    ],
]

QWEN_MULTI_TOOL = [
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Rome"}}},
        ],
    },
    {"role": "tool", "content": "sunny"},
    {"role": "tool", "content": "rainy"},
]

SPECIALS = {
    "smollm2": {},
    "llama3.1": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "llama3.2": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "qwen2.5": {"bos_token": None, "eos_token": "<|im_end|>"},
    "mistral-v0.3": {"bos_token": "<s>", "eos_token": "</s>"},
    "gemma3": {"bos_token": "<bos>", "eos_token": "<eos>"},
}


def _cases():
    cases = []
    for name in SPECIALS:
        for i, conv in enumerate(BASIC):
            for agp in (False, True):
                cases.append((name, f"basic{i}-agp{int(agp)}", {"messages": conv, "add_generation_prompt": agp}))
    for name in ("llama3.1", "llama3.2", "qwen2.5", "mistral-v0.3"):
        for i, conv in enumerate(TOOL_CONVERSATIONS):
            for agp in (False, True):
                cases.append((name, f"tools{i}-agp{int(agp)}",
                              {"messages": conv, "tools": [WEATHER_TOOL, SEARCH_TOOL], "add_generation_prompt": agp}))
    cases.append(("qwen2.5", "multi-tool", {"messages": QWEN_MULTI_TOOL, "tools": [WEATHER_TOOL],
                                            "add_generation_prompt": True}))
    for name in ("llama3.1", "llama3.2"):
        cases.append((name, "tools-in-system",
                      {"messages": TOOL_CONVERSATIONS[1], "tools": [WEATHER_TOOL], "tools_in_user_message": False}))
        cases.append((name, "date-string", {"messages": BASIC[0], "date_string": "01 Jan 2030"}))
    cases.append(("llama3.1", "builtin-tools",
                  {"messages": [{"role": "user", "content": "search it"},
                                {"role": "assistant", "tool_calls": [{"type": "function", "function": {
                                    "name": "brave_search", "arguments": {"query": "nibble"}}}]}],
                   "builtin_tools": ["brave_search", "code_interpreter"]}))
    cases.append(("gemma3", "content-parts",
                  {"messages": [{"role": "system", "content": [{"type": "text", "text": "sys part"}]},
                                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " describe "}]}],
                   "add_generation_prompt": True}))
    # Failures: alternation violations and bad tool-call ids must fail on both sides.
    bad_alternation = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    for name in ("mistral-v0.3", "gemma3"):
        cases.append((name, "error-alternation", {"messages": bad_alternation}))
    cases.append(("mistral-v0.3", "error-tool-id",
                  {"messages": [{"role": "user", "content": "x"},
                                {"role": "assistant", "tool_calls": [{"id": "short", "function": {"name": "f", "arguments": {}}}]}]}))
    cases.append(("llama3.1", "error-two-tool-calls",
                  {"messages": [{"role": "user", "content": "x"},
                                {"role": "assistant", "tool_calls": [
                                    {"function": {"name": "f", "arguments": {}}},
                                    {"function": {"name": "g", "arguments": {}}}]}]}))
    return cases


CASES = _cases()


@pytest.mark.parametrize("name,label,context", CASES, ids=[f"{n}-{l}" for n, l, _ in CASES])
def test_chat_template_parity(nibble_bin, tmp_path, name, label, context):
    source = (TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")
    full = {"tools": None, "documents": None, **SPECIALS[name], **context}
    if full.get("bos_token") is None:
        full.pop("bos_token", None)
    ok_ref, ref = _render_transformers(source, full)
    ok_nib, got = _render_nibble(nibble_bin, tmp_path, source, full)
    if label.startswith("error"):
        assert not ok_ref, f"transformers unexpectedly rendered: {ref!r}"
    assert ok_nib == ok_ref, f"transformers ok={ok_ref} ({ref!r}) but nibble ok={ok_nib} ({got!r})"
    if ok_ref:
        assert got == ref


@pytest.mark.parametrize("name", sorted(SPECIALS))
def test_fixture_compiles_in_transformers(name):
    _compile_like_transformers((TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8"))
