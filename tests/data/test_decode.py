"""load_image classification and mode conversion; BadFileReport counting and the threshold error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssl_art.data import decode
from ssl_art.data.decode import BAD_KINDS, BadFileReport, BadImageError, load_image
from ssl_art.runtime.errors import TooManyBadFilesError

GOOD = ["good_rgb", "cmyk", "png16", "palette_trans", "rgba", "la", "gray", "animated", "exif_rot", "upper_ext"]
BAD = ["truncated", "zero_byte", "not_an_image", "decompression_bomb"]


def _kind(path: Path, max_pixels: int = 10**8) -> str:
    with pytest.raises(BadImageError) as info:
        load_image(str(path), max_pixels)
    assert info.value.path == str(path)
    return info.value.kind


@pytest.mark.parametrize("case", GOOD)
def test_good_files_load_as_rgb(zoo: dict[str, Path], case: str) -> None:
    im = load_image(str(zoo[case]), max_pixels=10**8)
    assert im.mode == "RGB"
    assert np.asarray(im).dtype == np.uint8


@pytest.mark.parametrize("case", BAD)
def test_bad_files_are_classified(zoo: dict[str, Path], case: str) -> None:
    assert _kind(zoo[case], max_pixels=1000 if case == "decompression_bomb" else 10**8) == case


def test_bomb_just_over_limit_is_refused(zoo: dict[str, Path]) -> None:
    # 100x100 = 10_000 pixels: PIL only warns between 1x and 2x the limit; we refuse as soon as it is exceeded.
    assert _kind(zoo["decompression_bomb"], max_pixels=9_999) == "decompression_bomb"
    assert load_image(str(zoo["decompression_bomb"]), max_pixels=10_000).size == (100, 100)


def test_missing_and_deleted(zoo: dict[str, Path], tmp_path: Path) -> None:
    assert _kind(tmp_path / "nope.jpg") == "missing"
    zoo["good_rgb"].unlink()
    assert _kind(zoo["good_rgb"]) == "missing"


def test_unreadable_permissions(unreadable: Path) -> None:
    assert _kind(unreadable) == "unreadable_permissions"


def test_permission_error_from_decoder_is_classified(zoo: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    # Root ignores chmod, so also check the classification path by making open() fail like EACCES does.
    def deny(*args: object, **kwargs: object) -> Image.Image:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Image, "open", deny)
    assert _kind(zoo["good_rgb"]) == "unreadable_permissions"


def test_exif_orientation_applied(zoo: dict[str, Path]) -> None:
    im = load_image(str(zoo["exif_rot"]))
    assert im.size == (20, 40)  # stored 40x20, orientation 6
    a = np.asarray(im).astype(int)
    # Rotating 90 degrees clockwise moves the stored top-left red block to the top-right corner.
    assert a[2, 17, 0] > 200 and a[2, 17, 1] < 60
    assert a[2, 2, 0] < 60


def test_conversions_match_reference(zoo: dict[str, Path]) -> None:
    cmyk = np.asarray(load_image(str(zoo["cmyk"]))).astype(int)
    assert np.abs(cmyk - [255, 0, 0]).max() <= 3  # C=0 M=255 Y=255 K=0 is red
    png16 = np.asarray(load_image(str(zoo["png16"])))
    assert (png16[:, :4] == 255).all() and (png16[:, 4:] == 128).all()  # 16-bit / 257
    pal = np.asarray(load_image(str(zoo["palette_trans"])))
    assert (pal[:, :4] == 255).all()  # transparent index -> white paper
    assert (pal[:, 4:] == [0, 0, 255]).all()
    # Naive alpha compositing on white: out = a * c + (1 - a) * 255.
    alpha = 64 / 255
    expect = np.rint(alpha * np.array([200, 0, 0]) + (1 - alpha) * 255)
    rgba = np.asarray(load_image(str(zoo["rgba"]))).astype(int)
    assert np.abs(rgba - expect).max() <= 1
    assert (np.asarray(load_image(str(zoo["la"]))) == 255).all()
    assert (np.asarray(load_image(str(zoo["gray"]))) == 77).all()
    assert (np.asarray(load_image(str(zoo["animated"]))) == [255, 0, 0]).all()  # first frame


def test_high_bit_modes() -> None:
    i32 = Image.fromarray(np.array([[0, 65535], [257 * 10, 257 * 200]], dtype=np.int32), mode="I")
    assert np.asarray(decode._to_rgb(i32))[..., 0].tolist() == [[0, 255], [10, 200]]
    small = Image.fromarray(np.array([[0, 100]], dtype=np.int32), mode="I")  # 8-bit data stored as I
    assert np.asarray(decode._to_rgb(small))[..., 0].tolist() == [[0, 100]]
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")
    assert np.asarray(decode._to_rgb(f))[..., 0].tolist() == [[0, 128, 255]]


def test_bad_image_error_pickles() -> None:
    import pickle

    e = pickle.loads(pickle.dumps(BadImageError("truncated", "/x.jpg", "eof")))
    assert (e.kind, e.path, e.msg) == ("truncated", "/x.jpg", "eof")
    with pytest.raises(ValueError, match="valid kinds"):
        BadImageError("weird", "/x")


def test_report_add_merge_total() -> None:
    a = BadFileReport(max_examples=2)
    for k in range(3):
        a.add("truncated", f"/t{k}.jpg")
    a.add("missing", "/m.jpg")
    b = BadFileReport(max_examples=2)
    b.add("missing", "/m2.jpg")
    b.add("zero_byte", "/z.jpg")
    a.merge(b)
    assert a.total == 6
    assert a.counts == {"truncated": 3, "missing": 2, "zero_byte": 1}
    assert a.examples["truncated"] == ["/t0.jpg", "/t1.jpg"]  # capped at max_examples
    assert a.examples["missing"] == ["/m.jpg", "/m2.jpg"]
    d = a.to_dict()
    assert d["total"] == 6 and d["counts"]["zero_byte"] == 1 and d["examples"]["zero_byte"] == ["/z.jpg"]
    with pytest.raises(ValueError):
        a.add("nonsense", "/x")
    assert set(BAD_KINDS) >= set(a.counts)


def test_report_check_threshold() -> None:
    r = BadFileReport()
    r.check(10, 0.0)  # nothing bad: never raises
    r.add("truncated", "/data/a.jpg")
    r.add("not_an_image", "/data/b.jpg")
    r.check(40, 0.05)  # 2/40 = 5% is allowed
    with pytest.raises(TooManyBadFilesError) as info:
        r.check(39, 0.05)
    msg = str(info.value)
    assert "2 of 39" in msg and "truncated: 1" in msg and "/data/a.jpg" in msg and "/data/b.jpg" in msg
