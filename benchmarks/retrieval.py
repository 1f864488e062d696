"""Retrieval index benchmark: exact vs IVF vs HNSW on clustered synthetic 512-d vectors, plus FAISS vs sklearn.

For each size N (``--sizes``), N + Q unit vectors are generated in chunks by
:func:`ssl_art.retrieval.synthetic.iter_clustered` (1000 clusters, 32-d within-cluster subspace, isotropic noise);
the last Q are held-out queries. For each index kind (built by :func:`ssl_art.retrieval.index.build_faiss_index`
with its documented default parameters) it reports:

* build time (training included) and memory: serialized index bytes and the process RSS growth during the build;
* query latency p50/p99 for single queries (``--single`` of them, one at a time) and for batches of 100;
* recall@k of the index against exact search (``IndexFlatIP``) on the Q held-out queries.

It also times exact kNN of a 100-query batch with FAISS ``IndexFlatIP`` and with scikit-learn's brute-force
``NearestNeighbors(metric="cosine")`` in the same run, and reports the ratio (sklearn time / FAISS time), after
checking that both return the same neighbours. Output: JSON on stdout, then a markdown table (``--md FILE`` also
writes it). Memory-conscious: float32 throughout, data generated in 64k-row blocks into one preallocated array.

    python benchmarks/retrieval.py --sizes 10000,100000 --md docs/benchmarks_retrieval.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import scipy.linalg  # noqa: F401  (loads scipy's OpenBLAS now, so --threads caps it too)
import sklearn
from sklearn.neighbors import NearestNeighbors

from ssl_art.config import RetrievalCfg
from ssl_art.eval.search import search_index
from ssl_art.retrieval.evaluate import approximate_recall
from ssl_art.retrieval.index import build_faiss_index, search_params
from ssl_art.retrieval.synthetic import iter_clustered


def rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def blas_info() -> str:
    """Which BLAS/OpenMP pools are loaded, with their kernel architecture and thread counts (threadpoolctl)."""
    from threadpoolctl import threadpool_info

    return "; ".join(
        f"{Path(i['filepath']).name} {i.get('version') or ''} {i.get('architecture', '')} {i['num_threads']}t".strip()
        for i in threadpool_info()
    )


def generate(n: int, d: int, seed: int) -> np.ndarray:
    x = np.empty((n, d), dtype=np.float32)
    s = 0
    for block, _ in iter_clustered(n, d, seed=seed):
        x[s : s + len(block)] = block
        s += len(block)
    return x


def index_bytes(index: faiss.Index) -> int:
    with tempfile.NamedTemporaryFile(suffix=".faiss") as f:
        faiss.write_index(index, f.name)
        return os.path.getsize(f.name)


def pct(a: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(a) * 1000.0, q))  # ms


def time_queries(
    index: faiss.Index, params: Any, q: np.ndarray, k: int, n_single: int, n_batches: int
) -> dict[str, float]:
    single, batch = [], []
    for i in range(min(n_single, len(q))):
        t = time.perf_counter()
        search_index(index, q[i : i + 1], k, params)
        single.append(time.perf_counter() - t)
    for b in range(n_batches):
        qb = q[(b * 100) % max(1, len(q) - 100) :][:100]
        t = time.perf_counter()
        search_index(index, qb, k, params)
        batch.append(time.perf_counter() - t)
    return {
        "single_p50_ms": pct(single, 50),
        "single_p99_ms": pct(single, 99),
        "batch100_p50_ms": pct(batch, 50),
        "batch100_p99_ms": pct(batch, 99),
    }


def timed(f: Any, repeats: int) -> tuple[float, float, Any]:
    """Median wall and CPU (this process) seconds of ``f()`` over ``repeats`` calls, and the last result."""
    wall, cpu, out = [], [], None
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        out = f()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return float(np.median(wall)), float(np.median(cpu)), out


def faiss_vs_sklearn(x: np.ndarray, q: np.ndarray, k: int, repeats: int, n_queries: int) -> dict[str, float]:
    """Exact kNN of one ``n_queries`` batch: FAISS as shipped, FAISS through ``search_index``, sklearn brute force.

    "FAISS default" is a plain ``IndexFlatIP.search``: FAISS 1.15 switches to BLAS only when
    ``n_queries * d >= distance_compute_blas_threshold`` (128000, i.e. 250 queries at d=512), otherwise it runs one
    memory-bound SIMD scan of the database per query. ``search_index`` (what ``RetrievalIndex`` uses) lowers the
    threshold so batches of ``BLAS_MIN_QUERIES`` or more go through sgemm.
    """
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    qb = np.ascontiguousarray(q[:n_queries])
    fw, fc, (_, fi) = timed(lambda: flat.search(qb, k), repeats)
    bw, bc, (_, bi) = timed(lambda: search_index(flat, qb, k), repeats)
    nn = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="cosine").fit(x)
    sw, sc, (_, si) = timed(lambda: nn.kneighbors(qb), repeats)
    agree = min(approximate_recall(fi, si), approximate_recall(bi, si))
    return {
        "queries": len(qb),
        "faiss_default_ms": fw * 1000,
        "faiss_default_cpu_ms": fc * 1000,
        "faiss_batched_ms": bw * 1000,
        "faiss_batched_cpu_ms": bc * 1000,
        "sklearn_brute_ms": sw * 1000,
        "sklearn_brute_cpu_ms": sc * 1000,
        "sklearn_over_faiss_default": sw / fw,
        "sklearn_over_faiss_batched": sw / bw,
        "agreement": agree,
    }


def run_size(n: int, d: int, kinds: list[str], n_queries: int, k: int, args: argparse.Namespace) -> dict[str, Any]:
    t = time.perf_counter()
    data = generate(n + n_queries, d, seed=args.seed)
    x, q = data[:n], np.ascontiguousarray(data[n:])
    gen_s = time.perf_counter() - t
    exact = faiss.IndexFlatIP(d)
    exact.add(x)
    _, truth = exact.search(q, k)
    del exact
    out: dict[str, Any] = {"n": n, "d": d, "generate_s": gen_s, "kinds": {}}
    for kind in kinds:
        r0 = rss_bytes()
        t = time.perf_counter()
        index, p = build_faiss_index(x, RetrievalCfg(index_kind=kind))
        build_s = time.perf_counter() - t
        rss = rss_bytes() - r0
        params = search_params(p)
        _, got = search_index(index, q, k, params)
        res: dict[str, Any] = {"build_s": build_s, "index_bytes": index_bytes(index), "rss_delta_bytes": rss}
        res |= time_queries(index, params, q, k, args.single, args.batches)
        res[f"recall@{k}"] = approximate_recall(got, truth)
        res["params"] = {"nlist": p.nlist, "nprobe": p.nprobe} if kind.startswith("ivf") else {}
        if kind == "hnsw":
            res["params"] = {"M": p.hnsw_m, "efConstruction": p.hnsw_ef_construction, "efSearch": p.hnsw_ef_search}
        out["kinds"][kind] = res
        print(f"# n={n} {kind}: build {build_s:.1f}s recall {res[f'recall@{k}']:.3f}", file=sys.stderr, flush=True)
        del index
    out["faiss_vs_sklearn"] = [faiss_vs_sklearn(x, q, k, args.repeats, int(nq)) for nq in args.ratio_queries.split(",")]
    del data, x, q
    return out


def markdown(results: list[dict[str, Any]], k: int, header: dict[str, Any]) -> str:
    lines = [
        f"Machine: {header['machine']}, {header['threads']} FAISS threads; faiss {header['faiss']} "
        f"(compile options `{header['faiss_compile']}`, runtime SIMD level {header['faiss_simd']}), "
        f"scikit-learn {header['sklearn']}. BLAS/OpenMP pools: {header['blas']}. "
        f"Data: clustered synthetic unit vectors, d={header['d']}, {header['queries']} held-out queries, k={k}. "
        "Latencies in ms.",
        "",
        f"| N | index | params | build s | index MB | RSS delta MB | single p50 | single p99 | batch-100 p50 "
        f"| batch-100 p99 | recall@{k} |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for kind, v in r["kinds"].items():
            ps = ", ".join(f"{a}={b}" for a, b in v["params"].items()) or "exact"
            lines.append(
                f"| {r['n']:,} | {kind} | {ps} | {v['build_s']:.2f} | {v['index_bytes'] / 2**20:.1f} | "
                f"{v['rss_delta_bytes'] / 2**20:.1f} | {v['single_p50_ms']:.2f} | {v['single_p99_ms']:.2f} | "
                f"{v['batch100_p50_ms']:.1f} | {v['batch100_p99_ms']:.1f} | {v[f'recall@{k}']:.3f} |"
            )
    lines += [
        "",
        "Exact kNN of one query batch, FAISS `IndexFlatIP` vs scikit-learn `NearestNeighbors(algorithm='brute', "
        "metric='cosine')`, same data, same run, same thread count; median of repeats, wall ms (CPU ms of the "
        "process in brackets). *FAISS default* = plain `index.search`; *FAISS batched* = "
        "`ssl_art.eval.search.search_index` (BLAS for >= 8 queries). Ratio > 1 means FAISS is faster.",
        "",
        "| N | queries | FAISS default ms | FAISS batched ms | sklearn ms | sklearn / FAISS default "
        "| sklearn / FAISS batched | neighbour agreement |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for f in r["faiss_vs_sklearn"]:
            lines.append(
                f"| {r['n']:,} | {f['queries']} | {f['faiss_default_ms']:.1f} ({f['faiss_default_cpu_ms']:.0f}) "
                f"| {f['faiss_batched_ms']:.1f} ({f['faiss_batched_cpu_ms']:.0f}) "
                f"| {f['sklearn_brute_ms']:.1f} ({f['sklearn_brute_cpu_ms']:.0f}) "
                f"| {f['sklearn_over_faiss_default']:.2f}x | {f['sklearn_over_faiss_batched']:.2f}x "
                f"| {f['agreement']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated collection sizes")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--kinds", default="flat,ivf_flat,hnsw", help="any of flat,ivf_flat,ivf_pq,hnsw")
    ap.add_argument("--queries", type=int, default=1000, help="held-out queries (recall and batches)")
    ap.add_argument("--single", type=int, default=200, help="single-query latency samples")
    ap.add_argument("--batches", type=int, default=10, help="batch-of-100 latency samples")
    ap.add_argument("--repeats", type=int, default=3, help="FAISS vs sklearn repeats")
    ap.add_argument("--ratio-queries", default="100,1000", help="batch sizes of the FAISS vs sklearn comparison")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--md", default="", help="also write the markdown table to this file")
    ap.add_argument("--threads", type=int, default=0, help="FAISS OpenMP threads (0 = FAISS default)")
    args = ap.parse_args(argv)
    if args.threads:
        # on a shared, oversubscribed box OpenMP threads spin-wait for busy cores: 1 thread is the honest setting;
        # threadpoolctl caps the BLAS pools too (FAISS's and scikit-learn's), so both sides get the same threads
        from threadpoolctl import threadpool_limits

        faiss.omp_set_num_threads(args.threads)
        threadpool_limits(args.threads)
    header = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores ({platform.processor() or platform.system()})",
        "threads": faiss.omp_get_max_threads(),
        "rss_start_mb": rss_bytes() / 2**20,
        "faiss": faiss.__version__,
        "faiss_compile": faiss.get_compile_options().strip(),
        "faiss_simd": faiss.SIMDConfig.get_level_name() if hasattr(faiss, "SIMDConfig") else "n/a",
        "blas": blas_info(),
        "sklearn": sklearn.__version__,
        "d": args.dim,
        "queries": args.queries,
    }
    results = [
        run_size(int(n), args.dim, args.kinds.split(","), args.queries, args.k, args) for n in args.sizes.split(",")
    ]
    print(json.dumps({"header": header, "results": results}, indent=1))
    md = markdown(results, args.k, header)
    print(md)
    if args.md:
        with open(args.md, "w") as f:
            f.write(
                "# Retrieval index benchmark\n\nCommand: `python benchmarks/retrieval.py "
                + " ".join(argv or sys.argv[1:])
                + "`\n\n"
                + md
            )


if __name__ == "__main__":
    main()
