"""Make the thin main_*.py entry points importable from tests (they live at the repository root)."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
