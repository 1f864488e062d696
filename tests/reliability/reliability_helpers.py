"""Helpers for the reliability tests: tiny real ``main_pretrain`` arguments, a folder of every bad-file kind."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
# configs/tiny.yaml with timm's 0.4 M-parameter test_resnet: checkpoints are ~5 MB, so writing one per step is cheap
TINY = ["--config", str(ROOT / "configs" / "tiny.yaml"), "model.backbone=test_resnet", "run.device=cpu"]

# Odd but decodable: each must be converted to RGB and used for training.
CONVERTIBLE = ("cmyk", "png16", "palette_trans", "animated", "exif_rot", "wrong_extension")
# Unusable: each must be skipped and counted under its kind in bad_files.json.
BAD = (
    "truncated",
    "zero_byte",
    "not_an_image",
    "decompression_bomb",
    "unreadable_permissions",
    "missing",  # deleted after indexing
)
BOMB_LIMIT = 1_000_000  # data.max_image_pixels used with the bomb below (1200 x 1000 = 1.2 M pixels)


def _noise(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8), "RGB")


def make_messy_folder(folder: Path, n_good: int = 13) -> dict[str, Path]:
    """Write ``n_good`` plain JPEGs plus one file of every convertible and every bad kind; returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for i in range(n_good):
        files[f"good{i}"] = folder / f"good{i:02d}.jpg"
        _noise(40, 36, seed=i).save(files[f"good{i}"], quality=90)
    files["cmyk"] = folder / "cmyk.jpg"
    Image.new("CMYK", (24, 24), (0, 255, 255, 0)).save(files["cmyk"])
    files["png16"] = folder / "png16.png"
    Image.fromarray(np.arange(24 * 24, dtype=np.uint16).reshape(24, 24) * 100).save(files["png16"])
    files["palette_trans"] = folder / "palette_trans.png"
    pal = Image.new("P", (24, 24), 0)
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    pal.paste(1, (12, 0, 24, 24))
    pal.save(files["palette_trans"], transparency=0)
    files["animated"] = folder / "animated.png"  # APNG (.gif is not a collection extension: never indexed)
    frames = [Image.new("RGB", (24, 24), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(files["animated"], save_all=True, append_images=frames[1:], duration=50, loop=0)
    files["exif_rot"] = folder / "exif_rot.jpg"
    rot = _noise(40, 20, seed=99)
    exif = rot.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    rot.save(files["exif_rot"], exif=exif.tobytes())
    files["wrong_extension"] = folder / "really_a_png.jpg"
    _noise(24, 24, seed=7).save(files["wrong_extension"], format="PNG")
    files["truncated"] = folder / "truncated.jpg"
    buf = io.BytesIO()
    _noise(64, 64, seed=3).save(buf, format="JPEG", quality=95)
    files["truncated"].write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    files["zero_byte"] = folder / "zero_byte.jpg"
    files["zero_byte"].write_bytes(b"")
    files["not_an_image"] = folder / "not_an_image.jpg"
    files["not_an_image"].write_text("<html><body>403 Forbidden</body></html>\n")
    files["decompression_bomb"] = folder / "huge.png"
    Image.new("L", (1200, 1000), 128).save(files["decompression_bomb"])  # small on disk, 1.2 M pixels
    files["unreadable_permissions"] = folder / "locked.jpg"
    _noise(24, 24, seed=5).save(files["unreadable_permissions"])
    files["missing"] = folder / "deleted_after_indexing.jpg"
    _noise(24, 24, seed=6).save(files["missing"])
    (folder / "notes.txt").write_text("not an image extension: never indexed, never counted")
    return files


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    return dict(state["model"])


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def chmod_unreadable(path: Path) -> bool:
    """``chmod 000``; returns True when that really blocks reading (False as root, where it must be simulated)."""
    os.chmod(path, 0)
    return not os.access(path, os.R_OK)
