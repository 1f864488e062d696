"""A bounded inference pool: at most ``workers`` jobs run, at most ``queue`` more wait, the rest are refused.

The web app decodes, preprocesses and runs the models in these threads, never on the event loop, so one slow
request (a large JPEG, a Grad-CAM pass) never blocks health checks, thumbnails or the other requests. Admission is
counted, not queued without limit: when ``workers + queue`` jobs are in flight :meth:`InferencePool.run` raises
:class:`Overloaded` at once, which the API turns into ``503`` with ``Retry-After``, so a burst degrades into fast
refusals instead of unbounded latency and memory. A job that exceeds ``timeout`` seconds is answered with
:class:`InferenceTimeout` (``504``); its thread finishes in the background and keeps its slot until then, so the
pool's bound on concurrent work still holds.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class Overloaded(RuntimeError):
    """All workers are busy and the wait queue is full."""


class InferenceTimeout(RuntimeError):
    """A job ran longer than the pool's timeout."""


class InferencePool:
    """Thread pool with a hard bound on running + waiting jobs.

    Args:
        workers: jobs run at the same time (threads).
        queue: jobs allowed to wait for a free worker; ``0`` refuses any job while all workers are busy.
        timeout: seconds a caller waits for its job before :class:`InferenceTimeout`.
    """

    def __init__(self, workers: int = 2, queue: int = 8, timeout: float = 60.0) -> None:
        if workers < 1 or queue < 0 or timeout <= 0:
            raise ValueError(f"need workers >= 1, queue >= 0, timeout > 0; got {workers}, {queue}, {timeout}")
        self.workers, self.queue, self.timeout = workers, queue, timeout
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ssl-art-infer")
        self._lock = threading.Lock()
        self._in_flight = 0
        self.refused = 0  # jobs answered with Overloaded since start

    @property
    def in_flight(self) -> int:
        """Jobs running or waiting now."""
        return self._in_flight

    def _release(self, _f: Future[Any]) -> None:
        with self._lock:
            self._in_flight -= 1

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Start ``fn(*args)`` in a worker, or raise :class:`Overloaded` when ``workers + queue`` are in flight."""
        with self._lock:
            if self._in_flight >= self.workers + self.queue:
                self.refused += 1
                raise Overloaded(f"all {self.workers} workers are busy and {self.queue} requests are waiting")
            self._in_flight += 1
        try:
            fut = self._executor.submit(fn, *args)
        except BaseException:
            with self._lock:
                self._in_flight -= 1
            raise
        fut.add_done_callback(self._release)
        return fut

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Await ``fn(*args)`` run in a worker (see :meth:`submit`), at most ``timeout`` seconds."""
        fut = asyncio.wrap_future(self.submit(fn, *args))
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self.timeout)
        except asyncio.TimeoutError as e:
            raise InferenceTimeout(f"the request took longer than {self.timeout:g} s") from e

    def stats(self) -> dict[str, int]:
        """``{"workers", "queue", "in_flight", "refused"}`` for the health endpoint."""
        return {"workers": self.workers, "queue": self.queue, "in_flight": self._in_flight, "refused": self.refused}

    def shutdown(self) -> None:
        """Stop accepting work; running jobs finish."""
        self._executor.shutdown(wait=False, cancel_futures=True)
