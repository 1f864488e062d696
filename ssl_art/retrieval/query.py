"""Query API: image path(s) or folders -> top-k most similar works, as dataclasses, JSON or a text table.

:func:`query` first checks that the model is the one the index was built from (a different model's embeddings live
in another space, so its neighbours would be silently meaningless), embeds the images exactly as the collection
was embedded (same kind, same eval transform and size), then searches, optionally restricted to works whose label
column has a given value (``where={"label": "Baroque"}``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from numpy.typing import NDArray

from ssl_art.retrieval.embedder import Embedder, embed_images, list_images, model_hash
from ssl_art.retrieval.index import RetrievalIndex


@dataclass
class Hit:
    """One retrieved work."""

    rank: int
    row: int  # manifest row
    path: str
    score: float  # cosine similarity
    labels: dict[str, str | None] = field(default_factory=dict)


@dataclass
class QueryResult:
    """The hits of one query image, best first."""

    query: str
    hits: list[Hit]


def hits_for(
    index: RetrievalIndex, scores: NDArray[Any], rows: NDArray[Any], names: Sequence[str]
) -> list[QueryResult]:
    """Wrap ``search`` output ``(Q, k)`` into :class:`QueryResult` s (padding rows ``-1`` dropped)."""
    out = []
    for name, s, r in zip(names, scores, rows):
        hits = [
            Hit(j + 1, int(row), index.paths[row], float(sc), {c: v[row] for c, v in index.labels.items()})
            for j, (sc, row) in enumerate(zip(s, r))
            if row >= 0
        ]
        out.append(QueryResult(str(name), hits))
    return out


def query(
    index: RetrievalIndex,
    model: Embedder,
    images: Sequence[str | Path],
    k: int = 10,
    where: dict[str, str] | None = None,
    exclude_self: bool = False,
) -> list[QueryResult]:
    """Top-``k`` works most similar in style to each image.

    Args:
        index: a loaded :class:`RetrievalIndex`.
        model: the model that produced the index's embeddings (checked by hash).
        images: image files and/or folders (searched recursively).
        k: hits per image.
        where: optional ``{label column: value}`` filter.
        exclude_self: drop hits whose path equals the query path (querying with a collection member).

    Raises:
        ModelMismatchError: ``model`` is not the index's model.
    """
    index.check_model(model_hash(model))
    files = list_images(images)
    if not files:
        raise ValueError(f"no images found in {list(map(str, images))}")
    q = embed_images(model, files, index.meta.kind, index.meta.image_size)
    scores, rows = index.search(q, k + 1 if exclude_self else k, where)
    results = hits_for(index, scores, rows, [str(f) for f in files])
    if exclude_self:
        for r in results:
            same = [h for h in r.hits if Path(h.path).resolve() == Path(r.query).resolve()]
            r.hits = [h for h in r.hits if h not in same][:k]
            for j, h in enumerate(r.hits):
                h.rank = j + 1
    return results


def results_to_json(results: Sequence[QueryResult]) -> str:
    """Indented JSON list of ``{"query", "hits": [{"rank", "row", "path", "score", "labels"}]}``."""
    return json.dumps([asdict(r) for r in results], indent=1)


def results_to_table(results: Sequence[QueryResult], label_column: str | None = None) -> str:
    """Plain-text table, one block per query: rank, score, label and path."""
    lines = []
    for r in results:
        lines.append(f"query: {r.query}")
        col = label_column or next(iter(r.hits[0].labels), None) if r.hits else label_column
        lines.append(f"  {'rank':>4}  {'score':>7}  {(col or 'label'):<24}  path")
        for h in r.hits:
            lab = (h.labels.get(col) if col else None) or "-"
            lines.append(f"  {h.rank:>4}  {h.score:>7.4f}  {lab:<24}  {h.path}")
    return "\n".join(lines)
