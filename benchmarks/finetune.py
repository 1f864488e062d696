r"""The fine-tuning benchmark of ``docs/benchmarks_finetune.md``: linear / last-2 / full / cheap-only / gated rows.

Every row is a real ``main_finetune.py`` run on one shared split (the first run makes it, the others reuse it with
``split.file``), started from the same pretraining checkpoint:

- ``full_b<B>``: full fine-tune (= the expensive branch) + the gated head at budget ``B`` (the first budget trains
  everything; each further budget copies the finished fine-tuning and cheap-branch stages of the first run and
  resumes, so only stage 1, calibration and the measurement run again: every budget gates the same classifiers);
  ``full_b<B>_<rule>``: the same with each further ``--calibrations`` rule (default ``shmnet``, SHMNet's fall-back
  at ``gate.fallback_threshold``, and ``best``, the best routing on val of every rule);
- ``linear``: heads only (``ft.mode=linear``, with ``--linear`` overrides: a fresh head on frozen features needs a
  probe's lr);
- ``last_n``: the last 2 stages + heads (``ft.mode=last_n ft.last_n=2``).

Resumable: a row whose ``summary.json`` exists is skipped; a row that was killed is continued with
``run.resume=true`` (exactly, from its last checkpoint). The table (test top-1/3/5, macro-F1, GFLOPs/image, images/s
warm and synchronised, % routed to the expensive branch split into selector and fall-back, calibration rule) is
printed and written to ``<out>/table.md`` (and ``--md``), with the issue's goal checked per budget: gated within 1
point of expensive-only top-1 while routing <= 40%.

    python benchmarks/finetune.py --data ../shared/data/wikiart7-dev --ckpt runs/<pretrain>/checkpoints/last.pt \
        --out runs/ft13 --epochs 10 --cheap-epochs 4 --budgets 0.3 0.5 --repeats 5
    python benchmarks/finetune.py --tiny --out /tmp/ft_bench_tiny     # a one-minute smoke run on synthetic data
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run_row(out: Path, args: list[str]) -> dict[str, Any]:
    """Run (or continue, or skip) one ``main_finetune.py`` row; returns its ``summary.json``."""
    summary = out / "summary.json"
    if summary.is_file():
        print(f"[bench] {out.name}: done, skipped", flush=True)
        return dict(json.loads(summary.read_text()))
    resume = ["run.resume=true"] if out.is_dir() and any(out.iterdir()) else []
    cmd = [sys.executable, str(ROOT / "main_finetune.py"), *args, f"run.output_dir={out}", *resume]
    print(f"[bench] {out.name}: {' '.join(cmd[1:])}", flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    return dict(json.loads(summary.read_text()))


def seed_budget_run(first: Path, target: Path) -> None:
    """Start ``target`` from ``first``'s finished fine-tuning and cheap-branch stages (then resumed)."""
    if target.exists():
        return
    (target / "checkpoints").mkdir(parents=True)
    shutil.copy2(first / "splits.json", target / "splits.json")
    for stage in ("ft", "gate_cheap"):
        shutil.copytree(first / "checkpoints" / stage, target / "checkpoints" / stage)


LAST_N = ["ft.mode=last_n", "ft.last_n=2"]  # the last_n row, and the expensive branch with --expensive-mode last_n


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def gated_row(budget: float, calibration: str, calibrations: list[str]) -> str:
    """Run-dir name of the gated row at ``budget`` calibrated with ``calibration`` (the first rule: ``full_b<B>``)."""
    return f"full_b{budget}" + ("" if calibration == calibrations[0] else f"_{calibration}")


