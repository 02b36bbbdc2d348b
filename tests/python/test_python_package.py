"""The `nibble` Python package: SGLang's Engine API over the C++ engine.

The package is imported from the CMake build folder: a build with -DNIBBLE_PYTHON=ON lays it
out under <build>/python (the extension, links to python/nibble/*.py, bin/nibble), found next to
$NIBBLE_BIN. That avoids a `pip install .` (a full rebuild) on every run; one test builds the
wheel with pip when NIBBLE_TEST_WHEEL=1 (scripts/test.sh sets it; minutes of compiling without
ccache) and runs it.
"""
import asyncio
import json
import math
import os
import pathlib
import re
import subprocess
import sys
import threading
import time
import zipfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
PROMPT = "The capital of France is"
GREEDY = {"temperature": 0, "max_new_tokens": 24}


def _package_dir(nibble_bin: pathlib.Path) -> pathlib.Path:
    return nibble_bin.resolve().parent / "python"


@pytest.fixture(scope="module")
def nibble(nibble_bin):
    pkg = _package_dir(nibble_bin)
    if not list((pkg / "nibble").glob("_native*.so")):
        message = (f"the Python extension is not built in {pkg}: configure the build with "
                   "-DNIBBLE_PYTHON=ON -DPython_EXECUTABLE=<venv python>")
        if os.environ.get("NIBBLE_REQUIRE_PYTHON") == "1":
            pytest.fail(message)
        pytest.skip(message)
    sys.path.insert(0, str(pkg))
    import nibble as module
    assert pathlib.Path(module.__file__).parent == pkg / "nibble"
    return module


@pytest.fixture(scope="module")
def llm(nibble, default_gguf):
    engine = nibble.Engine(model_path=default_gguf, max_running_requests=8)
    yield engine
    engine.shutdown()


def cli_generate(nibble_bin, model, prompt, n):
    return subprocess.run([str(nibble_bin), "generate", "-m", str(model), "--prompt", prompt,
                           "--temperature", "0", "-n", str(n)], capture_output=True, text=True,
                          check=True, timeout=300).stdout


def test_greedy_text_equals_nibble_generate(llm, nibble_bin, default_gguf):
    out = llm.generate(PROMPT, GREEDY)
    assert cli_generate(nibble_bin, default_gguf, PROMPT, 24) == PROMPT + out["text"] + "\n"
    assert out["text"].startswith(" Paris")
    meta = out["meta_info"]
    assert meta["prompt_tokens"] == len(llm.encode(PROMPT))
    assert meta["completion_tokens"] == len(out["output_ids"]) == 24
    assert meta["finish_reason"] == {"type": "length", "length": 24}
    assert isinstance(meta["id"], str) and meta["id"]
    assert llm.decode(out["output_ids"]) == out["text"]


def test_attribute_form_and_dict_form_agree(llm, nibble):
    out = llm.generate(PROMPT, {"temperature": 0, "max_new_tokens": 6})
    assert isinstance(out, dict) and isinstance(out, nibble.GenerateResult)
    assert out.outputs[0].text == out["text"] == out.text
    assert out.outputs[0].token_ids == out["output_ids"]
    assert out.outputs[0].finish_reason == "length"
    assert out.prompt == PROMPT
    assert json.loads(json.dumps(out)) == dict(out)  # plain JSON, as SGLang's dicts


def test_stop_string_and_stop_token_are_reported_as_matched(llm):
    first = llm.generate(PROMPT, {"temperature": 0, "max_new_tokens": 4})
    out = llm.generate(PROMPT, {"temperature": 0, "max_new_tokens": 24, "stop": "France"})
    assert "France" not in out["text"]
    if out["meta_info"]["finish_reason"]["type"] == "stop":  # the greedy text mentions France
        assert out["meta_info"]["finish_reason"]["matched"] == "France"
    token = first["output_ids"][0]
    out = llm.generate(PROMPT, {"temperature": 0, "max_new_tokens": 8, "stop_token_ids": [token]})
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": token}
    assert out["text"] == "" and out["output_ids"] == []
    assert out["meta_info"]["completion_tokens"] == 1  # counts the stop token, as SGLang


def test_batch_equals_single_requests(llm):
    prompts = [PROMPT, "1 + 1 =", "Once upon a time"]
    batch = llm.generate(prompts, {"temperature": 0, "max_new_tokens": 12})
    assert isinstance(batch, list) and len(batch) == 3
    for prompt, out in zip(prompts, batch):
        single = llm.generate(prompt, {"temperature": 0, "max_new_tokens": 12})
        assert out["text"] == single["text"]
        assert out["output_ids"] == single["output_ids"]
        assert out.prompt == prompt
    assert len({out["meta_info"]["id"] for out in batch}) == 3
    # One sampling_params per prompt.
    per_prompt = llm.generate(prompts, [{"temperature": 0, "max_new_tokens": n} for n in (1, 2, 3)])
    assert [o["meta_info"]["completion_tokens"] for o in per_prompt] == [1, 2, 3]
    # Token ids in, as SGLang's input_ids.
    ids = llm.generate(input_ids=[llm.encode(p) for p in prompts],
                       sampling_params={"temperature": 0, "max_new_tokens": 12})
    assert [o["text"] for o in ids] == [o["text"] for o in batch]
    assert ids[0].prompt is None


