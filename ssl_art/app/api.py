"""The FastAPI application: the page, the JSON API (with its OpenAPI schema at ``/docs``) and its error contract.

Routes (``k``/``topk`` are query parameters; images are multipart field ``image``, as in the Flask ``POST /classify``
APIs this project grew from):

* ``GET /`` the single-page UI; ``GET /api/health`` what is loaded, pool statistics;
* ``POST /api/classify`` image (or ``?row=N`` for a collection work) -> top-k labels per head + Grad-CAM overlay;
* ``POST /api/similar`` image (or ``?row=N``) -> the ``k`` most similar works with scores and labels;
* ``GET /api/works/{row}`` a work's name and labels; ``GET /api/works/{row}/thumb`` its JPEG thumbnail.

Every error is JSON ``{"error": "<a sentence a person can read>"}`` with a 4xx/5xx status: a bad parameter is
``400`` naming it, a bad upload ``400``, too large ``413``, an unknown row or a feature that is not loaded ``404``, an
unreadable collection file ``422``, a full worker pool ``503`` with ``Retry-After``, a timed-out job ``504``; an
unexpected failure is ``500`` with a generic message (the traceback goes to the log, never to the client).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ssl_art.app.limits import BodyLimit
from ssl_art.app.page import PAGE
from ssl_art.app.service import AppState, NotFoundError
from ssl_art.app.workers import InferencePool, InferenceTimeout, Overloaded
from ssl_art.data.decode import BadImageError

log = logging.getLogger(__name__)


class LabelProb(BaseModel):
    label: str
    prob: float


class HeadResult(BaseModel):
    name: str
    top: list[LabelProb]


class GradCam(BaseModel):
    head: str
    label: str
    image: str  # data:image/png;base64 URL


class Classification(BaseModel):
    heads: list[HeadResult]
    gradcam: GradCam | None


class Work(BaseModel):
    row: int
    name: str
    labels: dict[str, str | None]
    label: str | None
    thumb: str


class Hit(Work):
    rank: int
    score: float


class Similar(BaseModel):
    query: str
    hits: list[Hit]


class ErrorBody(BaseModel):
    error: str


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error shape: ``{"error": message}``."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = [str(x) for x in e.get("loc", ()) if x not in ("query", "body", "path", "form")]
        name = ".".join(loc) or "request"
        given = e.get("input")
        got = f" (got {given!r})" if isinstance(given, (str, int, float)) and len(str(given)) < 40 else ""
        parts.append(f"{name}: {e.get('msg', 'invalid value')}{got}")
    return "bad request parameter: " + "; ".join(parts)


ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorBody} for s in (400, 404, 413, 422, 503, 504)}


def create_app(
    state: AppState,
    pool: InferencePool,
    max_upload_bytes: int = 20 << 20,
    retry_after: int = 2,
    light: InferencePool | None = None,
    k: int = 10,
) -> Any:
    """The ASGI application (FastAPI wrapped in the request-size limit).

    Args:
        state: what is served.
        pool: runs uploads (decode + model forward, Grad-CAM) and classification of collection works.
        max_upload_bytes: request body limit.
        retry_after: seconds, in ``503`` answers.
        light: a second bounded pool for cheap work that needs no model forward when the stored vectors exist --
            similar-by-row and thumbnails -- so browsing the collection never waits behind uploads (default ``pool``).
    """
    default_k = k
    light = light or pool
    app = FastAPI(
        title="ssl_art", summary="Style of a painting, why, and the most similar works", version="1", responses=ERRORS
    )
    app.state.ssl_art, app.state.pool = state, pool

    @app.exception_handler(StarletteHTTPException)
    async def _http(_r: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and msg == "Not Found":
            msg = f"no such page or API route: {_r.url.path}"
        return error(exc.status_code, msg, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        return error(400, _validation_message(exc))

    @app.exception_handler(Exception)
    async def _crash(_r: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", _r.url.path)
        return error(500, "internal server error; the details are in the server log")

    async def run(fn: Any, *args: Any, on: InferencePool = pool) -> Any:
        try:
            return await on.run(fn, *args)
        except Overloaded as e:
            raise _Fail(503, f"server busy ({e}); retry in {retry_after} s", {"Retry-After": str(retry_after)}) from e
        except InferenceTimeout as e:
            raise _Fail(504, str(e)) from e
        except NotFoundError as e:
            raise _Fail(404, str(e.args[0])) from e
        except BadImageError as e:
            raise _Fail(400 if e.path.startswith("upload:") else 422, _image_message(e)) from e

    @app.exception_handler(_Fail)
    async def _fail(_r: Request, exc: _Fail) -> JSONResponse:
        return error(exc.status, exc.message, exc.headers)

    async def upload(image: UploadFile | None) -> tuple[bytes, str]:
        if image is None:
            raise _Fail(400, "send an image as the multipart field 'image' (or give ?row=N for a collection work)")
        data = await image.read()
        return data, "upload:" + (image.filename or "image")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers={"Cache-Control": "no-store"})

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/api/health")
    async def health() -> dict[str, Any]:
        """What is loaded (classifier heads, index size) and the worker pool's load."""
        return {
            "status": "ok",
            "k": default_k,
            "classifier": state.classifier.info() if state.classifier else None,
            "index": state.similar.info() if state.similar else None,
            "pool": pool.stats(),
            "light_pool": light.stats(),
        }

    @app.post("/api/classify", response_model=Classification)
    async def classify(
        image: Annotated[UploadFile | None, File(description="the image to classify")] = None,
        row: Annotated[int | None, Query(ge=0, description="classify collection work N instead")] = None,
        topk: Annotated[int, Query(ge=1, le=50, description="labels per head")] = 5,
        cam: Annotated[bool, Query(description="also compute the Grad-CAM overlay")] = True,
    ) -> Any:
        """Top-``topk`` labels per head with probabilities, and a Grad-CAM overlay of the top label."""
        clf = state.classifier
        if clf is None:
            raise _Fail(404, "no classifier is loaded: start the server with --classifier RUN")
        if row is not None:
            sim = state.similar
            if sim is None:
                raise _Fail(404, "no index is loaded, so there are no collection works: upload an image")
            return await run(lambda: clf.classify(sim.image(row), topk, cam))
        data, name = await upload(image)
        return await run(lambda: clf.classify(state.limits.decode(data, name), topk, cam))

    @app.post("/api/similar", response_model=Similar)
    async def similar(
        image: Annotated[UploadFile | None, File(description="the query image")] = None,
        row: Annotated[int | None, Query(ge=0, description="query with collection work N instead")] = None,
        k: Annotated[int | None, Query(ge=1, le=100, description="number of works (default: the server's -k)")] = None,
    ) -> Any:
        """The ``k`` works most similar in style, best first, with cosine scores and labels."""
        k = k or default_k
        sim = state.similar
        if sim is None:
            raise _Fail(404, "no index is loaded: start the server with --index DIR")
        if row is not None:
            hits = await run(sim.by_row, row, k, on=light)
            return {"query": f"work {row}", "hits": hits}
        data, name = await upload(image)
        hits = await run(lambda: sim.by_image(state.limits.decode(data, name), k))
        return {"query": name.removeprefix("upload:"), "hits": hits}

    @app.get("/api/works/{row}", response_model=Work)
    async def work(row: int) -> Any:
        """A collection work's name and labels (no server path)."""
        sim = state.similar
        if sim is None:
            raise _Fail(404, "no index is loaded: start the server with --index DIR")
        try:
            return sim.work(row)
        except NotFoundError as e:
            raise _Fail(404, str(e.args[0])) from e

    @app.get("/api/works/{row}/thumb", response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    async def thumb(row: int) -> Response:
        """JPEG thumbnail; ``422`` when the work's file is unreadable or refused by the decode guard."""
        sim = state.similar
        if sim is None:
            raise _Fail(404, "no index is loaded: start the server with --index DIR")
        data = await run(sim.thumb, row, on=light)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    return BodyLimit(app, max_upload_bytes)


class _Fail(Exception):
    """An error response raised from inside a route (status, message, headers)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def _image_message(e: BadImageError) -> str:
    what = e.path.removeprefix("upload:")
    reasons = {
        "zero_byte": "is empty",
        "not_an_image": "is not an image PIL can read (JPEG, PNG, WebP, TIFF, ...)",
        "truncated": "is truncated (incomplete download?)",
        "decompression_bomb": "is refused by the size guard",
        "decode_error": "could not be decoded",
        "missing": "has no image file",
        "unreadable_permissions": "cannot be read (permissions)",
    }
    detail = f" ({e.msg})" if e.msg and e.kind in ("decompression_bomb", "decode_error", "missing") else ""
    return f"{what} {reasons.get(e.kind, 'is unusable')}{detail}"
