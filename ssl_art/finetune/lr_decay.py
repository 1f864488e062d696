"""Layer-wise learning-rate decay (BEiT / MAE ``util/lr_decay.py``) and freezing for timm ResNets, ConvNeXts and ViTs.

Layers are numbered from the input: ``0`` is the stem (ViT: patch embedding, cls token, position embedding), ``1..L``
are the stages of a CNN or the blocks of a ViT, found with timm's own ``group_matcher(coarse=True)`` (so no
per-architecture name tables live here), and everything outside the timm model (the classification heads) is layer
``L + 1``. Layer ``l`` trains with ``lr * decay ** (L + 1 - l)``: the heads at the full rate, the stem slowest.
Parameters are then split into decay / no-decay (``ndim < 2``: biases and norms) groups exactly like MAE's
``param_groups_lrd``; each group carries ``lr_scale``, which the training loop multiplies into the scheduled lr.
"""

from __future__ import annotations

from typing import Any

from timm.models import group_parameters
from torch import nn


def layer_ids(timm_model: nn.Module) -> tuple[dict[str, int], int]:
    """Map each parameter name of a timm model to its layer id.

    Args:
        timm_model: a ``timm.create_model`` network that implements ``group_matcher``.

    Returns:
        ``(ids, L)``: parameter name -> layer id in ``[0, L]`` and the number of stages/blocks ``L`` (the stem is 0).
        A name timm leaves ungrouped (e.g. a final norm or head) gets ``L``.

    Raises:
        ValueError: when the model has no ``group_matcher``.
    """
    if not hasattr(timm_model, "group_matcher"):
        raise ValueError(f"{type(timm_model).__name__} has no group_matcher(); layer-wise decay needs a timm model")
    matcher: Any = timm_model.group_matcher
    groups = group_parameters(timm_model, matcher(coarse=True), reverse=False)
    ids: dict[str, int] = {}
    for gid, names in groups.items():
        for name in names:
            ids[name] = int(gid)
    n_layers = max(ids.values()) if ids else 0
    for name, _ in timm_model.named_parameters():
        ids.setdefault(name, n_layers)
    return ids, n_layers


def module_layer_ids(module: nn.Module, timm_model: nn.Module) -> tuple[dict[str, int], int]:
    """Layer ids for every parameter of ``module``, which contains ``timm_model`` somewhere inside.

    Parameters of ``timm_model`` get their stem/stage/block id; all others (heads, gates) get ``L + 1``.

    Returns:
        ``(ids, L)`` with ids keyed by ``module.named_parameters()`` names.
    """
    inner, n_layers = layer_ids(timm_model)
    prefix = next((n + "." for n, m in module.named_modules() if m is timm_model), None)
    if prefix is None:
        raise ValueError("timm_model is not a submodule of module")
    ids: dict[str, int] = {}
    for name, _ in module.named_parameters():
        if prefix == "." or name.startswith(prefix):
            ids[name] = inner[name[len(prefix) :] if prefix != "." else name]
        else:
            ids[name] = n_layers + 1
    return ids, n_layers


def param_groups_lrd(
    module: nn.Module, timm_model: nn.Module, weight_decay: float, layer_decay: float
) -> list[dict[str, Any]]:
    """Optimiser groups with per-layer ``lr_scale`` and decay / no-decay split (MAE ``param_groups_lrd``).

    Args:
        module: the model being optimised (its frozen parameters are skipped).
        timm_model: the timm network inside ``module`` whose stages/blocks define the layers.
        weight_decay: applied to ``ndim >= 2`` parameters; biases and norm parameters get 0.
        layer_decay: per-layer multiplier in ``(0, 1]``; ``1.0`` gives every group ``lr_scale = 1``.

    Returns:
        A list of ``{"params", "weight_decay", "lr_scale", "layer_id"}`` dicts, one per (layer, decay) pair used.
    """
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    ids, n_layers = module_layer_ids(module, timm_model)
    top = n_layers + 1
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        lid = ids[name]
        no_decay = p.ndim < 2
        key = (lid, no_decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "names": [],
                "weight_decay": 0.0 if no_decay else weight_decay,
                "lr_scale": layer_decay ** (top - lid),
                "layer_id": lid,
            }
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def freeze_for_mode(module: nn.Module, timm_model: nn.Module, mode: str, last_n: int = 1) -> int:
    """Set ``requires_grad`` for a fine-tuning mode; returns the number of trainable parameters.

    Args:
        module: the whole classifier (backbone + heads).
        timm_model: the backbone's timm network inside ``module``.
        mode: ``linear`` (only parameters outside ``timm_model``), ``last_n`` (also its last ``last_n``
            stages/blocks) or ``full`` (everything).
        last_n: how many of the ``L`` stages/blocks stay trainable with ``mode='last_n'``.
    """
    if mode not in ("linear", "last_n", "full"):
        raise ValueError(f"mode must be one of linear, last_n, full; got '{mode}'")
    ids, n_layers = module_layer_ids(module, timm_model)
    if mode == "last_n" and not 1 <= last_n <= n_layers:
        raise ValueError(f"last_n must be in [1, {n_layers}] for this backbone, got {last_n}")
    first_trainable = {"linear": n_layers + 1, "last_n": n_layers + 1 - last_n, "full": 0}[mode]
    n = 0
    for name, p in module.named_parameters():
        p.requires_grad_(ids[name] >= first_trainable)
        n += p.numel() if p.requires_grad else 0
    return n
