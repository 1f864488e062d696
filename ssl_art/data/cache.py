"""Decode-once image cache: every image of a collection decoded a single time into a fixed-size uint8 array.

Each image is decoded with :func:`~ssl_art.data.decode.load_image` (same rules, same bad-file kinds), turned
landscape (portraits are stored transposed), resized so its shorter side is ``short`` pixels (about 1.15x the
training resolution, so crops are rarely upsampled), centre-cropped to at most ``long`` pixels along the longer
side (aspect ratio bounded) and edge-padded into a ``(3, short, long)`` canvas; ``hw`` records the valid region.
The array lives in one raw file (``pixels.u8``, ``np.memmap``-compatible, C order ``(N, 3, short, long)``) next
to ``meta.npz`` (``hw``, ``transposed``, ``status``: 0 = good, ``k`` = ``BAD_KINDS[k-1]``) and ``info.json``
(written last: the completion marker).

The cache folder is named by a key over the file list, each file's size and mtime, the stored shape and the
decoder limits, so a changed collection gets a new cache and an unchanged one is reused by later runs. Building is
parallel (DataLoader workers over chunks of images) with a progress bar and resumable: each finished chunk's
metadata is written atomically after its pixels, so an interrupted build continues with the missing chunks. Pixels
are written with ``pwrite`` and read back with ``pread`` (``mode='disk'``) or all at once (``mode='ram'``), so a
memmapped collection never needs RAM of the file's size.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ssl_art.data.collection import SYNTHETIC_PREFIX, Collection
from ssl_art.data.dataset import ImageDataset
from ssl_art.data.decode import BAD_KINDS, MAX_PIXELS, BadFileReport, BadImageError

log = logging.getLogger(__name__)

CACHE_VERSION = 1
CHUNK = 64  # images per build work item (and per resumable progress record)
_PROBE = 64  # images whose header is read to choose the stored aspect ratio


@dataclass(frozen=True)
class StoredShape:
    """Canvas size of every cached image: ``short`` x ``long`` (stored landscape)."""

    short: int
    long: int

    def nbytes(self, n: int) -> int:
        """Bytes of ``n`` cached images."""
        return n * 3 * self.short * self.long


def _probe_sizes(collection: Collection) -> list[tuple[int, int]]:
    """``(w, h)`` of up to ``_PROBE`` evenly spaced images, from their headers only (unreadable ones skipped)."""
    n = len(collection)
    picks = sorted({int(k) for k in np.linspace(0, n - 1, min(n, _PROBE))})
    if collection.synthetic is not None:
        return [(collection.synthetic.size, collection.synthetic.size)]
    sizes = []
    for k in picks:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # decompression bombs are reported when the cache is built
                with Image.open(collection.paths[k]) as im:
                    sizes.append(im.size)
        except Exception:  # noqa: BLE001 -- a bad file is found (and counted) when the cache is built
            continue
    return sizes


def stored_shape(collection: Collection, image_size: int, scale: float, max_aspect: float) -> StoredShape:
    """Shorter side ``ceil(scale * image_size)``; longer side from the collection's 90th-percentile aspect ratio,
    at most ``max_aspect`` times the shorter (a square collection gets square canvases)."""
    short = math.ceil(scale * image_size)
    aspects = [max(w, h) / max(1, min(w, h)) for w, h in _probe_sizes(collection)] or [max_aspect]
    aspect = min(max_aspect, float(np.quantile(aspects, 0.9)))
    return StoredShape(short, max(short, round(short * aspect)))


def cache_key(collection: Collection, shape: StoredShape, max_image_pixels: int) -> str:
    """Hex key over the file list, sizes, mtimes, stored shape and decoder limit (synthetic: its source string)."""
    h = hashlib.sha256(json.dumps([CACHE_VERSION, shape.short, shape.long, max_image_pixels]).encode())
    if collection.synthetic is not None:
        h.update(collection.source.encode())
    for p in collection.paths:
        h.update(p.encode() + b"\0")
        if not p.startswith(SYNTHETIC_PREFIX):
            try:
                st = os.stat(p)
                h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            except OSError:
                h.update(b"?")
    return h.hexdigest()[:24]


def to_canvas(image: Image.Image, shape: StoredShape) -> tuple[np.ndarray, int, int, bool]:
    """One RGB image -> ``((3, short, long) uint8, valid_h, valid_w, transposed)`` (see the module docstring)."""
    transposed = image.height > image.width
    if transposed:
        image = image.transpose(Image.Transpose.TRANSPOSE)
    w = max(shape.short, round(image.width * shape.short / image.height))
    image = image.resize((w, shape.short), Image.Resampling.BILINEAR)  # PIL bilinear antialiases when shrinking
    if w > shape.long:
        left = (w - shape.long) // 2
        image, w = image.crop((left, 0, left + shape.long, shape.short)), shape.long
    arr = np.asarray(image, dtype=np.uint8)
    if w < shape.long:  # edge replication: a crop touching the valid border interpolates like a clamped image
        arr = np.pad(arr, ((0, 0), (0, shape.long - w), (0, 0)), mode="edge")
    return np.ascontiguousarray(arr.transpose(2, 0, 1)), shape.short, w, transposed


class _Chunks(Dataset[Any]):
    """Work items for the build: chunk ``k`` -> ``(k, pixels, hw, transposed, status)``."""

    def __init__(self, collection: Collection, shape: StoredShape, max_pixels: int, todo: list[int]) -> None:
        plain = Collection(paths=collection.paths, source=collection.source, synthetic=collection.synthetic)
        self.images = ImageDataset(plain, _identity, max_pixels)
        self.shape, self.todo, self.n = shape, todo, len(collection)

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, item: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        k = self.todo[item]
        lo, hi = k * CHUNK, min(self.n, (k + 1) * CHUNK)
        px = np.zeros((hi - lo, 3, self.shape.short, self.shape.long), np.uint8)
        hw = np.zeros((hi - lo, 2), np.int32)
        tr = np.zeros(hi - lo, bool)
        status = np.zeros(hi - lo, np.int8)
        for j, i in enumerate(range(lo, hi)):
            try:
                px[j], hw[j, 0], hw[j, 1], tr[j] = to_canvas(self.images.load(i), self.shape)
            except BadImageError as e:
                status[j] = BAD_KINDS.index(e.kind) + 1
        return k, px, hw, tr, status


def _identity(x: Any) -> Any:
    return x


def _first(batch: list[Any]) -> Any:
    return batch[0]


@dataclass
class ImageCache:
    """A built cache, opened for reading.

    Attributes:
        folder: the cache folder.
        shape: canvas size.
        hw: ``(N, 2)`` int32 valid ``(h, w)`` per image in stored orientation.
        transposed: ``(N,)`` bool.
        status: ``(N,)`` int8; 0 good, ``k`` = ``BAD_KINDS[k - 1]``.
        pixels: ``(N, 3, short, long)`` uint8 in RAM for ``mode='ram'``, ``None`` for ``mode='disk'`` (pread).
    """

    folder: Path
    shape: StoredShape
    hw: np.ndarray
    transposed: np.ndarray
    status: np.ndarray
    pixels: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.status.shape[0])

    @property
    def file(self) -> Path:
        return self.folder / "pixels.u8"

    @property
    def nbytes(self) -> int:
        return self.shape.nbytes(len(self))

    def gather(self, indices: Sequence[int], out: np.ndarray | None = None) -> np.ndarray:
        """``(len(indices), 3, short, long)`` uint8 images (into ``out`` when given, e.g. a pinned buffer's view)."""
        n = len(indices)
        dst = out if out is not None else np.empty((n, 3, self.shape.short, self.shape.long), np.uint8)
        if self.pixels is not None:
            np.take(self.pixels, np.asarray(indices, np.int64), axis=0, out=dst[:n])
            return dst[:n]
        per = self.shape.nbytes(1)
        fd = os.open(self.file, os.O_RDONLY)
        try:
            for j, i in enumerate(indices):  # pread: no mapping, so RSS stays at one batch, not the file size
                view = memoryview(dst[j].reshape(-1))
                if os.preadv(fd, [view], int(i) * per) != per:
                    raise OSError(f"{self.file}: short read at image {i}; delete the cache folder to rebuild it")
        finally:
            os.close(fd)
        return dst[:n]

    def bad_report(self, paths: Sequence[str]) -> BadFileReport:
        """Bad files found while building, by kind (``paths`` = the collection's)."""
        report = BadFileReport()
        for i in np.flatnonzero(self.status):
            report.add(BAD_KINDS[int(self.status[i]) - 1], paths[int(i)])
        return report

    def kind(self, i: int) -> str:
        """Bad kind of image ``i`` ("" when good)."""
        s = int(self.status[i])
        return BAD_KINDS[s - 1] if s else ""


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Exclusive lock on the cache folder: concurrent runs (or DDP ranks) build it once and share it."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def is_built(folder: Path) -> bool:
    """Whether ``folder`` holds a complete cache."""
    return (folder / "info.json").is_file()


def build_cache(
    collection: Collection,
    folder: Path,
    shape: StoredShape,
    max_image_pixels: int = MAX_PIXELS,
    num_workers: int = 0,
    progress: bool = True,
) -> Path:
    """Decode ``collection`` into ``folder`` (no-op when complete; continues an interrupted build).

    Args:
        collection: the images, in sampler order (index ``i`` = cache row ``i``).
        folder: the cache folder (see :func:`cache_key`).
        shape: canvas size.
        max_image_pixels: decompression-bomb limit of :func:`~ssl_art.data.decode.load_image`.
        num_workers: decoding processes (0 = this process).
        progress: show a tqdm bar.

    Returns:
        ``folder``.
    """
    with _locked(folder):
        if is_built(folder):
            return folder
        n = len(collection)
        per = shape.nbytes(1)
        partial, chunks = folder / "pixels.u8.partial", folder / "chunks"
        chunks.mkdir(exist_ok=True)
        n_chunks = (n + CHUNK - 1) // CHUNK
        done = {int(p.stem) for p in chunks.glob("*.npz") if p.stem.isdigit()}
        todo = [k for k in range(n_chunks) if k not in done]
        if done:
            log.info("resuming the cache build in %s: %d of %d chunks already done", folder, len(done), n_chunks)
        fd = os.open(partial, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, shape.nbytes(n))  # sparse until written
            loader: DataLoader[Any] = DataLoader(
                _Chunks(collection, shape, max_image_pixels, todo),
                batch_size=1,
                collate_fn=_first,
                num_workers=num_workers,
            )
            bar = tqdm(total=n, initial=min(n, len(done) * CHUNK), desc="caching images", disable=not progress)
            for k, px, hw, tr, status in loader:
                _pwrite_all(fd, np.ascontiguousarray(px).reshape(-1).data, k * CHUNK * per)
                _save_npz(chunks / f"{k:06d}.npz", hw=hw, transposed=tr, status=status)  # after its pixels
                bar.update(len(status))
            bar.close()
            os.fsync(fd)
        finally:
            os.close(fd)
        parts = [np.load(chunks / f"{k:06d}.npz") for k in range(n_chunks)]
        _save_npz(
            folder / "meta.npz",
            hw=np.concatenate([p["hw"] for p in parts]),
            transposed=np.concatenate([p["transposed"] for p in parts]),
            status=np.concatenate([p["status"] for p in parts]),
        )
        os.replace(partial, folder / "pixels.u8")
        info = {"version": CACHE_VERSION, "n": n, "short": shape.short, "long": shape.long, "source": collection.source}
        _atomic_write(folder / "info.json", json.dumps(info, indent=2).encode())
        shutil.rmtree(chunks, ignore_errors=True)
    return folder


def open_cache(folder: Path, mode: str) -> ImageCache:
    """Open a built cache; ``mode='ram'`` reads the pixels into memory, ``'disk'`` reads batches on demand.

    Raises:
        ValueError: unknown mode, or ``folder`` holds no complete cache.
    """
    if mode not in ("ram", "disk"):
        raise ValueError(f"cache mode must be ram or disk, got {mode!r}")
    if not is_built(folder):
        raise ValueError(f"{folder} holds no complete image cache")
    info = json.loads((folder / "info.json").read_text())
    shape = StoredShape(int(info["short"]), int(info["long"]))
    with np.load(folder / "meta.npz") as meta:
        hw, tr, status = meta["hw"], meta["transposed"], meta["status"]
    pixels = None
    if mode == "ram":
        pixels = np.fromfile(folder / "pixels.u8", dtype=np.uint8).reshape(len(status), 3, shape.short, shape.long)
    return ImageCache(folder, shape, hw, tr, status, pixels)


def plan_cache(mode: str, nbytes: int, max_gb: float, ram_gb: float, free_bytes: int) -> tuple[str, str]:
    """Which input path runs: ``(off | ram | disk, why)``.

    ``auto`` caches when the file fits ``max_gb`` and the free disk space, in RAM up to ``ram_gb``, memmapped
    beyond; an explicit ``ram``/``disk`` is honoured (and refused when the disk cannot hold the file).

    Raises:
        ValueError: an explicit ``ram``/``disk`` cache larger than the free space.
    """
    gb = nbytes / 1e9
    if mode == "off":
        return "off", "data.cache=off"
    if nbytes > free_bytes:
        why = f"the {gb:.2f} GB cache does not fit the {free_bytes / 1e9:.2f} GB free in data.cache_dir"
        if mode == "auto":
            return "off", why
        raise ValueError(f"data.cache={mode}: {why}; free space, point data.cache_dir elsewhere or use data.cache=off")
    if mode in ("ram", "disk"):
        return mode, f"data.cache={mode} ({gb:.2f} GB)"
    if gb > max_gb:
        return "off", f"the cache would be {gb:.2f} GB > data.cache_max_gb={max_gb:g}"
    if gb <= ram_gb:
        return "ram", f"{gb:.2f} GB <= data.cache_ram_gb={ram_gb:g}"
    return "disk", f"{gb:.2f} GB > data.cache_ram_gb={ram_gb:g}: memory-mapped file"
