"""Index/embeddings/manifest integrity at load (issue 14, cases 3 and 4).

3. Row queries read stored vectors from the embeddings folder: re-embedding it with another model must be refused,
   not silently change the results.
4. A truncated, empty, column-less or shuffled manifest must be a clear error naming the file -- for query, serve,
   metrics, analyse and ``index build`` -- never a crash deep inside or silently wrong labels.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ssl_art.cli import main as cli_main
from ssl_art.retrieval.embed import embed_collection
from ssl_art.retrieval.embedder import BackboneEmbedder
from ssl_art.retrieval.index import ModelMismatchError, RetrievalIndex
from ssl_art.retrieval.manifest import read_manifest
from tests.conftest import BACKBONE


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, image_tree: Path, tiny_model: Any) -> Path:
    out = tmp_path_factory.mktemp("integrity")
    embed_collection(tiny_model, str(image_tree), out / "emb", image_size=32, progress=False)
    RetrievalIndex.build(out / "emb").save(out / "idx")
    return out


@pytest.fixture()
def copy(built: Path, tmp_path: Path) -> Path:
    """A private copy of emb/ + idx/ whose index.json points at the copied embeddings folder."""
    shutil.copytree(built / "emb", tmp_path / "emb")
    RetrievalIndex.build(tmp_path / "emb").save(tmp_path / "idx")
    return tmp_path


def _lines(p: Path) -> list[str]:
    return p.read_text(encoding="utf-8").splitlines(keepends=True)


def damage(p: Path, how: str) -> None:
    lines = _lines(p)
    if how == "truncated":
        p.write_text("".join(lines[:-3]))
    elif how == "cut_mid_line":
        p.write_text("".join(lines[:-1]) + lines[-1][:5])
    elif how == "empty":
        p.write_text("")
    elif how == "columnless":
        p.write_text("".join(line.split(",")[1] + "\n" for line in lines[1:]))  # bare paths, no header
    elif how == "shuffled":  # rows keep their numbers, the paths/labels are permuted: only the checksum sees it
        cells = [line.rstrip("\r\n").split(",", 1) for line in lines[1:]]
        rest = [c[1] for c in cells]
        rest = rest[1:] + rest[:1]
        p.write_text(lines[0] + "".join(f"{c[0]},{r}\r\n" for c, r in zip(cells, rest)))
    else:
        raise AssertionError(how)


HOWS = ["truncated", "cut_mid_line", "empty", "columnless", "shuffled"]


def test_manifest_round_trip_is_unchanged(copy: Path) -> None:
    paths, labels = read_manifest(copy / "idx" / "manifest.csv")
    idx = RetrievalIndex.load(copy / "idx")
    assert idx.paths == paths and idx.labels == labels and len(paths) == idx.meta.n == 12


@pytest.mark.parametrize("how", HOWS)
def test_damaged_index_manifest_is_a_clear_load_error(copy: Path, how: str) -> None:
    f = copy / "idx" / "manifest.csv"
    damage(f, how)
    with pytest.raises(ValueError) as info:
        RetrievalIndex.load(copy / "idx")
    assert str(f) in str(info.value)


@pytest.mark.parametrize("how", HOWS)
def test_index_build_refuses_a_damaged_embeddings_manifest(copy: Path, how: str) -> None:
    f = copy / "emb" / "manifest.csv"
    damage(f, how)
    with pytest.raises(ValueError) as info:
        RetrievalIndex.build(copy / "emb")
    assert str(f) in str(info.value)


@pytest.mark.parametrize("how", ["truncated", "empty", "columnless", "shuffled"])
@pytest.mark.parametrize("command", ["metrics", "analyse", "query", "index build", "plot map"])
def test_cli_commands_report_the_damaged_manifest(
    copy: Path, how: str, command: str, capsys: pytest.CaptureFixture[str], image_tree: Path
) -> None:
    target = copy / ("idx" if command == "query" else "emb") / "manifest.csv"
    damage(target, how)
    argv = {
        "metrics": ["metrics", "--embeddings", str(copy / "emb")],
        "analyse": ["analyse", "--embeddings", str(copy / "emb"), "--out", str(copy / "an")],
        "query": ["query", "--index", str(copy / "idx"), "--backbone", BACKBONE, str(image_tree / "red" / "0.png")],
        "index build": ["index", "build", "--embeddings", str(copy / "emb"), "--out", str(copy / "idx2")],
        "plot map": ["plot", "map", "--embeddings", str(copy / "emb"), "--out", str(copy / "m.png")],
    }[command]
    with pytest.raises(SystemExit) as info:
        cli_main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and "error:" in err and str(target) in err and "Traceback" not in err


def test_reembedded_folder_with_another_model_is_refused(copy: Path, image_tree: Path) -> None:
    first = RetrievalIndex.load(copy / "idx")
    v = first.vectors(np.array([0]))
    assert v is not None and v.shape == (1, first.meta.dim)
    idx = RetrievalIndex.load(copy / "idx")  # loaded, vectors not read yet
    other = BackboneEmbedder(BACKBONE, seed=1, image_size=32)
    shutil.rmtree(copy / "emb")
    embed_collection(other, str(image_tree), copy / "emb", image_size=32, progress=False)
    with pytest.raises(ModelMismatchError, match="meta.json"):
        idx.vectors(np.array([0]))  # the lazy read checks the folder again
    w = first.vectors(np.array([0]))  # an open memmap keeps the old (matching) file's vectors
    assert w is not None and np.allclose(v, w)
    with pytest.raises(ModelMismatchError) as info:
        RetrievalIndex.load(copy / "idx")
    assert str(copy / "emb" / "meta.json") in str(info.value) and "rebuild the index" in str(info.value)


def test_embeddings_of_another_shape_are_refused(copy: Path) -> None:
    np.save(copy / "emb" / "embeddings.npy", np.zeros((5, 3), dtype=np.float16))
    with pytest.raises(ValueError, match="shape"):
        RetrievalIndex.build(copy / "emb")
