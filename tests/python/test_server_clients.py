"""Clients of `nibble serve`: 64 concurrent greedy streams against the same requests sent one at
a time, `nibble eval --base-url` against the in-process engine, and `nibble bench serve`."""
import concurrent.futures
import http.client
import json
import subprocess

import pytest

from server_util import ServerProcess, free_port, sse_events


@pytest.fixture(scope="module")
def server(nibble_bin, default_gguf):
    srv = ServerProcess(nibble_bin, default_gguf, "--max-running-requests", 64, "--threads", 2)
    try:
        srv.wait_healthy()
        yield srv
    finally:
        assert srv.terminate() == 0, srv.log_text()


def stream_text(server, prompt, max_tokens):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
    try:
        body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
        conn.request("POST", "/v1/completions", body=json.dumps(body), headers=server.headers())
        response = conn.getresponse()
        data = response.read()
        assert response.status == 200, data
    finally:
        conn.close()
    events = sse_events(data)
    assert events[-1] == "[DONE]"
    return "".join(e["choices"][0]["text"] for e in events[:-1] if e.get("choices"))


def test_64_concurrent_streams_equal_sequential(server):
    # Prompts of different lengths, so that the batch mixes prefill and decode of ragged rows.
    prompts = [f"{'Once more, ' * (i % 5)}the number {i} is" for i in range(64)]
    sequential = [stream_text(server, p, 2) for p in prompts]
    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        together = list(pool.map(lambda p: stream_text(server, p, 2), prompts))
    assert all(sequential)
    assert together == sequential
    status, body = server.json("GET", "/health", auth=False)
    assert status == 200


def run_nibble(nibble_bin, *args, check=True):
    proc = subprocess.run([str(nibble_bin), *map(str, args)], capture_output=True, text=True,
                          timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def eval_json(nibble_bin, *args):
    return json.loads(run_nibble(nibble_bin, "eval", *args, "--json", "-").stdout)


def test_gsm8k_base_url_equals_in_process(server, nibble_bin, default_gguf, shared_data):
    task = ["gsm8k", "--data-dir", shared_data, "--limit", 2, "--shots", 1,
            "--max-new-tokens", 16]
    local = eval_json(nibble_bin, *task, "--model-path", default_gguf, "--threads", 2)
    remote = eval_json(nibble_bin, *task, "--base-url", server.base)
    assert [i["output"] for i in remote["per_item"]] == [i["output"] for i in local["per_item"]]
    assert remote["acc"] == local["acc"]
    assert remote["model"].startswith(server.base)


def test_lambada_base_url_equals_in_process(server, nibble_bin, default_gguf, shared_data):
    task = ["lambada", "--data-dir", shared_data, "--limit", 3]
    loglik = eval_json(nibble_bin, *task, "--model-path", default_gguf, "--threads", 2)
    by_generation = eval_json(nibble_bin, *task, "--by-generation", "--max-new-tokens", 5,
                              "--model-path", default_gguf, "--threads", 2)
    remote = eval_json(nibble_bin, *task, "--max-new-tokens", 5, "--base-url", server.base)
    assert remote["ppl"] is None
    assert [i["output"] for i in remote["per_item"]] == \
        [i["output"] for i in by_generation["per_item"]]
    # Greedy generation spells the word exactly when its tokens are all the argmax.
    assert [i["correct"] for i in remote["per_item"]] == [i["correct"] for i in loglik["per_item"]]


def test_eval_base_url_unreachable_names_the_url(nibble_bin, shared_data):
    url = f"http://127.0.0.1:{free_port()}"
    proc = run_nibble(nibble_bin, "eval", "gsm8k", "--data-dir", shared_data, "--limit", 1,
                      "--base-url", url, "--model", "m", check=False)
    assert proc.returncode == 1
    assert f"POST {url}/v1/completions: cannot connect" in proc.stderr


def bench_serve(nibble_bin, server, tmp_path, *args):
    out = tmp_path / "bench.jsonl"
    proc = run_nibble(nibble_bin, "bench", "serve", "--base-url", server.base, "--output-file",
                      out, "--warmup-requests", 0, *args)
    return proc.stdout, json.loads(out.read_text().splitlines()[-1])


def test_bench_serve_completions(nibble_bin, server, tmp_path):
    table, result = bench_serve(nibble_bin, server, tmp_path, "--num-prompts", 3,
                                "--random-input-len", 16, "--random-output-len", 4,
                                "--random-range-ratio", 1, "--max-concurrency", 2, "--seed", 3)
    assert "Successful requests:" in table and "Median TTFT (ms):" in table
    assert result["completed"] == 3 and result["failed"] == 0
    # Exact lengths: the prompts tokenize to 16 tokens and ignore_eos gives 4 output tokens.
    assert result["input_lens"] == [16, 16, 16]
    assert result["output_lens"] == [4, 4, 4]
    assert result["total_output_tokens"] == 12
    assert 0 < result["ttft_ms"]["mean"] <= result["e2e_latency_ms"]["mean"]
    assert result["tpot_ms"]["mean"] > 0 and result["itl_ms"]["median"] > 0
    assert all(1 <= len(itl) <= 3 for itl in result["itls"])
    assert result["max_concurrency"] == 2 and result["request_rate"] == "inf"


def test_bench_serve_chat_poisson(nibble_bin, server, tmp_path):
    _, result = bench_serve(nibble_bin, server, tmp_path, "--backend", "openai-chat",
                            "--num-prompts", 2, "--random-input-len", 8, "--random-output-len",
                            3, "--random-range-ratio", 1, "--request-rate", 20)
    assert result["completed"] == 2 and result["failed"] == 0
    assert result["output_lens"] == [3, 3]
    # The chat template wraps the prompt: the server's count is larger than the text's.
    assert all(n > 8 for n in result["input_lens"])
    assert result["request_rate"] == 20


def test_bench_serve_reports_an_unreachable_server(nibble_bin):
    url = f"http://127.0.0.1:{free_port()}"
    proc = run_nibble(nibble_bin, "bench", "serve", "--base-url", url, "--num-prompts", 1,
                      "--random-input-len", 4, "--random-output-len", 2, check=False)
    assert proc.returncode == 1
    assert f"GET {url}/v1/models: cannot connect" in proc.stderr
