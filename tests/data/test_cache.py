"""The decode-once cache: canvas geometry, build/reuse/rebuild keys, resumable builds, bad files, ram == disk."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssl_art.data import cache as cache_mod
from ssl_art.data.cache import (
    StoredShape,
    build_cache,
    cache_key,
    is_built,
    open_cache,
    plan_cache,
    stored_shape,
    to_canvas,
)
from ssl_art.data.collection import load_collection


def _folder(root: Path, sizes: list[tuple[int, int]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k, (w, h) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"{k:03d}.png")
    return root


def test_canvas_landscape_portrait_and_wide() -> None:
    shape = StoredShape(20, 26)
    rng = np.random.default_rng(1)
    land = Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    arr, h, w, tr = to_canvas(land, shape)
    assert arr.shape == (3, 20, 26) and (h, w, tr) == (20, 25, False)
    ref = np.asarray(land.resize((25, 20), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
    np.testing.assert_array_equal(arr[:, :, :25], ref)
    np.testing.assert_array_equal(arr[:, :, 25], ref[:, :, 24])  # edge-replicated padding
    arr, h, w, tr = to_canvas(land.transpose(Image.Transpose.TRANSPOSE), shape)  # portrait: stored transposed
    assert (h, w, tr) == (20, 25, True)
    np.testing.assert_array_equal(arr[:, :, :25], ref)
    wide = Image.fromarray(rng.integers(0, 256, (10, 40, 3), dtype=np.uint8))  # 4:1 -> centre 26 of 80 columns
    arr, h, w, _ = to_canvas(wide, shape)
    full = np.asarray(wide.resize((80, 20), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
    assert w == 26
    np.testing.assert_array_equal(arr, full[:, :, 27:53])


def test_stored_shape_from_resolution_and_aspects(tmp_path: Path) -> None:
    square = load_collection("", synthetic_size=8, synthetic_image_size=32)
    assert stored_shape(square, 112, 1.15, 1.34) == StoredShape(129, 129)
    mixed = load_collection(str(_folder(tmp_path, [(60, 40)] * 5 + [(40, 40)])))
    assert stored_shape(mixed, 64, 1.15, 1.34) == StoredShape(74, round(74 * 1.34))


def test_build_reuse_and_key_changes(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "imgs", [(30, 24)] * 5)
    coll = load_collection(str(folder))
    shape = StoredShape(16, 20)
    key = cache_key(coll, shape, 10**8)
    out = build_cache(coll, tmp_path / "c" / key, shape, progress=False)
    assert is_built(out) and not (out / "chunks").exists() and not (out / "pixels.u8.partial").exists()
    assert (out / "pixels.u8").stat().st_size == 5 * 3 * 16 * 20
    ram = open_cache(out, "ram")
    ref = to_canvas(Image.open(coll.paths[3]).convert("RGB"), shape)[0]
    np.testing.assert_array_equal(ram.pixels[3], ref)  # type: ignore[index]
    assert cache_key(coll, shape, 10**8) == key  # same files: reused
    assert cache_key(coll, StoredShape(16, 21), 10**8) != key
    os.utime(coll.paths[0], ns=(1, 1))  # touched file: new key
    assert cache_key(coll, shape, 10**8) != key


def test_ram_and_disk_gather_agree(tmp_path: Path) -> None:
    coll = load_collection(str(_folder(tmp_path / "imgs", [(30, 24), (24, 30), (40, 20)] * 3)))
    out = build_cache(coll, tmp_path / "c", StoredShape(16, 21), progress=False)
    ram, disk = open_cache(out, "ram"), open_cache(out, "disk")
    assert disk.pixels is None
    idx = [7, 0, 3, 3, 8]
    np.testing.assert_array_equal(ram.gather(idx), disk.gather(idx))
    assert ram.transposed.tolist() == [False, True, False] * 3


def test_interrupted_build_resumes_with_missing_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_mod, "CHUNK", 2)
    coll = load_collection("", synthetic_size=9, synthetic_image_size=16)
    shape = StoredShape(16, 16)
    calls: list[int] = []
    real = cache_mod._Chunks.__getitem__

    def dying(self: cache_mod._Chunks, item: int) -> object:
        calls.append(self.todo[item])
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed mid-build
        return real(self, item)

    monkeypatch.setattr(cache_mod._Chunks, "__getitem__", dying)
    with pytest.raises(KeyboardInterrupt):
        build_cache(coll, tmp_path / "c", shape, progress=False)
    assert not is_built(tmp_path / "c") and sorted(p.name for p in (tmp_path / "c" / "chunks").iterdir()) == [
        "000000.npz",
        "000001.npz",
    ]
    calls.clear()
    monkeypatch.setattr(cache_mod._Chunks, "__getitem__", real)
    monkeypatch.setattr(cache_mod._Chunks, "__getitem__", lambda self, item: calls.append(item) or real(self, item))
    build_cache(coll, tmp_path / "c", shape, progress=False)
    assert len(calls) == 3  # chunks 2, 3, 4 only
    fresh = build_cache(coll, tmp_path / "fresh", shape, progress=False)
    np.testing.assert_array_equal(open_cache(tmp_path / "c", "ram").pixels, open_cache(fresh, "ram").pixels)


def test_bad_files_are_flagged_and_reported(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "imgs", [(30, 24)] * 3)
    (folder / "zz_text.png").write_bytes(b"<html>not an image</html>")
    good = (folder / "000.png").read_bytes()
    (folder / "zz_trunc.png").write_bytes(good[: len(good) // 2])
    coll = load_collection(str(folder))
    c = open_cache(build_cache(coll, tmp_path / "c", StoredShape(16, 20), progress=False), "disk")
    report = c.bad_report(coll.paths)
    assert report.counts == {"not_an_image": 1, "truncated": 1}
    assert report.examples["not_an_image"] == [str(folder / "zz_text.png")]
    assert [c.kind(i) for i in range(5)] == ["", "", "", "not_an_image", "truncated"]


def test_parallel_build_equals_serial(tmp_path: Path) -> None:
    coll = load_collection("", synthetic_size=10, synthetic_image_size=16)
    a = build_cache(coll, tmp_path / "a", StoredShape(18, 18), num_workers=2, progress=False)
    b = build_cache(coll, tmp_path / "b", StoredShape(18, 18), num_workers=0, progress=False)
    np.testing.assert_array_equal(open_cache(a, "ram").pixels, open_cache(b, "ram").pixels)


@pytest.mark.parametrize(
    ("mode", "gb", "expect"),
    [("off", 0.1, "off"), ("auto", 0.5, "ram"), ("auto", 3.0, "disk"), ("auto", 30.0, "off"), ("disk", 0.1, "disk")],
)
def test_plan(mode: str, gb: float, expect: str) -> None:
    got, why = plan_cache(mode, int(gb * 1e9), max_gb=20.0, ram_gb=1.0, free_bytes=10**12)
    assert got == expect and why


def test_plan_without_disk_space() -> None:
    assert plan_cache("auto", 10**9, 20.0, 4.0, free_bytes=10**8)[0] == "off"
    with pytest.raises(ValueError, match="data.cache_dir"):
        plan_cache("ram", 10**9, 20.0, 4.0, free_bytes=10**8)


def test_disk_mode_reads_without_mapping_the_file(tmp_path: Path) -> None:
    """A memmapped-size collection must not need RAM of the file's size: reads are pread, the file is never mapped."""
    coll = load_collection("", synthetic_size=6, synthetic_image_size=16)
    c = open_cache(build_cache(coll, tmp_path / "c", StoredShape(16, 16), progress=False), "disk")
    assert c.pixels is None
    got = c.gather([5, 1])
    assert got.shape == (2, 3, 16, 16) and got.any()
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert str(c.file) not in maps.read_text()
