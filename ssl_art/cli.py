"""``ssl-art``: the retrieval command line (embed, index, query, analyse, metrics, plot, serve).

Every subcommand is a thin wrapper over a function importable from :mod:`ssl_art.retrieval` (named in its help), so
scripts and notebooks do the same thing without the CLI. Defaults come from :class:`ssl_art.config.RetrievalCfg`;
``--config FILE`` (e.g. ``configs/retrieval/default.yaml``) replaces them strictly (unknown keys are errors) and
explicit flags win over both. Only this module reads argparse; library code raises, it never exits.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ssl_art.config import RetrievalCfg, config_from_dict, load_yaml

EXAMPLES = """examples:
  # 1. embed a collection with a pretrained checkpoint (resumable; re-run the same command after an interruption)
  ssl-art embed --collection ../shared/data/wikiart7-dev --checkpoint runs/art/checkpoints/last.pt --out emb/art
  #    ... or with a random-init backbone as a baseline
  ssl-art embed --collection ../shared/data/wikiart7-dev --backbone resnet18 --out emb/random
  # 2. build the index (kind chosen by size; override with --kind / --nlist / --nprobe or --config)
  ssl-art index build --embeddings emb/art --out idx/art
  # 3. query with files or folders, filtered by a label column, as a table or JSON, plus a thumbnail grid
  ssl-art query --index idx/art --checkpoint runs/art/checkpoints/last.pt img1.jpg photos/ -k 8 \\
      --where label=Baroque --json --grid docs/query_grid.png
  # 4. collection analysis: atypical works, likely mislabels, near duplicates (CSV)
  ssl-art analyse --embeddings emb/art --out analysis/art
  # 5. leave-one-out retrieval metrics (mAP@k, recall@k, precision@k), overall and per label
  ssl-art metrics --embeddings emb/art -k 10
  # 6. plots: UMAP/t-SNE map coloured by label
  ssl-art plot map --embeddings emb/art --out docs/umap.png
  #    ... and Grad-CAM heatmaps of a fine-tuned classifier
  ssl-art plot gradcam --checkpoint runs/ft/checkpoints/best.pt img1.jpg img2.jpg --out docs/gradcam.png
  # 7. web app + JSON API: drop a painting -> style labels, Grad-CAM, most similar works (either part alone works)
  ssl-art serve --classifier runs/ft --index idx/art --port 8000
