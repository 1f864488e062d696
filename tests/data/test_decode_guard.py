"""The one decode guard (issue 14, case 1): pixel count, aspect ratio and post-resize size refused before a resize.

A 320-byte 1 x 60000 PNG passed PIL's pixel-count limit, and "shorter side -> 224" then made a 224 x 13.4M image.
Every entry point (file decode, upload decode, the eval transform, training/embedding datasets) must refuse it
from the header size alone, with a ``decompression_bomb`` error naming the file.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from ssl_art.config import AugCfg
from ssl_art.data import Collection, ImageDataset, build_eval_transform, build_view_transform
from ssl_art.data.decode import BadImageError, check_geometry, decode_bytes, load_image, resized_pixels


def _strip(path: Path, w: int = 1, h: int = 60000) -> Path:
    Image.new("RGB", (w, h), (200, 10, 10)).save(path)
    return path


def test_resized_pixels_reference() -> None:
    # torchvision Resize(side) scales the shorter side to ``side``; the long side becomes int(side * long / short)
    assert resized_pixels(1, 60000, 224) == 224 * 224 * 60000
    assert resized_pixels(48, 40, 32) == 32 * int(32 * 48 / 40)
    assert resized_pixels(10, 10, 32) == 32 * 32


def test_long_strip_file_is_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _strip(tmp_path / "strip.png")
    assert p.stat().st_size < 2000  # tiny file, huge resize
    decoded: list[int] = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(1))  # any decode would be recorded
    with pytest.raises(BadImageError) as info:
        load_image(str(p))
    assert info.value.kind == "decompression_bomb" and info.value.path == str(p)
    assert "1x60000" in str(info.value) and "aspect ratio" in str(info.value)
    assert decoded == []  # refused from the header alone


def test_upload_bytes_use_the_same_guard_and_name_the_upload(tmp_path: Path) -> None:
    data = _strip(tmp_path / "s.png").read_bytes()
    with pytest.raises(BadImageError) as info:
        decode_bytes(data, "painting.png")
    assert info.value.kind == "decompression_bomb" and "painting.png" in str(info.value)
    with pytest.raises(BadImageError) as info:
        decode_bytes(b"GIF89a not really", "x.gif")
    assert info.value.kind == "not_an_image" and "<_io" not in str(info.value) and "x.gif" in str(info.value)
    with pytest.raises(BadImageError) as info:
        decode_bytes(b"", "empty.png")
    assert info.value.kind == "zero_byte"
    ok = io.BytesIO()
    Image.new("RGB", (40, 30), (1, 2, 3)).save(ok, "PNG")
    assert decode_bytes(ok.getvalue()).size == (40, 30)


def test_eval_transform_guards_images_handed_over_directly() -> None:
    tf = build_eval_transform(32)
    assert tuple(tf(Image.new("RGB", (48, 40))).shape) == (3, 32, 32)
    with pytest.raises(BadImageError, match="aspect ratio 30:1"):
        tf(Image.new("RGB", (30, 1)))  # 30:1 > MAX_ASPECT (25): refused before Resize
    with pytest.raises(BadImageError, match="max_resized_pixels"):
        check_geometry(100, 2000, "tall.png", side=224, max_resized_pixels=224 * 224 * 10)


def test_check_geometry_limits() -> None:
    check_geometry(4000, 3000, "ok.jpg")
    with pytest.raises(BadImageError, match="max_pixels"):
        check_geometry(20000, 20000, "big.tif")
    with pytest.raises(BadImageError, match="zero side"):
        check_geometry(0, 10, "z.png")


def test_training_and_embedding_datasets_mark_a_strip_as_bad(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.new("RGB", (48, 40), (10, 200, 10)).save(good)
    strip = _strip(tmp_path / "strip.png", 1, 8000)
    coll = Collection(paths=[str(good), str(strip)])
    for tf in (build_eval_transform(32), build_view_transform(AugCfg(preset="art"), 32)):
        ds = ImageDataset(coll, tf)
        assert isinstance(ds[0][0], torch.Tensor)
        bad = ds[1]
        assert not isinstance(bad, tuple) and bad.kind == "decompression_bomb" and bad.path == str(strip)


def test_embedding_a_collection_with_a_strip_keeps_it_out(tmp_path: Path) -> None:
    # issue 14: 42 images plus one 1x8000 file peaked at 2.7 GB while embedding; now the strip is a bad row
    from ssl_art.retrieval.embed import embed_collection
    from ssl_art.retrieval.embedder import BackboneEmbedder
    from tests.conftest import BACKBONE, make_image_tree

    root = make_image_tree(tmp_path / "coll", n_per_class=2)
    strip = _strip(root / "red" / "zz_strip.png", 1, 8000)
    meta = embed_collection(
        BackboneEmbedder(BACKBONE, image_size=32), str(root), tmp_path / "emb", image_size=32, progress=False
    )
    from ssl_art.retrieval.manifest import read_manifest

    paths, _ = read_manifest(tmp_path / "emb" / "manifest.csv")
    assert meta.bad_rows == [paths.index(str(strip))]
