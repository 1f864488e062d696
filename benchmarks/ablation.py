r"""Does the art method earn its place? The evidence run: equal compute, several seeds, resumable, table + curves.

Every variant pretrains for the same number of optimiser steps at the same batch size (``--epochs`` epochs of the
unlabeled pool): *equal compute* here means equal steps x batch, i.e. every variant sees the same images the same
number of times; each variant's measured CPU seconds per step (and its ratio to SimCLR) and its pretraining CPU
time are reported beside the accuracies, so a method that is better per step but slower per step shows both. Each
``(variant, seed)`` run then gets kNN + linear-probe stratified k-fold CV on the labelled collection (fixed folds,
the same for every run, so differences are paired) and the label-free synthetic signal: kNN accuracy for the
synthetic collection's style labels (should be high) and content labels (should be low). The online kNN monitor
(``monitor.*``) records each run's learning curve.

Resumable: each run is ``<out>/<variant>/seed<k>`` (a killed pretraining resumes from its checkpoint with
``run.resume``), and every finished evaluation is appended to ``<out>/results.jsonl`` with a fingerprint of its
settings, so rerunning the same command skips what is done and continues where it stopped. ``--results`` puts that
file elsewhere: the run folders (checkpoints, hundreds of MB) stay out of git, but a tracked results file (the docs
use ``benchmarks/results/ablation16.jsonl``) keeps the finished evaluations, so a fresh clone reports them and
trains only what is missing.

    python benchmarks/ablation.py --plan              # runs and estimated CPU time (measures the step cost)
    python benchmarks/ablation.py --quick             # the whole harness on tiny synthetic data, < 2 minutes
    python benchmarks/ablation.py --report ...        # table + curves of whatever has finished, trains nothing
    python benchmarks/ablation.py --out runs/ablation16 --md docs/ablation16_table.md \
        --png docs/img/ablation16_curves.png          # the real run (hours; stop and rerun at will)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import logging
import resource
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.ablation_plan import collection_id, fingerprint, measure_costs, print_plan  # noqa: E402
from benchmarks.ablation_report import ResultsStore, curve_of, plot_curves, to_markdown  # noqa: E402
from benchmarks.ablation_variants import Variant, build_variants  # noqa: E402
from ssl_art.checkpoint import atomic_write_bytes, find_resumable  # noqa: E402
from ssl_art.config import (  # noqa: E402
    AugCfg,
    ConfigError,
    DataCfg,
    LinearConfig,
    MonitorCfg,
    PretrainConfig,
    config_from_dict,
    config_to_dict,
    deep_merge,
    load_yaml,
    parse_overrides,
)
from ssl_art.engine.monitor import KnnMonitor  # noqa: E402
from ssl_art.engine.pretrain import run_pretrain  # noqa: E402
from ssl_art.eval.run import run_linear_eval  # noqa: E402
from ssl_art.methods.load import load_method  # noqa: E402
from ssl_art.methods.registry import build_pretrain_model  # noqa: E402

log = logging.getLogger("ablation")


def common_overrides(a: argparse.Namespace) -> list[str]:
    """The settings every variant shares (the variant's own overrides and then ``--set`` come after these)."""
    ov = [
        f"data.path={a.unlabeled}",
        f"data.image_size={a.image_size}",
        f"data.batch_size={a.batch_size}",
        f"data.num_workers={a.workers}",
        f"data.synthetic_size={a.synthetic_size}",
        f"data.synthetic_image_size={a.image_size}",
        f"model.backbone={a.backbone}",
        f"optim.epochs={a.epochs}",
        "optim.max_steps=0",
        "run.progress=false",
        "run.log_every=20",
        f"monitor.every_epochs={a.monitor_every}",
        f"monitor.path={a.labelled}",
        f"monitor.max_images={a.monitor_max_images}",
        f"monitor.image_size={a.eval_size or a.image_size}",
        f"monitor.folds={a.folds}",
    ]
    return [*ov, "data.cache=auto", f"data.cache_dir={Path(a.out) / '.ssl_art_cache'}"]  # one cache for all runs


def make_config(variant: Variant, a: argparse.Namespace, seed: int, run_dir: Path, extra: list[str]) -> PretrainConfig:
    over = [*common_overrides(a), *variant.overrides, *a.set, f"run.seed={seed}", f"run.output_dir={run_dir}", *extra]
    try:
        values = deep_merge(load_yaml(ROOT / "configs" / "pretrain" / variant.base), parse_overrides(over))
        return config_from_dict(PretrainConfig, values)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from e


# data.aug keys added after records were kept (multi-crop): they enter the fingerprint only when one of them is off
# its default, so every record written before they existed still matches its run
LATER_AUG_KEYS = ("max_scale", "n_local", "local_size", "local_min_scale")


def pretrain_fingerprint(cfg: PretrainConfig) -> str:
    """Every setting that changes the trained weights (not where they go, nor how often they are logged)."""
    d = config_to_dict(cfg)
    aug, default = d["data"]["aug"], dataclasses.asdict(AugCfg())
    if all(aug[k] == default[k] for k in LATER_AUG_KEYS):
        for k in LATER_AUG_KEYS:
            del aug[k]
    for k in ("output_dir", "resume", "overwrite", "progress", "log_every"):
        d["run"].pop(k, None)
    for k in ("num_workers", "cache_dir"):  # where the decoded pool is kept changes no weight
        d["data"].pop(k, None)
    d["data"]["path"], d["monitor"]["path"] = collection_id(d["data"]["path"]), collection_id(d["monitor"]["path"])
    return fingerprint(d)


def cpu_seconds() -> float:
    """CPU seconds of this process and its reaped children (DataLoader workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


HEARTBEAT_S = 30.0  # how often a running pretraining's compute so far is written to its meta file


def write_meta(meta_file: Path, meta: dict[str, Any]) -> None:
    """Replace ``meta_file`` atomically: a kill mid-write leaves the previous version, never a torn file."""
    tmp = meta_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta))
    tmp.replace(meta_file)


class ComputeClock:
    """Keeps ``meta_file``'s ``cpu_s`` / ``wall_s`` current while a pretraining runs (every :data:`HEARTBEAT_S`).

    A run stopped by a signal updates its meta when ``run_pretrain`` returns; one killed outright (SIGKILL, the end
    of a session) never returns, and without the heartbeat its resumed record would count only the last session's
    compute. With it, at most one heartbeat of compute is lost per kill.
    """

    def __init__(self, meta_file: Path, meta: dict[str, Any]) -> None:
        self.meta_file, self.meta = meta_file, meta
        self.c0, self.t0 = cpu_seconds(), time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def spent(self) -> dict[str, float]:
        """This run's compute so far, earlier sessions included."""
        return {
            "cpu_s": self.meta["cpu_s"] + cpu_seconds() - self.c0,
            "wall_s": self.meta.get("wall_s", 0.0) + time.time() - self.t0,
        }

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            write_meta(self.meta_file, {**self.meta, **self.spent()})

    def __enter__(self) -> ComputeClock:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()  # before the caller's own write: two writers would share the .tmp file


@contextlib.contextmanager
def run_lock(path: Path, key: str) -> Iterator[None]:
    """Exclusive lock on one run for as long as this process works on it: two lanes started on overlapping
    ``--variants`` lists (or both needing ``random_init``) never train or evaluate the same run twice; the second
    waits, then finds the record. The kernel drops the lock when a process dies, so a kill never leaves it held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("%s: another lane is on it, waiting", key)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Stopped(Exception):
    """A pretraining stopped before its last step (signal or budget): the ablation stops too, resumable."""


def pretrain(cfg: PretrainConfig, meta_file: Path) -> dict[str, Any]:
    """Pretrain (or resume, or skip when finished) one run; its bookkeeping lives in ``meta_file`` beside it."""
    fp = pretrain_fingerprint(cfg)
    meta: dict[str, Any] = (
        json.loads(meta_file.read_text()) if meta_file.is_file() else {"fingerprint": fp, "cpu_s": 0.0}
    )
    if meta["fingerprint"] != fp:
        raise SystemExit(
            f"error: {cfg.run.output_dir} was pretrained with other settings; use another --out or delete "
            f"{cfg.run.output_dir} and {meta_file}"
        )
    if meta.get("done"):
        return meta
    meta_file.parent.mkdir(parents=True, exist_ok=True)
    meta_file.write_text(json.dumps(meta))  # before any checkpoint: a resumed run is always checked
    resume = find_resumable(Path(cfg.run.output_dir) / "checkpoints") is not None
    run = dataclasses.replace(cfg.run, resume=resume, overwrite=not resume)
    with ComputeClock(meta_file, meta) as clock:
        res = run_pretrain(dataclasses.replace(cfg, run=run))
    meta.update(
        **clock.spent(),
        sessions=meta.get("sessions", 0) + 1,
        steps=res.steps,
        epochs=round(res.epochs, 3),
        done=res.stopped == "done",
    )
    write_meta(meta_file, meta)
    if not meta["done"]:
        raise Stopped(f"{cfg.run.output_dir} stopped ({res.stopped}) at step {res.steps}")
    return meta


def eval_fingerprint(a: argparse.Namespace) -> dict[str, Any]:
    keys = ("folds", "eval_size", "image_size", "linear_epochs", "synthetic", "synthetic_size")
    return {k: getattr(a, k) for k in keys} | {"labelled": collection_id(a.labelled)}


def synthetic_monitor(a: argparse.Namespace, embedding: str) -> KnnMonitor:
    """The label-free signal: kNN of the synthetic collection's style and content labels under ``embedding``."""
    mcfg = MonitorCfg(every_epochs=1, label_columns=("label", "content"), folds=a.folds, max_images=0,
                      image_size=a.eval_size or a.image_size, embedding=embedding)  # fmt: skip
    return KnnMonitor.from_config(mcfg, DataCfg(synthetic_size=a.synthetic_size, synthetic_image_size=64), 0)


def evaluate(
    checkpoint: str, a: argparse.Namespace, out_dir: Path, synth: KnnMonitor | None, embedding: str = "auto"
) -> dict[str, Any]:
    """kNN + linear CV on the labelled set (fixed folds, seed 0) and the synthetic style/content kNN signal."""
    size = a.eval_size or a.image_size
    lin = config_from_dict(
        LinearConfig,
        {
            "data": {"batch_size": 128, "num_workers": a.workers, "synthetic_size": a.synthetic_size,
                     "synthetic_image_size": a.image_size, "image_size": size},
            "model": {"backbone": a.backbone},
            "eval": {"checkpoint": checkpoint, "image_size": size, "train_path": a.labelled, "folds": a.folds,
                     "compare_random": False, "linear_epochs": a.linear_epochs, "embedding": embedding},
            "run": {"output_dir": str(out_dir), "overwrite": True, "progress": False, "seed": 0},
        },
    )  # fmt: skip
    m = run_linear_eval(lin)
    rec: dict[str, Any] = {k: m[k] for k in ("knn_top1", "knn_top5", "linear_top1", "linear_top5") if k in m}
    rec.update({f"{k}_std": m[f"{k}_std"] for k in ("knn_top1", "linear_top1") if f"{k}_std" in m})
    for k in ("knn_top1", "linear_top1"):
        rec[f"{k}_folds"] = [f[k] for f in m["folds"]]
    if synth is not None:
        if checkpoint:
            method = load_method(checkpoint)[0]
        else:
            torch.manual_seed(0)
            method = build_pretrain_model(config_from_dict(PretrainConfig, {"model": {"backbone": a.backbone}}))
        s = synth.evaluate(method)
        rec["synthetic_style_knn"] = s["monitor/knn_top1"]
        rec["synthetic_content_knn"] = s["monitor/knn_top1_content"]
    return rec


def legend(records: list[dict[str, Any]], variants: dict[str, Variant], a: argparse.Namespace) -> str:
    """What each row of the table is: its config file and overrides (after the shared settings and ``--set``)."""
    shown = dict.fromkeys(r["variant"] for r in records if r["variant"] in variants)
    lines = ["", "", f"Rows (shared settings: {' '.join(a.set) or 'none beyond the defaults'}):", ""]
    for n in shown:
        v = variants[n]
        if v.reuse:
            lines.append(f"- `{n}`: {v.note}; `eval.embedding={v.embedding}` on the `{v.reuse}` runs (no training)")
            continue
        lines.append(f"- `{n}`: {v.note}; `configs/pretrain/{v.base}` {' '.join(f'`{o}`' for o in v.overrides)}")
    return "\n".join(lines) if shown else ""


def plan_runs(a: argparse.Namespace, variants: dict[str, Variant]) -> list[tuple[str, Variant, int]]:
    names = a.variants.split(",") if a.variants else [n for n, v in variants.items() if v.default]
    unknown = [n for n in names if n not in variants]
    if unknown:
        raise SystemExit(f"error: unknown variant(s) {', '.join(unknown)}; choose from {', '.join(variants)}")
    core = set(a.core.split(",")) if a.core else {n for n, v in variants.items() if v.core}
    if core - set(variants):
        raise SystemExit(f"error: --core names unknown variant(s) {', '.join(sorted(core - set(variants)))}")
    return [(n, variants[n], s) for n in names for s in range(a.seeds if n in core else a.removal_seeds)]


def quick_defaults(a: argparse.Namespace) -> None:
    """Tiny sizes on the synthetic collection: the whole harness end to end in well under 2 minutes."""
    a.unlabeled, a.labelled, a.epochs, a.image_size, a.eval_size, a.batch_size = "", "", 2, 32, 32, 16
    a.backbone, a.synthetic_size, a.folds, a.linear_epochs, a.monitor_max_images = "test_resnet", 64, 5, 5, 64
    a.seeds, a.removal_seeds, a.workers, a.core, a.out = 2, 1, 0, "", a.out or "runs/ablation_quick"
    a.threads = a.threads or 1  # on a shared 2-core machine 2 threads spin: 1 thread is ~10x faster per step here


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # ../shared/data beside the checkout (or beside its parent, for a git worktree in a subfolder)
    shared = next((p / "shared" / "data" for p in ROOT.parents if (p / "shared" / "data").is_dir()), ROOT / "data")
    ap.add_argument("--unlabeled", default=str(shared / "wikiart7-unlabeled"), help="pretraining pool ('' = synthetic)")
    ap.add_argument("--labelled", default=str(shared / "wikiart7-dev"), help="CV + monitor set ('' = synthetic)")
    ap.add_argument("--variants", default="", help="comma list (default: all)")
    ap.add_argument("--removal-base", default="full_jitter_first", help="full variant the no_<part> rows start from")
    ap.add_argument("--epochs", type=int, default=20, help="epochs of the pool per run (equal steps for all)")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--eval-size", type=int, default=0, help="kNN/linear/monitor image size (0 = --image-size)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--seeds", type=int, default=3, help="seeds of the core rows (SimCLR baselines, full method)")
    ap.add_argument("--removal-seeds", type=int, default=1, help="seeds of the other rows")
    ap.add_argument("--core", default="", help="comma list of the rows that get --seeds (default: the 4 core rows)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--linear-epochs", type=int, default=100)
    ap.add_argument("--monitor-every", type=int, default=1, help="online kNN every N epochs (0 = off)")
    ap.add_argument("--monitor-max-images", type=int, default=700)
    ap.add_argument("--synthetic", action=argparse.BooleanOptionalAction, default=True, help="style/content signal")
    ap.add_argument("--synthetic-size", type=int, default=1400)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0 = torch's default; 1 is faster on a busy machine)"
    )
    ap.add_argument("--out", default="")
    ap.add_argument(
        "--results",
        default="",
        help="records of finished runs (default <out>/results.jsonl); a tracked file outlives <out>",
    )
    ap.add_argument("--md", default="", help="also write the table here (e.g. docs/ablation16_table.md)")
    ap.add_argument("--png", default="", help="learning-curve PNG (default <out>/curves.png)")
    ap.add_argument("--set", nargs="*", default=[], help="extra key=value overrides for every variant")
    ap.add_argument("--plan", action="store_true", help="print the runs and an estimated CPU time, run nothing")
    ap.add_argument("--quick", action="store_true", help="tiny synthetic end-to-end proof of the harness")
    ap.add_argument("--baseline", default="", help="SimCLR row the differences are against (default: best kNN)")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="table's pretraining time (wall: GPU runs)")
    ap.add_argument("--report", action="store_true", help="table + curves from the finished runs only, train nothing")
    a = ap.parse_args(argv)
    if a.quick:
        quick_defaults(a)
    a.out = a.out or "runs/ablation16"
    for flag, p in (("--unlabeled", a.unlabeled), ("--labelled", a.labelled)):
        if p and not Path(p).exists():
            raise SystemExit(f"error: {flag} {p} does not exist; give the folder or '' for the synthetic collection")
    if a.epochs < 1 or a.seeds < 1 or a.removal_seeds < 0 or a.folds < 2:
        raise SystemExit("error: need --epochs >= 1, --seeds >= 1, --removal-seeds >= 0 and --folds >= 2")
    return a


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    a = parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    variants = build_variants(a.removal_base)
    runs = plan_runs(a, variants)
    out = Path(a.out)
    trained = [r for r in runs if r[1].reuse != "random_init"]
    results = Path(a.results) if a.results else out / "results.jsonl"
    cost_file = results.with_name(results.stem + "_step_cost.json") if a.results else out / "step_cost.json"
    costs = measure_costs(trained, a, cost_file, lambda v: make_config(v, a, 0, Path("unused"), []))
    if a.plan:
        return {"cpu_hours": print_plan(runs, costs, a), "runs": len(runs)}
    store = ResultsStore(results)
    synth: dict[str, KnnMonitor] = {}
    efp = eval_fingerprint(a)
    wanted: dict[str, str] = {}
    todo = [("random_init", None, 0)] + runs
    t_start, skipped, missing = time.time(), 0, list[str]()
    try:
        for name, v, seed in todo:
            emb = v.embedding if v else "auto"
            if v and v.reuse == "random_init":
                v, seed = None, 0
            src = v.reuse if v and v.reuse else name
            key, run_dir = f"{name}/seed{seed}", out / src / f"seed{seed}"
            pfp = pretrain_fingerprint(make_config(v, a, seed, run_dir, [])) if v else fingerprint(a.backbone)
            fp = fingerprint([pfp, efp] if emb == "auto" else [pfp, efp, emb])  # auto: the fingerprints of old rows
            wanted[key] = fp
            if store.done(key, fp):
                skipped += 1
                continue
            if a.report:
                missing.append(key)
                continue
            with run_lock(out / src / f"seed{seed}.lock", key):
                store.reload()  # another lane may have finished it while this one waited
                if store.done(key, fp):
                    skipped += 1
                    continue
                meta = pretrain(make_config(v, a, seed, run_dir, []), out / src / f"seed{seed}.json") if v else {}
                if a.synthetic and emb not in synth:
                    synth[emb] = synthetic_monitor(a, emb)
                eval_dir = run_dir / ("eval" if emb == "auto" else f"eval_{emb}")
                rec = evaluate(str(run_dir) if v else "", a, eval_dir, synth.get(emb), emb)
                curve = curve_of(run_dir / "metrics.jsonl") if v and not v.reuse else []  # reused: the source's
                store.add({"key": key, "fingerprint": fp, "variant": name, "seed": seed, "steps": meta.get("steps", 0),
                           "epochs": meta.get("epochs", 0), "pretrain_cpu_s": meta.get("cpu_s", 0.0),
                           "pretrain_wall_s": meta.get("wall_s", 0.0), "curve": curve, **rec})  # fmt: skip
                log.info("%s: kNN %.3f linear %.3f", key, rec["knn_top1"], rec["linear_top1"])
    except Stopped as e:
        print(f"stopped: {e}; rerun the same command to continue", file=sys.stderr)
    store.reload()  # the table counts what other lanes finished too
    records = store.for_fingerprints(wanted)
    family = {n: v.family for n, v in variants.items()} | {"random_init": "reference"}
    header = (
        f"Ablation: {a.backbone}, {a.image_size} px, batch {a.batch_size}, {a.epochs} epochs of "
        f"`{Path(a.unlabeled).name or 'synthetic'}` per run (equal optimiser steps); kNN (k=20) + linear probe, "
        f"{a.folds}-fold CV on `{Path(a.labelled).name or 'synthetic'}` at {a.eval_size or a.image_size} px; "
        "mean +- std over seeds (each seed: mean over folds). Synthetic: kNN on style / content labels."
    )
    table = to_markdown(records, family, costs, header, baseline=a.baseline, clock=a.clock)
    table += legend(records, variants, a)
    print(table)
    out.mkdir(parents=True, exist_ok=True)  # a --report from a fresh clone has no run folders
    atomic_write_bytes(out / "table.md", (table + "\n").encode())
    if a.md:
        atomic_write_bytes(Path(a.md), (table + "\n").encode())
    title = f"online kNN on {Path(a.labelled).name or 'synthetic'}: {a.backbone}, {a.image_size} px, {a.epochs} epochs"
    plotted = [r for r in records if not (r["variant"] in variants and variants[r["variant"]].reuse)]
    png = plot_curves(plotted, Path(a.png) if a.png else out / "curves.png", title)  # one curve per trained run
    if missing:
        print(f"--report: {len(missing)} planned run(s) not finished yet, left out: {', '.join(missing)}")
    print(f"{len(records)}/{len(todo)} runs done ({skipped} from {results}) in "
          f"{time.time() - t_start:.0f} s; table {out / 'table.md'}; curves {png}")  # fmt: skip
    return {"records": records, "table": table, "png": str(png) if png else ""}


if __name__ == "__main__":
    main()
