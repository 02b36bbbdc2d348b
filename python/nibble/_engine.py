"""nibble.Engine: SGLang's offline Engine API over nibble's C++ engine."""
from __future__ import annotations

import asyncio
import atexit
import difflib
import os
import time
import uuid
import weakref
from typing import Any, AsyncIterator, Iterator, Mapping, Optional, Sequence, Union

from . import _native
from ._errors import NibbleError
from ._results import GenerateResult
from ._sampling import to_native

# How long a wait for the engine lasts before Python gets control back (KeyboardInterrupt is
# only seen between waits). The wait ends at once when a chunk arrives, so this costs nothing.
_POLL_S = 0.1

# `nibble serve`'s engine flags (tools/nibble/cmd_serve.cc), with SGLang's spelling, and their
# defaults. Server-only flags (host, port, api_key, ...) do not apply to an in-process engine.
_ENGINE_ARGS: dict[str, Any] = {
    "model_path": None,
    "dtype": "auto",
    "quantization": None,
    "torchao_config": None,
    "modelopt_export_path": None,
    "modelopt_checkpoint_save_path": None,
    "modelopt_checkpoint_restore_path": None,
    "kv_cache_dtype": "auto",
    "context_length": None,
    "max_running_requests": None,
    "max_total_tokens": None,
    "chunked_prefill_size": None,
    "disable_radix_cache": False,
    "threads": 0,
    "chat_template": None,
    "served_model_name": None,
    "random_seed": None,
    "log_level": None,
    "tp_size": 1,
    "mem_fraction_static": None,
    "disable_cuda_graph": False,
}

Prompt = Union[str, Sequence[str]]
InputIds = Union[Sequence[int], Sequence[Sequence[int]]]
SamplingParamsArg = Union[Mapping[str, Any], Sequence[Mapping[str, Any]], None]

_live_engines: "weakref.WeakSet[Engine]" = weakref.WeakSet()


@atexit.register
def _shutdown_live_engines() -> None:
    # An engine's scheduler thread must stop before the interpreter tears down the module.
    for engine in list(_live_engines):
        engine.shutdown()


def _check_type(name: str, value: Any, kinds: tuple[type, ...], what: str) -> None:
    if isinstance(value, bool) and bool not in kinds:
        raise TypeError(f"Engine({name}=...) must be {what}, got bool")
    if not isinstance(value, kinds):
        raise TypeError(f"Engine({name}=...) must be {what}, got {type(value).__name__}")


def _native_args(kwargs: dict[str, Any]) -> _native.EngineArgs:
    args = _native.EngineArgs()
    model_path = kwargs["model_path"]
    if model_path is not None:
        _check_type("model_path", model_path, (str, os.PathLike), "a path")
        args.model_path = os.path.expanduser(os.fspath(model_path))
    for name in ("dtype", "kv_cache_dtype"):
        _check_type(name, kwargs[name], (str,), "a string")
        setattr(args, name, kwargs[name])
    for name in ("quantization", "torchao_config", "chat_template", "served_model_name"):
        value = kwargs[name]
        if value is not None:
            _check_type(name, value, (str, os.PathLike) if name == "chat_template" else (str,),
                        "a string")
            setattr(args, name, os.fspath(value))
    for name in ("context_length", "max_running_requests", "max_total_tokens",
                 "chunked_prefill_size", "threads"):
        value = kwargs[name]
        if value is not None:
            _check_type(name, value, (int,), "an int")
            setattr(args, name, value)
    _check_type("disable_radix_cache", kwargs["disable_radix_cache"], (bool,), "a bool")
    args.disable_radix_cache = kwargs["disable_radix_cache"]
    if kwargs["random_seed"] is not None:
        _check_type("random_seed", kwargs["random_seed"], (int,), "an int")
        args.random_seed = kwargs["random_seed"] % (1 << 64)
    if kwargs["tp_size"] != 1:
        raise NibbleError(f"tp_size={kwargs['tp_size']}: tensor parallelism is not available on "
                          "the CPU; use 1")
    # mem_fraction_static and disable_cuda_graph are accepted as `nibble serve` accepts them:
    # the CPU engine sizes its KV cache with max_total_tokens and has no CUDA graphs.
    for name in ("modelopt_export_path", "modelopt_checkpoint_save_path",
                 "modelopt_checkpoint_restore_path"):
        value = kwargs[name]
        if value is not None:
            _check_type(name, value, (str, os.PathLike), "a path")
            setattr(args, name, os.path.expanduser(os.fspath(value)))
    return args


