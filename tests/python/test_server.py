"""`nibble serve` end to end: the real `openai` client, SGLang's /generate through curl, bad
inputs that must fail cleanly, concurrency, prefix-cache hits, cancellation and shutdown."""
import concurrent.futures
import http.client
import json
import socket
import subprocess
import time

import pytest

from server_util import ServerProcess, sse_events

openai = pytest.importorskip("openai")

API_KEY = "test-key-123"
MAX_BODY = 256 * 1024


@pytest.fixture(scope="module")
def server(nibble_bin, default_gguf):
    srv = ServerProcess(nibble_bin, default_gguf, "--header-timeout", "1", "--max-body-bytes",
                        MAX_BODY, "--max-n", 8, "--max-running-requests", 16, "--threads", 2,
                        "--served-model-name", "smollm2", api_key=API_KEY)
    try:
        srv.wait_healthy()
        yield srv
    finally:
        code = srv.terminate()
        assert code == 0, srv.log_text()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base + "/v1", api_key=API_KEY, max_retries=0, timeout=120)


def chat(client, content, **kw):
    kw.setdefault("max_tokens", 8)
    kw.setdefault("temperature", 0)
    return client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": content}], **kw)


def assert_alive(server):
    status, body = server.json("GET", "/health", auth=False)
    assert status == 200 and body["status"] == "ok"


# --- happy paths -------------------------------------------------------------------------

def test_health_models_and_info(server, client):
    assert_alive(server)
    models = client.models.list()
    assert [m.id for m in models.data] == ["smollm2"]
    status, info = server.json("GET", "/get_model_info")
    assert status == 200 and info["is_generation"] is True
    status, info = server.json("GET", "/get_server_info")
    assert status == 200 and info["max_running_requests"] == 16


