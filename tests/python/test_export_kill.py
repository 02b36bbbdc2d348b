"""kill -9 during `nibble convert` and `nibble quantize` on the default model (issue 9).

Each writer first runs to completion (the reference), then is started again and SIGKILLed at
spread-out moments: some over its whole runtime, some inside the window where it writes (from
the moment its `<out>.partial-<pid>` sibling appears), half of them over an existing complete
output (`--force`). After every kill the destination must be
absent or byte-for-byte the reference (a directory or .gguf that loads is then the complete
model, never a truncated one), and the next run must remove the leftover of the killed one, say
so, and finish. The last run completes and equals the reference.

NIBBLE_KILL_POINTS (default 10) sets the number of kills, shared among the three writers.
"""
import hashlib
import os
import pathlib
import random
import shutil
import signal
import subprocess
import time

import pytest

KILL_POINTS = int(os.environ.get("NIBBLE_KILL_POINTS", "10"))


def digest(path: pathlib.Path) -> dict:
    """{relative file name: sha256} of a file or of every file in a directory."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    out = {}
    for f in files:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        out[str(f.relative_to(path)) if f != path else f.name] = h.hexdigest()
    return out


def leftovers(out: pathlib.Path):
    return sorted(p.name for p in out.parent.iterdir()
                  if p.name.startswith(out.name + ".partial-")
                  or p.name.startswith(out.name + ".replaced-"))


def run_to_end(cmd, timeout=300):
    start = time.monotonic()
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    return r, time.monotonic() - start


def run_and_kill(cmd, out: pathlib.Path, delay, after_partial: bool):
    """Starts cmd and SIGKILLs it `delay` s after the start (or after the partial output
    appears); delay None lets it finish. Returns (stderr, whether the kill landed before the
    process finished, seconds from start to the partial output's appearance or None)."""
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    start = time.monotonic()
    partial_seen = None
    while proc.poll() is None:
        now = time.monotonic()
        if partial_seen is None and any(
                n.startswith(out.name + ".partial-") for n in leftovers(out)):
            partial_seen = now
        origin = start if not after_partial else partial_seen
        if delay is not None and origin is not None and now - origin >= delay:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.003)
    _, err = proc.communicate()
    return (err, proc.returncode == -signal.SIGKILL,
            None if partial_seen is None else partial_seen - start)


def place_copy(source: pathlib.Path, out: pathlib.Path):
    """A hard-linked copy: instant, and the writer only ever unlinks or renames it."""
    if source.is_dir():
        shutil.copytree(source, out, copy_function=os.link)
    else:
        os.link(source, out)


@pytest.fixture(scope="module")
def hf_model(nibble_bin, default_gguf, tmp_path_factory):
    """The default model as a bf16 HF directory (itself a `nibble convert` output)."""
    root = tmp_path_factory.mktemp("export_kill")
    run_to_end([nibble_bin, "convert", default_gguf, "--out", root / "hf", "--dtype",
                "bfloat16"])
    return root / "hf"


WRITERS = {
    # GGUF -> HF directory (dequantized), the directory writer of `nibble convert`.
    "convert_dir": (0.4, lambda b, g, hf, out: [b, "convert", g, "--out", out, "--dtype",
                                                 "bfloat16", "--force"]),
    # HF directory -> one .gguf file.
    "convert_gguf": (0.3, lambda b, g, hf, out: [b, "convert", hf, "--out", out, "--dtype",
                                                  "Q8_0", "--force"]),
    # `nibble quantize` export directory (compressed-tensors int4).
    "quantize_dir": (0.3, lambda b, g, hf, out: [b, "quantize", "-q", "-m", hf, "--scheme",
                                                  "W4A16", "--method", "rtn", "--out", out,
                                                  "--force"]),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_kill_9_leaves_no_partial_model(nibble_bin, default_gguf, hf_model, writer):
    share, make_cmd = WRITERS[writer]
    kills = max(1, round(KILL_POINTS * share))
    work = hf_model.parent / writer
    work.mkdir()
    out = work / ("model.gguf" if writer == "convert_gguf" else "model")
    cmd = make_cmd(nibble_bin, default_gguf, hf_model, out)

    start = time.monotonic()
    err, _, partial_at = run_and_kill(cmd, out, None, False)
    seconds = time.monotonic() - start
    assert out.exists(), err
    reference = digest(out)
    # The writing window: from the partial output's appearance to the end.
    window = seconds - (partial_at or 0.0)
    assert "model.safetensors" in reference or out.name in reference
    shutil.move(str(out), str(work / "reference"))

    rng = random.Random(int(os.environ.get("NIBBLE_KILL_SEED", "9")))
    landed = complete_after_kill = cleaned = 0
    for i in range(kills):
        # Alternate: a moment anywhere in the run, then one inside the writing window.
        after_partial = i % 2 == 1
        delay = rng.uniform(0.0, 0.95 * (window if after_partial else seconds))
        if i % 4 >= 2:
            # --force over a complete earlier output: it must never be seen half replaced.
            place_copy(work / "reference", out)
        before = leftovers(out)
        err, killed, _ = run_and_kill(cmd, out, delay, after_partial)
        landed += killed
        for name in set(before) - set(leftovers(out)):
            # The run got far enough to remove a killed run's leftover, and said so.
            assert name in err and "leftover of an interrupted run" in err, err
            cleaned += 1
        if out.exists():
            assert digest(out) == reference, f"kill {i} at {delay:.2f}s left a different {out}"
            complete_after_kill += killed
            if out.is_dir():
                shutil.rmtree(out)
            else:
                out.unlink()
        for name in leftovers(out):
            # Whatever survives a kill is under the partial name, never under `out`.
            assert ".partial-" in name or ".replaced-" in name
    assert landed >= max(1, kills // 3), f"only {landed} of {kills} kills hit a running process"

    before = leftovers(out)
    r, _ = run_to_end(cmd)
    for name in before:
        assert name in r.stderr, r.stderr
    assert digest(out) == reference
    assert leftovers(out) == [], leftovers(out)
    print(f"{writer}: {kills} kills, {landed} before the end, {complete_after_kill} of them "
          f"after the rename (complete output), {landed - complete_after_kill} with no output; "
          f"{cleaned + len(before)} leftovers removed by the next run; run {seconds:.1f} s")
