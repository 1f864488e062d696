"""A real tiny ``main_pretrain`` run over a folder holding every bad-file kind of issue 5.

Convertible files (CMYK, 16-bit, palette + transparency, animated, EXIF-rotated, PNG named .jpg) must be decoded to
RGB and trained on; unusable ones (truncated, zero-byte, not an image, decompression bomb, unreadable, deleted
after indexing) are skipped and counted per kind in ``<run>/bad_files.json``; a low ``data.max_bad_fraction``
stops the run with one message listing examples. Unreadable permissions are real (``chmod 000``) when not root and
simulated (``open`` raising EACCES for that one file) as root, where chmod does not block reading.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from reliability_helpers import BAD, BOMB_LIMIT, CONVERTIBLE, TINY, chmod_unreadable, make_messy_folder, read_json

import main_pretrain
import ssl_art.data.dataset as dataset_mod
import ssl_art.engine.pretrain as pretrain_mod
from ssl_art.data.decode import BadImageError
from ssl_art.runtime.cli import run_cli


@pytest.fixture
def messy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Path], dict[str, str]]:
    """The messy folder with its faults armed; returns (files, decoded) where decoded[path] = mode or bad kind."""
    files = make_messy_folder(tmp_path / "messy")

    locked = files["unreadable_permissions"]
    if not chmod_unreadable(locked):  # root: make opening exactly this file fail like EACCES does
        real_open = Image.open

        def open_or_deny(fp: Any, *args: Any, **kwargs: Any) -> Image.Image:
            if str(fp) == str(locked):
                raise PermissionError(errno.EACCES, "Permission denied", str(fp))
            return real_open(fp, *args, **kwargs)

        monkeypatch.setattr(Image, "open", open_or_deny)

    real_index = getattr(pretrain_mod, "build_collection")  # noqa: B009 (not re-exported for mypy)

    def index_then_delete(*args: Any, **kwargs: Any) -> Any:
        collection = real_index(*args, **kwargs)
        files["missing"].unlink()  # indexed, then gone before the loader reaches it
        return collection

    monkeypatch.setattr(pretrain_mod, "build_collection", index_then_delete)

    decoded: dict[str, str] = {}
    real_load: Callable[[str, int], Image.Image] = getattr(dataset_mod, "load_image")  # noqa: B009

    def recording_load(path: str, max_pixels: int) -> Image.Image:
        try:
            image = real_load(path, max_pixels)
        except BadImageError as e:
            decoded[path] = e.kind
            raise
        decoded[path] = image.mode
        return image

    monkeypatch.setattr(dataset_mod, "load_image", recording_load)
    return files, decoded


def _argv(folder: Path, out: Path, max_bad: float, cache: str = "auto") -> list[str]:
    # 13 good + 6 convertible + 5 bad at load time = 24 indexed (zero-byte is dropped while indexing):
    # 3 batches of 8, one epoch, so every file is read exactly once.
    return [
        *TINY,
        f"data.path={folder}",
        "data.batch_size=8",
        f"data.max_image_pixels={BOMB_LIMIT}",
        f"data.max_bad_fraction={max_bad}",
        "optim.max_steps=0",
        "optim.epochs=1",
        f"run.output_dir={out}",
        f"data.cache={cache}",  # off: the per-image path; ram: bad files found while building the cache (issue 11)
    ]


@pytest.mark.parametrize("cache", ["off", "ram"])
def test_every_bad_kind_is_skipped_counted_and_convertibles_are_used(
    tmp_path: Path, messy: tuple[dict[str, Path], dict[str, str]], cache: str
) -> None:
    files, decoded = messy
    out = tmp_path / "run"
    assert main_pretrain.main(_argv(files["cmyk"].parent, out, max_bad=0.5, cache=cache)) == 0

    report = read_json(out / "bad_files.json")
    assert report["counts"] == {kind: 1 for kind in BAD}, report
    assert report["total"] == len(BAD)
    for kind in BAD:
        assert report["examples"][kind] == [str(files[kind])], kind
    for case in CONVERTIBLE:  # decoded to RGB and handed to the model, never counted as bad
        assert decoded[str(files[case])] == "RGB", case
    assert all(decoded[str(files[f"good{i}"])] == "RGB" for i in range(13))
    assert not any("notes.txt" in p for p in decoded)

    summary = read_json(out / "summary.json")
    assert summary["stopped"] == "done" and summary["steps"] == 3
    assert summary["bad_files"]["counts"] == report["counts"]
    assert summary["n_images"] == 24  # zero-byte dropped while indexing, the rest indexed
    log = (out / "train.log").read_text()
    assert "6 unreadable files skipped" in log and "bad_files.json" in log


@pytest.mark.parametrize("cache", ["off", "ram"])
def test_low_max_bad_fraction_stops_with_examples(
    tmp_path: Path, messy: tuple[dict[str, Path], dict[str, str]], capsys: pytest.CaptureFixture[str], cache: str
) -> None:
    files, _ = messy
    out = tmp_path / "run"
    code = run_cli(lambda: main_pretrain.main(_argv(files["cmyk"].parent, out, max_bad=0.1, cache=cache)))
    assert code == 1
    err = capsys.readouterr().err
    err = err[err.index("\nerror: ") + 1 :]  # after the run's own log lines: the one message
    assert err.startswith("error: 6 of 25 files (24.0%) are unreadable, more than the allowed 10.0%")
    assert "data.max_bad_fraction" in err and "Traceback" not in err
    for kind in BAD:  # every kind is listed with an example path
        assert f"  {kind}: 1 (e.g. {files[kind]})" in err, kind
    report = read_json(out / "bad_files.json")  # the report is saved even though the run stopped
    assert report["total"] == 6
    assert not (out / "summary.json").exists()


def test_bad_fraction_already_at_indexing_stops_before_training(tmp_path: Path) -> None:
    folder = tmp_path / "mostly_empty"
    make_messy_folder(folder, n_good=3)
    for i in range(8):
        (folder / f"empty{i}.jpg").write_bytes(b"")
    from ssl_art.runtime.errors import TooManyBadFilesError

    with pytest.raises(TooManyBadFilesError, match=r"zero_byte: 9 \(e\.g\."):
        main_pretrain.main(_argv(folder, tmp_path / "run", max_bad=0.2))
    assert not (tmp_path / "run").exists()  # refused before the run dir was even created
