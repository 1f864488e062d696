"""Robust image decoding: every file either becomes an 8-bit RGB PIL image or a classified :class:`BadImageError`.

Real collections (scraped art, phone photos, scans) contain every odd format: EXIF-rotated JPEGs, CMYK, 16-bit
PNGs, palette images with transparency, animated GIFs, truncated downloads, HTML saved as ``.jpg`` and the
occasional decompression bomb. :func:`load_image` normalises all of them the same way (orientation applied,
alpha composited on white, 16-bit scaled, first frame of an animation) so training never sees a surprise mode, and
refuses the rest with one of a fixed set of ``kind`` strings. :class:`BadFileReport` counts those kinds with a few
example paths and :meth:`BadFileReport.check` stops a run with a readable error when too much of the collection is
broken, instead of silently training on a fraction of it.

:func:`check_geometry` is the one size guard for every image entry point (training, embedding, predict, the web
app): it reads only the header's ``width x height`` and refuses, *before* any pixel is decoded or resized, images
with too many pixels, an extreme aspect ratio (a 1 x 60000 PNG is 320 bytes, but resizing its shorter side to 224
makes 224 x 13.4M pixels), or -- when the target side is known, as in the eval transform's :class:`SizeGuard` -- a
post-resize size above ``max_resized_pixels``. :func:`load_image` (files) and :func:`decode_bytes` (uploads) both
call it, so one limit protects every path.
"""

from __future__ import annotations

import errno
import io
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ssl_art.runtime.errors import BadInputError, TooManyBadFilesError

BAD_KINDS: tuple[str, ...] = (
    "missing",
    "zero_byte",
    "unreadable_permissions",
    "not_an_image",
    "truncated",
    "decompression_bomb",
    "decode_error",
)

# Modes that carry an alpha channel: composited on white (a transparent background is "paper", not black).
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_HIGH_BIT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}

MAX_PIXELS = 178_956_970  # PIL's own default decompression-bomb limit
MAX_ASPECT = 25.0  # longest / shortest side; wide hand scrolls are ~1:10, a 1:60000 strip is an attack or junk
MAX_RESIZED_PIXELS = 1 << 25  # 33.5M pixels (~400 MB as a float32 RGB tensor) after "shorter side -> S"


