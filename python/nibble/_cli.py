"""The `nibble` command line from Python.

quantize, validate and eval run the `nibble` binary that ships inside the package (bin/nibble)
rather than bound functions: they are long batch jobs whose flags, defaults and JSON reports
are already the CLI's, a separate process gives them their own thread pool and memory, and a
crash in one cannot take the caller down. Keyword arguments become flags
(`max_windows=2` -> `--max-windows 2`; True -> a bare flag; False/None -> left out; a list ->
the flag repeated).
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import tempfile
from typing import Any, Optional, Sequence

from ._errors import NibbleError


def binary() -> pathlib.Path:
    """The `nibble` executable: $NIBBLE_BIN if set, else the one inside this package."""
    override = os.environ.get("NIBBLE_BIN")
    path = pathlib.Path(override) if override else pathlib.Path(__file__).parent / "bin" / "nibble"
    if not path.exists():
        raise NibbleError(f"the nibble binary is missing at {path} (set NIBBLE_BIN, or reinstall"
                          " the package)")
    return path


def flags(options: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif isinstance(value, (list, tuple)):
            for item in value:
                out += [flag, os.fspath(item) if isinstance(item, os.PathLike) else str(item)]
        else:
            out += [flag, os.fspath(value) if isinstance(value, os.PathLike) else str(value)]
    return out


def run(command: Sequence[str], options: dict[str, Any], *, json_flag: Optional[str] = "--json",
        timeout: Optional[float] = None) -> Any:
    """Runs `nibble <command> <flags>`; returns its JSON report (when json_flag is given) or its
    stdout. A failure raises NibbleError with the command's own error message."""
    with tempfile.TemporaryDirectory(prefix="nibble-") as tmp:
        report = pathlib.Path(tmp) / "report.json"
        argv = [str(binary()), *command, *flags(options)]
        if json_flag:
            argv += [json_flag, str(report)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            message = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
            detail = "\n".join(message[-20:]) if message else "(no output)"
            raise NibbleError(f"nibble {' '.join(command)} failed (exit {proc.returncode}): "
                              f"{detail}")
        if not json_flag:
            return proc.stdout
        if not report.exists():
            raise NibbleError(f"nibble {' '.join(command)} wrote no JSON report")
        return json.loads(report.read_text())


def quantize(model_path: str | os.PathLike[str], output: str | os.PathLike[str],
             **options: Any) -> str:
    """`nibble quantize MODEL --output OUT ...`: offline quantization (e.g. method="gptq",
    scheme=..., calibration flags as keywords). Returns the command's output; raises
    NibbleError with its message on failure."""
    return run(["quantize", os.fspath(model_path)],
               dict(options, output=os.fspath(output)), json_flag=None)


def validate(model_path: str | os.PathLike[str], reference: str | os.PathLike[str],
             **options: Any) -> dict[str, Any]:
    """`nibble validate`: perplexity, KL divergence and top-1 agreement of a model against its
    reference. Returns the JSON report; a failed gate is reported in it, not raised."""
    options = dict(options, model_path=model_path, reference=reference)
    with tempfile.TemporaryDirectory(prefix="nibble-") as tmp:
        report = pathlib.Path(tmp) / "validate.json"
        argv = [str(binary()), "validate", *flags(options), "--json", str(report)]
        proc = subprocess.run(argv, capture_output=True, text=True)
        # Exit 1 with a report is a failed gate: the report says which metrics failed.
        if report.exists() and proc.returncode in (0, 1):
            return json.loads(report.read_text())
        message = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise NibbleError(f"nibble validate failed (exit {proc.returncode}): "
                          + ("\n".join(message[-20:]) if message else "(no output)"))
