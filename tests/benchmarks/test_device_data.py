"""The GPU machine's shrunken sample data: same paths and labels, resized, corrupt files counted, source untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from benchmarks import device_data


def _collections(root: Path) -> None:
    (root / "wikiart7-unlabeled").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (224, 224), (i * 80, 10, 10)).save(root / "wikiart7-unlabeled" / f"{i}.jpg")
    (root / "wikiart7-unlabeled" / "broken.jpg").write_bytes(b"not a jpeg")
    (root / "wikiart7-dev" / "Baroque").mkdir(parents=True)
    Image.new("RGB", (224, 160), "white").save(root / "wikiart7-dev" / "Baroque" / "a.jpg")
    (root / "wikiart7-dev" / "labels.csv").write_text("path,label\nBaroque/a.jpg,Baroque\n")


def test_copies_are_resized_with_their_paths_and_labels(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src, dst = tmp_path / "shared", tmp_path / "local"
    _collections(src)
    before = {p: p.stat().st_mtime_ns for p in src.rglob("*")}
    device_data.main(["--src", str(src), "--dst", str(dst), "--side", "100"])
    out = capsys.readouterr().out
    assert "wikiart7-unlabeled: 3 written, 0 already there, 1 unreadable" in out
    assert Image.open(dst / "wikiart7-unlabeled" / "2.jpg").size == (100, 100)
    assert Image.open(dst / "wikiart7-dev" / "Baroque" / "a.jpg").size == (100, 71)  # aspect kept
    assert (dst / "wikiart7-dev" / "labels.csv").read_text() == (src / "wikiart7-dev" / "labels.csv").read_text()
    assert not list(dst.rglob(".*tmp*"))  # atomic_write_bytes' temporaries are gone
    assert {p: p.stat().st_mtime_ns for p in src.rglob("*")} == before  # the source is never written
    device_data.main(["--src", str(src), "--dst", str(dst), "--side", "100"])  # a rerun skips what exists
    assert "0 written, 3 already there, 1 unreadable" in capsys.readouterr().out


def test_refuses_to_write_inside_the_source(tmp_path: Path) -> None:
    _collections(tmp_path)
    with pytest.raises(SystemExit, match="never written to"):
        device_data.main(["--src", str(tmp_path), "--dst", str(tmp_path / "wikiart7-dev" / "small")])


def test_names_the_missing_collection(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="lacks wikiart7-unlabeled, wikiart7-dev"):
        device_data.main(["--src", str(tmp_path / "empty"), "--dst", str(tmp_path / "out")])
