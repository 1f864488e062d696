"""The valid values of string options with fixed choices, by dotted key: one table, checked on load, shown in help.

Its own leaf so that loading (:mod:`ssl_art.config.load`) and help (:mod:`ssl_art.config.help`) both read it
without importing each other.
"""

from __future__ import annotations

# what an embedding may be chosen as (methods' embed() keys; "auto" = the method's default_embedding)
EMBEDDINGS: tuple[str, ...] = ("auto", "pooled", "fused", "gram", "stats")

# dotted key -> valid values of string options with fixed choices. Rooms above the config add their own with
# register_choices: ``method`` comes from ssl_art.methods.registry, ``ft.*`` from ssl_art.finetune.
_CHOICES: dict[str, tuple[str, ...]] = {
    "data.format": ("auto", "folder", "imagefolder", "csv"),
    "data.aug.preset": ("simclr", "art", "none"),
    "data.aug.crop_overlap": ("any", "split"),
    "data.aug.jitter_views": ("all", "first"),
    "optim.name": ("adamw", "sgd", "lars"),
    "run.device": ("auto", "cpu", "cuda", "mps"),
    "run.amp": ("auto", "off", "bf16", "fp16"),
    "dist.backend": ("auto", "nccl", "gloo"),
    "dist.sync_bn": ("auto", "on", "off"),
    "eval.embedding": EMBEDDINGS,
    "model.fusion.pool": ("avg", "gem"),
    "loss.teacher_views": ("alternate", "all"),
    "run.budget_clock": ("wall", "process"),
    "eval.knn_backend": ("auto", "faiss", "torch"),
    "eval.linear_optimizer": ("adamw", "lbfgs"),
}


def register_choices(key: str, choices: tuple[str, ...]) -> None:
    """Declare (or replace) the valid values of a string option, checked on load.

    Rooms above the config call it so the config imports none of them: the method registry publishes the valid
    ``method`` names, fine-tuning its ``ft.*`` choices.
    """
    _CHOICES[key] = choices


def registered_choices() -> dict[str, tuple[str, ...]]:
    """A copy of the dotted key -> valid values table of every string option with fixed choices."""
    return dict(_CHOICES)


__all__ = ["register_choices", "registered_choices"]
