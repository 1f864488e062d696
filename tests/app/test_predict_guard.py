"""`ssl-art predict` goes through the same decode guard: a 1 x 8000 strip is an unreadable row (empty
predictions), not a huge resize (issue 14, case 1: "the same resize is used in training, predict and embed")."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from ssl_art.predict import predict, top_k_rows


def test_predict_skips_a_strip(tmp_path: Path, classifier_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (48, 40), (10, 200, 10)).save(folder / "a_good.png")
    Image.new("RGB", (1, 8000), (10, 200, 10)).save(folder / "b_strip.png")
    rows = top_k_rows(predict([str(classifier_path)], str(folder)), 2)
    assert [Path(r["path"]).name for r in rows] == ["a_good.png", "b_strip.png"]
    assert len(rows[0]["label"]) == 2 and rows[1]["label"] == [] and rows[1]["mood"] == []
