"""``load_finetuned`` reads through the one strict, hash-checked loader: a replaced or damaged file is refused, a
state dict that does not fit the stored spec is a listed error, and a good file round-trips exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ssl_art.checkpoint import CheckpointError, save_checkpoint
from ssl_art.config import ConfigError
from ssl_art.finetune.model import ModelSpec, build_from_spec, load_finetuned


def _spec() -> ModelSpec:
    return ModelSpec(
        kind="classifier", backbone="test_resnet", n_intermediates=2, image_size=32, columns=["y"],
        classes={"y": ["a", "b", "c"]},
    )  # fmt: skip


def _save(path: Path, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    state = build_from_spec(_spec()).state_dict()
    save_checkpoint(path, {"model": state, "spec": _spec().to_dict(), "meta": {"val_score": 0.5}})
    return state


def test_round_trip_loads_exact_weights(tmp_path: Path) -> None:
    state = _save(tmp_path / "checkpoints" / "best.pt", 0)
    model, spec, meta = load_finetuned(str(tmp_path))  # a run dir finds checkpoints/best.pt
    assert spec == _spec() and meta == {"val_score": 0.5} and not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_file_that_does_not_match_its_sha256_is_refused(tmp_path: Path) -> None:
    """Defect: the fine-tune loader skipped the SHA-256 sidecar, so another (still loadable) file was used silently."""
    path = tmp_path / "best.pt"
    _save(path, 0)
    other = tmp_path / "other.pt"
    _save(other, 1)  # a valid checkpoint of the same spec with other weights ...
    path.write_bytes(other.read_bytes())  # ... copied over best.pt without its sidecar
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_finetuned(str(path))


def test_flipped_byte_in_the_weights_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "best.pt"
    state = _save(path, 0)
    data = bytearray(path.read_bytes())
    needle = state["heads.0.weight"].numpy().tobytes()[:16]  # raw tensor bytes: torch.load would still succeed
    at = bytes(data).find(needle)
    assert at > 0
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        load_finetuned(str(path))


def test_state_that_does_not_fit_the_spec_lists_every_fault(tmp_path: Path) -> None:
    """Unexpected, missing and shape-mismatched keys are one ``ConfigError`` (a ValueError), not a torch traceback."""
    state = build_from_spec(_spec()).state_dict()
    state["heads.0.weight"] = torch.zeros(5, state["heads.0.weight"].shape[1])  # 5 classes in a 3-class spec
    state["extra.weight"] = torch.zeros(1)
    del state["heads.0.bias"]
    save_checkpoint(tmp_path / "best.pt", {"model": state, "spec": _spec().to_dict()})
    with pytest.raises(ConfigError) as err:
        load_finetuned(str(tmp_path / "best.pt"))
    msg = str(err.value)
    assert "1 missing keys ['heads.0.bias']" in msg
    assert "1 unexpected keys ['extra.weight']" in msg
    assert "1 shape mismatches ['heads.0.weight']" in msg
