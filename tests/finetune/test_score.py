"""``score`` (model selection, ensemble weights) leaves unreadable validation images (NaN rows) out."""

from __future__ import annotations

import numpy as np
import pytest

from ssl_art.finetune.train import score


def test_score_leaves_nan_rows_out() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [np.nan, np.nan]], dtype=np.float32)
    y = np.array([0, 0, 1])
    # reference: only the two readable rows count, one right of two
    assert score(probs, y, "top1") == pytest.approx(0.5)
    assert score(probs, y, "balanced_acc") == pytest.approx(0.5)  # class 1 has no readable row
    assert np.isnan(score(np.full((2, 2), np.nan, dtype=np.float32), np.array([0, 1]), "top1"))
