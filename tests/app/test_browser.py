"""Real-browser test of the page (``make test-browser``): Playwright drives Debian's chromium against live uvicorn.

Opens the page, uploads a painting, waits for the labels (bars), the Grad-CAM heatmap and the neighbours, checks
that a label with HTML in it is shown escaped (not stripped, not interpreted), clicks a neighbour (the page queries
with that work), checks a bad ``?row=`` gives a readable message and the phone layout, and saves screenshots to
``$SSL_ART_BROWSER_OUT`` (default: pytest's tmp folder). Never downloads a browser: without chromium it skips.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api")

from ssl_art.app.server import ServeSettings, make_server  # noqa: E402
from ssl_art.app.service import AppState, ClassifierService, SimilarService  # noqa: E402
from ssl_art.retrieval.embed import embed_collection  # noqa: E402
from ssl_art.retrieval.index import RetrievalIndex  # noqa: E402
from tests.app.conftest import make_classifier  # noqa: E402
from tests.conftest import make_image_tree  # noqa: E402

CHROMIUM = os.environ.get("SSL_ART_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ODD = "green <i>odd & co"  # a label with markup (no "/": it is also a folder name): must be shown literally


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = Path(os.environ.get("SSL_ART_BROWSER_OUT") or tmp_path_factory.mktemp("screens"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory, tiny_model: Any) -> Iterator[str]:
    root = make_image_tree(tmp_path_factory.mktemp("bworks"), classes=("red", ODD, "blue"))
    out = tmp_path_factory.mktemp("bidx")
    embed_collection(tiny_model, str(root), out / "emb", image_size=32, progress=False)
    RetrievalIndex.build(out / "emb").save(out / "idx")
    clf = ClassifierService.load(str(make_classifier(out / "clf" / "best.pt", classes=["blue", ODD, "red"])))
    state = AppState(clf, SimilarService(RetrievalIndex.load(out / "idx"), tiny_model))
    server, _ = make_server(state, ServeSettings(port=0))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    th = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    th.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    th.join(15)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM} (make test-browser installs Debian's package)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


def test_upload_labels_heatmap_neighbours_click(browser: Any, url: str, out_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    painting = tmp_path / "painting.png"
    img = Image.new("RGB", (96, 72), (40, 160, 60))
    img.paste((200, 40, 40), (0, 0, 48, 36))
    img.save(painting)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/")
    page.wait_for_selector("#info:has-text('works')")
    page.set_input_files("#file", str(painting))
    page.wait_for_selector("[data-testid=label]")
    page.wait_for_selector("#camImg[src^='data:image/png']", state="visible")
    page.wait_for_selector(".hit img")
    page.wait_for_selector("#status:has-text('done')")
    rows = page.locator("[data-testid=label]")
    assert rows.count() == 5  # 3 classes of head "label" + 2 of head "mood"
    labels = [rows.nth(i).locator(".lab").inner_text() for i in range(rows.count())]
    assert ODD in labels  # escaped: shown literally, not bold, not stripped
    assert page.locator("#labels i, #grid i").count() == 0
    assert any(ODD in c for c in page.locator(".hit .cap").all_inner_texts())
    widths = [float(rows.nth(i).locator(".fill").evaluate("e => parseFloat(e.style.width)")) for i in range(3)]
    assert widths == sorted(widths, reverse=True) and abs(sum(widths) - 100) < 0.5  # one head's bars sum to 100 %
    hits = page.locator(".hit")
    assert hits.count() == 10  # the server default -k (RetrievalCfg.k)
    assert page.locator("#preview").get_attribute("src").startswith("blob:")
    page.screenshot(path=str(out_dir / "upload.png"), full_page=True)

    row = hits.nth(1).get_attribute("data-row")
    hits.nth(1).click()
    page.wait_for_url(f"**/?row={row}")
    page.wait_for_function("document.querySelector('#preview').src.includes('/api/works/')")
    page.wait_for_selector("#status:has-text('done')")
    page.wait_for_selector(".hit")
    assert all(h.get_attribute("data-row") != row for h in page.locator(".hit").all())  # itself excluded
    assert page.locator("#preview").get_attribute("src") == f"/api/works/{row}/thumb"  # the clicked work is the query
    page.screenshot(path=str(out_dir / "neighbour.png"), full_page=True)

    page.goto(url + "/?row=abc")
    page.wait_for_selector("#error:has-text('work number')")
    page.goto(url + "/?row=9999")
    page.wait_for_selector("#error:has-text('not in the index')")
    assert not errors, errors
    page.close()


def test_phone_layout(browser: Any, url: str, out_dir: Path) -> None:
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    page.goto(url + "/?row=2")
    page.wait_for_selector(".hit img")
    page.wait_for_selector("#camImg", state="visible")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # nothing wider than the phone screen
    page.screenshot(path=str(out_dir / "phone.png"), full_page=True)
    page.close()
