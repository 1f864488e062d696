"""Input-path benchmark (issue 11): model-only step rate vs the per-image PIL path vs the cached batched path.

For SimCLR resnet18 at 64 and 112 px and the art method at 112 px (batch 64, 2 views), in one run: the model alone
on fixed random views, the PIL DataLoader path (decode + per-image v2 augmentation in ``data.num_workers``
workers) end to end, the cached batched path (decode-once uint8 cache in RAM + batched augmentation on the
device) end to end, and lightly's own SimCLR loop (``NTXentLoss``, ``SimCLRProjectionHead``, ``SimCLRTransform``
with the same augmentation strength, same backbone, same data and workers) as the reference. Rates are images
(samples, each with 2 views) per second over ``--steps`` steps after one warm-up step, the median of ``--rounds``
interleaved rounds (the paths take turns, so background load hits each alike). Memory: peak RSS of the
cached path on the collection, and of a disk (memmapped) cache over a synthetic ``--memmap-n`` collection, each in
a fresh subprocess; the latter must stay far below the cache file size. Prints JSON and a markdown table.

    python benchmarks/input_path.py --data ../shared/data/wikiart7-unlabeled --steps 20 --md docs/input_path_table.md
    python benchmarks/input_path.py --quick     # a few steps of everything: proves the script runs
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ssl_art.config import PretrainConfig, config_from_dict, deep_merge, load_yaml, parse_overrides  # noqa: E402
from ssl_art.data.batch_aug import BatchAugment  # noqa: E402
from ssl_art.data.cache import StoredShape, build_cache, cache_key, open_cache, stored_shape  # noqa: E402
from ssl_art.data.cached_loader import CachedBatches  # noqa: E402
from ssl_art.data.collection import Collection  # noqa: E402
from ssl_art.data.dataset import ImageDataset  # noqa: E402
from ssl_art.data.loaders import build_collection, collate  # noqa: E402
from ssl_art.data.transforms import build_pretrain_transform  # noqa: E402
from ssl_art.engine.sampler import ResumableSampler, SeededDataset  # noqa: E402
from ssl_art.methods.registry import build_pretrain_model  # noqa: E402

CASES = [("simclr", 64), ("simclr", 112), ("art_ssl", 112)]


def make_config(method: str, size: int, args: argparse.Namespace) -> PretrainConfig:
    base = load_yaml(ROOT / "configs" / "pretrain" / f"{method}.yaml")
    over = [f"data.image_size={size}", f"data.batch_size={args.batch_size}", f"data.num_workers={args.workers}"]
    over += [f"data.path={args.data}", "run.device=cpu" if args.device == "cpu" else f"run.device={args.device}"]
    return config_from_dict(PretrainConfig, deep_merge(base, parse_overrides(over)))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_steps(step: Any, batches: Iterator[list[torch.Tensor]], steps: int, device: torch.device) -> float:
    """Images per second of ``step(views)`` over ``steps`` batches after one warm-up batch."""
    step(next(batches))
    _sync(device)
    t0, n = time.time(), 0
    for _ in range(steps):
        views = next(batches)
        step(views)
        n += int(views[0].shape[0])
    _sync(device)
    return n / max(time.time() - t0, 1e-9)


def ssl_art_step(cfg: PretrainConfig, device: torch.device) -> Any:
    """One optimiser step of ``cfg.method`` (forward, backward, AdamW, EMA update) as a closure over views."""
    torch.manual_seed(0)
    method = build_pretrain_model(cfg).to(device).train()
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-4)

    def step(views: list[torch.Tensor]) -> None:
        out = method.training_step([v.to(device, non_blocking=True) for v in views], 0.5)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        method.after_optimizer_step(0.5)

    return step


def forever(make: Any) -> Iterator[list[torch.Tensor]]:
    """Views of batch after batch, restarting the iterable at the end of each epoch."""
    epoch = 0
    while True:
        for batch in make(epoch):
            if len(batch.views):
                yield batch.views
        epoch += 1


def pil_batches(cfg: PretrainConfig, coll: Collection) -> Iterator[list[torch.Tensor]]:
    d = cfg.data
    ds = ImageDataset(coll, build_pretrain_transform(d.aug, d.image_size), d.max_image_pixels)
    sampler = ResumableSampler(len(ds), cfg.run.seed)
    loader = torch.utils.data.DataLoader(
        SeededDataset(ds, cfg.run.seed),
        batch_size=d.batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=d.num_workers,
        collate_fn=collate,
        persistent_workers=d.num_workers > 0,
    )

    def make(epoch: int) -> Iterable[Any]:
        sampler.set_epoch(epoch)
        return loader

    return forever(make)


def cached_batches(cfg: PretrainConfig, coll: Collection, work: Path, device: torch.device) -> tuple[Any, float, int]:
    """(views iterator, seconds spent building the cache (0 when reused), cache bytes)."""
    d = cfg.data
    shape = stored_shape(coll, d.image_size, d.cache_scale, d.cache_max_aspect)
    folder = work / "cache" / cache_key(coll, shape, d.max_image_pixels)
    t0 = time.time()
    built = (folder / "info.json").is_file()
    build_cache(coll, folder, shape, d.max_image_pixels, d.num_workers, progress=False)
    build_s = 0.0 if built else time.time() - t0
    cache = open_cache(folder, "ram")
    sampler = ResumableSampler(len(cache), cfg.run.seed)
    cb = CachedBatches(
        cache, sampler, d.batch_size, BatchAugment(d.aug, d.image_size), d.aug.n_views, 0, device, coll.paths
    )

    def make(epoch: int) -> Iterable[Any]:
        sampler.set_epoch(epoch)
        return cb

    return forever(make), build_s, cache.nbytes


def lightly_loop(cfg: PretrainConfig, coll: Collection, device: torch.device) -> tuple[Any, Iterator[Any]]:
    """lightly's SimCLR: its transform, projection head and loss on the same backbone, data and workers."""
    import timm
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms.simclr_transform import SimCLRTransform
    from PIL import Image

    d, a = cfg.data, cfg.data.aug
    transform = SimCLRTransform(
        input_size=d.image_size,
        cj_prob=a.color_jitter_prob,
        cj_strength=a.color_jitter_strength,
        min_scale=a.min_scale,
        random_gray_scale=a.grayscale_prob,
        gaussian_blur=a.blur_prob,
        hf_prob=a.hflip_prob,
    )
    syn = coll.synthetic

    class Files(torch.utils.data.Dataset[Any]):
        def __len__(self) -> int:
            return len(coll)

        def __getitem__(self, i: int) -> Any:
            img = syn.image(i) if syn is not None else Image.open(coll.paths[i]).convert("RGB")
            return transform(img)

    loader = torch.utils.data.DataLoader(
        Files(),
        batch_size=d.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=d.num_workers,
        persistent_workers=d.num_workers > 0,
    )
    torch.manual_seed(0)
    backbone = timm.create_model(cfg.model.backbone, num_classes=0).to(device)
    head = SimCLRProjectionHead(backbone.num_features, cfg.model.proj_hidden_dim, cfg.model.proj_out_dim).to(device)
    crit = NTXentLoss(temperature=cfg.loss.temperature)
    opt = torch.optim.AdamW(list(backbone.parameters()) + list(head.parameters()), lr=1e-4)

    def step(views: list[torch.Tensor]) -> None:
        z0, z1 = (head(backbone(v.to(device))) for v in views)
        loss = crit(z0, z1)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def batches() -> Iterator[list[torch.Tensor]]:
        while True:
            yield from loader

    return step, batches()


