"""`nibble eval` from Python: each function runs the packaged `nibble` binary and returns its
JSON report as a dict. Keyword arguments are the command's flags (see `nibble eval <cmd>
--help`), e.g. `perplexity(model_path, context=512, max_windows=8, data_dir=...)`."""
from __future__ import annotations

import os
from typing import Any, Optional, Union

from . import _cli

PathArg = Union[str, "os.PathLike[str]", None]


def _eval(command: str, model_path: PathArg, options: dict[str, Any]) -> dict[str, Any]:
    return _cli.run(["eval", command], dict(options, model_path=model_path))


def perplexity(model_path: PathArg = None, **options: Any) -> dict[str, Any]:
    """Perplexity over sliding windows of a text (default: wikitext-2 test). Keys include
    "ppl", "ppl_stderr", "mean_nll", "tokens", "windows"."""
    return _eval("ppl", model_path, options)


def kl_divergence(model_path: PathArg = None, base: PathArg = None, **options: Any
                  ) -> dict[str, Any]:
    """KL(base || model) per token on the perplexity windows (base: the reference model)."""
    return _eval("kld", model_path, dict(options, base=base))


def multiple_choice(task: str, model_path: PathArg = None, limit: Optional[int] = None,
                    **options: Any) -> dict[str, Any]:
    """Multiple choice by log-likelihood: arc_easy, arc_challenge, piqa, hellaswag or a file."""
    return _eval("mc", model_path, dict(options, task=task, limit=limit))


def lambada(model_path: PathArg = None, **options: Any) -> dict[str, Any]:
    """LAMBADA last-word accuracy and perplexity."""
    return _eval("lambada", model_path, options)


def gsm8k(model_path: PathArg = None, **options: Any) -> dict[str, Any]:
    """GSM8K exact match by greedy generation."""
    return _eval("gsm8k", model_path, options)


__all__ = ["perplexity", "kl_divergence", "multiple_choice", "lambada", "gsm8k"]
