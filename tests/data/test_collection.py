"""Collection indexing: CSV manifests (incl. a hypothesis property test), ImageFolder trees, folder scans, synthetic."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ssl_art.data.collection import Collection, load_collection, read_manifest


def _img(path: Path, colour: tuple[int, int, int] = (10, 20, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def test_csv_labels_missing_cells_and_relative_paths(tmp_path: Path) -> None:
    _img(tmp_path / "imgs" / "a.jpg")
    _img(tmp_path / "imgs" / "b.png")
    c = _img(tmp_path / "elsewhere" / "c.jpg")
    (tmp_path / "m.csv").write_text(f"label,path,artist\ncat,imgs/a.jpg,\n,imgs/b.png,monet\ndog,{c},van gogh\n\n")
    coll = load_collection(str(tmp_path / "m.csv"))
    assert coll.paths == [str(tmp_path / "imgs" / "a.jpg"), str(tmp_path / "imgs" / "b.png"), str(c)]
    assert coll.labels == {"label": ["cat", None, "dog"], "artist": [None, "monet", "van gogh"]}
    assert coll.classes() == ["cat", "dog"]
    assert coll.targets().tolist() == [0, -1, 1]
    assert coll.targets().dtype == np.int64
    assert coll.classes("artist") == ["monet", "van gogh"]
    assert coll.targets("artist").tolist() == [-1, 0, 1]
    with pytest.raises(ValueError, match="artist"):
        coll.targets("style")  # error names the available columns


def test_csv_root_override(tmp_path: Path) -> None:
    _img(tmp_path / "root" / "x.jpg")
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "m.csv").write_text("path\nx.jpg\n")
    coll = load_collection(str(tmp_path / "meta" / "m.csv"), root=str(tmp_path / "root"))
    assert coll.paths == [str(tmp_path / "root" / "x.jpg")]
    with pytest.raises(ValueError, match="no usable images"):  # resolved against the CSV folder: missing
        load_collection(str(tmp_path / "meta" / "m.csv"))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("file,label\na.jpg,x\n", "no 'path' column"),
        ("path,label\na.jpg,x\nb.jpg\n", "line 3 has 1 cells"),
        ("path,label\na.jpg,x,extra\n", "line 2 has 3 cells"),
        ("path,label\n,x\n", "line 2 has an empty 'path'"),
        ("path,label,label\na.jpg,x,y\n", "duplicate"),
        ("", "empty manifest"),
    ],
)
def test_csv_malformed(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(ValueError, match=match):
        load_collection(str(tmp_path / "m.csv"))


_cell = st.one_of(st.just(""), st.text(alphabet="abcxyz _-", min_size=1, max_size=6))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.tuples(st.integers(0, 5), _cell, _cell), min_size=1, max_size=12),
    bad_row=st.one_of(st.none(), st.integers(0, 11)),
    bad_width=st.sampled_from([1, 2, 4]),
)
def test_csv_parser_property(
    tmp_path: Path, rows: list[tuple[int, str, str]], bad_row: int | None, bad_width: int
) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "style", "genre"])
    expected_line = None
    for k, (img, style, genre) in enumerate(rows):
        if bad_row == k:
            w.writerow([f"img{img}.jpg", style, genre, "x"][:bad_width] if bad_width < 3 else [f"i{img}", 1, 2, 3])
            expected_line = k + 2
        else:
            w.writerow([f"img{img}.jpg", style, genre])
    (tmp_path / "p.csv").write_text(buf.getvalue())
    if expected_line is not None:
        with pytest.raises(ValueError, match=f"line {expected_line} "):
            read_manifest(str(tmp_path / "p.csv"))
        return
    paths, labels = read_manifest(str(tmp_path / "p.csv"))
    # Oracle: naive per-row expectation (strip cells, empty -> None, paths resolved against the CSV folder).
    assert paths == [str((tmp_path / f"img{i}.jpg").resolve()) for i, _, _ in rows]
    assert labels["style"] == [s.strip() or None for _, s, _ in rows]
    assert labels["genre"] == [g.strip() or None for _, _, g in rows]
    coll = Collection(paths=paths, labels=labels)
    t = coll.targets("style")
    classes = coll.classes("style")
    assert classes == sorted(set(classes))
    for lab, target in zip(labels["style"], t):
        assert (target == -1) if lab is None else (classes[target] == lab)


def _tree(root: Path) -> None:
    _img(root / "Baroque" / "b1.jpg")
    _img(root / "Baroque" / "sub" / "b2.PNG")
    _img(root / "Cubism" / "c1.webp")
    (root / "Cubism" / "notes.txt").write_text("not an image")
    (root / "Cubism" / "empty.jpg").write_bytes(b"")
    (root / "labels.csv").write_text("path,label\n")  # non-image files at the top do not break detection
    (root / ".hidden").mkdir()
    _img(root / ".hidden" / "h.jpg")


def test_imagefolder_detection(tmp_path: Path) -> None:
    _tree(tmp_path)
    coll = load_collection(str(tmp_path))
    names = [Path(p).relative_to(tmp_path).as_posix() for p in coll.paths]
    assert names == ["Baroque/b1.jpg", "Baroque/sub/b2.PNG", "Cubism/c1.webp"]
    assert coll.labels["label"] == ["Baroque", "Baroque", "Cubism"]
    assert coll.classes() == ["Baroque", "Cubism"]
    assert coll.bad.counts == {"zero_byte": 1} and coll.n_indexed == 4
    assert load_collection(str(tmp_path), fmt="imagefolder").paths == coll.paths


def test_folder_scan_is_unlabeled_and_recursive(tmp_path: Path) -> None:
    _tree(tmp_path)
    coll = load_collection(str(tmp_path), fmt="folder")
    assert len(coll) == 3 and coll.labels == {}
    flat = tmp_path / "flat"
    _img(flat / "b.JPG")
    _img(flat / "a.tiff")
    _img(flat / "deep" / "c.bmp")
    (flat / "z.gif").write_bytes(b"GIF89a")  # unsupported extension: ignored
    coll = load_collection(str(flat))
    assert [Path(p).name for p in coll.paths] == ["a.tiff", "b.JPG", "c.bmp"]
    assert coll.labels == {}
    with pytest.raises(ValueError, match="not an ImageFolder tree"):
        load_collection(str(flat / "deep"), fmt="imagefolder")


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_collection(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no usable images"):
        load_collection(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="valid formats"):
        load_collection(str(tmp_path), fmt="parquet")
    with pytest.raises(ValueError, match="needs a .csv"):
        load_collection(str(tmp_path), fmt="csv")
    (tmp_path / "zero").mkdir()
    (tmp_path / "zero" / "a.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="zero_byte: 1"):
        load_collection(str(tmp_path / "zero"))


def test_synthetic_collection_and_subset() -> None:
    coll = load_collection("", synthetic_size=21, synthetic_image_size=16, seed=3)
    assert len(coll) == 21 and coll.paths[5] == "synthetic://5" and coll.synthetic is not None
    assert coll.classes() == [f"style_{k}" for k in range(7)]
    assert np.bincount(coll.targets()).tolist() == [3] * 7
    sub = coll.subset([20, 0, 7])
    assert sub.paths == ["synthetic://20", "synthetic://0", "synthetic://7"]
    assert sub.labels["label"] == [coll.labels["label"][i] for i in (20, 0, 7)]
    assert sub.synthetic is coll.synthetic
    with pytest.raises(ValueError, match="entries"):
        Collection(paths=["a"], labels={"label": []})


def test_wikiart_dev_layouts_agree(shared_data: Path) -> None:
    dev = shared_data / "wikiart7-dev"
    tree = load_collection(str(dev))
    manifest = load_collection(str(dev / "labels.csv"))
    assert len(tree) == 1400 and len(tree.classes()) == 7
    assert np.bincount(tree.targets()).tolist() == [200] * 7
    assert sorted(zip(manifest.paths, manifest.labels["label"])) == sorted(zip(tree.paths, tree.labels["label"]))


def test_symlinked_folder_one_path_policy(tmp_path: Path) -> None:
    """A collection reached through a symlinked folder: tree scan and CSV manifest give the same, unresolved paths."""
    real = tmp_path / "real"
    rows = ["path,label"]
    for cls in ("cat", "dog"):
        for i in range(2):
            _img(real / cls / f"{i}.jpg")
            rows.append(f"{cls}/{i}.jpg,{cls}")
    (real / "labels.csv").write_text("\n".join(rows) + "\n")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    tree = load_collection(str(link))
    manifest = load_collection(str(link / "labels.csv"))
    assert sorted(zip(manifest.paths, manifest.labels["label"])) == sorted(zip(tree.paths, tree.labels["label"]))
    assert all(p.startswith(str(link) + "/") for p in manifest.paths + tree.paths)  # symlinks kept, not resolved
    # the policy also folds '..' and makes a relative root absolute, as the folder scan does
    other = read_manifest(str(link / "labels.csv"), root=str(link / "cat" / ".."))[0]
    assert other == manifest.paths
