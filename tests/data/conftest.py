"""Fixtures for the data tests: a generated folder with every odd and broken image kind the decoder must handle."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _noise_rgb(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8), "RGB")


def make_zoo(folder: Path) -> dict[str, Path]:
    """Write one file per case into ``folder``; returns case name -> path.

    Good (odd but decodable) cases: ``good_rgb``, ``cmyk``, ``png16``, ``palette_trans``, ``rgba``, ``la``,
    ``gray``, ``animated``, ``exif_rot``, ``upper_ext``. Bad cases are named after their expected kind.
    """
    folder.mkdir(parents=True, exist_ok=True)
    p: dict[str, Path] = {
        k: folder / n
        for k, n in {
            "good_rgb": "good_rgb.jpg",
            "cmyk": "cmyk.jpg",
            "png16": "png16.png",
            "palette_trans": "palette_trans.png",
            "rgba": "rgba.png",
            "la": "la.png",
            "gray": "gray.png",
            "animated": "animated.gif",
            "exif_rot": "exif_rot.jpg",
            "upper_ext": "UPPER.JPEG",
            "truncated": "truncated.jpg",
            "zero_byte": "zero_byte.jpg",
            "not_an_image": "not_an_image.jpg",
            "decompression_bomb": "bomb.png",
        }.items()
    }
    _noise_rgb(48, 32).save(p["good_rgb"], quality=90)
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(p["cmyk"])  # pure red in CMYK
    grey16 = np.zeros((8, 8), dtype=np.uint16)
    grey16[:, :4], grey16[:, 4:] = 65535, 32896  # 32896 = 128 * 257
    Image.fromarray(grey16).save(p["png16"])
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 black (transparent), 1 blue
    pal.paste(1, (4, 0, 8, 8))
    pal.save(p["palette_trans"], transparency=0)
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 64  # red at alpha 64/255
    Image.fromarray(rgba, "RGBA").save(p["rgba"])
    la = np.zeros((8, 8, 2), dtype=np.uint8)
    la[..., 0], la[..., 1] = 0, 0  # fully transparent black -> white
    Image.fromarray(la, "LA").save(p["la"])
    Image.new("L", (10, 6), 77).save(p["gray"])
    frames = [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))]
    frames[0].save(p["animated"], save_all=True, append_images=frames[1:], duration=100, loop=0)
    rot = Image.new("RGB", (40, 20), (0, 0, 0))
    rot.paste((255, 0, 0), (0, 0, 8, 8))  # red block in the stored top-left corner
    exif = rot.getexif()
    exif[0x0112] = 6  # orientation 6: display = stored rotated 90 degrees clockwise
    rot.save(p["exif_rot"], exif=exif.tobytes(), quality=95)
    _noise_rgb(12, 12, seed=1).save(p["upper_ext"])
    buf = io.BytesIO()
    _noise_rgb(64, 64, seed=2).save(buf, format="JPEG", quality=95)
    p["truncated"].write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    p["zero_byte"].write_bytes(b"")
    p["not_an_image"].write_text("<html>this is not a JPEG</html>\n")
    Image.new("RGB", (100, 100), (1, 2, 3)).save(p["decompression_bomb"])
    return p


@pytest.fixture
def zoo(tmp_path: Path) -> dict[str, Path]:
    return make_zoo(tmp_path / "zoo")


@pytest.fixture
def unreadable(tmp_path: Path) -> Iterator[Path]:
    """A valid JPEG with mode 000; skips when chmod has no effect (running as root)."""
    path = tmp_path / "locked" / "unreadable.jpg"
    path.parent.mkdir()
    _noise_rgb(8, 8).save(path)
    os.chmod(path, 0)
    if os.access(path, os.R_OK):
        os.chmod(path, 0o644)
        pytest.skip("chmod 000 does not prevent reading here (running as root?)")
    yield path
    os.chmod(path, 0o644)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"sample data not found at {SHARED_DATA}")
    return SHARED_DATA
