"""Does each part of the art method earn its place? Equal wall-clock pretraining of every variant, then evaluation.

Each variant (SimCLR baseline, the full art_ssl method, and the full method minus one part) is pretrained for the
same wall-clock budget on the same unlabeled collection with the same backbone and batch, then evaluated with kNN
and a linear probe (stratified k-fold CV) on a labelled collection. Step time is measured separately on identical
batches so the ratio vs SimCLR is not blurred by data loading. Prints JSON and a markdown table; ``--md`` writes it.

    python benchmarks/ablation.py --unlabeled ../shared/data/wikiart7-unlabeled \
        --labelled ../shared/data/wikiart7-dev --budget-s 300 --image-size 112 --md docs/ablation_table.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ssl_art.config import (  # noqa: E402
    LinearConfig,
    PretrainConfig,
    config_from_dict,
    deep_merge,
    load_yaml,
    parse_overrides,
)
from ssl_art.engine.pretrain import run_pretrain  # noqa: E402
from ssl_art.eval.run import run_linear_eval  # noqa: E402
from ssl_art.methods.registry import build_pretrain_model  # noqa: E402

VARIANTS: dict[str, tuple[str, list[str]]] = {
    "simclr": ("simclr.yaml", []),
    "full": ("art_ssl.yaml", []),
    "no_fusion": ("art_ssl.yaml", ["model.fusion.enabled=false"]),
    "no_gram": ("art_ssl.yaml", ["model.gram.enabled=false", "loss.w_gram=0"]),
    "no_distill": ("art_ssl.yaml", ["loss.w_distill=0"]),
    "no_soft": ("art_ssl.yaml", ["loss.w_soft=0"]),
    # SimCLR with the art method's augmentation: separates the augmentation's effect from the method's parts
    "simclr_art_aug": ("simclr.yaml", ["data.aug.preset=art", "data.aug.min_scale=0.25"]),
}


def make_config(variant: str, common: list[str]) -> PretrainConfig:
    base, extra = VARIANTS[variant]
    values = deep_merge(load_yaml(ROOT / "configs" / "pretrain" / base), parse_overrides(common + extra))
    return config_from_dict(PretrainConfig, values)


def step_time(cfg: PretrainConfig, steps: int = 6, warmup: int = 2) -> float:
    """CPU seconds per optimiser step on a fixed random batch (forward, backward, step, EMA update), median."""
    torch.manual_seed(0)
    method = build_pretrain_model(cfg).train()
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-4)
    b, s = cfg.data.batch_size, cfg.data.image_size
    views = [torch.randn(b, 3, s, s) for _ in range(cfg.data.aug.n_views)]
    times = []
    for i in range(warmup + steps):
        t0 = time.process_time()  # CPU seconds of this process: robust to other load on a shared machine
        out = method.training_step(views, i / (warmup + steps))
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        method.after_optimizer_step(i / (warmup + steps))
        if i >= warmup:
            times.append(time.process_time() - t0)
    return sorted(times)[len(times) // 2]


def step_time_table(args: argparse.Namespace) -> dict[str, Any]:
    """Interleaved step-time rounds (variant order rotates each round) so machine load hits every variant alike."""
    names = args.variants.split(",")
    common = [
        f"data.image_size={args.image_size}",
        f"data.batch_size={args.batch_size}",
        f"model.backbone={args.backbone}",
        *args.set,
    ]
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.step_time_only):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(step_time(make_config(name, common), steps=3, warmup=1))
    med = {n: sorted(v)[len(v) // 2] for n, v in times.items()}
    base = med.get("simclr")
    rows = [
        {
            "variant": n,
            "step_cpu_s": round(med[n], 3),
            "ratio_vs_simclr": round(med[n] / base, 2) if base else None,
            "rounds": [round(t, 3) for t in times[n]],
        }
        for n in names
    ]
    print(json.dumps(rows, indent=2))
    lines = [
        f"Step time (CPU seconds, median of {args.step_time_only} interleaved rounds x 3 steps), "
        f"{args.backbone}, {args.image_size} px, batch {args.batch_size} x 2 views, {torch.get_num_threads()} threads.",
        "",
        "| variant | step CPU-s | ratio vs SimCLR |",
        "|---|---|---|",
    ]
    lines += [f"| {r['variant']} | {r['step_cpu_s']} | {r['ratio_vs_simclr']} |" for r in rows]
    print("\n".join(lines))
    if args.md:
        Path(args.md).write_text("\n".join(lines) + "\n")
    return {"rows": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unlabeled", default=str(ROOT.parent / "shared" / "data" / "wikiart7-unlabeled"))
    ap.add_argument("--labelled", default=str(ROOT.parent / "shared" / "data" / "wikiart7-dev"))
    ap.add_argument("--variants", default=",".join(list(VARIANTS)[:6]), help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--budget-s", type=float, default=300.0, help="pretraining budget per variant, in seconds")
    ap.add_argument(
        "--clock",
        default="wall",
        choices=("wall", "process"),
        help="budget clock: wall time, or CPU seconds of the training process (fair when the machine is shared)",
    )
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--md", default="", help="also write the markdown table to this file")
    ap.add_argument("--set", nargs="*", default=[], help="extra key=value overrides for every variant")
    ap.add_argument(
        "--step-time-only",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="only measure step time: ROUNDS interleaved rounds over the variants (no data, no training)",
    )
    args = ap.parse_args(argv)
    if args.step_time_only:
        return step_time_table(args)
    for p in (args.unlabeled, args.labelled):
        if not Path(p).exists():
            print(f"data folder {p} not found; nothing to benchmark", file=sys.stderr)
            return {}
    common = [
        f"data.path={args.unlabeled}",
        f"data.image_size={args.image_size}",
        f"data.batch_size={args.batch_size}",
        f"model.backbone={args.backbone}",
        f"run.time_budget_s={args.budget_s}",
        f"run.budget_clock={args.clock}",
        "optim.warmup_epochs=0.2",
        "run.progress=false",
        "run.overwrite=true",
        "run.log_every=20",
        *args.set,
    ]
    rows: list[dict[str, Any]] = []
    for i, name in enumerate(args.variants.split(",")):
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant '{name}'; choose from {', '.join(VARIANTS)}")
        st = step_time(make_config(name, common))
        # size the cosine schedule to the budget (data loading adds ~15%); the budget still stops the run.
        # step_time is CPU seconds; with the wall clock, assume the step's threads run in parallel
        per_step = st if args.clock == "process" else st / torch.get_num_threads()
        max_steps = max(10, int(args.budget_s / (per_step * 1.15)))
        cfg = make_config(name, [*common, f"run.output_dir={args.out}/{name}", f"optim.max_steps={max_steps}"])
        res = run_pretrain(cfg)
        lin = config_from_dict(
            LinearConfig,
            {
                "data": {"batch_size": 128},
                "eval": {
                    "checkpoint": f"{args.out}/{name}",
                    "image_size": args.image_size,
                    "train_path": args.labelled,
                    "folds": args.folds,
                    "compare_random": i == 0,
                },
                "run": {"output_dir": f"{args.out}/{name}/eval", "overwrite": True, "progress": False},
            },
        )
        m = run_linear_eval(lin)
        row = {
            "variant": name,
            "steps": res.steps,
            "epochs": round(res.epochs, 2),
            "images_per_s": round(res.images_per_s, 1),
            "step_s": round(st, 3),
            "wall_s": round(res.seconds, 1),
            **{k: m[k] for k in ("knn_top1", "knn_top5", "linear_top1", "linear_top5") if k in m},
            **{k: m[k] for k in ("knn_top1_std", "linear_top1_std") if k in m},
        }
        if "random_init" in m:
            rows.append(
                {"variant": "random_init", **{k: m["random_init"].get(k) for k in row if k in m["random_init"]}}
            )
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = next((r["step_s"] for r in rows if r["variant"] == "simclr"), None)
    for r in rows:
        if base and r.get("step_s"):
            r["step_ratio"] = round(r["step_s"] / base, 2)
    table = to_markdown(rows, args)
    print(json.dumps(rows, indent=2))
    print(table)
    if args.md:
        Path(args.md).write_text(table + "\n")
    return {"rows": rows}


def _pct(v: Any) -> str:
    return f"{100 * v:.1f}" if isinstance(v, float) else "-"


def to_markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    head = (
        f"Equal-budget ablation: {args.backbone}, {args.image_size} px, batch {args.batch_size}, "
        f"{args.budget_s:.0f} s ({args.clock} clock) pretraining per variant on `{Path(args.unlabeled).name}`; "
        f"{args.folds}-fold CV on `{Path(args.labelled).name}` (mean +- std over folds).\n\n"
        "| variant | steps | epochs | wall s | img/s | step CPU-s | step ratio vs SimCLR | kNN top-1 | kNN top-5 | "
        "linear top-1 | linear top-5 |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        knn = _pct(r.get("knn_top1")) + (f" +- {_pct(r['knn_top1_std'])}" if "knn_top1_std" in r else "")
        lin = _pct(r.get("linear_top1")) + (f" +- {_pct(r['linear_top1_std'])}" if "linear_top1_std" in r else "")
        lines.append(
            f"| {r['variant']} | {r.get('steps', '-')} | {r.get('epochs', '-')} | {r.get('wall_s', '-')} | "
            f"{r.get('images_per_s', '-')} | "
            f"{r.get('step_s', '-')} | {r.get('step_ratio', '-')} | {knn} | {_pct(r.get('knn_top5'))} | {lin} | "
            f"{_pct(r.get('linear_top5'))} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
