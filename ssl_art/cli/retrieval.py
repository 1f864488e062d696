"""``ssl-art embed | index | query | analyse | metrics | plot | serve``: the retrieval commands.

Every subcommand is a thin wrapper over a function importable from :mod:`ssl_art.retrieval` (named in its help), so
scripts and notebooks do the same thing without the CLI. Defaults come from :class:`ssl_art.config.RetrievalCfg`;
``--config FILE`` (or the packaged ``retrieval/default`` preset) replaces them strictly and explicit flags win over
both. ``--device`` is ``auto`` and ``-k`` is ``RetrievalCfg.k`` (10) everywhere; numbers are checked by argparse
types, so ``-k 0`` or ``--image-size -1`` is one ``error:`` line before any model is loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import socket
from pathlib import Path
from typing import Any

from ssl_art.cli.errors import UsageError
from ssl_art.config import ConfigError, RetrievalCfg, config_from_dict, load_yaml
from ssl_art.config.choices import EMBEDDINGS
from ssl_art.config.presets import resolve_config


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def nonneg_int(text: str) -> int:
    """argparse type: an integer >= 0 (0 = auto)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0 = auto), got {v}")
    return v


def unit_float(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {v}")
    return v


def resolve_device(name: str) -> Any:
    """``auto`` -> cuda, then mps, then cpu (the training stages' rule); an absent device is a config error."""
    from ssl_art.runtime.device import resolve_device as pick

    try:
        return pick(name)
    except RuntimeError as e:
        raise ConfigError(str(e).replace("run.device", "--device")) from e


def check_port(host: str, port: int) -> None:
    """Refuse a port that is taken (or not ours to bind) before any model is loaded."""
    if not 0 <= port < 65536:
        raise ConfigError(f"--port {port} is not a TCP port; use 1-65535 (0 = any free port), e.g. --port 8000")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            why = "is in use" if e.errno == errno.EADDRINUSE else f"cannot be bound ({e.strerror})"
            raise ConfigError(f"port {port} on {host} {why}; pick another with --port (e.g. --port 8001)") from e


def _cfg(args: argparse.Namespace) -> RetrievalCfg:
    """RetrievalCfg from ``--config`` (strict), then every explicitly given flag of the same name."""
    path = getattr(args, "config", "")
    base = config_from_dict(RetrievalCfg, load_yaml(resolve_config(path, "retrieval"))) if path else RetrievalCfg()
    names = {f.name for f in dataclasses.fields(RetrievalCfg)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return dataclasses.replace(base, **given)


def _model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (the same one for embed, query and serve)")
    g.add_argument("--checkpoint", default="", help="ssl_art pretraining checkpoint (file or run folder)")
    g.add_argument("--backbone", default="resnet18", help="random-init timm backbone when no --checkpoint")
    g.add_argument("--model-seed", type=int, default=0, help="seed of the random-init backbone")


def _load_model(args: argparse.Namespace, image_size: int) -> Any:
    from ssl_art.retrieval.embedder import load_embedder

    return load_embedder(args.checkpoint, args.backbone, args.model_seed, image_size)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="", help="YAML with RetrievalCfg keys, or the preset retrieval/default")


_INDEX_HELP = {
    "exact_max": "auto: exact IndexFlatIP up to this many vectors (100000)",
    "nlist": "IVF cells (0 = 4*sqrt(N))",
    "nprobe": "IVF cells visited per query (0 = 2*sqrt(nlist) in [16, 512]; recall@10 >= 0.95 on clustered data)",
    "pq_m": "IVF-PQ bytes per vector at 8 bits (0 = D/8)",
    "pq_nbits": "IVF-PQ bits per sub-quantiser code (8)",
    "rerank": "IVF-PQ: re-score k*rerank candidates exactly from the embedding memmap (4; 0 = off)",
    "hnsw_m": "HNSW links per node (32)",
    "hnsw_ef_construction": "HNSW build beam (80)",
    "hnsw_ef_search": "HNSW search beam (128)",
    "train_size": "IVF training sample (0 = max(40*nlist, 10000))",
}


def _index_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--kind", dest="index_kind", choices=("auto", "flat", "ivf_flat", "ivf_pq", "hnsw"),
        help="auto: flat <= exact_max < ivf_flat (raw vectors <= 4 GiB) < ivf_pq; hnsw only on request",
    )  # fmt: skip
    for name, text in _INDEX_HELP.items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=nonneg_int, help=text)


