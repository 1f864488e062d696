"""A minimal nearest-style web page on the standard library's ``http.server`` (no web framework dependency).

``ssl-art serve --index DIR`` serves one page: upload an image (or click one of a sample of the collection) and see
the most similar works with thumbnails, labels and cosine scores. Routes:

* ``GET /`` the page; ``GET /?row=N`` the page with the results for collection work ``N`` (server-rendered);
* ``POST /api/query?k=K`` raw image bytes in the body -> JSON ``{"query", "hits": [...]}``;
* ``GET /api/query?row=N&k=K`` -> the same JSON for a collection work;
* ``GET /thumb/N`` JPEG thumbnail of collection work ``N`` (only manifest rows: no arbitrary file access).

It imports :mod:`ssl_art.retrieval` only (never the engine). Model calls hold a lock, so the threaded server
answers concurrent requests safely; uploads are capped at ``MAX_UPLOAD`` bytes and PIL's decompression-bomb guard
stays on.
"""

from __future__ import annotations

import html
import io
import json
import logging
import threading
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
from PIL import Image

from ssl_art.retrieval.embedder import embed_images, model_hash
from ssl_art.retrieval.index import RetrievalIndex
from ssl_art.retrieval.query import QueryResult, hits_for

log = logging.getLogger(__name__)
MAX_UPLOAD = 20 << 20
THUMB = 160

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>ssl_art: nearest style</title><style>
body{{font-family:sans-serif;margin:1.5em;max-width:1100px}} .grid{{display:flex;flex-wrap:wrap;gap:10px}}
figure{{margin:0;width:{t}px;font-size:12px}} figure img{{width:{t}px;height:{t}px;object-fit:contain;background:#eee}}
.strip img{{width:64px;height:64px;object-fit:cover;margin:2px}} .q{{border:3px solid #c33}}
</style></head><body><h2>Nearest-style retrieval</h2>
<p>{info}</p>
<form id="f"><input type="file" id="file" accept="image/*"> <label>k <input id="k" type="number" value="{k}"
min="1" max="100" style="width:4em"></label> <button>Search</button></form>
<p>or pick a work from the collection:</p><div class="strip">{strip}</div>
<div id="results">{results}</div>
<script>
document.getElementById('f').onsubmit = async (e) => {{
  e.preventDefault(); const f = document.getElementById('file').files[0]; if (!f) return;
  const r = await fetch('/api/query?k=' + document.getElementById('k').value, {{method: 'POST', body: f}});
  const j = await r.json(); const box = document.getElementById('results');
  if (!r.ok) {{ box.textContent = j.error; return; }}
  box.innerHTML = '<h3>Results for ' + j.query.replace(/[<>&]/g, '') + '</h3><div class="grid">' + j.hits.map(h =>
    '<figure><img src="/thumb/' + h.row + '"><figcaption>' + h.score.toFixed(3) + ' &middot; ' +
    (h.label || '').replace(/[<>&]/g, '') + '</figcaption></figure>').join('') + '</div>';
}};
</script></body></html>"""


class RetrievalApp:
    """The state behind the page: index, model (checked against the index's hash), a model lock, sample rows."""

    def __init__(self, index: RetrievalIndex, model: Any, k: int = 12, n_sample: int = 24, seed: int = 0):
        index.check_model(model_hash(model))
        self.index, self.model, self.k = index, model, k
        self.lock = threading.Lock()
        rng = np.random.default_rng(seed)
        self.sample = np.sort(rng.choice(index.ids, size=min(n_sample, len(index.ids)), replace=False))
        self.indexed = np.zeros(len(index.paths), dtype=bool)
        self.indexed[index.ids] = True
        self.label_column = next(iter(index.labels), None)
        self._thumb = lru_cache(maxsize=4096)(self._make_thumb)

    def query_image(self, img: Image.Image, k: int, name: str = "upload") -> QueryResult:
        """Top-``k`` works for an uploaded image."""
        with self.lock:
            q = embed_images(self.model, [img], self.index.meta.kind, self.index.meta.image_size)
        scores, rows = self.index.search(q, k)
        return hits_for(self.index, scores, rows, [name])[0]

    def query_row(self, row: int, k: int) -> QueryResult:
        """Top-``k`` works for collection work ``row`` (itself excluded), from its stored vector if available."""
        if not 0 <= row < len(self.indexed) or not self.indexed[row]:
            raise KeyError(f"row {row} is not in the index")
        q = self.index.vectors(np.array([row]))
        if q is None:
            with self.lock:
                q = embed_images(self.model, [self.index.paths[row]], self.index.meta.kind, self.index.meta.image_size)
        scores, rows = self.index.search(q, k + 1)
        res = hits_for(self.index, scores, rows, [self.index.paths[row]])[0]
        res.hits = [h for h in res.hits if h.row != row][:k]
        for j, h in enumerate(res.hits):
            h.rank = j + 1
        return res

    def _make_thumb(self, row: int) -> bytes:
        with Image.open(self.index.paths[row]) as f:
            im = f.convert("RGB")
        im.thumbnail((THUMB, THUMB))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
        return buf.getvalue()

    def thumb(self, row: int) -> bytes:
        """JPEG thumbnail bytes of an indexed work."""
        if row < 0 or row >= len(self.index.paths):
            raise KeyError(row)
        return self._thumb(row)

    def to_json(self, res: QueryResult) -> dict[str, Any]:
        """JSON-ready result with a ``label`` shortcut (the first manifest label column)."""
        hits = [
            {"rank": h.rank, "row": h.row, "path": h.path, "score": h.score, "labels": h.labels}
            | {"label": h.labels.get(self.label_column) if self.label_column else None}
            for h in res.hits
        ]
        return {"query": res.query, "hits": hits}

    def page(self, res: QueryResult | None = None, query_row: int | None = None) -> str:
        """The HTML page, optionally with server-rendered results."""
        strip = "".join(
            f'<a href="/?row={r}"><img src="/thumb/{r}" title="{html.escape(self._label(r))}"></a>' for r in self.sample
        )
        results = ""
        if res is not None:
            figs = [
                f'<figure><img src="/thumb/{h.row}"><figcaption>{h.score:.3f} &middot; '
                f"{html.escape(self._label(h.row))}</figcaption></figure>"
                for h in res.hits
            ]
            q = f'<figure><img class="q" src="/thumb/{query_row}"><figcaption>query</figcaption></figure>'
            results = f'<h3>Results for {html.escape(res.query)}</h3><div class="grid">{q}{"".join(figs)}</div>'
        m = self.index.meta
        info = html.escape(
            f"{len(self.index.ids)} works, {m.kind} embedding ({m.dim}-d), {self.index.params.index_kind} index, "
            f"model {m.model_hash}"
        )
        return PAGE.format(t=THUMB, k=self.k, info=info, strip=strip, results=results)

    def _label(self, row: int) -> str:
        return (self.index.labels[self.label_column][row] or "") if self.label_column else ""


def make_handler(app: RetrievalApp) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to ``app``."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("%s " + fmt, self.address_string(), *args)

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: Any) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json")

        def _k(self, qs: dict[str, list[str]]) -> int:
            return max(1, min(100, int(qs.get("k", [app.k])[0])))

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            url = urlparse(self.path)
            qs = parse_qs(url.query)
            try:
                if url.path == "/":
                    row = int(qs["row"][0]) if "row" in qs else None
                    res = app.query_row(row, self._k(qs)) if row is not None else None
                    self._send(200, app.page(res, row).encode(), "text/html; charset=utf-8")
                elif url.path == "/api/query" and "row" in qs:
                    self._json(200, app.to_json(app.query_row(int(qs["row"][0]), self._k(qs))))
                elif url.path.startswith("/thumb/"):
                    self._send(200, app.thumb(int(url.path.rsplit("/", 1)[1])), "image/jpeg")
                else:
                    self._json(HTTPStatus.NOT_FOUND, {"error": f"no route {url.path}"})
            except (KeyError, ValueError) as e:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"bad request: {e}"})
            except OSError as e:
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"cannot read image: {e}"})

        def do_POST(self) -> None:  # noqa: N802
            url = urlparse(self.path)
            if url.path != "/api/query":
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no route {url.path}"})
                return
            n = int(self.headers.get("Content-Length", "0"))
            if n <= 0 or n > MAX_UPLOAD:
                self._json(HTTPStatus.BAD_REQUEST, {"error": f"send the image bytes as the body (1..{MAX_UPLOAD} B)"})
                return
            data = self.rfile.read(n)
            try:
                with Image.open(io.BytesIO(data)) as im:
                    img = im.convert("RGB")
                self._json(200, app.to_json(app.query_image(img, self._k(parse_qs(url.query)))))
            except (OSError, Image.DecompressionBombError, ValueError) as e:
                self._json(HTTPStatus.BAD_REQUEST, {"error": f"not a readable image: {e}"})

    return Handler


def make_server(index: RetrievalIndex, model: Any, host: str = "127.0.0.1", port: int = 8000, k: int = 12) -> Any:
    """A ready ``ThreadingHTTPServer`` (``port=0`` picks a free port: see ``server.server_address``)."""
    return ThreadingHTTPServer((host, port), make_handler(RetrievalApp(index, model, k)))


def serve(index: RetrievalIndex, model: Any, host: str = "127.0.0.1", port: int = 8000, k: int = 12) -> None:
    """Serve until interrupted (Ctrl-C)."""
    server = make_server(index, model, host, port, k)
    log.info("serving http://%s:%d/ (Ctrl-C to stop)", *server.server_address[:2])
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
