"""The evidence run's bookkeeping and report: a resumable results JSONL, the multi-seed table and the learning curves.

``results.jsonl`` holds one JSON object per finished ``(variant, seed)`` evaluation, appended and fsynced as soon as
it is known, keyed by ``key`` and a ``fingerprint`` of every setting that produced it. A killed ablation therefore
loses at most the run in progress: :class:`ResultsStore` reads back the complete lines whose fingerprint matches
(a torn last line from a kill is ignored) and the driver skips those runs.

:func:`to_markdown` reports each variant's mean +- std over seeds (each seed's value is its mean over the CV folds)
and the paired difference to the best SimCLR baseline with a two-stage bootstrap 95% interval
(:mod:`ssl_art.eval.stats`); :func:`plot_curves` draws the online kNN monitor's top-1 against epochs, one line per
variant (mean over seeds, min-max band).
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ssl_art.checkpoint import atomic_write_bytes
from ssl_art.eval.stats import Interval, mean_std, paired_bootstrap_ci, paired_differences


class ResultsStore:
    """Append-only JSONL of finished runs; ``done(key, fp)`` is true only for a complete record with that fingerprint.

    Args:
        path: the ``results.jsonl`` file (created on the first :meth:`add`).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, dict[str, Any]] = {}
        self.reload()

    def reload(self) -> None:
        """Read the file again: lanes running side by side append to it."""
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line torn by a kill: that run is simply redone
                    continue
                if isinstance(rec, dict) and "key" in rec and "fingerprint" in rec:
                    self.records[rec["key"]] = rec  # a later line for the same key wins

    def done(self, key: str, fingerprint: str) -> bool:
        rec = self.records.get(key)
        return rec is not None and rec["fingerprint"] == fingerprint

    def add(self, record: dict[str, Any]) -> None:
        """Append ``record`` (needs ``key`` and ``fingerprint``) and make it durable before returning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records[record["key"]] = record

    def for_fingerprints(self, wanted: dict[str, str]) -> list[dict[str, Any]]:
        """The records of ``{key: fingerprint}`` that are done, in ``wanted``'s order."""
        return [self.records[k] for k, fp in wanted.items() if self.done(k, fp)]


def _pct(v: float) -> str:
    return "-" if v is None or math.isnan(v) else f"{100 * v:.1f}"


