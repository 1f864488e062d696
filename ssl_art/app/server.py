"""``ssl-art serve``: load a classifier and/or an index, then run the FastAPI app on uvicorn with hard limits.

Connection hygiene lives in :class:`TimedH11Protocol`, uvicorn's h11 protocol with two additions: a connection must
deliver each complete request (head and body) within ``request_timeout`` seconds of opening or of its previous
response -- uvicorn itself only times out idle keep-alive connections *after* a first response, so a client that
connects and sends nothing (or trickles a header) held its slot forever -- and malformed HTTP (a non-numeric
``Content-Length``...) is answered with a JSON ``400`` instead of plain text. Idle keep-alive connections close
after ``keep_alive`` seconds, ``max_connections`` bounds open connections (uvicorn answers ``503`` beyond it),
request bodies are capped by :class:`~ssl_art.app.limits.BodyLimit` and inference runs in the bounded
:class:`~ssl_art.app.workers.InferencePool` (uploads), with a second one for the cheap work of browsing the
collection (similar-by-row from stored vectors, thumbnails), so clicking a neighbour never queues behind uploads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
from uvicorn import Config, Server
from uvicorn.protocols.http.h11_impl import H11Protocol

from ssl_art.app.api import create_app
from ssl_art.app.service import AppState, ClassifierService, DecodeLimits, SimilarService
from ssl_art.app.workers import InferencePool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeSettings:
    """Server limits (every one a ``ssl-art serve`` flag)."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 2  # inference threads
    queue: int = 16  # requests allowed to wait for a worker; beyond: 503 + Retry-After
    light_workers: int = 2  # threads for similar-by-row and thumbnails (no model forward, never behind uploads)
    light_queue: int = 64
    inference_timeout: float = 60.0  # seconds per job before 504
    max_upload_mb: float = 20.0  # request body limit (413 above)
    max_pixels: int = 50_000_000  # upload decode guard: width * height
    request_timeout: float = 30.0  # seconds to receive a complete request (head + body)
    keep_alive: int = 5  # seconds an idle keep-alive connection stays open
    max_connections: int = 512  # open connections; uvicorn answers 503 beyond
    retry_after: int = 2  # seconds, in 503 answers
    k: int = 10  # similar works per query (the page's default; `?k=` overrides)


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a per-request receive deadline and JSON ``400`` for malformed HTTP."""

    request_timeout: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        if not self.transport.is_closing():
            log.debug("closing %s: no complete request within %.0f s", self.client, self.request_timeout)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR):
            self._disarm()  # the request is in; the app's own time is bounded by the worker pool's timeout

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection gets its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        body = json.dumps({"error": f"malformed HTTP request ({msg.rstrip('.')}): check the request line and headers"})
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        self.transport.write(self.conn.send(h11.Response(status_code=400, headers=headers, reason=b"Bad Request")))
        self.transport.write(self.conn.send(h11.Data(data=body.encode())))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()


def _embedder_for(index: Any, checkpoint: str, backbone: str, seed: int) -> Any:
    """The index's model: ``checkpoint`` when given, else what the index records (``random:<name>:seed<N>``)."""
    from ssl_art.retrieval.embedder import load_embedder

    src = index.meta.source
    m = re.fullmatch(r"random:(.+):seed(\d+)", src or "")
    if not checkpoint and m:
        backbone, seed = m.group(1), int(m.group(2))
    elif not checkpoint and src and Path(src).exists():
        checkpoint = src
    return load_embedder(checkpoint, backbone, seed, index.meta.image_size)


def load_state(
    classifier: str = "",
    index: str = "",
    checkpoint: str = "",
    backbone: str = "resnet18",
    model_seed: int = 0,
    max_pixels: int = 50_000_000,
) -> AppState:
    """Load what ``ssl-art serve`` serves, with every integrity check done *now* (a bad file fails startup).

    Raises:
        ValueError: nothing given, a damaged index/manifest (naming the file), or the model does not match the index.
        FileNotFoundError: a missing classifier or index.
    """
    clf = ClassifierService.load(classifier) if classifier else None
    sim = None
    if index:
        from ssl_art.retrieval.index import RetrievalIndex

        idx = RetrievalIndex.load(index)
        sim = SimilarService(idx, _embedder_for(idx, checkpoint, backbone, model_seed))
    return AppState(clf, sim, DecodeLimits(max_pixels=max_pixels))


def make_server(state: AppState, settings: ServeSettings) -> tuple[Server, Any]:
    """A configured uvicorn ``Server`` (not started; ``server.run(sockets=[...])`` serves a bound socket)."""
    pool = InferencePool(settings.workers, settings.queue, settings.inference_timeout)
    light = InferencePool(settings.light_workers, settings.light_queue, settings.inference_timeout)
    app = create_app(state, pool, int(settings.max_upload_mb * 2**20), settings.retry_after, light, settings.k)
    protocol = type("Protocol", (TimedH11Protocol,), {"request_timeout": settings.request_timeout})
    config = Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol,
        ws="none",
        lifespan="off",
        timeout_keep_alive=settings.keep_alive,
        limit_concurrency=settings.max_connections,
        timeout_graceful_shutdown=5,
        access_log=False,
        log_config=None,
    )
    return Server(config), app


def serve(state: AppState, settings: ServeSettings) -> None:
    """Serve until interrupted (Ctrl-C)."""
    server, _ = make_server(state, settings)
    log.info("serving http://%s:%d/ (API docs at /docs; Ctrl-C to stop)", settings.host, settings.port)
    server.run()