def peak_rss_mb() -> float:
    """This process's peak RSS (``VmHWM``; ``ru_maxrss`` would carry the parent's peak across fork + exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_child(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run in a fresh process: read ``--rss-batches`` augmented batches from a cache, report peak RSS."""
    device = torch.device(args.device if args.device != "auto" else "cpu")
    base_rss = peak_rss_mb()
    if kind == "ram":
        cfg = make_config("simclr", 112, args)
        coll = build_collection(cfg.data, 0)
        it, _, nbytes = cached_batches(cfg, coll, Path(args.work), device)
        file_mb = nbytes / 2**20
    else:
        shape = StoredShape(129, 129)
        folder = Path(args.work) / "memmap" / f"synthetic-{args.memmap_n}"
        write_synthetic_cache(folder, shape, args.memmap_n)
        cache = open_cache(folder, "disk")
        sampler = ResumableSampler(len(cache), 0)
        aug = BatchAugment(make_config("simclr", 112, args).data.aug, 112)
        cb = CachedBatches(cache, sampler, args.batch_size, aug, 2, 0, device, [""] * len(cache), prefetch=3)
        it = forever(lambda e: cb)
        file_mb = (folder / "pixels.u8").stat().st_size / 2**20
    t0, n = time.time(), 0
    for _ in range(args.rss_batches):
        n += int(next(it)[0].shape[0])
    rate = n / max(time.time() - t0, 1e-9)
    peak = peak_rss_mb()
    return {"kind": kind, "peak_rss_mb": peak, "start_rss_mb": base_rss, "cache_file_mb": file_mb, "input_img_s": rate}


