"""torchrun target for the multi-process tests: ``main_pretrain`` with an optional fault on one rank.

``SSL_ART_TEST_FAULT=budget`` makes rank 1's process clock jump by an hour after its third reading, so only rank 1
sees the time budget run out (``run.budget_clock=process``), ``nan`` gives rank 1 alone one NaN loss; every rank
writes its pid to ``$SSL_ART_TEST_PIDS/<rank>``
so a test can signal one rank; with ``SSL_ART_TEST_STEPS`` each rank writes ``{"steps", "stopped"}`` of its own
``fit`` to ``$SSL_ART_TEST_STEPS/<rank>.json`` the moment ``fit`` returns.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import main_pretrain  # noqa: E402
import ssl_art.engine.pretrain as pretrain_mod  # noqa: E402
from ssl_art.runtime.cli import run_cli  # noqa: E402

rank = int(os.environ.get("RANK", "0"))
if os.environ.get("SSL_ART_TEST_PIDS"):
    Path(os.environ["SSL_ART_TEST_PIDS"], str(rank)).write_text(str(os.getpid()))
if os.environ.get("SSL_ART_TEST_FAULT") == "budget" and rank == 1:
    real, calls = time.process_time, [0]

    def jumpy() -> float:
        calls[0] += 1
        return real() + (3600.0 if calls[0] > 3 else 0.0)

    time.process_time = jumpy

if os.environ.get("SSL_ART_TEST_FAULT") == "nan" and rank == 1:  # rank 1's second real step has a NaN loss
    from ssl_art.methods.simclr import SimCLR

    real_step, seen = SimCLR.training_step, [0]

    def nan_once(self, views, progress):  # type: ignore[no-untyped-def]
        out = real_step(self, views, progress)
        seen[0] += 1
        if seen[0] == 3:  # call 1 is the engine's probe step
            out.loss = out.loss * float("nan")
        return out

    SimCLR.training_step = nan_once  # type: ignore[method-assign]

if os.environ.get("SSL_ART_TEST_STEPS"):
    real_fit = pretrain_mod.fit

    def recording_fit(*args, **kwargs):  # type: ignore[no-untyped-def]
        result = real_fit(*args, **kwargs)
        record = {"steps": result.steps, "stopped": result.stopped}
        Path(os.environ["SSL_ART_TEST_STEPS"], f"{rank}.json").write_text(json.dumps(record))
        return result

    pretrain_mod.fit = recording_fit

if __name__ == "__main__":
    sys.exit(run_cli(lambda: main_pretrain.main(sys.argv[1:])))
