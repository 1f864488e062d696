"""Image collections: one list of paths plus named label columns, from a CSV manifest, a folder or the synthetic set.

:func:`load_collection` turns ``data.path`` into a :class:`Collection` without opening any image: a ``.csv``
manifest (a ``path`` column plus any label columns, empty cells = missing label), an ImageFolder tree
(``<root>/<class>/<image>``, label column ``label``), a flat or nested folder scanned recursively (unlabeled), or
``""`` for the embedded :class:`~ssl_art.data.synthetic.SyntheticArt` images (paths ``synthetic://<i>``, label
columns ``label`` = style and ``content`` = background composition). Indexing
is cheap and strict about structure (a malformed manifest row is an error naming the row) but lenient about
individual files: zero-byte and missing files are dropped and counted in ``collection.bad`` so the caller can
apply ``data.max_bad_fraction``.

*One path policy* (:func:`absolute_path`): every loader returns absolute paths made with ``os.path.abspath``,
which normalises ``.`` and ``..`` but does not resolve symlinks, so a collection reached through a linked folder
(``../shared`` -> elsewhere) keeps the paths the user typed, and the folder scan and a CSV manifest of the same
images give the same strings.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ssl_art.data.decode import BadFileReport
from ssl_art.data.synthetic import SyntheticArt

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
SYNTHETIC_PREFIX = "synthetic://"
FORMATS: tuple[str, ...] = ("auto", "folder", "imagefolder", "csv")


@dataclass
class Collection:
    """An indexed image collection.

    Attributes:
        paths: absolute file paths, or ``synthetic://<i>`` for the embedded set.
        labels: label column -> one label per path (``None`` = missing).
        source: where the collection came from (for logs).
        bad: files dropped while indexing (zero-byte, missing), by kind.
        synthetic: the generator behind ``synthetic://`` paths, ``None`` for files on disk.
    """

    paths: list[str]
    labels: dict[str, list[str | None]] = field(default_factory=dict)
    source: str = ""
    bad: BadFileReport = field(default_factory=BadFileReport)
    synthetic: SyntheticArt | None = None

    def __post_init__(self) -> None:
        for col, values in self.labels.items():
            if len(values) != len(self.paths):
                raise ValueError(f"label column {col!r} has {len(values)} entries for {len(self.paths)} paths")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def n_indexed(self) -> int:
        """Files seen while indexing: the usable ones plus those dropped as bad (the base of the bad fraction)."""
        return len(self.paths) + self.bad.total

    def _column(self, column: str) -> list[str | None]:
        if column not in self.labels:
            have = ", ".join(self.labels) or "none (unlabeled collection)"
            raise ValueError(f"label column {column!r} not in collection {self.source!r}; label columns: {have}")
        return self.labels[column]

    def classes(self, column: str = "label") -> list[str]:
        """Sorted distinct non-missing labels of ``column``.

        Raises:
            ValueError: when the collection has no such column.
        """
        return sorted({v for v in self._column(column) if v is not None})

    def targets(self, column: str = "label") -> np.ndarray:
        """``(N,)`` int64 index into :meth:`classes` per image, ``-1`` where the label is missing.

        Raises:
            ValueError: when the collection has no such column.
        """
        index = {c: k for k, c in enumerate(self.classes(column))}
        return np.array([-1 if v is None else index[v] for v in self._column(column)], dtype=np.int64)

    def subset(self, indices: Sequence[int] | np.ndarray) -> Collection:
        """A new collection with the images at ``indices`` (in that order); ``bad`` is shared, not copied."""
        idx = [int(i) for i in indices]
        return Collection(
            paths=[self.paths[i] for i in idx],
            labels={col: [vals[i] for i in idx] for col, vals in self.labels.items()},
            source=self.source,
            bad=self.bad,
            synthetic=self.synthetic,
        )


def is_image_file(name: str) -> bool:
    """True for a supported image extension (case-insensitive) that is not a hidden file."""
    return not os.path.basename(name).startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def absolute_path(path: str | Path) -> str:
    """``path`` made absolute against the working directory, ``.``/``..`` folded, symlinks kept (the one policy)."""
    return os.path.abspath(path)


def _scan(folder: Path) -> list[str]:
    """Sorted absolute paths of all images below ``folder`` (recursive, hidden folders skipped)."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [os.path.join(dirpath, f) for f in filenames if is_image_file(f)]
    return sorted(absolute_path(p) for p in found)


