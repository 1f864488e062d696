"""The manifest of an embeddings export: ``manifest.csv`` (path + label columns, one row per embedding row).

Written once per export, read strictly: a truncated, empty, column-less or non-UTF-8 manifest is a clear error naming
the file, and :func:`verify_manifest` checks the row count and SHA-256 that ``meta.json`` recorded at export time,
so a shuffled or edited manifest never gives silently wrong labels or thumbnails.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["manifest_sha256", "read_manifest", "verify_manifest", "write_manifest"]


def write_manifest(path: str | Path, paths: Sequence[str], labels: Mapping[str, Sequence[str | None]]) -> None:
    """``row,path,<label columns...>`` CSV; missing labels are empty cells."""
    cols = list(labels)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["row", "path", *cols])
        for i, p in enumerate(paths):
            w.writerow([i, p, *[labels[c][i] or "" for c in cols]])


def read_manifest(path: str | Path) -> tuple[list[str], dict[str, list[str | None]]]:
    """Inverse of :func:`write_manifest`: ``(paths, {column: labels})``, empty cells as ``None``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file: empty (no header), no ``row``/``path`` columns, a row with the wrong number of
            cells, or a ``row`` column that is not ``0, 1, 2, ...`` (the file was edited, shuffled or truncated).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: manifest not found")
    try:
        with open(p, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header:
                raise ValueError(f"{p}: empty manifest (no header row); re-run `ssl-art embed`")
            if header[:2] != ["row", "path"]:
                raise ValueError(f"{p}: header {header[:4]} lacks the 'row,path' columns; not an ssl-art manifest")
            cols = header[2:]
            paths: list[str] = []
            labels: dict[str, list[str | None]] = {c: [] for c in cols}
            for cells in reader:
                if len(cells) != len(header):
                    raise ValueError(
                        f"{p}: line {reader.line_num} has {len(cells)} cells, expected {len(header)} "
                        "(truncated or damaged manifest)"
                    )
                if cells[0] != str(len(paths)):
                    raise ValueError(
                        f"{p}: line {reader.line_num} has row {cells[0]!r}, expected {len(paths)} "
                        "(the manifest was reordered or edited)"
                    )
                paths.append(cells[1])
                for c, v in zip(cols, cells[2:]):
                    labels[c].append(v or None)
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{p}: unreadable manifest ({e})") from e
    return paths, labels


def manifest_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a manifest file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_manifest(
    path: str | Path, n: int, sha256: str = "", what: str = "the embeddings"
) -> tuple[list[str], dict[str, list[str | None]]]:
    """:func:`read_manifest` plus the integrity checks: exactly ``n`` rows and, when recorded, the same SHA-256.

    Args:
        path: the manifest.
        n: rows it must have (``meta.n``).
        sha256: the checksum recorded at embed/build time (``""`` = not recorded, skipped).
        what: what recorded ``n``/``sha256``, for the message.

    Raises:
        ValueError: naming the file and what differs.
    """
    if sha256 and manifest_sha256(path) != sha256:
        raise ValueError(
            f"{path}: checksum differs from the one recorded with {what} (the manifest was edited, shuffled or "
            "replaced, so labels and thumbnails would be wrong); restore it or re-run `ssl-art embed` and "
            "`ssl-art index build`"
        )
    paths, labels = read_manifest(path)
    if len(paths) != n:
        raise ValueError(f"{path}: {len(paths)} rows but {what} have {n} (truncated or wrong manifest)")
    return paths, labels
