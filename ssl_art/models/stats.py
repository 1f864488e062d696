"""Parameter-free style statistics: per-channel mean and std of every backbone stage, as a retrieval embedding.

The first and second moments of a CNN's channel responses are what AdaIN (Huang & Belongie 2017) transfers as
"style" and what the diagonal of the Gatys Gram matrix holds: they describe colour, texture and brushwork while
discarding where things are. ``stats`` concatenates them over the intermediate maps the backbone exposes (shallow
to deep), each stage L2-normalised on its own so a wide late stage does not drown an early one, and the whole
vector L2-normalised. It has no parameters, so it exists for every checkpoint (and for random init); on
wikiart7-dev it was a better kNN embedding than the pooled vector for SimCLR and art_ssl checkpoints alike
(docs/benchmarks.md section 5). Width: ``2 * sum(C_i)`` (1920 for resnet18's four stages).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["channel_stats", "style_stats"]


def channel_stats(f: Tensor) -> Tensor:
    """Per-channel mean and (population) std over the spatial positions, in float32 (also under autocast).

    The population std (``correction=0``) keeps a ``1 x 1`` map finite (its std is 0, not NaN).

    Args:
        f: ``(B, C, H, W)`` feature map.

    Returns:
        ``(B, 2C)``: the ``C`` means, then the ``C`` stds.

    Raises:
        ValueError: ``f`` is not 4-dimensional.
    """
    if f.ndim != 4:
        raise ValueError(f"channel_stats expects a (B, C, H, W) map, got shape {tuple(f.shape)}")
    with torch.autocast(device_type=f.device.type, enabled=False):
        flat = f.float().flatten(2)
        return torch.cat([flat.mean(dim=2), flat.std(dim=2, correction=0)], dim=1)


def style_stats(maps: list[Tensor]) -> Tensor:
    """``[(B, C_i, H_i, W_i)]`` -> ``(B, 2 * sum(C_i))``: each stage's :func:`channel_stats`, L2-normalised per stage,
    concatenated and L2-normalised (every stage weighs the same in a cosine similarity).

    Raises:
        ValueError: ``maps`` is empty.
    """
    if not maps:
        raise ValueError("style_stats needs at least one feature map")
    parts = [F.normalize(channel_stats(m), dim=1) for m in maps]
    return F.normalize(torch.cat(parts, dim=1), dim=1)