def _has_direct_images(folder: Path) -> bool:
    try:
        return any(e.is_file() and is_image_file(e.name) for e in os.scandir(folder))
    except OSError:
        return False


def _class_dirs(folder: Path) -> list[Path]:
    """Immediate, non-hidden subfolders of ``folder`` that contain images directly."""
    subs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [p for p in subs if _has_direct_images(p)]


def _keep_file(path: str, bad: BadFileReport) -> bool:
    """Drop (and count) files that are missing or empty at indexing time."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        bad.add("missing", path)
        return False
    except OSError:
        bad.add("unreadable_permissions", path)
        return False
    if size == 0:
        bad.add("zero_byte", path)
        return False
    return True


def _from_files(paths: list[str], labels: dict[str, list[str | None]], source: str, bad: BadFileReport) -> Collection:
    keep = [k for k, p in enumerate(paths) if _keep_file(p, bad)]
    if not keep:
        detail = f"; dropped while indexing:\n{bad.summary()}" if bad.total else ""
        raise ValueError(f"no usable images in {source}{detail}")
    return Collection(
        paths=[paths[k] for k in keep],
        labels={col: [vals[k] for k in keep] for col, vals in labels.items()},
        source=source,
        bad=bad,
    )


def _open_manifest(csv_path: str) -> io.StringIO:
    """The manifest's text (BOM stripped, newlines kept for ``csv``); not UTF-8 is an error naming the file."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            return io.StringIO(f.read(), newline="")
    except UnicodeDecodeError as e:
        raise ValueError(f"{csv_path}: not a UTF-8 text file ({e}); save the manifest as UTF-8 CSV") from e


def _rows(reader: Iterator[list[str]], csv_path: str) -> Iterator[list[str]]:
    """``reader``'s rows, with ``csv.Error`` (e.g. an oversized field) re-raised as a ValueError naming the file."""
    try:
        yield from reader
    except csv.Error as e:
        raise ValueError(f"{csv_path}: malformed CSV ({e})") from e


def read_manifest(csv_path: str, root: str = "") -> tuple[list[str], dict[str, list[str | None]]]:
    """Parse a CSV manifest into absolute paths and label columns (no file checks).

    Args:
        csv_path: a CSV file with a header row containing ``path``; every other column is a label column.
        root: base folder for relative paths; ``""`` = the CSV's own folder.

    Returns:
        ``(paths, labels)`` where empty label cells are ``None``.

    Raises:
        ValueError: naming the file and line for a missing ``path`` column, duplicate or empty column names, a row
            with the wrong number of cells or an empty path, a file that is not UTF-8 or not parseable as CSV.
    """
    base = Path(absolute_path(root if root else Path(csv_path).parent))
    with _open_manifest(csv_path) as f:
        reader = csv.reader(f)
        rows = _rows(reader, csv_path)
        header = next(rows, None)
        if header is None:
            raise ValueError(f"{csv_path}: empty manifest, expected a header row with a 'path' column")
        names = [h.strip() for h in header]
        if "path" not in names:
            raise ValueError(f"{csv_path}: no 'path' column in header {names}; the manifest needs path,<labels...>")
        if len(set(names)) != len(names) or "" in names:
            raise ValueError(f"{csv_path}: header {names} has empty or duplicate column names")
        pcol = names.index("path")
        paths: list[str] = []
        labels: dict[str, list[str | None]] = {n: [] for n in names if n != "path"}
        for row in rows:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue  # blank line
            if len(row) != len(names):
                raise ValueError(
                    f"{csv_path}: line {line} has {len(row)} cells, expected {len(names)} ({','.join(names)})"
                )
            cells = [c.strip() for c in row]
            if not cells[pcol]:
                raise ValueError(f"{csv_path}: line {line} has an empty 'path' cell")
            try:
                p = Path(cells[pcol]).expanduser()
                paths.append(absolute_path(base / p))  # an absolute p replaces base
            except (RuntimeError, ValueError, OSError) as e:  # ~unknownuser, embedded NUL, ...
                raise ValueError(f"{csv_path}: line {line} has an unusable path {cells[pcol]!r} ({e})") from e
            for k, name in enumerate(names):
                if k != pcol:
                    labels[name].append(cells[k] or None)
    return paths, labels