def _parse_where(items: list[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    out = {}
    for it in items:
        if "=" not in it:
            raise UsageError(f"--where expects column=value, got '{it}'")
        k, v = it.split("=", 1)
        out[k] = v
    return out


def _cmd_embed(args: argparse.Namespace) -> None:
    from ssl_art import distributed
    from ssl_art.retrieval.embed import embed_collection

    cfg = _cfg(args)
    device = str(resolve_device(args.device))
    distributed.init_from_env("auto", resolve_device(args.device))  # under torchrun: rows sharded, rank 0 writes
    model = _load_model(args, cfg.image_size).to(device)
    src = args.checkpoint or f"random:{args.backbone}:seed{args.model_seed}"
    meta = embed_collection(
        model, args.collection, args.out, fmt=args.format, label_column=args.label_column, root=args.root,
        kind=cfg.embedding, dtype=cfg.dtype, image_size=cfg.image_size, batch_size=cfg.batch_size,
        chunk_rows=cfg.chunk_rows, num_workers=cfg.num_workers, device=device, source=src,
    )  # fmt: skip
    if distributed.is_main():
        print(json.dumps(dataclasses.asdict(meta) | {"bad_rows": len(meta.bad_rows)}))


def _cmd_index_build(args: argparse.Namespace) -> None:
    from ssl_art.retrieval.index import RetrievalIndex, index_params

    idx = RetrievalIndex.build(args.embeddings, _cfg(args))
    idx.save(args.out)
    info = index_params(idx.params) | {"n_indexed": len(idx.ids), "build_seconds": round(idx.build_seconds, 2)}
    print(json.dumps(info))


def _cmd_query(args: argparse.Namespace) -> None:
    from ssl_art.retrieval.embedder import model_hash
    from ssl_art.retrieval.index import RetrievalIndex
    from ssl_art.retrieval.query import query, results_to_json, results_to_table

    index = RetrievalIndex.load(args.index)
    model = _load_model(args, index.meta.image_size)
    index.check_model(model_hash(model))
    k = args.k or _cfg(args).k
    res = query(index, model, args.images, k=k, where=_parse_where(args.where), exclude_self=args.exclude_self)
    print(results_to_json(res) if args.json else results_to_table(res, args.label_column))
    if args.grid:
        from ssl_art.retrieval.plots import plot_query_grid

        plot_query_grid(res, args.grid, args.label_column)


def _cmd_analyse(args: argparse.Namespace) -> None:
    from ssl_art.retrieval.analysis import analyse_embeddings

    search = None
    if args.index:
        from ssl_art.retrieval.index import RetrievalIndex

        search = RetrievalIndex.load(args.index).search
    out = analyse_embeddings(
        args.embeddings, args.out, args.label_column, args.k, args.per_class, args.dup_threshold,
        search=search, center=args.center,
    )  # fmt: skip
    print(json.dumps({k: str(v) for k, v in out.items()}))


def _cmd_metrics(args: argparse.Namespace) -> None:
    from ssl_art.retrieval.evaluate import embedding_metrics

    print(json.dumps(embedding_metrics(args.embeddings, args.label_column, args.k, args.index or None), indent=1))


def _cmd_plot_map(args: argparse.Namespace) -> None:
    import numpy as np

    from ssl_art.retrieval.embed import MANIFEST_FILE, open_embeddings
    from ssl_art.retrieval.manifest import read_manifest
    from ssl_art.retrieval.plots import plot_embedding_map

    emb, meta = open_embeddings(args.embeddings)
    _, labels = read_manifest(Path(args.embeddings) / MANIFEST_FILE)
    good = np.setdiff1d(np.arange(meta.n), meta.bad_rows)
    lab = labels.get(args.label_column, [None] * meta.n)
    title = args.title or f"{meta.kind} embedding, model {meta.model_hash}"
    plot_embedding_map(
        emb[good], [lab[i] for i in good], args.out, args.method, args.max_points, title, max_iter=args.tsne_iter
    )
    print(args.out)


def _cmd_plot_gradcam(args: argparse.Namespace) -> None:
    from ssl_art.explain.gradcam import SelectHead, gradcam_png
    from ssl_art.finetune.model import load_finetuned
    from ssl_art.retrieval.embedder import list_images

    model, spec, _ = load_finetuned(args.checkpoint)
    if spec.kind != "classifier":
        raise ValueError(f"Grad-CAM needs a plain classifier checkpoint (best.pt), got kind '{spec.kind}'")
    if not 0 <= args.head < len(spec.columns):
        raise ValueError(f"--head must be in [0, {len(spec.columns) - 1}] (heads: {', '.join(spec.columns)})")
    wrapped = SelectHead(model, args.head)
    layer = wrapped.get_submodule(f"model.{args.layer}") if args.layer else None
    files = [str(f) for f in list_images(args.images)][: args.max_images]
    names = spec.classes[spec.columns[args.head]]
    gradcam_png(wrapped, files, args.out, spec.image_size, layer, names, args.backend)
    print(args.out)


def _cmd_serve(args: argparse.Namespace) -> None:
    try:
        from ssl_art.app.server import ServeSettings, load_state, serve
    except ImportError as e:
        raise ConfigError(f"the web app needs the serve extra: pip install 'ssl_art[serve]' ({e})") from e
    if not args.classifier and not args.index:
        raise ConfigError("give --classifier RUN (fine-tuned run folder or checkpoint), --index DIR, or both")
    check_port(args.host, args.port)
    state = load_state(args.classifier, args.index, args.checkpoint, args.backbone, args.model_seed, args.max_pixels)
    names = "host port workers queue inference_timeout max_upload_mb max_pixels request_timeout keep_alive"
    names += " max_connections light_workers light_queue"
    settings = ServeSettings(**{n: getattr(args, n) for n in names.split()}, k=args.k or _cfg(args).k)
    serve(state, settings)


def _sub(sub: Any, name: str, summary: str, **kw: Any) -> argparse.ArgumentParser:
    """A subparser whose help and description are ``summary`` (shown in ``ssl-art --help`` and ``CMD --help``)."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=summary, description=summary, **kw)
    return p


def add_parsers(sub: Any) -> None:
    """Add ``embed``, ``index``, ``query``, ``analyse``, ``metrics``, ``plot`` and ``serve`` to ``sub``."""
    p = _sub(sub, "embed", "collection -> embeddings memmap, resumable (retrieval.embed.embed_collection)")
    _common(p)
    _model_args(p)
    p.add_argument("--collection", required=True, help="folder, ImageFolder tree or CSV manifest")
    p.add_argument("--out", required=True, help="output folder (re-run to resume)")
    p.add_argument("--format", default="auto", choices=("auto", "folder", "imagefolder", "csv"))
    p.add_argument("--label-column", default="label")
    p.add_argument("--root", default="", help="base folder for relative CSV paths")
    p.add_argument("--embedding", choices=EMBEDDINGS, help="which embedding to export")
    p.add_argument("--dtype", choices=("float16", "float32"))
    p.add_argument("--image-size", dest="image_size", type=positive_int, help="input side (default 224)")
    p.add_argument("--batch-size", dest="batch_size", type=positive_int)
    p.add_argument("--chunk-rows", dest="chunk_rows", type=positive_int)
    p.add_argument("--num-workers", dest="num_workers", type=nonneg_int)
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu) | cpu | cuda | mps")
    p.set_defaults(func=_cmd_embed)

    p = _sub(sub, "index", "build a FAISS index from embeddings, or query it")
    isub = p.add_subparsers(dest="index_command", required=True)
    b = _sub(isub, "build", "embeddings -> saved index (retrieval.index.RetrievalIndex.build)")
    _common(b)
    b.add_argument("--embeddings", required=True)
    b.add_argument("--out", required=True)
    _index_flags(b)
    b.set_defaults(func=_cmd_index_build)

    for parent, name in ((isub, "query"), (sub, "query")):
        q = _sub(parent, name, "images/folders -> top-k similar works (retrieval.query.query)")
        _common(q)
        _model_args(q)
        q.add_argument("--index", required=True)
        q.add_argument("images", nargs="+", help="image files and/or folders")
        q.add_argument("-k", type=positive_int, default=None, help="hits per image (default: k of --config, 10)")
        q.add_argument("--where", action="append", help="label filter column=value (repeatable)")
        q.add_argument("--json", action="store_true", help="JSON instead of a table")
        q.add_argument("--label-column", default=None, help="label shown in the table/grid")
        q.add_argument("--exclude-self", action="store_true", help="drop the query itself from its hits")
        q.add_argument("--grid", default="", help="also save a query -> top-k thumbnail grid PNG")
        q.set_defaults(func=_cmd_query)

    p = _sub(sub, "analyse", "atypical works, likely mislabels, near duplicates (CSV)", aliases=["analyze"])
    p.add_argument("--embeddings", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--label-column", default="label")
    p.add_argument("-k", type=positive_int, default=10, help="neighbours per work")
    p.add_argument("--per-class", type=positive_int, default=20)
    p.add_argument("--dup-threshold", type=unit_float, default=0.95, help="cosine above which works are duplicates")
    p.add_argument("--index", default="", help="use this index for kNN (large collections) instead of exact search")
    p.add_argument("--center", action="store_true", help="subtract the mean embedding first (anisotropic features)")
    p.set_defaults(func=_cmd_analyse)

    p = _sub(sub, "metrics", "leave-one-out mAP@k / recall@k / precision@k, overall and per label")
    p.add_argument("--embeddings", required=True)
    p.add_argument("--label-column", default="label")
    p.add_argument("-k", type=positive_int, default=10)
    p.add_argument("--index", default="", help="also report this index's recall@k against exact search")
    p.set_defaults(func=_cmd_metrics)

    p = _sub(sub, "plot", "PNG plots: embedding map, Grad-CAM")
    psub = p.add_subparsers(dest="plot_command", required=True)
    m = _sub(psub, "map", "UMAP (or t-SNE) of the embeddings coloured by label")
    m.add_argument("--embeddings", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--label-column", default="label")
    m.add_argument("--method", default="auto", choices=("auto", "umap", "tsne"))
    m.add_argument("--max-points", type=positive_int, default=5000)
    m.add_argument("--title", default="")
    m.add_argument("--tsne-iter", type=positive_int, default=1000, help="t-SNE iterations (>= 250; ignored by UMAP)")
    m.set_defaults(func=_cmd_plot_map)

    g = _sub(psub, "gradcam", "Grad-CAM heatmaps of a fine-tuned classifier")
    g.add_argument("--checkpoint", required=True, help="fine-tune checkpoint (best.pt or run folder)")
    g.add_argument("images", nargs="+", help="image files and/or folders")
    g.add_argument("--out", required=True)
    g.add_argument("--head", type=nonneg_int, default=0, help="which label head (column) to explain")
    g.add_argument("--layer", default="", help="target layer inside the classifier (default: last timm stage)")
    g.add_argument("--backend", default="auto", choices=("auto", "grad-cam", "own"))
    g.add_argument("--max-images", type=positive_int, default=8)
    g.set_defaults(func=_cmd_plot_gradcam)

    p = _sub(sub, "serve", "web app + JSON API: drop a painting -> style labels, Grad-CAM and similar works")
    _common(p)
    _model_args(p)
    p.add_argument("--classifier", default="", help="fine-tune run folder or checkpoint (labels + Grad-CAM)")
    p.add_argument("--index", default="", help="index folder from `ssl-art index build` (similar works)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("-k", type=positive_int, default=None, help="hits per query (default: k of --config, 10)")
    p.add_argument("--workers", type=int, default=2, help="inference threads")
    p.add_argument("--queue", type=int, default=16, help="requests that may wait for a worker; more get 503")
    p.add_argument("--light-workers", type=int, default=2, help="threads for similar-by-row and thumbnails")
    p.add_argument("--light-queue", type=int, default=64, help="browsing requests that may wait; more get 503")
    p.add_argument("--inference-timeout", type=float, default=60.0, help="seconds per request before 504")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="request body limit (413 above)")
    p.add_argument("--max-pixels", type=int, default=50_000_000, help="largest uploaded image (width*height)")
    p.add_argument("--request-timeout", type=float, default=30.0, help="seconds to send a complete request")
    p.add_argument("--keep-alive", type=int, default=5, help="seconds an idle connection stays open")
    p.add_argument("--max-connections", type=int, default=512, help="open connections; more get 503")
    p.set_defaults(func=_cmd_serve)
