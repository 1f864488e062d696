"""Bounded loopback load test of ``ssl-art serve``: mixed classify/similar traffic plus idle connections held open.

Starts the server as a subprocess on a free loopback port (a tiny random-init classifier and index are built in a
temp folder unless ``--classifier``/``--index`` are given), opens ``--idle`` raw TCP connections that send nothing
and holds them for the whole run, then sends ``--requests`` requests from ``--concurrency`` concurrent clients:
a rotating mix of ``POST /api/classify`` (upload, with Grad-CAM), ``POST /api/similar`` (upload) and
``POST /api/similar?row=N``. Reports latency p50/p99/max per kind and overall, throughput, errors (every non-200
answer and transport failure; must be 0), 503 refusals, the server's peak RSS (``VmHWM``) and thread count, and
whether the server stayed healthy with the idle connections open. Exit status 1 when any request failed.

    python benchmarks/serve_load.py --requests 500 --concurrency 16 --idle 50
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def build_fixture(folder: Path, n_per_class: int, image_size: int, backbone: str) -> tuple[Path, Path, list[Path]]:
    """A small image tree, its embeddings + flat index, and a random-init classifier checkpoint."""
    import torch

    from ssl_art.finetune.model import ModelSpec, build_classifier
    from ssl_art.retrieval.embed import embed_collection
    from ssl_art.retrieval.embedder import BackboneEmbedder
    from ssl_art.retrieval.index import RetrievalIndex

    rng = np.random.default_rng(0)
    files = []
    classes = ["red", "green", "blue"]
    for c, name in enumerate(classes):
        (folder / "works" / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img = rng.integers(0, 80, (72, 96, 3)).astype(np.uint8)
            img[..., c] += 170
            files.append(folder / "works" / name / f"{i}.png")
            Image.fromarray(img).save(files[-1])
    model = BackboneEmbedder(backbone, seed=0, image_size=image_size)
    src = f"random:{backbone}:seed0"
    embed_collection(model, str(folder / "works"), folder / "emb", image_size=image_size, progress=False, source=src)
    RetrievalIndex.build(folder / "emb").save(folder / "idx")
    spec = ModelSpec("classifier", backbone, 4, image_size, ["label"], {"label": classes})
    torch.manual_seed(0)
    ckpt = folder / "clf" / "checkpoints" / "best.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"model": build_classifier(spec).state_dict(), "spec": spec.to_dict(), "meta": {}}, ckpt)
    return ckpt, folder / "idx", files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status(pid: int) -> dict[str, int]:
    """``VmHWM`` / ``VmRSS`` in MiB and ``Threads`` of a Linux process."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(val.split()[0]) // 1024
        elif key == "Threads":
            out[key] = int(val)
    return out


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) * 1000 if xs else float("nan")


