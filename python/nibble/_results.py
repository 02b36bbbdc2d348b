"""Generation results in SGLang's shape, with vLLM's attribute form on top.

SGLang's Engine returns plain dicts (`out["text"]`, `out["meta_info"]`); SGLang's quantization
docs also print `output.outputs[0].text`, vLLM's RequestOutput form. GenerateResult is a dict
(so json.dumps, `==` against dicts and `**` all work) whose attributes give both forms.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class CompletionOutput:
    """One completion, as vLLM's CompletionOutput names it."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: Optional[str]  # "stop", "length", "abort"; None while streaming
    stop_reason: Optional[int | str] = None  # the stop token id or stop string that matched
    cumulative_logprob: Optional[float] = None  # with return_logprob
    logprobs: Optional[list[Any]] = field(default=None, repr=False)


class GenerateResult(dict):
    """`{"text", "output_ids", "meta_info"[, "index"]}` with attribute access on top."""

    def __init__(self, *args: Any, prompt: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._prompt = prompt

    @property
    def text(self) -> str:
        return self["text"]

    @property
    def output_ids(self) -> list[int]:
        return self["output_ids"]

    @property
    def meta_info(self) -> dict[str, Any]:
        return self["meta_info"]

    @property
    def prompt(self) -> Optional[str]:
        """The prompt text (None when the request gave input_ids)."""
        return self._prompt

    @property
    def finished(self) -> bool:
        return self["meta_info"]["finish_reason"] is not None

    @property
    def finish_reason(self) -> Optional[dict[str, Any]]:
        return self["meta_info"]["finish_reason"]

    @property
    def outputs(self) -> list[CompletionOutput]:
        meta = self["meta_info"]
        finish = meta["finish_reason"]
        logprobs = meta.get("output_token_logprobs")
        return [CompletionOutput(
            index=0,
            text=self["text"],
            token_ids=list(self["output_ids"]),
            finish_reason=finish["type"] if finish else None,
            stop_reason=finish.get("matched") if finish else None,
            cumulative_logprob=sum(lp for lp, _, _ in logprobs) if logprobs is not None else None,
            logprobs=logprobs)]

    def __repr__(self) -> str:
        return f"GenerateResult({dict.__repr__(self)})"

    def __reduce__(self) -> Any:  # pickles (multiprocessing) as what it is
        return (_rebuild, (dict(self), self._prompt))


def _rebuild(data: dict[str, Any], prompt: Optional[str]) -> GenerateResult:
    return GenerateResult(data, prompt=prompt)