class BadImageError(BadInputError):
    """A file that cannot be used as an image.

    Args:
        kind: one of :data:`BAD_KINDS`.
        path: the offending file.
        msg: human-readable detail (the underlying error).
    """

    def __init__(self, kind: str, path: str, msg: str = "") -> None:
        if kind not in BAD_KINDS:
            raise ValueError(f"unknown bad-image kind {kind!r}; valid kinds: {', '.join(BAD_KINDS)}")
        super().__init__(f"{kind}: {path}" + (f" ({msg})" if msg else ""))
        self.kind, self.path, self.msg = kind, path, msg

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across DataLoader worker processes
        return (BadImageError, (self.kind, self.path, self.msg))


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (alpha on white, 16/32-bit and float scaled to [0, 255])."""
    if im.mode == "RGB":
        return im
    if im.mode == "P":
        # Palette transparency (a transparent index or per-entry alpha) becomes real alpha first.
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        if im.mode == "RGB":
            return im
    if im.mode in _ALPHA_MODES:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if im.mode in _HIGH_BIT_MODES:
        arr = np.asarray(im).astype(np.float64)
        if im.mode == "F":
            hi = float(arr.max()) if arr.size else 1.0
            arr = arr * 255.0 if hi <= 1.0 else (arr - arr.min()) / max(hi - float(arr.min()), 1e-12) * 255.0
        else:
            # 16-bit data (I;16 or PNG's 16-bit grey decoded as I): the full range is 0..65535 -> /257.
            hi = float(arr.max()) if arr.size else 0.0
            if hi > 65535:
                arr = arr / hi * 255.0
            elif hi > 255 or im.mode.startswith("I;16"):
                arr = arr / 257.0
        grey = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
        return grey.convert("RGB")
    # L, 1, CMYK, YCbCr, LAB, HSV: PIL's own conversions are correct for these.
    return im.convert("RGB")


def resized_pixels(width: int, height: int, side: int) -> int:
    """Pixels after resizing the shorter side of ``width x height`` to ``side`` (torchvision ``Resize(side)``)."""
    short, long = min(width, height), max(width, height)
    return side * max(side, int(side * long / max(short, 1)))


def check_geometry(
    width: int,
    height: int,
    name: str,
    max_pixels: int = MAX_PIXELS,
    max_aspect: float = MAX_ASPECT,
    side: int = 0,
    max_resized_pixels: int = MAX_RESIZED_PIXELS,
) -> None:
    """Refuse an image from its header size alone, before any decode or resize.

    Args:
        width: image width from the header.
        height: image height from the header.
        name: the file (or upload) name used in the error.
        max_pixels: largest ``width * height``.
        max_aspect: largest ``max(w, h) / min(w, h)``.
        side: target of a "shorter side -> ``side``" resize; ``0`` = unknown (that check is skipped).
        max_resized_pixels: largest pixel count after that resize.

    Raises:
        BadImageError: kind ``decompression_bomb`` (a resize bomb is one too) or ``decode_error`` for a zero side,
            with a message giving the size and the limit it breaks.
    """
    if width <= 0 or height <= 0:
        raise BadImageError("decode_error", name, f"image has a zero side ({width}x{height})")
    if width * height > max_pixels:
        raise BadImageError("decompression_bomb", name, f"{width}x{height} exceeds max_pixels={max_pixels}")
    aspect = max(width, height) / min(width, height)
    if aspect > max_aspect:
        raise BadImageError(
            "decompression_bomb", name, f"{width}x{height} has aspect ratio {aspect:.0f}:1, above max {max_aspect:g}:1"
        )
    if side > 0 and resized_pixels(width, height, side) > max_resized_pixels:
        raise BadImageError(
            "decompression_bomb",
            name,
            f"{width}x{height} resized to shorter side {side} would have {resized_pixels(width, height, side)} "
            f"pixels, above max_resized_pixels={max_resized_pixels}",
        )


def decode_bytes(
    data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS, max_aspect: float = MAX_ASPECT
) -> Image.Image:
    """Decode an in-memory image (an upload) exactly like :func:`load_image` decodes a file.

    Args:
        data: the encoded bytes.
        name: shown in errors instead of the buffer object (a client's file name, or ``"upload"``).
        max_pixels: see :func:`check_geometry`.
        max_aspect: see :func:`check_geometry`.

    Raises:
        BadImageError: ``zero_byte`` for no data, otherwise as :func:`load_image`.
    """
    if not data:
        raise BadImageError("zero_byte", name, "empty upload")
    return _decode(io.BytesIO(data), name, max_pixels, max_aspect)


def load_image(path: str, max_pixels: int = MAX_PIXELS, max_aspect: float = MAX_ASPECT) -> Image.Image:
    """Decode ``path`` into an RGB image with EXIF orientation applied.

    Args:
        path: file to read.
        max_pixels: largest accepted ``width * height``; larger images are refused as decompression bombs. Also
            installed as ``PIL.Image.MAX_IMAGE_PIXELS`` (process-wide, which is what PIL reads).
        max_aspect: largest accepted aspect ratio (:func:`check_geometry`), checked before decoding.

    Returns:
        A fully loaded ``RGB`` PIL image (the first frame for animations).

    Raises:
        BadImageError: with ``kind`` in :data:`BAD_KINDS` for anything that is not a usable image.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError as e:
        raise BadImageError("missing", path, "file not found") from e
    except PermissionError as e:
        raise BadImageError("unreadable_permissions", path, str(e)) from e
    except OSError as e:
        raise BadImageError("decode_error", path, str(e)) from e
    if st.st_size == 0:
        raise BadImageError("zero_byte", path, "empty file")

    return _decode(path, path, max_pixels, max_aspect)


def _decode(source: str | io.BytesIO, name: str, max_pixels: int, max_aspect: float) -> Image.Image:
    """Open ``source`` (a path or a buffer), check its header size, decode, normalise to RGB; errors name ``name``."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is bad, never silently grey-filled
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                w, h = im.size
                check_geometry(w, h, name, max_pixels, max_aspect)  # header only: nothing decoded yet
                im.seek(0)  # animations: first frame
                im.load()
                try:
                    out = ImageOps.exif_transpose(im) or im
                except Exception:  # noqa: BLE001 -- malformed EXIF: keep the pixels, lose the orientation
                    out = im
                return _to_rgb(out).copy()
    except BadImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImageError("decompression_bomb", name, _clean(e, source)) from e
    except UnidentifiedImageError as e:
        raise BadImageError("not_an_image", name, "not a recognised image format") from e
    except PermissionError as e:
        raise BadImageError("unreadable_permissions", name, str(e)) from e
    except FileNotFoundError as e:  # deleted between stat and open
        raise BadImageError("missing", name, str(e)) from e
    except OSError as e:
        text = str(e).lower()
        if e.errno in (errno.EACCES, errno.EPERM):
            raise BadImageError("unreadable_permissions", name, str(e)) from e
        if "truncated" in text or "broken data stream" in text or "premature end" in text:
            raise BadImageError("truncated", name, _clean(e, source)) from e
        raise BadImageError("decode_error", name, _clean(e, source)) from e
    except Exception as e:  # noqa: BLE001 -- any decoder failure is a bad file, never a crashed epoch
        raise BadImageError("decode_error", name, f"{type(e).__name__}: {_clean(e, source)}") from e


def _clean(e: BaseException, source: str | io.BytesIO) -> str:
    """``str(e)`` without a buffer's ``<_io.BytesIO object at 0x...>`` repr (PIL puts it in some messages)."""
    text = str(e)
    return text.replace(repr(source), "the image") if not isinstance(source, str) else text


@dataclass
class BadFileReport:
    """Counts of bad files per kind with up to ``max_examples`` example paths each.

    Attributes:
        counts: kind -> number of files.
        examples: kind -> first example paths (at most ``max_examples``).
        max_examples: how many example paths to keep per kind.
    """

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 5

    def add(self, kind: str, path: str) -> None:
        """Record one bad file.

        Raises:
            ValueError: for a kind outside :data:`BAD_KINDS`.
        """
        if kind not in BAD_KINDS:
            raise ValueError(f"unknown bad-image kind {kind!r}; valid kinds: {', '.join(BAD_KINDS)}")
        self.counts[kind] = self.counts.get(kind, 0) + 1
        ex = self.examples.setdefault(kind, [])
        if len(ex) < self.max_examples and path not in ex:
            ex.append(path)

    def merge(self, other: BadFileReport) -> BadFileReport:
        """Add ``other``'s counts and examples into this report (in place) and return it."""
        for kind, n in other.counts.items():
            self.counts[kind] = self.counts.get(kind, 0) + n
            ex = self.examples.setdefault(kind, [])
            for p in other.examples.get(kind, []):
                if len(ex) < self.max_examples and p not in ex:
                    ex.append(p)
        return self

    @property
    def total(self) -> int:
        """Number of bad files of all kinds."""
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for logs and JSON: ``{"total", "counts", "examples"}``."""
        return {
            "total": self.total,
            "counts": dict(self.counts),
            "examples": {k: list(v) for k, v in self.examples.items()},
        }

    def summary(self) -> str:
        """One line per kind: ``kind: count (e.g. path, path)``."""
        lines = []
        for kind in sorted(self.counts, key=lambda k: -self.counts[k]):
            lines.append(f"  {kind}: {self.counts[kind]} (e.g. {', '.join(self.examples.get(kind, []))})")
        return "\n".join(lines)

    def check(self, n_total: int, max_fraction: float) -> None:
        """Raise when more than ``max_fraction`` of ``n_total`` files are bad.

        Args:
            n_total: number of files looked at (good + bad).
            max_fraction: largest tolerated bad fraction in [0, 1].

        Raises:
            TooManyBadFilesError: listing every kind with its count and example paths.
        """
        if self.total == 0:
            return
        frac = self.total / max(n_total, 1)
        if frac > max_fraction:
            raise TooManyBadFilesError(
                f"{self.total} of {n_total} files ({frac:.1%}) are unreadable, more than the allowed "
                f"{max_fraction:.1%} (data.max_bad_fraction):\n{self.summary()}"
            )


# a training checkpoint stores the report; allow it under torch.load(weights_only=True) (model.init_checkpoint)
torch.serialization.add_safe_globals([BadFileReport])