async def run_load(base: str, uploads: list[bytes], n: int, conc: int, n_works: int, idle: int) -> dict[str, Any]:
    host, port = base.removeprefix("http://").split(":")
    held = [await asyncio.open_connection(host, int(port)) for _ in range(idle)]
    lat: dict[str, list[float]] = {"classify": [], "similar_upload": [], "similar_row": []}
    errors: list[str] = []
    refused = 0
    counter = iter(range(n))
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:

        async def worker() -> None:
            nonlocal refused
            for i in counter:
                kind = ("classify", "similar_upload", "similar_row")[i % 3]
                data = uploads[i % len(uploads)]
                t0 = time.perf_counter()
                try:
                    if kind == "classify":
                        r = await client.post("/api/classify?topk=3", files={"image": ("q.png", data, "image/png")})
                    elif kind == "similar_upload":
                        r = await client.post("/api/similar?k=8", files={"image": ("q.png", data, "image/png")})
                    else:
                        r = await client.post(f"/api/similar?row={i % n_works}&k=8")
                except httpx.HTTPError as e:
                    errors.append(f"{kind}: {type(e).__name__} {e}")
                    continue
                dt = time.perf_counter() - t0
                if r.status_code == 200:
                    lat[kind].append(dt)
                else:
                    refused += r.status_code == 503
                    errors.append(f"{kind}: HTTP {r.status_code} {r.text[:120]}")

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conc)))
        wall = time.perf_counter() - t0
        health = (await client.get("/api/health")).json()
    still_open = 0
    for reader, writer in held:
        still_open += not reader.at_eof()
        writer.close()
    every = [x for v in lat.values() for x in v]
    return {
        "requests": n,
        "concurrency": conc,
        "ok": len(every),
        "errors": len(errors),
        "error_examples": errors[:5],
        "refused_503": refused,
        "wall_s": round(wall, 2),
        "throughput_rps": round(len(every) / wall, 1),
        "p50_ms": round(pct(every, 50), 1),
        "p99_ms": round(pct(every, 99), 1),
        "max_ms": round(max(every) * 1000, 1) if every else None,
        "per_kind": {
            k: {"n": len(v), "p50_ms": round(pct(v, 50), 1), "p99_ms": round(pct(v, 99), 1)} for k, v in lat.items()
        },
        "idle_connections_held": idle,
        "idle_still_open_at_end": still_open,
        "pool_after": health["pool"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--idle", type=int, default=50, help="raw connections opened first and held silent")
    ap.add_argument("--classifier", default="", help="use this run instead of a tiny random one")
    ap.add_argument("--index", default="", help="use this index instead of a tiny random one")
    ap.add_argument("--image-size", type=int, default=64, help="tiny fixture: model input size")
    ap.add_argument("--backbone", default="resnet18", help="tiny fixture: timm backbone")
    ap.add_argument("--works-per-class", type=int, default=12)
    ap.add_argument("--workers", type=int, default=2, help="server inference threads")
    ap.add_argument("--threads", type=int, default=1, help="server torch/BLAS threads (--threads of ssl-art)")
    ap.add_argument("--out", default="", help="also write the JSON report here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        files: list[Path] = []
        clf, idx = Path(args.classifier), Path(args.index)
        if not args.classifier or not args.index:
            clf, idx, files = build_fixture(t, args.works_per_class, args.image_size, args.backbone)
        uploads = [f.read_bytes() for f in files[:: max(1, len(files) // 8)]] or [_png()]
        from ssl_art.retrieval.index import RetrievalIndex

        n_works = len(RetrievalIndex.load(idx).ids)
        port = free_port()
        cmd = [sys.executable, "-m", "ssl_art.cli", "--threads", str(args.threads), "serve", "--classifier", str(clf)]
        cmd += ["--index", str(idx), "--port", str(port), "--workers", str(args.workers)]
        cmd += ["--queue", str(max(16, args.concurrency)), "--request-timeout", "600"]
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.time() + 120
            while True:
                try:
                    if httpx.get(base + "/api/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.time() > deadline:
                    raise SystemExit(
                        f"server did not start: {server.stderr.read().decode()[-2000:] if server.stderr else ''}"
                    )
                time.sleep(0.2)
            before = proc_status(server.pid)
            report = asyncio.run(run_load(base, uploads, args.requests, args.concurrency, n_works, args.idle))
            after = proc_status(server.pid)
            report |= {
                "server_rss_start_mib": before["VmRSS"],
                "server_peak_rss_mib": after["VmHWM"],
                "server_threads": after["Threads"],
                "fixture": "given"
                if args.classifier and args.index
                else f"{args.backbone} @ {args.image_size}px, {n_works} works",
                "server_workers": args.workers,
                "server_threads_flag": args.threads,
                "cpus": os.cpu_count(),
            }
        finally:
            server.terminate()
            server.wait(30)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 1 if report["errors"] else 0


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (96, 72), (120, 60, 30)).save(buf, "PNG")
    return buf.getvalue()


if __name__ == "__main__":
    sys.exit(main())