def _by_variant(records: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        out.setdefault(r["variant"], []).append(r)
    for rs in out.values():
        rs.sort(key=lambda r: r["seed"])
    return out


def _folds(rs: Sequence[dict[str, Any]], metric: str) -> dict[int, list[float]]:
    return {int(r["seed"]): [float(v) for v in r[f"{metric}_folds"]] for r in rs}


def best_baseline(records: Iterable[dict[str, Any]], family: dict[str, str], metric: str = "knn_top1") -> str | None:
    """The SimCLR-family variant with the highest mean ``metric`` over seeds (``None`` when none has finished)."""
    by = _by_variant(records)
    cands = [(mean_std([r[metric] for r in rs])[0], v) for v, rs in by.items() if family.get(v) == "simclr"]
    return max(cands)[1] if cands else None


def paired_interval(
    rs: Sequence[dict[str, Any]], base: Sequence[dict[str, Any]], metric: str, n_boot: int = 10_000
) -> Interval | None:
    """Bootstrap interval of ``variant - baseline`` over the seeds both ran and their shared folds."""
    try:
        return paired_bootstrap_ci(paired_differences(_folds(rs, metric), _folds(base, metric)), n_boot=n_boot)
    except ValueError:
        return None


def _ci(iv: Interval | None) -> str:
    if iv is None:
        return "-"
    mark = " *" if iv.excludes_zero else ""
    return f"{100 * iv.mean:+.1f} [{100 * iv.low:+.1f}, {100 * iv.high:+.1f}] ({iv.n_seeds}x{iv.n_folds}){mark}"


def _mean_pm(rs: Sequence[dict[str, Any]], metric: str) -> str:
    vals = [r[metric] for r in rs if r.get(metric) is not None]
    if not vals:
        return "-"
    m, s = mean_std(vals)
    if len(vals) == 1:
        fold_std = rs[0].get(f"{metric}_std")
        return f"{_pct(m)} (1 seed; folds +- {_pct(fold_std)})" if fold_std is not None else _pct(m)
    return f"{_pct(m)} +- {_pct(s)}"


def to_markdown(
    records: Sequence[dict[str, Any]],
    family: dict[str, str],
    step_cost: dict[str, float],
    header: str,
    n_boot: int = 10_000,
    baseline: str = "",
    clock: str = "cpu",
) -> str:
    """The results table: one row per variant (records order), differences against the best SimCLR baseline.

    Args:
        records: finished runs (``variant``, ``seed``, ``knn_top1``/``linear_top1`` and their ``*_folds``...).
        family: variant -> ``simclr`` | ``art_ssl`` | ``reference`` (picks the baseline candidates).
        step_cost: variant -> measured seconds per optimiser step (CPU seconds, or wall seconds on a GPU).
        header: a paragraph on the settings, printed above the table.
        n_boot: bootstrap resamples.
        baseline: the SimCLR row to compare against; ``""`` = :func:`best_baseline` (highest mean kNN top-1).
        clock: ``cpu`` (the CPU runs: process CPU time) or ``wall`` (GPU runs, where CPU time measures nothing useful):
            which pretraining time the table reports, and how its cost columns are labelled.
    """
    by = _by_variant(records)
    base_name = baseline if baseline in by else best_baseline(records, family)
    how = "chosen with --baseline" if baseline in by else "highest mean kNN top-1"
    base = by.get(base_name, []) if base_name else []
    simclr_cost = step_cost.get("simclr")
    unit, spent = ("wall", "pretrain_wall_s") if clock == "wall" else ("CPU", "pretrain_cpu_s")
    lines = [
        header,
        "",
        f"Best SimCLR baseline ({how}): **{base_name or '-'}**. Differences are paired "
        "(same seed, same folds) with a two-stage bootstrap 95% interval over seeds, then folds (seeds x folds "
        "pairs in brackets); * = interval excludes 0.",
        "",
        f"| variant | seeds | steps | step {unit}-s (x simclr) | pretrain {unit}-min | kNN top-1 | linear top-1 | "
        f"d kNN vs {base_name or 'baseline'} | d linear | synth style kNN | synth content kNN |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v, rs in by.items():
        cost = step_cost.get(v)
        ratio = f" (x{cost / simclr_cost:.2f})" if cost and simclr_cost else ""
        cpu_min = sum(float(r.get(spent, 0.0)) for r in rs) / 60 / max(1, len(rs))  # per run
        is_base = v == base_name
        d_knn = "baseline" if is_base else _ci(paired_interval(rs, base, "knn_top1", n_boot)) if base else "-"
        d_lin = "baseline" if is_base else _ci(paired_interval(rs, base, "linear_top1", n_boot)) if base else "-"
        steps = rs[0].get("steps", "-")
        lines.append(
            f"| {v} | {len(rs)} | {steps} | {f'{cost:.3f}' if cost else '-'}{ratio} | {cpu_min:.1f} | "
            f"{_mean_pm(rs, 'knn_top1')} | {_mean_pm(rs, 'linear_top1')} | {d_knn} | {d_lin} | "
            f"{_mean_pm(rs, 'synthetic_style_knn')} | {_mean_pm(rs, 'synthetic_content_knn')} |"
        )
    return "\n".join(lines)


def curve_of(metrics_jsonl: Path, key: str = "monitor/knn_top1") -> list[tuple[int, float]]:
    """``[(epoch, value)]`` of the monitor's lines in a run's ``metrics.jsonl`` (the last line per epoch wins)."""
    points: dict[int, float] = {}
    if metrics_jsonl.is_file():
        for line in metrics_jsonl.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if key in rec:
                points[int(rec["epoch"])] = float(rec[key])
    return sorted(points.items())


def plot_curves(records: Sequence[dict[str, Any]], png: Path, title: str) -> Path | None:
    """Monitor kNN top-1 vs epoch per variant (mean over seeds, min-max band); ``None`` when no run has a curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = _by_variant(records)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    drawn = 0
    for i, (v, rs) in enumerate(by.items()):
        curves = [dict(map(tuple, r.get("curve", []))) for r in rs]
        epochs = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        if not epochs:
            continue
        vals = [[100 * c[e] for c in curves] for e in epochs]
        mean = [sum(x) / len(x) for x in vals]
        style = ("-", "--", ":")[i // 10 % 3]  # matplotlib repeats its 10 colours: the 11th row gets dashes
        label = f"{v} ({len(rs)} seed{'s' * (len(rs) > 1)})"
        (line,) = ax.plot(epochs, mean, marker="o", ms=3, ls=style, label=label)
        if len(rs) > 1:
            ax.fill_between(epochs, [min(x) for x in vals], [max(x) for x in vals], color=line.get_color(), alpha=0.15)
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("online kNN top-1 (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(png, buf.getvalue())  # never a half-written PNG in docs/, nor two lanes on one temp file
    return png