def table(
    rows: dict[str, dict[str, Any]],
    budgets: list[float],
    expensive_mode: str = "full",
    calibrations: list[str] | None = None,
) -> list[str]:
    """Markdown table and the goal check, from the rows' summaries (the expensive branch trained with ``ft.mode``
    ``expensive_mode``; one gated row per budget and ``gate.calibration`` rule)."""
    cals = calibrations or ["shmnet"]
    head = (
        "| mode | trains | test top-1 | top-3 | top-5 | macro-F1 | GFLOPs/image | images/s best (median) "
        "| % to expensive (selector / fall-back) | calibration |"
    )
    lines = [head, "|" + " --- |" * 10]
    first = rows[f"full_b{budgets[0]}"]["gate"]["test"]
    exp = first["expensive_only"]
    same = f"{exp['gflops_per_image']:.3f}"

    def scores(m: dict[str, Any]) -> str:
        return f"{_pct(m['top1'])} | {_pct(m['top3'])} | {_pct(m['top5'])} | {_pct(m['macro_f1'])}"

    for name, trains in (("linear", "heads"), ("last_n", "last 2 stages + heads")):
        if name in rows:
            m = rows[name]["test"]["label"]
            lines.append(f"| {name} | {trains} | {scores(m)} | {same} | same net as expensive | 100 | |")
    c = first["cheap_only"]
    speed = f"{exp['images_per_s']:.1f} ({exp['images_per_s_median']:.1f})"
    label = (
        ("full = expensive only", "all")
        if expensive_mode == "full"
        else ("last_n = expensive only", "last 2 stages + heads")
    )
    lines.append(f"| {label[0]} | {label[1]} | {scores(exp)} | {same} | {speed} | 100 | |")
    cheap_speed = f"{c['images_per_s']:.1f} ({c['images_per_s_median']:.1f})"
    lines.append(
        f"| cheap only (trunk + exit) | exit head | {scores(c)} | {c['gflops_per_image']:.3f} | {cheap_speed} | 0 | |"
    )
    checks = []
    for cal_name, b in [(cal, b) for cal in cals for b in budgets]:
        gate = rows[gated_row(b, cal_name, cals)]["gate"]
        g, cal = gate["test"]["gated"], gate["calibration"]
        routed = f"{_pct(g['expensive_fraction'])} ({_pct(g['selector_fraction'])} / {_pct(g['fallback_fraction'])})"
        fall_back = "fall-back off" if cal["threshold"] <= 0 else f"fall-back < {cal['threshold']:.2f}"
        rule = f"{cal['calibration']}: {cal['rule_name']}, {fall_back}"
        rule += "" if cal["within_budget"] else ", over budget on val"
        gspeed = f"{g['images_per_s']:.1f} ({g['images_per_s_median']:.1f})"
        lines.append(
            f"| gated, budget {b:.0%} | selector + fusion | {scores(g)} | {g['gflops_per_image']:.3f} | {gspeed} "
            f"| {routed} | {rule} |"
        )
        e_top1 = gate["test"]["expensive_only"]["top1"]
        ok = g["top1"] >= e_top1 - 0.01 and g["expensive_fraction"] <= 0.40
        checks.append(
            f"- budget {b:.0%}, {cal['calibration']}: gated {_pct(g['top1'])} vs expensive {_pct(e_top1)} top-1, "
            f"{_pct(g['expensive_fraction'])}% routed: goal {'met' if ok else 'NOT met'}"
        )
    if exp["top1"] < c["top1"]:
        checks.append(
            f"- the expensive branch ({_pct(exp['top1'])}) is weaker than the cheap exit ({_pct(c['top1'])}): "
            "not a win for the gate; see the fine-tuning history in full_b*/summary.json"
        )
    return lines + [""] + checks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="", help="labelled collection (wikiart7-dev)")
    p.add_argument("--ckpt", default="", help="pretraining checkpoint or run dir (ft.checkpoint)")
    p.add_argument("--out", default="runs/ft13", help="folder of the row run dirs")
    p.add_argument("--config", default=str(ROOT / "configs" / "finetune" / "wikiart7.yaml"))
    p.add_argument("--epochs", type=int, default=10, help="optim.epochs of every fine-tuning run")
    p.add_argument("--cheap-epochs", type=int, default=4, help="gate.cheap_epochs (exit head)")
    p.add_argument("--budgets", type=float, nargs="+", default=[0.3, 0.5])
    p.add_argument("--repeats", type=int, default=5, help="gate.bench_repeats (timed passes per mode)")
    p.add_argument("--linear", nargs="*", default=["optim.lr=1e-2"], help="extra overrides of the linear row")
    p.add_argument("--set", nargs="*", default=[], help="extra overrides of every row (key=value)")
    p.add_argument("--tiny", action="store_true", help="smoke run: configs/finetune/tiny.yaml on synthetic data")
    p.add_argument("--md", default="", help="also write the table here")
    p.add_argument(
        "--calibrations",
        nargs="+",
        default=["shmnet", "best"],
        help="gate.calibration rules: one gated row per budget each (all gate the same classifiers)",
    )
    p.add_argument(
        "--expensive-mode",
        choices=("full", "last_n"),
        default="full",
        help="ft.mode of the gated rows' expensive branch (last_n: the last 2 stages + heads, as the last_n row)",
    )
    a = p.parse_args(argv)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    config = str(ROOT / "configs" / "finetune" / "tiny.yaml") if a.tiny else a.config
    common = ["--config", config, f"optim.epochs={a.epochs}", f"gate.bench_repeats={a.repeats}"]
    common += [f"data.path={a.data}"] if a.data else []
    common += [f"ft.checkpoint={a.ckpt}"] if a.ckpt else []
    common += list(a.set)
    budgets = list(a.budgets)
    first = out / f"full_b{budgets[0]}"
    mode = ["ft.mode=full"] if a.expensive_mode == "full" else LAST_N
    gate = [*mode, "gate.enabled=true", f"gate.cheap_epochs={a.cheap_epochs}"]
    cals = list(a.calibrations)
    rows = {first.name: run_row(first, [*common, *gate, f"gate.budget={budgets[0]}", f"gate.calibration={cals[0]}"])}
    split = [f"split.file={first / 'splits.json'}"]
    for cal, b in [(cal, b) for cal in cals for b in budgets][1:]:
        target = out / gated_row(b, cal, cals)
        seed_budget_run(first, target)
        rows[target.name] = run_row(target, [*common, *gate, f"gate.budget={b}", f"gate.calibration={cal}", *split])
    rows["linear"] = run_row(out / "linear", [*common, "ft.mode=linear", "gate.enabled=false", *split, *a.linear])
    if a.expensive_mode == "full":
        rows["last_n"] = run_row(out / "last_n", [*common, *LAST_N, "gate.enabled=false", *split])
    lines = table(rows, budgets, a.expensive_mode, cals)
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    if a.md:
        Path(a.md).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
