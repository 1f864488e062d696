"""``distributed.init_from_env``: the one process-group initialiser (the engine calls it with its device).

A single process initialises nothing; an unknown backend is refused; under a torchrun-like environment two CPU
processes join one gloo group (``auto`` on a CPU device) and a second call is a no-op.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from ssl_art import distributed


def test_single_process_initialises_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_from_env("auto", torch.device("cpu")) is False
    assert not distributed.is_initialized() and distributed.world_size() == 1 and distributed.rank() == 0


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="backend must be one of auto, nccl, gloo"):
        distributed.init_from_env("mpi")


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world), "RANK": str(rank)}
    )
    os.environ["LOCAL_RANK"] = str(rank)
    first = distributed.init_from_env("auto", torch.device("cpu"))
    again = distributed.init_from_env("auto", torch.device("cpu"))
    backend = torch.distributed.get_backend()
    mean = float(distributed.all_reduce_mean(torch.tensor([float(rank)]))[0])
    Path(out, f"r{rank}.json").write_text(
        json.dumps({"first": first, "again": again, "rank": distributed.rank(), "world": distributed.world_size(),
                    "backend": backend, "mean": mean})
    )  # fmt: skip
    distributed.cleanup()


@pytest.mark.ddp
def test_two_cpu_processes_join_one_gloo_group(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    for r in range(2):
        got = json.loads((tmp_path / f"r{r}.json").read_text())
        assert got == {"first": True, "again": True, "rank": r, "world": 2, "backend": "gloo", "mean": 0.5}
