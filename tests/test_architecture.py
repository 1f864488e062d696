"""The import direction is a contract: import-linter's layers/forbidden/acyclic contracts (``[importlinter]`` in
setup.cfg) must hold, and no module of ``ssl_art`` may sit on an import circle.

Skipped only when import-linter (and with it grimp) is not installed; ``make lint`` runs the same contracts.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports() -> str:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).is_file():
        pytest.skip("import-linter is not installed (pip install import-linter)")
    return exe


def test_import_contracts_hold() -> None:
    res = subprocess.run(
        [_lint_imports(), "--no-cache", "--no-logo", str(ROOT / "setup.cfg")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout and " kept" in res.stdout


def test_no_module_sits_on_an_import_circle() -> None:
    """Tarjan's strongly connected components over grimp's module graph: every component is a single module."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("ssl_art")
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for m in sorted(edges):
        if m not in index:
            visit(m)
    assert len(edges) > 50  # the whole package was read
    assert not circles, circles