"""


def _cfg(args: argparse.Namespace) -> RetrievalCfg:
    """RetrievalCfg from ``--config`` (strict), then every explicitly given flag of the same name."""
    base = config_from_dict(RetrievalCfg, load_yaml(args.config)) if getattr(args, "config", "") else RetrievalCfg()
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
    p.add_argument("--config", default="", help="YAML with RetrievalCfg keys (configs/retrieval/default.yaml)")


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
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, help=text)


def _parse_where(items: list[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    out = {}
    for it in items:
        if "=" not in it:
            raise SystemExit(f"--where expects column=value, got '{it}'")
        k, v = it.split("=", 1)
        out[k] = v
    return out


def cmd_embed(args: argparse.Namespace) -> None:
    from ssl_art.retrieval.embed import embed_collection

    cfg = _cfg(args)
    model = _load_model(args, cfg.image_size)
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    src = args.checkpoint or f"random:{args.backbone}:seed{args.model_seed}"
    meta = embed_collection(
        model, args.collection, args.out, fmt=args.format, label_column=args.label_column, root=args.root,
        kind=cfg.embedding, dtype=cfg.dtype, image_size=cfg.image_size, batch_size=cfg.batch_size,
        chunk_rows=cfg.chunk_rows, num_workers=cfg.num_workers, device=device, source=src,
    )  # fmt: skip
    print(json.dumps(dataclasses.asdict(meta) | {"bad_rows": len(meta.bad_rows)}))


def _index_params(cfg: RetrievalCfg) -> Any:
    from ssl_art.retrieval.index import IndexParams

    kw = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(IndexParams) if hasattr(cfg, f.name)}
    return IndexParams(**{**kw, "kind": cfg.index_kind})


def cmd_index_build(args: argparse.Namespace) -> None:
    from ssl_art.retrieval.index import RetrievalIndex

    idx = RetrievalIndex.build(args.embeddings, _index_params(_cfg(args)))
    idx.save(args.out)
    info = dataclasses.asdict(idx.params) | {"n_indexed": len(idx.ids), "build_seconds": round(idx.build_seconds, 2)}
    print(json.dumps(info))


def cmd_query(args: argparse.Namespace) -> None:
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


def cmd_analyse(args: argparse.Namespace) -> None:
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


def cmd_metrics(args: argparse.Namespace) -> None:
    from ssl_art.retrieval.evaluate import embedding_metrics

    print(json.dumps(embedding_metrics(args.embeddings, args.label_column, args.k, args.index or None), indent=1))


def cmd_plot_map(args: argparse.Namespace) -> None:
    import numpy as np

    from ssl_art.retrieval.embed import MANIFEST_FILE, open_embeddings, read_manifest
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


def cmd_plot_gradcam(args: argparse.Namespace) -> None:
    from ssl_art.finetune.model import load_finetuned
    from ssl_art.retrieval.embedder import list_images
    from ssl_art.retrieval.gradcam import SelectHead, gradcam_png

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


def cmd_serve(args: argparse.Namespace) -> None:
    try:
        from ssl_art.app.server import ServeSettings, load_state, serve
    except ImportError as e:
        raise ValueError(f"the web app needs the serve extra: pip install 'ssl_art[serve]' ({e})") from e
    if not args.classifier and not args.index:
        raise ValueError("give --classifier RUN (fine-tuned run folder or checkpoint), --index DIR, or both")
    state = load_state(args.classifier, args.index, args.checkpoint, args.backbone, args.model_seed, args.max_pixels)
    names = "host port workers queue inference_timeout max_upload_mb max_pixels request_timeout keep_alive"
    names += " max_connections light_workers light_queue"
    serve(state, ServeSettings(**{n: getattr(args, n) for n in names.split()}))


def build_parser() -> argparse.ArgumentParser:
    """The ``ssl-art`` argument parser (exposed for tests and docs)."""
    fmt = argparse.RawDescriptionHelpFormatter
    ap = argparse.ArgumentParser("ssl-art", description=__doc__, epilog=EXAMPLES, formatter_class=fmt)
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    ap.add_argument(
        "--threads", type=int, default=0,
        help="cap FAISS OpenMP, BLAS and torch threads (0 = library defaults); 1 is fastest for single queries "
        "on a busy machine (docs/benchmarks_retrieval.md)",
    )  # fmt: skip
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("embed", help="collection -> embeddings memmap (retrieval.embed.embed_collection)")
    _common(p)
    _model_args(p)
    p.add_argument("--collection", required=True, help="folder, ImageFolder tree or CSV manifest")
    p.add_argument("--out", required=True, help="output folder (re-run to resume)")
    p.add_argument("--format", default="auto", choices=("auto", "folder", "imagefolder", "csv"))
    p.add_argument("--label-column", default="label")
    p.add_argument("--root", default="", help="base folder for relative CSV paths")
    p.add_argument("--embedding", choices=("auto", "pooled", "fused", "gram"), help="which embedding to export")
    p.add_argument("--dtype", choices=("float16", "float32"))
    p.add_argument("--image-size", dest="image_size", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--chunk-rows", dest="chunk_rows", type=int)
    p.add_argument("--num-workers", dest="num_workers", type=int)
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("index", help="build or query a FAISS index")
    isub = p.add_subparsers(dest="index_command", required=True)
    b = isub.add_parser("build", help="embeddings -> saved index (retrieval.index.RetrievalIndex.build)")
    _common(b)
    b.add_argument("--embeddings", required=True)
    b.add_argument("--out", required=True)
    _index_flags(b)
    b.set_defaults(func=cmd_index_build)

    for parent, name in ((isub, "query"), (sub, "query")):
        q = parent.add_parser(name, help="images/folders -> top-k similar works (retrieval.query.query)")
        _common(q)
        _model_args(q)
        q.add_argument("--index", required=True)
        q.add_argument("images", nargs="+", help="image files and/or folders")
        q.add_argument("-k", type=int, default=None, help="hits per image (default: k of --config, 10)")
        q.add_argument("--where", action="append", help="label filter column=value (repeatable)")
        q.add_argument("--json", action="store_true", help="JSON instead of a table")
        q.add_argument("--label-column", default=None, help="label shown in the table/grid")
        q.add_argument("--exclude-self", action="store_true", help="drop the query itself from its hits")
        q.add_argument("--grid", default="", help="also save a query -> top-k thumbnail grid PNG")
        q.set_defaults(func=cmd_query)

    p = sub.add_parser("analyse", aliases=["analyze"], help="atypical / mislabel / near-duplicate CSVs")
    p.add_argument("--embeddings", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--label-column", default="label")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--per-class", type=int, default=20)
    p.add_argument("--dup-threshold", type=float, default=0.95, help="cosine above which works are near duplicates")
    p.add_argument("--index", default="", help="use this index for kNN (large collections) instead of exact search")
    p.add_argument("--center", action="store_true", help="subtract the mean embedding first (anisotropic features)")
    p.set_defaults(func=cmd_analyse)

    p = sub.add_parser("metrics", help="leave-one-out mAP@k / recall@k / precision@k, overall and per label")
    p.add_argument("--embeddings", required=True)
    p.add_argument("--label-column", default="label")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--index", default="", help="also report this index's recall@k against exact search")
    p.set_defaults(func=cmd_metrics)

    p = sub.add_parser("plot", help="PNG plots")
    psub = p.add_subparsers(dest="plot_command", required=True)
    m = psub.add_parser("map", help="UMAP (or t-SNE) of the embeddings coloured by label")
    m.add_argument("--embeddings", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--label-column", default="label")
    m.add_argument("--method", default="auto", choices=("auto", "umap", "tsne"))
    m.add_argument("--max-points", type=int, default=5000)
    m.add_argument("--title", default="")
    m.add_argument("--tsne-iter", type=int, default=1000, help="t-SNE iterations (>= 250; ignored by UMAP)")
    m.set_defaults(func=cmd_plot_map)

    g = psub.add_parser("gradcam", help="Grad-CAM heatmaps of a fine-tuned classifier (retrieval.gradcam)")
    g.add_argument("--checkpoint", required=True, help="fine-tune checkpoint (best.pt or run folder)")
    g.add_argument("images", nargs="+", help="image files and/or folders")
    g.add_argument("--out", required=True)
    g.add_argument("--head", type=int, default=0, help="which label head (column) to explain")
    g.add_argument("--layer", default="", help="target layer inside the classifier (default: last timm stage)")
    g.add_argument("--backend", default="auto", choices=("auto", "grad-cam", "own"))
    g.add_argument("--max-images", type=int, default=8)
    g.set_defaults(func=cmd_plot_gradcam)

    p = sub.add_parser("serve", help="web app + JSON API: style labels, Grad-CAM and similar works (ssl_art.app)")
    _model_args(p)
    p.add_argument("--classifier", default="", help="fine-tune run folder or checkpoint (labels + Grad-CAM)")
    p.add_argument("--index", default="", help="index folder from `ssl-art index build` (similar works)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
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
    p.set_defaults(func=cmd_serve)
    return ap


def set_threads(n: int) -> None:
    """Cap every thread pool retrieval uses at ``n``: FAISS's OpenMP, the BLAS libraries (threadpoolctl), torch."""
    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    faiss.omp_set_num_threads(n)
    threadpool_limits(n)  # applied now, kept for the process (not used as a context manager)
    torch.set_num_threads(n)


def main(argv: list[str] | None = None) -> None:
    """Console entry point ``ssl-art``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    # faiss-cpu >= 1.12 wheels are one dynamic-dispatch build (get_compile_options() "DD AVX2 AVX512 ...", SIMD level
    # picked at run time); the loader still probes the old per-ISA modules and logs harmless "Could not load" lines
    logging.getLogger("faiss.loader").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    if args.threads:
        set_threads(args.threads)
    from ssl_art.data.decode import BadImageError

    try:
        args.func(args)
    except (ValueError, FileNotFoundError, BadImageError) as e:
        print(f"ssl-art: error: {e}", file=sys.stderr)
        raise SystemExit(2) from e


if __name__ == "__main__":
    main()