def write_synthetic_cache(folder: Path, shape: StoredShape, n: int) -> None:
    """A cache file for ``n`` synthetic noise images written directly (no decoding): the memmap RSS case."""
    if (folder / "info.json").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    block = rng.integers(0, 256, (256, 3, shape.short, shape.long), dtype=np.uint8)
    with open(folder / "pixels.u8", "wb") as f:
        for lo in range(0, n, len(block)):
            f.write(block[: min(len(block), n - lo)].tobytes())
    hw = np.tile(np.array([[shape.short, shape.long]], np.int32), (n, 1))
    np.savez(folder / "meta.npz", hw=hw, transposed=np.zeros(n, bool), status=np.zeros(n, np.int8))
    info = {"version": 1, "n": n, "short": shape.short, "long": shape.long, "source": f"synthetic noise {n}"}
    (folder / "info.json").write_text(json.dumps(info))


def run_rss(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--rss-child", kind, "--work", args.work, "--data", args.data]
    cmd += ["--rss-batches", str(args.rss_batches), "--memmap-n", str(args.memmap_n), "--device", args.device]
    cmd += ["--workers", str(args.workers), "--batch-size", str(args.batch_size)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def table(res: dict[str, Any]) -> str:
    lines = [
        f"Input paths, batch {res['batch_size']} x 2 views, median of {res['rounds']} interleaved rounds of "
        f"{res['steps']} steps after 1 warm-up, "
        f"device {res['device']}, {res['threads']} torch threads, {res['workers']} workers, data {res['data']} "
        f"({res['n_images']} images). img/s = samples (2 views each) per second.",
        "",
        "| method | px | model only | PIL path | cached path | cached / model | cached / PIL | lightly SimCLR "
        "| ours / lightly | cache build s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["cases"]:
        light = f"{r['lightly_img_s']:.1f}" if "lightly_img_s" in r else "-"
        ratio = f"{r['cached_vs_lightly']:.2f}" if "lightly_img_s" in r else "-"
        lines.append(
            f"| {r['method']} | {r['px']} | {r['model_img_s']:.1f} | {r['pil_img_s']:.1f} | {r['cached_img_s']:.1f} "
            f"| {r['cached_vs_model']:.2f} | {r['cached_vs_pil']:.2f} | {light} | {ratio} | {r['cache_build_s']:.1f} |"
        )
    lines += [
        "",
        "| memory case | images | cache file MB | peak RSS MB | RSS after imports MB | input-only img/s |",
        "|---|---|---|---|---|---|",
    ]
    for m in res["memory"]:
        lines.append(
            f"| {m['kind']} | {m.get('n', '')} | {m['cache_file_mb']:.0f} | {m['peak_rss_mb']:.0f} "
            f"| {m['start_rss_mb']:.0f} | {m['input_img_s']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    candidates = (ROOT / "data_local" / "wikiart7-unlabeled", ROOT.parent / "shared" / "data" / "wikiart7-unlabeled")
    default_data = next((str(c) for c in candidates if c.is_dir()), "")
    p.add_argument("--data", default=default_data, help="image folder ('' = the embedded synthetic collection)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per case (median reported)")
    p.add_argument("--quick", action="store_true", help="2 steps, 1 round, small memmap case: proves the script runs")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the PIL and lightly paths")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--cases", default=",".join(f"{m}@{s}" for m, s in CASES), help="method@px,...")
    p.add_argument("--no-lightly", action="store_true")
    p.add_argument("--memmap-n", type=int, default=50_000, help="images of the synthetic memmap case")
    p.add_argument("--rss-batches", type=int, default=50)
    p.add_argument("--work", default=str(ROOT / "runs" / "bench_input"), help="caches go here (gitignored runs/)")
    p.add_argument("--json", default="", help="also write the JSON here")
    p.add_argument("--md", default="", help="also write the markdown table here")
    p.add_argument("--rss-child", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rss_child:
        print(json.dumps(rss_child(args.rss_child, args)))
        return 0
    if args.quick:
        args.steps, args.rounds, args.memmap_n, args.rss_batches = 2, 1, 20_000, 5
    device = torch.device(args.device)
    res: dict[str, Any] = {"batch_size": args.batch_size, "steps": args.steps, "rounds": args.rounds}
    res["device"] = str(device)
    res.update(threads=torch.get_num_threads(), workers=args.workers, data=args.data or "<synthetic>", cases=[])
    for spec in args.cases.split(","):
        method, px = spec.split("@")
        cfg = make_config(method, int(px), args)
        coll = build_collection(cfg.data, 0)
        res["n_images"] = len(coll)
        shape = (args.batch_size, 3, int(px), int(px))
        fixed = [torch.randn(shape, device=device) for _ in range(2)]
        r: dict[str, Any] = {"method": method, "px": int(px)}
        it, r["cache_build_s"], _ = cached_batches(cfg, coll, Path(args.work), device)
        paths: dict[str, tuple[Any, Iterator[Any]]] = {
            "model": (ssl_art_step(cfg, device), itertools.repeat(fixed)),
            "pil": (ssl_art_step(cfg, device), pil_batches(cfg, coll)),
            "cached": (ssl_art_step(cfg, device), it),
        }
        if method == "simclr" and not args.no_lightly:
            paths["lightly"] = lightly_loop(cfg, coll, device)
        rates: dict[str, list[float]] = {k: [] for k in paths}
        names = list(paths)
        for rnd in range(args.rounds):  # interleaved rounds: background load hits every path alike
            for k in names[rnd % len(names) :] + names[: rnd % len(names)]:
                rates[k].append(timed_steps(*paths[k], args.steps, device))
        for k, v in rates.items():
            r[f"{k}_img_s"] = float(np.median(v))
        r["cached_vs_model"] = r["cached_img_s"] / r["model_img_s"]
        r["cached_vs_pil"] = r["cached_img_s"] / r["pil_img_s"]
        if "lightly" in paths:
            r["cached_vs_lightly"] = r["cached_img_s"] / r["lightly_img_s"]
        del paths, it
        res["cases"].append(r)
        print(json.dumps(r), file=sys.stderr, flush=True)
    res["memory"] = [{**run_rss("ram", args), "n": res["n_images"]}, {**run_rss("memmap", args), "n": args.memmap_n}]
    print(json.dumps(res, indent=2))
    md = table(res)
    print(md)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    if args.md:
        Path(args.md).write_text(md + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
