"""Fixtures for the reliability tests (helpers live in ``reliability_helpers.py``)."""

from __future__ import annotations

import logging
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _propagate_ssl_art_logs() -> Any:
    """``setup_logging`` stops propagation to the root logger; re-enable it so ``caplog`` sees library warnings.

    Real runs call ``setup_logging`` again (propagation off), so their tests read ``<run>/train.log`` instead.
    """
    logger = logging.getLogger("ssl_art")
    old = logger.propagate
    logger.propagate = True
    yield
    logger.propagate = old