def load_collection(
    path: str,
    fmt: str = "auto",
    label_column: str = "label",
    root: str = "",
    synthetic_size: int = 1400,
    synthetic_image_size: int = 64,
    seed: int = 0,
) -> Collection:
    """Index a collection (see the module docstring for the formats).

    Args:
        path: CSV manifest, folder, or ``""`` for the embedded synthetic collection.
        fmt: ``auto`` | ``folder`` (recursive unlabeled scan) | ``imagefolder`` | ``csv``.
        label_column: the class column the caller will use; only checked (with a warning) here.
        root: base folder for relative CSV paths; ``""`` = the CSV's folder.
        synthetic_size: number of synthetic images.
        synthetic_image_size: side of the synthetic images.
        seed: synthetic collection seed.

    Returns:
        The collection; ``collection.bad`` lists files dropped while indexing.

    Raises:
        ValueError: for an unknown format, a path that does not exist, a manifest or folder that does not match
            ``fmt``, or a collection with no usable image.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown collection format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    if not path:
        syn = SyntheticArt(synthetic_size, synthetic_image_size, seed=seed)
        return Collection(
            paths=[f"{SYNTHETIC_PREFIX}{i}" for i in range(len(syn))],
            # "label" is the style; "content" the background composition, drawn independently of the style
            labels={"label": list[str | None](syn.labels), "content": list[str | None](syn.content_labels())},
            source=f"synthetic(n={synthetic_size}, size={synthetic_image_size}, seed={seed})",
            synthetic=syn,
        )
    p = Path(path).expanduser()
    if not p.exists():
        raise ValueError(
            f"data path does not exist: {path}; give an existing folder, ImageFolder tree or CSV manifest "
            '(data.path / --data; "" = the packaged synthetic collection)'
        )
    bad = BadFileReport()
    if p.is_file():
        if fmt not in ("auto", "csv") or p.suffix.lower() != ".csv":
            raise ValueError(f"{path} is a file: only a .csv manifest is accepted here (format={fmt!r})")
        paths, labels = read_manifest(str(p), root)
        coll = _from_files(paths, labels, str(p), bad)
    elif fmt == "csv":
        raise ValueError(f"format 'csv' needs a .csv file, got the folder {path}")
    else:
        classes = _class_dirs(p) if fmt in ("auto", "imagefolder") else []
        use_tree = fmt == "imagefolder" or (fmt == "auto" and classes and not _has_direct_images(p))
        if use_tree:
            if not classes:
                raise ValueError(f"{path} is not an ImageFolder tree: no subfolder contains images directly")
            paths, labs = [], []
            for d in classes:
                found = _scan(d)
                paths += found
                labs += [d.name] * len(found)
            coll = _from_files(paths, {"label": list[str | None](labs)}, str(p), bad)
        else:
            coll = _from_files(_scan(p), {}, str(p), bad)
    if coll.labels and label_column not in coll.labels:
        log.warning("label column %r not in %s (columns: %s)", label_column, path, ", ".join(coll.labels))
    if coll.bad.total:
        log.warning("%s: dropped %d files while indexing:\n%s", path, coll.bad.total, coll.bad.summary())
    return coll
