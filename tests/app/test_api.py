"""The JSON API through FastAPI's TestClient: results against plain references, and every error case of issue 14."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ssl_art.app.page import PAGE
from ssl_art.app.service import ClassifierService, SimilarService
from ssl_art.predict import predict
from tests.app.conftest import MakeClient


def png_bytes(w: int, h: int, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, "PNG")
    return buf.getvalue()


def files(data: bytes, name: str = "q.png") -> dict[str, Any]:
    return {"image": (name, data, "image/png")}


def assert_error(r: Any, status: int, *needles: str) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    msg = r.json()["error"]
    assert isinstance(msg, str) and "Traceback" not in msg and "<_io" not in msg
    for n in needles:
        assert n in msg, msg
    return msg


def test_health_openapi_and_page(make_client: MakeClient) -> None:
    c = make_client()
    h = c.get("/api/health").json()
    assert h["status"] == "ok" and h["index"]["works"] == 12 and h["classifier"]["image_size"] == 64
    assert [x["name"] for x in h["classifier"]["heads"]] == ["label", "mood"]
    paths = c.get("/openapi.json").json()["paths"]
    assert {"/api/classify", "/api/similar", "/api/works/{row}", "/api/health"} <= set(paths)
    assert "multipart/form-data" in paths["/api/classify"]["post"]["requestBody"]["content"]
    page = c.get("/")
    assert page.status_code == 200 and 'name="viewport"' in page.text and "/api/classify" in page.text
    assert "innerHTML" not in PAGE  # labels go in with textContent only: escaped, never stripped or interpreted


def test_classify_matches_the_evaluation_path(make_client: MakeClient, painting: Path, classifier_path: Path) -> None:
    c = make_client()
    r = c.post("/api/classify?topk=3", files=files(painting.read_bytes(), painting.name))
    assert r.status_code == 200, r.text
    res = r.json()
    ref = predict([str(classifier_path)], str(painting))  # the evaluation/predict pipeline (DataLoader, eval tf)
    for head in res["heads"]:
        p = ref.probs[head["name"]][0]
        names = ref.classes[head["name"]]
        order = np.argsort(-p, kind="stable")[:3]
        assert [t["label"] for t in head["top"]] == [names[j] for j in order]
        assert np.allclose([t["prob"] for t in head["top"]], p[order], atol=1e-5)
    cam = res["gradcam"]
    assert cam["head"] == "label" and cam["label"] == res["heads"][0]["top"][0]["label"]
    img = Image.open(io.BytesIO(base64.b64decode(cam["image"].split(",", 1)[1])))
    assert img.size == (256, 256) and np.asarray(img).std() > 1  # a real overlay, not a flat image
    r = c.post("/api/classify?cam=false&topk=1", files=files(painting.read_bytes()))
    assert r.json()["gradcam"] is None and [len(h["top"]) for h in r.json()["heads"]] == [1, 1]


def test_similar_upload_and_row_match_the_index(make_client: MakeClient, similar: SimilarService) -> None:
    c = make_client()
    idx = similar.index
    row = 5
    r = c.post("/api/similar?k=4", files=files(Path(idx.paths[row]).read_bytes(), "x.png"))
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert hits[0]["row"] == row and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert hits[0]["label"] == idx.labels["label"][row] and hits[0]["name"] == Path(idx.paths[row]).name
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True) and [h["rank"] for h in hits] == [1, 2, 3, 4]
    q = idx.vectors(np.array([row]))
    assert q is not None
    ref_scores, ref_rows = idx.search(q, 5)
    r = c.post(f"/api/similar?row={row}&k=4")
    by_row = r.json()["hits"]
    assert [h["row"] for h in by_row] == [x for x in ref_rows[0] if x != row][:4]
    assert np.allclose([h["score"] for h in by_row], [s for s, x in zip(ref_scores[0], ref_rows[0]) if x != row][:4])
    w = c.get(f"/api/works/{row}").json()
    assert w == {
        "row": row,
        "name": Path(idx.paths[row]).name,
        "labels": {"label": idx.labels["label"][row]},
        "label": idx.labels["label"][row],
        "thumb": f"/api/works/{row}/thumb",
    }
    t = c.get(f"/api/works/{row}/thumb")
    assert t.status_code == 200 and t.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(t.content)).format == "JPEG"


def test_no_absolute_server_paths_in_any_response(make_client: MakeClient, similar: SimilarService) -> None:
    c = make_client()
    root = str(Path(similar.index.paths[0]).parents[2])
    bodies = [
        c.get("/api/health").text,
        c.post("/api/similar?row=0&k=12").text,
        c.get("/api/works/3").text,
        c.post("/api/classify?row=2").text,
        c.post("/api/similar", files=files(b"junk", "/etc/secret/x.png")).text,
    ]
    for b in bodies:
        assert root not in b and "/tmp/" not in b, b[:300]


@pytest.mark.parametrize(
    ("url", "name"),
    [("/api/similar?k=abc", "k"), ("/api/similar?k=0", "k"), ("/api/classify?topk=x", "topk"),
     ("/api/similar?row=-1", "row"), ("/api/similar?row=zz", "row"), ("/api/classify?cam=maybe", "cam")],
)  # fmt: skip
def test_bad_parameters_are_400_naming_the_parameter(make_client: MakeClient, url: str, name: str) -> None:
    c = make_client()
    msg = assert_error(c.post(url, files=files(png_bytes(20, 20))), 400, name + ":")
    assert "readable image" not in msg


def test_bad_uploads_are_400_with_a_readable_message(make_client: MakeClient) -> None:
    c = make_client()
    assert_error(c.post("/api/similar"), 400, "multipart field 'image'")
    assert_error(c.post("/api/classify", files=files(b"<html>no</html>", "page.jpg")), 400, "page.jpg", "not an image")
    assert_error(c.post("/api/similar", files=files(b"", "empty.png")), 400, "empty.png is empty")
    assert_error(c.post("/api/similar", files=files(png_bytes(40, 40)[:60], "cut.png")), 400, "cut.png")


def test_a_long_strip_is_refused_before_any_resize(make_client: MakeClient) -> None:
    # issue 14 case 1: a 1x60000 PNG (a few hundred bytes) would become 224 x 13.4M pixels
    data = png_bytes(1, 60000)
    assert len(data) < 2000
    c = make_client()
    t0 = time.perf_counter()
    for url in ("/api/classify", "/api/similar"):
        assert_error(c.post(url, files=files(data, "strip.png")), 400, "strip.png", "size guard", "aspect ratio")
    assert time.perf_counter() - t0 < 5


def test_request_body_limit_is_413(make_client: MakeClient) -> None:
    c = make_client(max_upload_bytes=50_000)
    assert_error(c.post("/api/similar", files=files(b"\0" * 60_000, "big.png")), 413, "too large", "MiB")
    ok = c.post("/api/similar", files=files(png_bytes(30, 30)))
    assert ok.status_code == 200

    def chunks() -> Any:  # no Content-Length: counted as it arrives
        for _ in range(20):
            yield b"x" * 10_000

    r = c.post("/api/similar", content=chunks(), headers={"content-type": "multipart/form-data; boundary=zz"})
    assert_error(r, 413, "too large")


def test_unknown_rows_routes_and_missing_features_are_404(make_client: MakeClient) -> None:
    c = make_client()
    assert_error(c.post("/api/similar?row=999"), 404, "work 999 is not in the index")
    assert_error(c.get("/api/works/999"), 404, "work 999")
    assert_error(c.get("/api/works/999/thumb"), 404, "work 999")
    assert_error(c.get("/nope"), 404, "/nope")
    only_index = make_client(with_classifier=False)
    assert_error(only_index.post("/api/classify", files=files(png_bytes(20, 20))), 404, "--classifier")
    assert only_index.post("/api/similar?row=1&k=2").status_code == 200
    only_clf = make_client(with_index=False)
    assert_error(only_clf.post("/api/similar", files=files(png_bytes(20, 20))), 404, "--index")
    assert_error(only_clf.post("/api/classify?row=1"), 404, "no index")
    assert only_clf.post("/api/classify", files=files(png_bytes(20, 20))).status_code == 200
    assert only_clf.get("/api/health").json()["index"] is None


def test_unexpected_failure_is_a_generic_500_json(
    make_client: MakeClient, similar: SimilarService, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*a: Any) -> None:
        raise RuntimeError("secret /srv/internal/state")

    monkeypatch.setattr(similar, "by_image", boom)
    msg = assert_error(make_client().post("/api/similar", files=files(png_bytes(20, 20))), 500, "server log")
    assert "secret" not in msg


def _block(monkeypatch: pytest.MonkeyPatch, clf: ClassifierService) -> tuple[threading.Event, threading.Event]:
    started, release = threading.Event(), threading.Event()
    real = clf.classify

    def slow(*a: Any, **kw: Any) -> Any:
        started.set()
        release.wait(30)
        return real(*a, **kw)

    monkeypatch.setattr(clf, "classify", slow)
    return started, release


def test_overload_is_503_with_retry_after_and_others_keep_flowing(
    make_client: MakeClient, classifier: ClassifierService, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = make_client(workers=2, queue=0, retry_after=3)
    started, release = _block(monkeypatch, classifier)
    first: dict[str, Any] = {}
    th = threading.Thread(target=lambda: first.update(r=c.post("/api/classify", files=files(png_bytes(30, 30)))))
    th.start()
    assert started.wait(30)
    t0 = time.perf_counter()
    assert c.get("/api/health").json()["pool"]["in_flight"] == 1  # the event loop is not blocked
    assert c.post("/api/similar?row=1&k=3").status_code == 200  # a free worker serves other requests meanwhile
    assert time.perf_counter() - t0 < 10
    second: dict[str, Any] = {}
    th2 = threading.Thread(target=lambda: second.update(r=c.post("/api/classify", files=files(png_bytes(30, 30)))))
    th2.start()
    deadline = time.time() + 30
    while c.get("/api/health").json()["pool"]["in_flight"] < 2 and time.time() < deadline:
        time.sleep(0.02)
    r = c.post("/api/similar?row=1&k=3")  # 2 workers busy, queue 0: refused at once
    assert_error(r, 503, "busy")
    assert r.headers["retry-after"] == "3"
    release.set()
    th.join(30)
    th2.join(30)
    assert first["r"].status_code == 200 and second["r"].status_code == 200
    assert c.get("/api/health").json()["pool"]["refused"] == 1


def test_slow_job_times_out_as_504(
    make_client: MakeClient, classifier: ClassifierService, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = make_client(timeout=0.3)
    started, release = _block(monkeypatch, classifier)
    try:
        assert_error(c.post("/api/classify", files=files(png_bytes(30, 30))), 504, "longer than 0.3 s")
    finally:
        release.set()


def test_pool_rejects_bad_sizes() -> None:
    from ssl_art.app.workers import InferencePool

    with pytest.raises(ValueError, match="workers >= 1"):
        InferencePool(0, 1)


def test_health_json_is_plain(make_client: MakeClient) -> None:
    assert json.loads(make_client().get("/api/health").text)["pool"]["workers"] == 2


def test_browsing_uses_its_own_pool_and_never_waits_behind_uploads(
    make_client: MakeClient, classifier: ClassifierService, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ssl_art.app.workers import InferencePool

    light = InferencePool(1, 4)
    c = make_client(workers=1, queue=0, light=light)
    started, release = _block(monkeypatch, classifier)
    th = threading.Thread(target=lambda: c.post("/api/classify", files=files(png_bytes(30, 30))))
    th.start()
    try:
        assert started.wait(30)
        assert_error(c.post("/api/similar", files=files(png_bytes(30, 30))), 503, "busy")  # uploads: pool full
        assert c.post("/api/similar?row=1&k=3").status_code == 200  # browsing: its own pool
        assert c.get("/api/works/1/thumb").status_code == 200
        assert c.get("/api/health").json()["light_pool"]["workers"] == 1
    finally:
        release.set()
        th.join(30)
        light.shutdown()
