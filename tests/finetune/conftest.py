"""Fine-tuning tests run single-threaded: their tensors are tiny, and on a shared 2-core machine intra-op threads
mostly wait on each other (the small gate MLP steps ran ~40x slower with 2 threads under load)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
