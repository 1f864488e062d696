"""Request-size limit as a small ASGI middleware: ``413`` JSON before the body is read, chunked bodies included.

A declared ``Content-Length`` above the limit is refused at once (the body is never read); a body without one
(chunked transfer) is counted as it arrives and the response is replaced by the same ``413`` once it crosses the
limit, whatever the application would have answered. A ``Content-Length`` that is not a number never gets here:
the HTTP parser answers it with ``400`` (see :mod:`ssl_art.app.server`).
"""

from __future__ import annotations

import json
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]


async def send_json(send: Any, status: int, obj: dict[str, Any], headers: list[tuple[bytes, bytes]] = []) -> None:  # noqa: B006
    """Send a complete JSON response through an ASGI ``send``."""
    body = json.dumps(obj).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Wrap an ASGI app so no request body larger than ``max_bytes`` reaches it.

    Args:
        app: the ASGI application.
        max_bytes: largest accepted body.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self) -> dict[str, str]:
        return {"error": f"request body too large: the limit is {self.max_bytes / 2**20:.1f} MiB per upload"}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and int(declared) > self.max_bytes:  # h11 already checked it is an integer
            await send_json(send, 413, self._too_large(), [(b"connection", b"close")])
            return
        state = {"received": 0, "over": False, "started": False}

        async def counted_receive() -> Message:
            msg: Message = await receive()
            if msg["type"] == "http.request":
                state["received"] += len(msg.get("body", b""))
                if state["received"] > self.max_bytes:
                    state["over"] = True
                    return {"type": "http.disconnect"}  # the app stops reading; its answer is replaced below
            return msg

        async def guarded_send(msg: Message) -> None:
            if state["over"]:
                if not state["started"]:
                    state["started"] = True
                    await send_json(send, 413, self._too_large(), [(b"connection", b"close")])
                return
            state["started"] = state["started"] or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not state["over"]:
                raise
        if state["over"] and not state["started"]:
            await send_json(send, 413, self._too_large(), [(b"connection", b"close")])