def test_streaming_chunks_add_up_to_the_blocking_result(llm):
    whole = llm.generate(PROMPT, GREEDY)
    chunks = list(llm.generate(PROMPT, GREEDY, stream=True))
    assert len(chunks) > 1
    assert "".join(c["text"] for c in chunks) == whole["text"]
    assert [t for c in chunks for t in c["output_ids"]] == whole["output_ids"]
    assert all(c["meta_info"]["finish_reason"] is None for c in chunks[:-1])
    assert chunks[-1]["meta_info"]["finish_reason"] == whole["meta_info"]["finish_reason"]
    counts = [c["meta_info"]["completion_tokens"] for c in chunks]
    assert counts == sorted(counts) and counts[-1] == 24


def test_streaming_a_batch_tags_chunks_with_their_index(llm):
    prompts = [PROMPT, "1 + 1 ="]
    whole = llm.generate(prompts, {"temperature": 0, "max_new_tokens": 10})
    texts = ["", ""]
    finished = set()
    for chunk in llm.generate(prompts, {"temperature": 0, "max_new_tokens": 10}, stream=True):
        texts[chunk["index"]] += chunk["text"]
        if chunk.finished:
            finished.add(chunk["index"])
    assert finished == {0, 1}
    assert texts == [o["text"] for o in whole]


def test_leaving_a_stream_early_cancels_the_request(llm):
    before = llm.stats()["generation_tokens_total"]
    stream = llm.generate(PROMPT, {"temperature": 0, "max_new_tokens": 400, "ignore_eos": True},
                          stream=True)
    for _ in stream:
        break
    stream.close()
    deadline = time.monotonic() + 20
    while llm.stats()["running_requests"] and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = llm.stats()
    assert stats["running_requests"] == 0 and stats["waiting_requests"] == 0
    assert stats["generation_tokens_total"] - before < 400


def test_logprobs(llm):
    out = llm.generate(PROMPT, {"temperature": 0, "max_new_tokens": 5}, return_logprob=True,
                       top_logprobs_num=3, return_text_in_logprobs=True)
    entries = out["meta_info"]["output_token_logprobs"]
    assert [token for _, token, _ in entries] == out["output_ids"]
    assert "".join(text for _, _, text in entries) == out["text"]
    for (logprob, token, _), top in zip(entries, out["meta_info"]["output_top_logprobs"]):
        assert len(top) == 3 and logprob <= 0
        assert top[0][1] == token and math.isclose(top[0][0], logprob)  # greedy: the best one
    assert math.isclose(out.outputs[0].cumulative_logprob, sum(lp for lp, _, _ in entries))


def test_the_gil_is_released_while_waiting_for_the_engine(llm, nibble):
    # Deterministic: the main thread sits in one C++ wait for 1 s (an empty request group never
    # gets a chunk); a Python thread can only run meanwhile if the wait released the GIL.
    finished_at = []
    worker = threading.Thread(target=lambda: (sum(range(200000)),
                                              finished_at.append(time.monotonic())))
    group = nibble._native.RequestGroup()
    worker.start()
    group.poll(1.0)
    returned_at = time.monotonic()
    worker.join()
    assert finished_at and finished_at[0] < returned_at
    # And end to end: Python threads keep running while another thread generates.
    results = []
    params = {"temperature": 0, "max_new_tokens": 16, "ignore_eos": True}
    worker = threading.Thread(target=lambda: results.append(llm.generate(PROMPT, params)))
    worker.start()
    spins = 0
    while worker.is_alive():
        spins += 1
    worker.join()
    assert results[0]["meta_info"]["completion_tokens"] == 16 and spins > 0


def test_async_generate(llm):
    async def main():
        whole = await llm.async_generate(PROMPT, GREEDY)
        texts = []
        async for chunk in await llm.async_generate(PROMPT, GREEDY, stream=True):
            texts.append(chunk["text"])
        both = await asyncio.gather(llm.async_generate(PROMPT, GREEDY),
                                    llm.async_generate("1 + 1 =", GREEDY))
        return whole, "".join(texts), both

    whole, streamed, both = asyncio.run(main())
    assert whole["text"] == streamed == both[0]["text"]


def test_engine_arguments_are_checked(nibble, default_gguf):
    with pytest.raises(TypeError, match=r"'max_runing_requests' \(did you mean "
                                        r"'max_running_requests'\?\)"):
        nibble.Engine(model_path=default_gguf, max_runing_requests=4)
    with pytest.raises(TypeError, match="context_length"):
        nibble.Engine(model_path=default_gguf, context_length="long")
    with pytest.raises(nibble.NibbleError, match="no-such-model.gguf"):
        nibble.Engine(model_path="/nonexistent/no-such-model.gguf")
    with pytest.raises(nibble.NibbleError, match="bogus"):
        nibble.Engine(model_path=default_gguf, quantization="bogus")
    with pytest.raises(nibble.NibbleError, match="tp_size=2"):
        nibble.Engine(model_path=default_gguf, tp_size=2)
    assert issubclass(nibble.NibbleError, RuntimeError)