def test_completion(client):
    r = client.completions.create(model="smollm2", prompt="The capital of France is",
                                  max_tokens=6, temperature=0)
    choice = r.choices[0]
    assert choice.text and choice.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and 0 < r.usage.completion_tokens <= 6
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_and_stream_agree(client):
    whole = chat(client, "Name three colors.", max_tokens=10)
    text = whole.choices[0].message.content
    assert whole.choices[0].message.role == "assistant" and text
    chunks = list(chat(client, "Name three colors.", max_tokens=10, stream=True,
                       stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_completion_stream_matches(client):
    whole = client.completions.create(model="smollm2", prompt="Once upon a time", max_tokens=8,
                                      temperature=0)
    parts = list(client.completions.create(model="smollm2", prompt="Once upon a time",
                                           max_tokens=8, temperature=0, stream=True))
    assert "".join(p.choices[0].text for p in parts) == whole.choices[0].text


def test_n_choices_and_usage(client):
    r = chat(client, "Write a word.", n=3, temperature=0.8, seed=7, max_tokens=5)
    assert sorted(c.index for c in r.choices) == [0, 1, 2]
    # The prompt counts once; completion tokens add up over the choices.
    single = chat(client, "Write a word.", max_tokens=1)
    assert r.usage.prompt_tokens == single.usage.prompt_tokens
    assert r.usage.completion_tokens <= 15 and r.usage.completion_tokens >= 3


def test_seed_reproducible(client):
    a = chat(client, "Tell me a story.", temperature=0.8, seed=1234, max_tokens=12)
    b = chat(client, "Tell me a story.", temperature=0.8, seed=1234, max_tokens=12)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_stop_string(client):
    base = client.completions.create(model="smollm2", prompt="1, 2, 3, 4,", max_tokens=12,
                                     temperature=0).choices[0].text
    words = [w for w in base.split() if w.strip(",")]
    assert len(words) >= 2, base
    stop = words[1]
    r = client.completions.create(model="smollm2", prompt="1, 2, 3, 4,", max_tokens=12,
                                  temperature=0, stop=[stop, "zzzz"])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == base[:base.index(stop)]


def test_logprobs(client):
    r = chat(client, "Hi", logprobs=True, top_logprobs=3, max_tokens=4)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[-1].logprob
    c = client.completions.create(model="smollm2", prompt="Hello", max_tokens=3, temperature=0,
                                  logprobs=2)
    lp = c.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == c.usage.completion_tokens
    assert all(len(t) <= 2 for t in lp.top_logprobs)


def test_generate_with_curl(server):
    auth = ["-H", f"Authorization: Bearer {API_KEY}"]
    body = {"text": "The sky is", "sampling_params": {"max_new_tokens": 5, "temperature": 0}}
    out = subprocess.run(["curl", "-s", "-X", "POST", server.base + "/generate", *auth,
                          "-H", "Content-Type: application/json", "-d", json.dumps(body)],
                         capture_output=True, check=True, timeout=60).stdout
    result = json.loads(out)
    assert result["text"] and result["meta_info"]["completion_tokens"] <= 5
    assert result["meta_info"]["finish_reason"]["type"] in ("stop", "length")
    body["stream"] = True
    out = subprocess.run(["curl", "-sN", "-X", "POST", server.base + "/generate", *auth,
                          "-H", "Content-Type: application/json", "-d", json.dumps(body)],
                         capture_output=True, check=True, timeout=60).stdout
    events = sse_events(out)
    assert events[-1] == "[DONE]"
    assert events[-2]["text"] == result["text"]  # SGLang streams the whole text so far


# --- bad inputs: the right error, and the server stays up -------------------------------

CHAT = "/v1/chat/completions"
COMP = "/v1/completions"
MSG = [{"role": "user", "content": "hi"}]

BAD_REQUESTS = [
    (CHAT, b"{not json", 400, None),
    (CHAT, b"", 400, None),
    (CHAT, b"[1, 2]", 400, None),
    (CHAT, b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', 400, None),
    (CHAT, b'{"messages": [{"role": "user", "content": "\\ud800"}]}', 400, None),
    (CHAT, b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}', 400, None),
    (CHAT, b'{"messages": [{"role": "user", "content": "x"}], "top_p": 1e400}', 400, None),
    (CHAT, {"messages": None}, 400, "messages"),
    (CHAT, {"messages": "hello"}, 400, "messages"),
    (CHAT, {"messages": []}, 400, "messages"),
    (CHAT, {"messages": [123]}, 400, "messages[0]"),
    (CHAT, {"messages": [{}]}, 400, "messages[0].role"),
    (CHAT, {"messages": [{"role": 123, "content": "x"}]}, 400, "messages[0].role"),
    (CHAT, {"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages[0].role"),
    (CHAT, {"messages": [{"role": "system", "content": 123}]}, 400, "messages[0].content"),
    (CHAT, {"messages": MSG, "max_tokens": -5}, 400, "max_tokens"),
    (CHAT, {"messages": MSG, "max_tokens": 0}, 400, "max_tokens"),
    (CHAT, {"messages": MSG, "max_tokens": 2.5}, 400, "max_tokens"),
    (CHAT, {"messages": MSG, "max_tokens": "ten"}, 400, "max_tokens"),
    (CHAT, {"messages": MSG, "max_tokens": 10**9}, 400, "max_tokens"),
    (CHAT, {"messages": MSG, "n": 100000}, 400, "n"),
    (CHAT, {"messages": MSG, "temperature": -1}, 400, "temperature"),
    (CHAT, {"messages": MSG, "temperature": "hot"}, 400, "temperature"),
    (CHAT, {"messages": MSG, "top_p": 0}, 400, "top_p"),
    (CHAT, {"messages": MSG, "top_logprobs": 5}, 400, "top_logprobs"),
    (CHAT, {"messages": MSG, "logprobs": True, "top_logprobs": 50}, 400, "top_logprobs"),
    (CHAT, {"messages": MSG, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    (CHAT, {"messages": MSG, "stop": [""]}, 400, "stop"),
    (CHAT, {"messages": MSG, "frobnicate": 1}, 400, "frobnicate"),
    (CHAT, {"messages": MSG, "model": "gpt-4"}, 404, "model"),
    (COMP, {"prompt": ""}, 400, "prompt"),
    (COMP, {"prompt": [1, -3]}, 400, "prompt"),
    (COMP, {"prompt": [10**9]}, 400, "prompt"),
    (COMP, {"prompt": "x", "logprobs": 99}, 400, "logprobs"),
    ("/generate", {"text": "x", "sampling_params": {"temperature": -2}}, 400,
     "sampling_params.temperature"),
    ("/generate", {"sampling_params": {}}, 400, None),
    ("/generate", {"text": "", "sampling_params": {}}, 400, "text"),
    ("/generate", {"input_ids": [5], "sampling_params": {"max_new_tokens": 10**9}}, 400,
     "sampling_params.max_new_tokens"),
]


@pytest.mark.parametrize("path,body,status,param", BAD_REQUESTS)
def test_bad_request(server, path, body, status, param):
    code, _, data = server.request("POST", path, body)
    assert code == status, data
    error = json.loads(data)["error"]
    assert error["message"] and error["type"]
    if param:
        assert error["param"] == param, error
    assert_alive(server)


def test_bad_inputs_leave_server_working(server, client):
    assert chat(client, "Say hi.", max_tokens=2).choices[0].message.content is not None
    assert_alive(server)


def test_oversized_body(server):
    code, _, data = server.request("POST", CHAT, b"x" * (MAX_BODY * 2))
    assert code == 413 and "limit" in json.loads(data)["error"]["message"]
    assert_alive(server)


def test_oversized_headers(server):
    code, _, data = server.request("GET", "/health", headers={"X-Junk": "y" * 40000}, auth=False)
    assert code == 431 and json.loads(data)["error"]["message"]
    assert_alive(server)


def test_unknown_route_and_method(server):
    assert server.request("GET", "/v1/nothing")[0] == 404
    code, headers, _ = server.request("GET", CHAT)
    assert code == 405 and "POST" in headers["allow"]


def test_api_key(server):
    code, _, data = server.request("POST", CHAT, {"messages": MSG}, auth=False)
    assert code == 401 and json.loads(data)["error"]["type"] == "authentication_error"
    code, _, _ = server.request("GET", "/v1/models", headers={"Authorization": "Bearer wrong"})
    assert code == 401
    assert server.request("GET", "/metrics", auth=False)[0] == 401
    assert server.request("GET", "/health", auth=False)[0] == 200
    bad = openai.OpenAI(base_url=server.base + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_slowloris_header_timeout(server):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
        start = time.time()
        # The server gives up on us after --header-timeout (1 s): recv sees the close.
        assert sock.recv(1024) == b""
        assert time.time() - start < 5
    finally:
        sock.close()
    assert_alive(server)


# --- load, cache, cancellation ------------------------------------------------------------

def test_concurrent_streams_match_sequential(server, client):
    prompts = [f"Count from {i} to {i + 5}." for i in range(16)]

    def run(prompt):
        stream = chat(client, prompt, max_tokens=6, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    sequential = [chat(client, p, max_tokens=6).choices[0].message.content for p in prompts]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        together = list(pool.map(run, prompts))
    assert together == sequential
    assert_alive(server)


def test_prefix_cache_hits_in_metrics(server, client):
    system = "You are a meticulous assistant. " * 40
    before = server.metrics()["nibble:cached_tokens_total"]
    for question in ("What is 2+2?", "What is 3+3?"):
        r = client.chat.completions.create(
            model="smollm2", max_tokens=2, temperature=0,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": question}])
    after = server.metrics()
    assert after["nibble:cached_tokens_total"] - before >= 200
    assert r.usage.prompt_tokens_details.cached_tokens >= 200
    assert after["nibble:cache_hit_rate"] > 0


def requests_kv_tokens(server):
    status, info = server.json("GET", "/get_server_info")
    state = info["internal_states"][0]
    return state["kv_tokens_in_requests"], state["num_running_reqs"]


def test_cancelled_stream_frees_kv(server):
    baseline, _ = requests_kv_tokens(server)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    body = json.dumps({"messages": MSG, "max_tokens": 400, "stream": True, "ignore_eos": True})
    conn.request("POST", CHAT, body=body, headers=server.headers())
    response = conn.getresponse()
    assert response.status == 200
    # The role event comes at once; a second event means a token: the request is running.
    events = 0
    while events < 2:
        events += response.readline().startswith(b"data: ")
    deadline = time.time() + 10  # the engine's stats are a per-step snapshot: may lag a token
    while time.time() < deadline and requests_kv_tokens(server)[1] < 1:
        time.sleep(0.02)
    used, running = requests_kv_tokens(server)
    assert running >= 1 and used > baseline
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    deadline = time.time() + 10
    while time.time() < deadline and requests_kv_tokens(server) != (baseline, 0):
        time.sleep(0.05)
    assert requests_kv_tokens(server) == (baseline, 0)
    assert server.metrics()["nibble:num_aborted_requests_total"] >= 1


def test_disconnect_cancels_non_streaming_request(server):
    baseline, _ = requests_kv_tokens(server)
    aborted = server.metrics()["nibble:num_aborted_requests_total"]
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    body = json.dumps({"prompt": "Tell me everything.", "max_tokens": 400, "ignore_eos": True})
    sock.sendall((f"POST {COMP} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(body)}\r\n\r\n"
                  f"{body}").encode())
    deadline = time.time() + 10
    while time.time() < deadline and requests_kv_tokens(server)[1] < 1:
        time.sleep(0.02)
    assert requests_kv_tokens(server)[1] >= 1
    sock.close()
    deadline = time.time() + 10
    while time.time() < deadline and requests_kv_tokens(server) != (baseline, 0):
        time.sleep(0.05)
    assert requests_kv_tokens(server) == (baseline, 0)
    assert server.metrics()["nibble:num_aborted_requests_total"] == aborted + 1


def test_sigterm_drains_in_flight(nibble_bin, default_gguf):
    srv = ServerProcess(nibble_bin, default_gguf, "--threads", 1, "--shutdown-timeout", 30,
                        "--mem-fraction-static", 0.8, "--disable-cuda-graph")
    try:
        srv.wait_healthy()
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
        conn.request("POST", COMP, body=json.dumps({"prompt": "Hello", "max_tokens": 24,
                                                    "ignore_eos": True, "stream": True}),
                     headers=srv.headers())
        response = conn.getresponse()
        assert response.readline().startswith(b"data: ")
        srv.proc.send_signal(subprocess.signal.SIGTERM)
        events = sse_events(response.read())
        assert events[-1] == "[DONE]"
        assert [e for e in events[:-1] if e["choices"][0]["finish_reason"]][0]["choices"][0][
            "finish_reason"] == "length"
        assert srv.proc.wait(timeout=30) == 0
        log = srv.log_text()
        assert "--mem-fraction-static 0.8 is ignored on the CPU" in log
        assert "curl http://127.0.0.1:" in log
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()


def test_bad_flags(nibble_bin):
    r = subprocess.run([str(nibble_bin), "serve", "--bogus-flag"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0
    assert "--bogus-flag" in r.stderr and "--model-path" in r.stderr and "--port" in r.stderr
    r = subprocess.run([str(nibble_bin), "serve", "--tp-size", "2"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0 and "--tp-size" in r.stderr


def test_queue_full_then_sigterm_past_timeout_aborts(nibble_bin, default_gguf):
    srv = ServerProcess(nibble_bin, default_gguf, "--threads", 1, "--shutdown-timeout", 0.3,
                        "--max-running-requests", 1, "--max-queued-requests", 0)
    try:
        srv.wait_healthy()
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
        conn.request("POST", COMP, body=json.dumps({"prompt": "Hello", "max_tokens": 1000,
                                                    "ignore_eos": True, "stream": True}),
                     headers=srv.headers())
        response = conn.getresponse()
        events = 0
        while events < 2:  # role event, then a token: the request holds the only slot
            events += response.readline().startswith(b"data: ")
        code, headers, data = srv.request("POST", COMP, {"prompt": "Hi", "max_tokens": 2})
        assert code == 503 and headers["retry-after"]
        assert json.loads(data)["error"]["type"] == "service_unavailable_error"
        start = time.time()
        srv.proc.send_signal(subprocess.signal.SIGTERM)
        events = sse_events(response.read())
        assert events[-1] == "[DONE]"
        finishes = [e["choices"][0]["finish_reason"] for e in events[:-1]
                    if e["choices"][0]["finish_reason"]]
        assert finishes == ["abort"]
        assert srv.proc.wait(timeout=30) == 0
        assert time.time() - start < 10
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
