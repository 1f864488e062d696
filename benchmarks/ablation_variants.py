"""The evidence run's rows: each is a config file in ``configs/pretrain`` plus dotted overrides (one entry each).

Every change to the method gets its own row here; ``benchmarks/ablation.py`` trains, evaluates and tables them.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Variant:
    """One ablation row: a config file in ``configs/pretrain`` plus dotted overrides.

    ``core`` rows (the SimCLR baselines and the full method) get ``--seeds`` seeds, the others ``--removal-seeds``.
    """

    base: str
    overrides: tuple[str, ...] = ()
    core: bool = False
    note: str = ""
    default: bool = True  # in the default run list (False: run it by name with --variants)
    embedding: str = "auto"  # eval.embedding of this row's kNN, linear probe and synthetic signal
    reuse: str = ""  # evaluate this row's runs instead of training its own ('random_init': the untrained net)

    @property
    def family(self) -> str:
        """``reference`` (the untrained net: never a baseline candidate), ``simclr`` or ``art_ssl``."""
        if self.reuse == "random_init":
            return "reference"
        return "simclr" if self.base == "simclr.yaml" else "art_ssl"


# New method variants are one entry here (or in REMOVALS); every change to the method gets its own row.
VARIANTS: dict[str, Variant] = {
    "simclr": Variant("simclr.yaml", ("data.aug.preset=simclr",), True, "SimCLR, standard augmentation"),
    "simclr_art_aug": Variant("simclr.yaml", ("data.aug.preset=art",), True, "SimCLR, colour-keeping art aug"),
    "full_art_aug": Variant(
        "art_ssl.yaml", ("data.aug.preset=art", "data.aug.jitter_views=all"), True, "full method, art aug (2nd default)"
    ),
    "full_simclr_aug": Variant(
        "art_ssl.yaml", ("data.aug.preset=simclr", "data.aug.jitter_views=all"), True, "full method, standard aug"
    ),
    # jitter on one view only (the other keeps the painting's own colours): issue 16's winning augmentation,
    # art_ssl.yaml's default since; the SimCLR row tells the method from the augmentation
    "full_jitter_first": Variant(
        "art_ssl.yaml", ("data.aug.preset=simclr", "data.aug.jitter_views=first"), True, "jitter 1 view (art_ssl.yaml)"
    ),
    "simclr_jitter_first": Variant(
        "simclr.yaml", ("data.aug.preset=simclr", "data.aug.jitter_views=first"), True, "SimCLR, jitter 1 view"
    ),
    # opt-in rows (run them by name with --variants): the invariances issue 16 asks to revisit first, and
    # positives from different regions of the painting (style is shared across a canvas, content is not). The
    # art_ssl.yaml ones jitter both views (art_ssl.yaml's default before issue 16), so each stays the run it was.
    **{
        name: Variant(base, tuple(f"data.aug.{o}" for o in ov + pin), note=note, default=False)
        for name, base, note, ov in (
            ("full_mild_jitter", "art_ssl.yaml", "milder jitter", ("preset=simclr", "color_jitter_strength=0.25")),
            ("full_no_gray", "art_ssl.yaml", "jitter, no grayscale", ("preset=simclr", "grayscale_prob=0")),
            (
                "full_mild_no_gray",
                "art_ssl.yaml",
                "milder jitter, no grayscale",
                ("preset=simclr", "color_jitter_strength=0.25", "grayscale_prob=0"),
            ),
            ("simclr_split", "simclr.yaml", "SimCLR, split crops", ("preset=simclr", "crop_overlap=split")),
            ("full_split", "art_ssl.yaml", "standard aug, split crops", ("preset=simclr", "crop_overlap=split")),
            ("full_art_split", "art_ssl.yaml", "art aug, split crops", ("preset=art", "crop_overlap=split")),
        )
        for pin in [("jitter_views=all",) if base == "art_ssl.yaml" else ()]
    },  # fmt: skip
}


def on_top(src: str, overrides: tuple[str, ...], note: str) -> Variant:
    """An opt-in row: ``src`` (its config and overrides) plus ``overrides``, with one seed unless run as --core."""
    v = VARIANTS[src]
    return dataclasses.replace(v, overrides=v.overrides + overrides, core=False, default=False, note=note)


# Multi-crop (issue 16's "multi-crop local views"): 4 local crops of half the side (5-25% of the canvas) per image,
# each paired with both global views; ~1.5x the step cost at equal steps (the step-cost column reports it).
VARIANTS |= {
    f"{src}_mc": on_top(src, ("data.aug.n_local=4",), f"{VARIANTS[src].note}, + 4 local views")
    for src in ("simclr_jitter_first", "full_jitter_first")
}
# The terms' weights, temperatures and the EMA horizon (issue 16's "weight and temperature of each term", "longer
# EMA horizons"), on the full method with one-view jitter: the auxiliary terms at a quarter of their weight (does the
# plain contrastive term need more of the backbone?), the teacher's momentum starting at 0.996 instead of 0.99, the
# soft-positive temperatures doubled (flatter targets over the queue), and NT-Xent at 0.1 beside SimCLR at 0.1 (the
# temperature is SimCLR's too: its row on the baseline keeps the pair fair).
VARIANTS |= {
    name: on_top(src, ov, note)
    for name, src, ov, note in (
        ("full_light_aux", "full_jitter_first", ("loss.w_gram=0.125", "loss.w_distill=0.125", "loss.w_soft=0.125"),
         "aux terms x 1/4"),
        ("full_ema_long", "full_jitter_first", ("loss.ema_momentum=0.996",), "EMA momentum from 0.996"),
        ("full_soft_warm", "full_jitter_first", ("loss.soft_tau=0.2", "loss.soft_tau_t=0.1"), "soft temperatures x 2"),
        ("full_t01", "full_jitter_first", ("loss.temperature=0.1",), "NT-Xent temperature 0.1"),
        ("simclr_jitter_first_t01", "simclr_jitter_first", ("loss.temperature=0.1",), "SimCLR, jitter 1 view, t 0.1"),
    )
}  # fmt: skip
# Embedding-only rows: the same checkpoints (trained once, by the row named in ``reuse``) scored with the
# parameter-free per-stage statistics (``stats``) instead of the method's default embedding.
VARIANTS |= {
    f"{src}_stats": dataclasses.replace(
        VARIANTS[src], core=False, default=False, note=f"{src}'s checkpoints, stats embedding", embedding="stats",
        reuse=src,
    )
    for src in ("simclr", "full_simclr_aug", "full_jitter_first", "simclr_jitter_first")
} | {"random_stats": Variant("simclr.yaml", note="random init, stats embedding", default=False, embedding="stats",
                             reuse="random_init")}  # fmt: skip
# The full method minus one part, on top of --removal-base.
REMOVALS: dict[str, tuple[str, ...]] = {
    "fusion": ("model.fusion.enabled=false",),
    "gram": ("model.gram.enabled=false", "loss.w_gram=0"),
    "distill": ("loss.w_distill=0",),
    "soft": ("loss.w_soft=0",),
}


def build_variants(removal_base: str) -> dict[str, Variant]:
    """:data:`VARIANTS` plus ``no_<part>`` for every :data:`REMOVALS` entry, built on ``removal_base``."""
    if removal_base not in VARIANTS or VARIANTS[removal_base].family != "art_ssl":
        full = [k for k, v in VARIANTS.items() if v.family == "art_ssl"]
        raise SystemExit(f"error: --removal-base must be one of {', '.join(full)}, got {removal_base!r}")
    base = VARIANTS[removal_base]
    out = dict(VARIANTS)
    for part, ov in REMOVALS.items():
        out[f"no_{part}"] = Variant(base.base, base.overrides + ov, False, f"{removal_base} without {part}")
    # every removal that did not cost accuracy at once: what is left is the contrastive loss plus the Gram head
    keep_gram = tuple(o for part in ("fusion", "distill", "soft") for o in REMOVALS[part])
    out["gram_only"] = Variant(
        base.base, base.overrides + keep_gram, False, f"{removal_base} without fusion, distill, soft", default=False
    )
    return out
