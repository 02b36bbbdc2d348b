"""`nibble serve` under abuse (issue 9), bounded to a minute or two on a 2-core machine:
slow-loris clients are cut off by the header and body deadlines, 1,000 idle connections do not
stop 64 concurrent streams from being served, and a burst of twice the capacity gets quick
503s with Retry-After for what does not fit, a final answer for everything admitted, and a
server that is fully usable afterwards."""
import concurrent.futures
import http.client
import json
import socket
import time

import pytest

from server_util import ServerProcess, sse_events

COMP = "/v1/completions"


def assert_healthy(server):
    status, body = server.json("GET", "/health")
    assert status == 200 and body["status"] == "ok"


def completion(server, prompt, max_tokens, stream=False, timeout=120):
    """One request on its own connection: (status, headers, body bytes, seconds taken)."""
    start = time.time()
    status, headers, data = server.request(
        "POST", COMP, {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                       "ignore_eos": True, "stream": stream}, timeout=timeout)
    return status, headers, data, time.time() - start


def closed_by_server(sock, deadline_s):
    """True when the server closes `sock` (recv sees EOF or a reset) within deadline_s."""
    sock.settimeout(deadline_s)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
            # An error answer (408/400) before the close is fine too.
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


@pytest.fixture(scope="module")
def slow_server(nibble_bin, default_gguf):
    srv = ServerProcess(nibble_bin, default_gguf, "--header-timeout", 1, "--body-timeout", 2,
                        "--threads", 2)
    try:
        srv.wait_healthy()
        yield srv
    finally:
        assert srv.terminate() == 0, srv.log_text()


def test_slowloris_trickled_headers_are_cut_off(slow_server):
    # One byte every 0.2 s keeps the connection busy forever unless the header deadline is a
    # total, not an idle, timeout.
    sock = socket.create_connection(("127.0.0.1", slow_server.port), timeout=10)
    start = time.time()
    try:
        request = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 100
        for i, byte in enumerate(request):
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            if time.time() - start > 8:
                pytest.fail("the server kept a connection that trickles its headers for 8 s")
            time.sleep(0.2)
        assert closed_by_server(sock, 5)
        assert time.time() - start < 6
    finally:
        sock.close()
    assert_healthy(slow_server)


def test_slowloris_trickled_body_is_cut_off(slow_server):
    sock = socket.create_connection(("127.0.0.1", slow_server.port), timeout=10)
    start = time.time()
    try:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n")
        closed = False
        for _ in range(60):
            try:
                sock.sendall(b" ")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.2)
            if time.time() - start > 8:
                break
        assert closed or closed_by_server(sock, 5)
        # --body-timeout is 2 s; the header read before it had its own 1 s.
        assert time.time() - start < 6
    finally:
        sock.close()
    assert_healthy(slow_server)


def test_many_slow_clients_do_not_block_others(slow_server):
    socks = []
    try:
        for _ in range(50):
            s = socket.create_connection(("127.0.0.1", slow_server.port), timeout=10)
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        status, _, data, seconds = completion(slow_server, "Hello", 2)
        assert status == 200, data
        assert seconds < 30
    finally:
        for s in socks:
            s.close()


def test_idle_connections_and_concurrent_streams(nibble_bin, default_gguf):
    srv = ServerProcess(nibble_bin, default_gguf, "--header-timeout", 60, "--max-connections", 2000,
                        "--max-running-requests", 64, "--threads", 2)
    idle = []
    try:
        srv.wait_healthy()
        for _ in range(1000):
            idle.append(socket.create_connection(("127.0.0.1", srv.port), timeout=10))
        assert_healthy(srv)

        def stream(i):
            status, _, data, _ = completion(srv, f"Story {i}:", 4, stream=True, timeout=240)
            return status, data

        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            results = list(pool.map(stream, range(64)))
        for status, data in results:
            assert status == 200, data
            events = sse_events(data)
            assert events[-1] == "[DONE]"
            assert any(e["choices"][0]["finish_reason"] == "length" for e in events[:-1])
        # The idle connections are all still open: none was dropped to make room.
        for s in idle[:: 100]:
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(1)
        assert_healthy(srv)
    finally:
        for s in idle:
            s.close()
        assert srv.terminate() == 0, srv.log_text()


def test_overload_gets_quick_503_and_recovers(nibble_bin, default_gguf):
    # Capacity: 2 running + 2 queued. A burst of 8 (twice the capacity) must see the excess
    # refused at once with Retry-After, while every admitted request completes.
    srv = ServerProcess(nibble_bin, default_gguf, "--max-running-requests", 2,
                        "--max-queued-requests", 2, "--threads", 2)
    try:
        srv.wait_healthy()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: completion(srv, f"Count to {i}:", 24), range(8)))
        ok = [r for r in results if r[0] == 200]
        refused = [r for r in results if r[0] == 503]
        assert len(ok) + len(refused) == 8, [r[0] for r in results]
        assert len(ok) >= 2 and refused, [r[0] for r in results]
        for status, headers, data, seconds in refused:
            assert int(headers["retry-after"]) >= 1
            assert json.loads(data)["error"]["type"] == "service_unavailable_error"
            assert seconds < 5, "a refusal must be quick, not wait for capacity"
        for status, headers, data, seconds in ok:
            body = json.loads(data)
            assert body["choices"][0]["finish_reason"] == "length"
            assert body["usage"]["completion_tokens"] == 24
        # Full recovery: nothing left running or waiting, and a new request is served.
        metrics = srv.metrics()
        running = [v for k, v in metrics.items() if "num_running_reqs" in k]
        waiting = [v for k, v in metrics.items() if "num_queue_reqs" in k]
        assert all(v == 0 for v in running + waiting), metrics
        status, _, data, _ = completion(srv, "Hello", 2)
        assert status == 200, data
        assert_healthy(srv)
    finally:
        assert srv.terminate() == 0, srv.log_text()
