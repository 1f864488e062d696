"""The real uvicorn server on loopback: connection deadlines, keep-alive, malformed HTTP (issue 14, cases 2 and 5).

Before: 300 idle connections held 303 ``http.server`` threads forever, and a bad ``Content-Length`` closed the
connection with no reply. Now idle, silent and trickling connections are closed after ``request_timeout`` /
``keep_alive`` without a thread each, and malformed requests get a JSON ``400``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ssl_art.app.server import ServeSettings, make_server
from ssl_art.app.service import AppState, ClassifierService, SimilarService


@pytest.fixture(scope="module")
def live(classifier: ClassifierService, similar: SimilarService) -> Iterator[tuple[str, int]]:
    settings = ServeSettings(port=0, request_timeout=1.0, keep_alive=1, max_upload_mb=1.0)
    server, _ = make_server(AppState(classifier, similar), settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    th = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    th.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    yield "127.0.0.1", port
    server.should_exit = True
    th.join(15)
    sock.close()


def _connect(addr: tuple[str, int]) -> socket.socket:
    s = socket.create_connection(addr, timeout=10)
    return s


def _closed_within(s: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Read until the server closes the connection; (closed in time, bytes received)."""
    s.settimeout(seconds)
    got = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return True, got
            got += chunk
    except TimeoutError:
        return False, got
    except ConnectionResetError:
        return True, got


def test_silent_and_trickling_connections_are_closed_without_threads(live: tuple[str, int]) -> None:
    threads_before = threading.active_count()
    silent = [_connect(live) for _ in range(200)]
    trickle = [_connect(live) for _ in range(20)]
    for s in trickle:
        s.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")  # header never finished
    time.sleep(0.3)
    assert threading.active_count() - threads_before <= 2  # asyncio: no thread per connection
    r = httpx.get(f"http://{live[0]}:{live[1]}/api/health", timeout=10)  # still serving meanwhile
    assert r.status_code == 200
    t0 = time.perf_counter()
    results = [_closed_within(s, 5.0) for s in silent + trickle]
    assert all(closed for closed, _ in results)
    assert time.perf_counter() - t0 < 6
    for s in silent + trickle:
        s.close()


def test_idle_keep_alive_connection_is_closed(live: tuple[str, int]) -> None:
    s = _connect(live)
    s.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
    s.settimeout(10)
    first = s.recv(65536)
    assert first.startswith(b"HTTP/1.1 200")
    closed, _ = _closed_within(s, 4.0)  # keep_alive=1 s
    assert closed
    s.close()


@pytest.mark.parametrize("length", [b"abc", b"-5", b"1, 2"])
def test_bad_content_length_gets_a_json_400_reply(live: tuple[str, int], length: bytes) -> None:
    s = _connect(live)
    s.sendall(b"POST /api/similar HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n")
    closed, got = _closed_within(s, 5.0)
    s.close()
    assert closed and got.startswith(b"HTTP/1.1 400"), got[:200]
    body = json.loads(got.split(b"\r\n\r\n", 1)[1])
    assert "malformed HTTP request" in body["error"]


def test_declared_huge_body_is_413_before_reading(live: tuple[str, int]) -> None:
    s = _connect(live)
    s.sendall(
        b"POST /api/similar HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=z\r\n"
        b"Content-Length: 999999999\r\n\r\n"
    )
    closed, got = _closed_within(s, 5.0)  # headers and body may arrive in separate segments: read to the close
    s.close()
    assert closed and got.startswith(b"HTTP/1.1 413") and b"too large" in got


def test_upload_over_real_http(live: tuple[str, int], similar: SimilarService) -> None:
    data = open(similar.index.paths[4], "rb").read()
    with httpx.Client(base_url=f"http://{live[0]}:{live[1]}", timeout=30) as c:
        r = c.post("/api/similar?k=3", files={"image": ("w.png", data, "image/png")})
        assert r.status_code == 200 and r.json()["hits"][0]["row"] == 4
        r = c.post("/api/classify?topk=2", files={"image": ("w.png", data, "image/png")})
        body: dict[str, Any] = r.json()
        assert r.status_code == 200 and body["gradcam"]["image"].startswith("data:image/png;base64,")
