"""nibble: quantized LLM inference with SGLang's Engine API.

    import nibble
    llm = nibble.Engine(model_path="model.gguf")
    outputs = llm.generate(["Hello, my name is"], {"temperature": 0, "max_new_tokens": 16})
    print(outputs[0]["text"], outputs[0].outputs[0].text)
"""
from __future__ import annotations

from . import eval  # noqa: A004  (nibble.eval.perplexity, as the CLI's `nibble eval`)
from ._cli import binary, quantize, validate
from ._engine import Engine
from ._errors import NibbleError
from ._native import default_model_path, set_log_level
from ._results import CompletionOutput, GenerateResult

__version__ = "0.1.0"

__all__ = ["Engine", "GenerateResult", "CompletionOutput", "NibbleError", "quantize", "validate",
           "eval", "binary", "default_model_path", "set_log_level", "__version__"]
