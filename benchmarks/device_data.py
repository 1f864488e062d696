r"""Shrunken copies of the sample collections for the GPU machine, which gets the checkout only (<= 64 MiB carried).

``../shared/data`` stays behind when the device tool copies the checkout, and its two collections (71 MB of
224x224 JPEGs) do not fit the carry limit. This writes every image, with its relative path, resized to ``--side``
pixels (square in, square out: the sources are 224x224 letterboxed) into the git-ignored ``data_local/``, and copies
``labels.csv`` where there is one. The default 132 px is above what a 112-px run ever reads: the decode-once cache
stores a shorter side of ``ceil(1.15 x 112) = 129`` px and the evaluation resizes to 112 before its centre crop, so a
112-px run sees the same pixels, resampled twice. Unreadable files are skipped and counted; every file is written
whole (``atomic_write_bytes``), so a killed run leaves no torn JPEG, and a rerun skips what exists.

    python benchmarks/device_data.py                     # ../shared/data/* -> data_local/* (35 MiB at 132 px)
    # then benchmarks/gpu_ablation16.sh (its header: the wheels to carry and the device call)
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from PIL import Image, UnidentifiedImageError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ssl_art.checkpoint import atomic_write_bytes  # noqa: E402
from ssl_art.data.collection import is_image_file  # noqa: E402

COLLECTIONS = ("wikiart7-unlabeled", "wikiart7-dev")


def shrink(src: Path, dst: Path, side: int, quality: int) -> bool:
    """Write ``src`` resized so its longer side is ``side`` px as JPEG ``dst``; False when ``src`` is unreadable."""
    try:
        with Image.open(src) as raw:
            im = raw.convert("RGB")
        im.thumbnail((side, side), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality)
    except (OSError, UnidentifiedImageError, ValueError):
        return False
    atomic_write_bytes(dst, buf.getvalue())
    return True


def copy_collection(src: Path, dst: Path, side: int, quality: int) -> dict[str, int]:
    """Every image under ``src`` into ``dst`` (same relative path, ``.jpg``), plus ``labels.csv`` when present."""
    images = sorted(p for p in src.rglob("*") if p.is_file() and is_image_file(p.name))
    labels = src / "labels.csv"
    if labels.is_file() and any(p.suffix.lower() != ".jpg" for p in images):  # the copies are .jpg: paths would break
        raise SystemExit(f"error: {src} has non-JPEG images its labels.csv names; convert them first")
    done = skipped = bad = 0
    for f in images:
        out = (dst / f.relative_to(src)).with_suffix(".jpg")
        if out.is_file():
            skipped += 1
        elif shrink(f, out, side, quality):
            done += 1
        else:
            bad += 1
    if labels.is_file():
        atomic_write_bytes(dst / "labels.csv", labels.read_bytes())
    return {"written": done, "already there": skipped, "unreadable": bad}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default=str(ROOT.parent / "shared" / "data"), help="folder holding the collections")
    ap.add_argument("--dst", default=str(ROOT / "data_local"), help="where the copies go (git-ignored)")
    ap.add_argument("--side", type=int, default=132, help="longer side of every copy, px")
    ap.add_argument("--quality", type=int, default=88, help="JPEG quality")
    a = ap.parse_args(argv)
    src, dst = Path(a.src), Path(a.dst)
    if src.resolve() in (dst.resolve(), *dst.resolve().parents):
        raise SystemExit(f"error: --dst {dst} lies inside --src {src}; the sample data is never written to")
    missing = [c for c in COLLECTIONS if not (src / c).is_dir()]
    if missing:
        raise SystemExit(f"error: {src} lacks {', '.join(missing)}; pass --src the folder that holds them")
    for c in COLLECTIONS:
        counts = copy_collection(src / c, dst / c, a.side, a.quality)
        size = sum(f.stat().st_size for f in (dst / c).rglob("*") if f.is_file()) / 2**20
        print(f"{c}: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + f"; {size:.1f} MiB in {dst / c}")


if __name__ == "__main__":
    main()
