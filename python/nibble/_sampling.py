"""SGLang's `sampling_params` dict -> the engine's SamplingParams.

The keys, names and defaults are SGLang's (and those of nibble's /generate route): an unknown
key is a TypeError naming it, a known key nibble cannot honour is a NibbleError, and values
are range-checked by the engine (SamplingParams::validate) with the parameter named.
"""
from __future__ import annotations

import difflib
from typing import Any, Mapping

from . import _native
from ._errors import NibbleError

# SGLang's default (the model's generation_config fills temperature/top_p/top_k/min_p/
# repetition_penalty when the request leaves them out).
DEFAULT_MAX_NEW_TOKENS = 128

_FLOATS = ("temperature", "top_p", "min_p", "repetition_penalty", "frequency_penalty",
           "presence_penalty")
_ACCEPTED_DEFAULTS = {
    # Accepted for compatibility when they ask for what nibble does anyway.
    "n": 1,
    "min_new_tokens": 0,
    "no_stop_trim": False,
    "spaces_between_special_tokens": True,
    "stream_interval": None,
    "json_schema": None,
    "regex": None,
    "ebnf": None,
    "structural_tag": None,
    "logit_bias": None,
    "custom_params": None,
}
KNOWN_KEYS = frozenset(_FLOATS + ("top_k", "max_new_tokens", "stop", "stop_token_ids",
                                  "ignore_eos", "skip_special_tokens", "sampling_seed", "seed") +
                       tuple(_ACCEPTED_DEFAULTS))


def _unknown_keys_error(unknown: list[str], valid: frozenset[str], what: str) -> TypeError:
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(valid), n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return TypeError(f"{what}: unknown key(s) {', '.join(hints)}; valid keys: "
                     f"{', '.join(sorted(valid))}")


def _number(params: Mapping[str, Any], key: str, kind: type) -> Any:
    value = params[key]
    # bool is an int subclass; True as a temperature is a bug, not a 1.
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise TypeError(f"sampling_params.{key} must be {'a number' if kind is float else 'an int'}"
                        f", got {type(value).__name__} {value!r}")
    return kind(value)


def _bool(params: Mapping[str, Any], key: str) -> bool:
    value = params[key]
    if not isinstance(value, bool):
        raise TypeError(f"sampling_params.{key} must be a bool, got {type(value).__name__}")
    return value


def to_native(params: Mapping[str, Any] | None, generation_defaults: Mapping[str, Any]
              ) -> _native.SamplingParams:
    """Builds (and validates) the engine's SamplingParams from an SGLang sampling_params."""
    params = {} if params is None else params
    if not isinstance(params, Mapping):
        raise TypeError(f"sampling_params must be a dict, got {type(params).__name__}")
    present = {k: v for k, v in params.items() if v is not None}
    unknown = [k for k in present if k not in KNOWN_KEYS]
    if unknown:
        raise _unknown_keys_error(unknown, KNOWN_KEYS, "sampling_params")
    for key, accepted in _ACCEPTED_DEFAULTS.items():
        if key in present and present[key] != accepted:
            raise NibbleError(f"sampling_params.{key}={present[key]!r} is not supported by nibble"
                              + (f" (only {accepted!r})" if accepted is not None else ""))

    p = _native.SamplingParams()
    for key in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty"):
        if key in generation_defaults:
            setattr(p, key, generation_defaults[key])
    for key in _FLOATS:
        if key in present:
            setattr(p, key, _number(present, key, float))
    if "top_k" in present:
        top_k = _number(present, "top_k", int)
        p.top_k = -1 if top_k == 0 else top_k  # SGLang and OpenAI clients spell "off" as 0 too
    p.max_new_tokens = (_number(present, "max_new_tokens", int) if "max_new_tokens" in present
                        else DEFAULT_MAX_NEW_TOKENS)
    if p.max_new_tokens < 0:
        raise NibbleError(f"sampling_params.max_new_tokens must be >= 0, got {p.max_new_tokens}")
    if "stop" in present:
        stop = present["stop"]
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
            raise TypeError("sampling_params.stop must be a string or a list of strings")
        if any(s == "" for s in stop):
            raise NibbleError("sampling_params.stop: stop strings must not be empty")
        p.stop = list(stop)
    if "stop_token_ids" in present:
        ids = present["stop_token_ids"]
        if not isinstance(ids, (list, tuple)) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise TypeError("sampling_params.stop_token_ids must be a list of ints")
        p.stop_token_ids = list(ids)
    for key in ("ignore_eos", "skip_special_tokens"):
        if key in present:
            setattr(p, key, _bool(present, key))
    seeds = [k for k in ("sampling_seed", "seed") if k in present]
    if len(seeds) == 2 and present["sampling_seed"] != present["seed"]:
        raise NibbleError("sampling_params: sampling_seed and seed disagree; give one")
    if seeds:
        seed = _number(present, seeds[0], int)
        p.seed = seed % (1 << 64)  # the engine's seeds are 64-bit; negative ones wrap as in C++
    p.validate()
    return p