class Engine:
    """An in-process nibble engine, with SGLang's `sglang.Engine` API.

    The arguments are `nibble serve`'s flags (sglang.launch_server's names): model_path (an HF
    directory or a GGUF file; None: the default model), dtype, quantization, torchao_config,
    modelopt_export_path, modelopt_checkpoint_save_path, modelopt_checkpoint_restore_path
    (with quantization "modelopt_fp8" / "modelopt_fp4" on an unquantized model), kv_cache_dtype, context_length, max_running_requests, max_total_tokens,
    chunked_prefill_size, disable_radix_cache, threads, chat_template, served_model_name,
    random_seed, log_level; tp_size (1), mem_fraction_static and disable_cuda_graph are accepted
    for compatibility. An unknown keyword is a TypeError naming it.
    """

    def __init__(self, model_path: Union[str, os.PathLike[str], None] = None,
                 **kwargs: Any) -> None:
        unknown = sorted(k for k in kwargs if k not in _ENGINE_ARGS or k == "model_path")
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, sorted(_ENGINE_ARGS), n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            what = "got the model path twice" if unknown == ["model_path"] else \
                f"unknown argument(s) {', '.join(hints)}"
            raise TypeError(f"Engine(): {what}; valid arguments: {', '.join(_ENGINE_ARGS)}")
        merged = dict(_ENGINE_ARGS, **kwargs, model_path=model_path)
        if merged["log_level"] is not None:
            _native.set_log_level(merged["log_level"])
        self._native: Optional[_native.Engine] = _native.Engine(_native_args(merged))
        info = self._native.model_info()
        self._generation_defaults: dict[str, Any] = info["generation_defaults"]
        self._model_info = info
        _live_engines.add(self)

    # --- lifetime -------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stops the engine and frees its memory; unfinished requests end with finish "abort".
        Idempotent; any later call raises NibbleError."""
        engine = getattr(self, "_native", None)
        if engine is not None:
            engine.shutdown()
        _live_engines.discard(self)

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def _engine(self) -> _native.Engine:
        if self._native is None or not self._native.alive:
            raise NibbleError("the engine is shut down (Engine.shutdown() was called)")
        return self._native

    # --- generation -----------------------------------------------------------------------

    def generate(self, prompt: Optional[Prompt] = None,
                 sampling_params: SamplingParamsArg = None,
                 input_ids: Optional[InputIds] = None, return_logprob: bool = False,
                 top_logprobs_num: Optional[int] = None, return_text_in_logprobs: bool = False,
                 stream: bool = False) -> Any:
        """Generates for one prompt (a str, or `input_ids` as a list of ints) or a batch (a list
        of either). Returns one GenerateResult (a dict: "text", "output_ids", "meta_info") or a
        list of them; with stream=True, an iterator of chunks whose "text" and "output_ids" are
        what is new since the previous chunk of that request ("index" tells a batch's requests
        apart) and whose meta_info counts are totals so far; the last chunk of each request has
        meta_info["finish_reason"] set. The engine works with the GIL released."""
        run = self._submit(prompt, sampling_params, input_ids, return_logprob, top_logprobs_num,
                           return_text_in_logprobs)
        if stream:
            return self._stream(run)
        return run.collect()

    async def async_generate(self, prompt: Optional[Prompt] = None,
                             sampling_params: SamplingParamsArg = None,
                             input_ids: Optional[InputIds] = None, return_logprob: bool = False,
                             top_logprobs_num: Optional[int] = None,
                             return_text_in_logprobs: bool = False,
                             stream: bool = False) -> Any:
        """generate() for asyncio: awaits the result, or (stream=True) returns an async
        iterator of chunks. Waiting happens in worker threads; the event loop never blocks."""
        run = self._submit(prompt, sampling_params, input_ids, return_logprob, top_logprobs_num,
                           return_text_in_logprobs)
        if stream:
            return self._astream(run)
        try:
            return await asyncio.get_running_loop().run_in_executor(None, run.collect)
        finally:
            run.group.cancel()

    def _submit(self, prompt: Optional[Prompt], sampling_params: SamplingParamsArg,
                input_ids: Optional[InputIds], return_logprob: bool,
                top_logprobs_num: Optional[int], return_text_in_logprobs: bool) -> "_Run":
        engine = self._engine()
        prompts, id_lists, batch = _normalize_prompts(prompt, input_ids)
        n = len(prompts) if prompts is not None else len(id_lists)  # type: ignore[arg-type]
        params = _normalize_sampling(sampling_params, n, batch)
        if not isinstance(return_logprob, bool):
            raise TypeError("return_logprob must be a bool")
        top_n = 0 if top_logprobs_num is None else top_logprobs_num
        if isinstance(top_n, bool) or not isinstance(top_n, int):
            raise TypeError("top_logprobs_num must be an int")
        natives = [to_native(p, self._generation_defaults) for p in params]
        group = _native.RequestGroup()
        try:
            for i in range(n):
                engine.submit(group, prompts[i] if prompts is not None else None,
                              list(id_lists[i]) if id_lists is not None else None, natives[i],
                              return_logprob, top_n)
        except BaseException:
            group.cancel()  # the ones already queued
            raise
        text_of = (lambda token: engine.decode([token], False)) if return_text_in_logprobs \
            else (lambda token: None)
        return _Run(group, prompts, batch, return_logprob, text_of)

    def _stream(self, run: "_Run") -> Iterator[GenerateResult]:
        try:
            yield from run.chunks()
        finally:
            run.group.cancel()

    async def _astream(self, run: "_Run") -> AsyncIterator[GenerateResult]:
        loop = asyncio.get_running_loop()
        chunks = run.chunks()
        end = object()
        try:
            while True:
                chunk = await loop.run_in_executor(None, next, chunks, end)
                if chunk is end:
                    return
                yield chunk  # type: ignore[misc]
        finally:
            run.group.cancel()

    # --- state ----------------------------------------------------------------------------

    def flush_cache(self) -> None:
        """Drops the prefix cache (blocks in use stay)."""
        self._engine().flush_cache()

    def stats(self) -> dict[str, int]:
        """Engine counters: running/waiting requests, KV tokens used/total/cached, totals."""
        return self._engine().stats()

    @property
    def server_args(self) -> dict[str, Any]:
        """The engine's arguments with defaults resolved (context_length, max_total_tokens...)."""
        return self._engine().args()

    def get_server_info(self) -> dict[str, Any]:
        """As SGLang's get_server_info: the resolved arguments and the internal state."""
        info = dict(self.server_args)
        info["internal_states"] = [self.stats()]
        info["version"] = "nibble"
        return info

    @property
    def model_info(self) -> dict[str, Any]:
        return dict(self._model_info)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text` with the model's tokenizer."""
        return self._engine().encode(text, add_special_tokens)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._engine().decode(list(ids), skip_special_tokens)


def _is_id_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(
        isinstance(i, int) and not isinstance(i, bool) for i in value)


def _normalize_prompts(prompt: Any, input_ids: Any
                       ) -> tuple[Optional[list[str]], Optional[list[Sequence[int]]], bool]:
    if (prompt is None) == (input_ids is None):
        raise ValueError("generate(): give exactly one of prompt and input_ids")
    if prompt is not None:
        if isinstance(prompt, str):
            return [prompt], None, False
        if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, str) for p in prompt):
            return list(prompt), None, True
        raise TypeError("generate(): prompt must be a str or a non-empty list of str")
    if _is_id_list(input_ids) and input_ids:
        return None, [input_ids], False
    if isinstance(input_ids, (list, tuple)) and input_ids and all(
            _is_id_list(ids) for ids in input_ids):
        return None, list(input_ids), True
    raise TypeError("generate(): input_ids must be a non-empty list of ints or a list of them")


def _normalize_sampling(sampling_params: SamplingParamsArg, n: int, batch: bool
                        ) -> list[Optional[Mapping[str, Any]]]:
    if sampling_params is None or isinstance(sampling_params, Mapping):
        return [sampling_params] * n
    if isinstance(sampling_params, (list, tuple)):
        if len(sampling_params) != n:
            raise ValueError(f"generate(): {len(sampling_params)} sampling_params for {n} "
                             f"prompt{'s' if n != 1 else ''}")
        return list(sampling_params)
    raise TypeError("generate(): sampling_params must be a dict or a list of dicts")


class _Run:
    """The requests of one generate() call and what they have produced so far."""

    def __init__(self, group: _native.RequestGroup, prompts: Optional[list[str]], batch: bool,
                 return_logprob: bool, text_of: Any) -> None:
        self.group = group
        self.prompts = prompts
        self.batch = batch
        self.return_logprob = return_logprob
        self.text_of = text_of
        self.start = time.monotonic()
        self.rid = uuid.uuid4().hex
        self.n = len(group)

    def _prompt(self, index: int) -> Optional[str]:
        return self.prompts[index] if self.prompts is not None else None

    def _id(self, index: int) -> str:
        return f"{self.rid}-{index}" if self.batch else self.rid

    def _meta(self, index: int, chunk: dict[str, Any],
              logprobs: list[tuple[int, float, list[tuple[int, float]]]]) -> dict[str, Any]:
        finish: Optional[dict[str, Any]] = None
        if chunk["finished"]:
            kind = chunk["finish_type"]
            if kind == "length":
                finish = {"type": "length", "length": chunk["completion_tokens"]}
            elif kind == "abort":
                finish = {"type": "abort", "message": chunk["error"] or "cancelled"}
            else:
                finish = {"type": "stop", "matched": chunk["matched"]}
        meta: dict[str, Any] = {
            "id": self._id(index),
            "finish_reason": finish,
            "prompt_tokens": chunk["prompt_tokens"],
            "completion_tokens": chunk["completion_tokens"],
            "cached_tokens": chunk["cached_tokens"],
            "e2e_latency": time.monotonic() - self.start,
        }
        if self.return_logprob:
            meta["output_token_logprobs"] = [(lp, token, self.text_of(token))
                                             for token, lp, _ in logprobs]
            meta["output_top_logprobs"] = [[(lp, token, self.text_of(token)) for token, lp in top]
                                           for _, _, top in logprobs]
        return meta

    def _poll(self) -> list[dict[str, Any]]:
        chunks = self.group.poll(_POLL_S)
        for chunk in chunks:
            # An engine failure (or a shutdown mid-request) is an exception, not a result.
            if chunk["error"] is not None:
                self.group.cancel()
                raise NibbleError(chunk["error"])
        return chunks

    def collect(self) -> Any:
        texts: list[list[str]] = [[] for _ in range(self.n)]
        ids: list[list[int]] = [[] for _ in range(self.n)]
        logprobs: list[list[Any]] = [[] for _ in range(self.n)]
        results: list[Optional[GenerateResult]] = [None] * self.n
        try:
            while not self.group.done:
                for chunk in self._poll():
                    i = chunk["index"]
                    texts[i].append(chunk["text"])
                    ids[i].extend(chunk["token_ids"])
                    logprobs[i].extend(chunk["logprobs"])
                    if chunk["finished"]:
                        results[i] = GenerateResult(
                            text="".join(texts[i]), output_ids=ids[i],
                            meta_info=self._meta(i, chunk, logprobs[i]), prompt=self._prompt(i))
        finally:
            self.group.cancel()  # KeyboardInterrupt or an error: stop the others
        return results if self.batch else results[0]

    def chunks(self) -> Iterator[GenerateResult]:
        while not self.group.done:
            for chunk in self._poll():
                i = chunk["index"]
                result = GenerateResult(text=chunk["text"], output_ids=chunk["token_ids"],
                                        meta_info=self._meta(i, chunk, chunk["logprobs"]),
                                        prompt=self._prompt(i))
                if self.batch:
                    result["index"] = i
                yield result