def test_request_errors_carry_the_cpp_message(llm, nibble):
    with pytest.raises(TypeError, match=r"'max_tokens' \(did you mean 'max_new_tokens'\?\)"):
        llm.generate(PROMPT, {"max_tokens": 4})
    with pytest.raises(nibble.NibbleError, match="temperature"):
        llm.generate(PROMPT, {"temperature": -1.0})
    with pytest.raises(nibble.NibbleError, match="n=2 is not supported"):
        llm.generate(PROMPT, {"n": 2})
    with pytest.raises(nibble.NibbleError, match="context length"):
        llm.generate(PROMPT, {"max_new_tokens": 10**7})
    with pytest.raises(nibble.NibbleError, match=r"input_ids\[1\] = 99999999"):
        llm.generate(input_ids=[1, 99999999])
    with pytest.raises(ValueError, match="exactly one of prompt and input_ids"):
        llm.generate(PROMPT, input_ids=[1, 2])
    with pytest.raises(ValueError, match="2 sampling_params for 3 prompts"):
        llm.generate(["a", "b", "c"], [{}, {}])
    # A failed submit leaves nothing running.
    assert llm.stats()["running_requests"] == 0


def test_shutdown_and_context_manager(nibble, default_gguf):
    with nibble.Engine(model_path=default_gguf, max_total_tokens=512) as engine:
        assert engine.server_args["max_total_tokens"] == 512
        assert engine.generate(PROMPT, {"temperature": 0, "max_new_tokens": 2})["text"]
        stream = engine.generate(PROMPT, {"max_new_tokens": 300, "ignore_eos": True}, stream=True)
        next(stream)
    # The engine went away under a running stream: the stream says so instead of hanging.
    with pytest.raises(nibble.NibbleError, match="shutting down"):
        list(stream)
    with pytest.raises(nibble.NibbleError, match="shut down"):
        engine.generate(PROMPT)
    engine.shutdown()  # idempotent


def test_eval_and_quantize_run_the_packaged_binary(nibble, default_gguf, shared_data):
    report = nibble.eval.perplexity(default_gguf, data_dir=shared_data, context=64, max_windows=2)
    assert report["windows"] == 2 and report["tokens"] == 126
    assert 1 < report["ppl"] < 1000
    with pytest.raises(nibble.NibbleError, match="nibble quantize .*failed"):
        nibble.quantize("/nonexistent/model", "/nonexistent/out")
    assert nibble._cli.flags({"max_windows": 2, "add_special_tokens": True, "stop": ["a", "b"],
                              "json": None, "flag": False}) == [
        "--max-windows", "2", "--add-special-tokens", "--stop", "a", "--stop", "b"]


def _readme_python_example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("\n## Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs_as_written(nibble_bin, default_gguf):
    code = _readme_python_example()
    code = code.replace("~/.cache/nibble/models/SmolLM2-135M-Instruct.Q4_1.gguf", str(default_gguf))
    env = dict(os.environ, PYTHONPATH=str(_package_dir(nibble_bin)))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("Generated text:") == 3
    assert "Paris" in proc.stdout  # the greedy stream


@pytest.mark.skipif(os.environ.get("NIBBLE_TEST_WHEEL") != "1",
                    reason="building the wheel takes minutes; set NIBBLE_TEST_WHEEL=1")
def test_pip_wheel_builds_a_working_package(tmp_path, default_gguf):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-build-isolation",
                    "--no-deps", "-w", str(tmp_path / "dist"), "-q",
                    "-Ccmake.define.NIBBLE_WERROR=ON"], check=True, timeout=3000)
    (wheel,) = (tmp_path / "dist").glob("nibble-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        zf.extractall(tmp_path / "site")
    assert any(re.fullmatch(r"nibble/_native\..*\.so", n) for n in names)
    assert {"nibble/bin/nibble", "nibble/__init__.py", "nibble/py.typed",
            "nibble/_native.pyi"} <= set(names)
    os.chmod(tmp_path / "site" / "nibble" / "bin" / "nibble", 0o755)
    code = ("import json, nibble\n"
            f"llm = nibble.Engine(model_path={str(default_gguf)!r})\n"
            "text = llm.generate('The capital of France is', {'temperature': 0, "
            "'max_new_tokens': 4})['text']\n"
            "print(json.dumps([text, str(nibble.binary())]))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("NIBBLE_BIN", "PYTHONPATH")}
    env["PYTHONPATH"] = str(tmp_path / "site")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300, check=True)
    text, binary = json.loads(proc.stdout.splitlines()[-1])
    assert text.startswith(" Paris")
    assert binary == str(tmp_path / "site" / "nibble" / "bin" / "nibble")
