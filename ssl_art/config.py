"""One config schema for every entry point: frozen dataclasses, YAML files and dotted CLI overrides.

``load_config(PretrainConfig, ["--config", "configs/pretrain/simclr.yaml", "optim.lr=0.1"])`` merges the dataclass
defaults, the YAML file and the overrides, in that order. Unknown keys and values of the wrong type raise
:class:`ConfigError` naming the key and the valid choices, so a typo never silently trains the wrong model (the
nanoGPT configurator idea, made strict and nested). ``data``, ``optim``, ``run`` and ``dist`` are defined once and
shared by the pretrain, linear and finetune configs.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml


class ConfigError(ValueError):
    """A config key or value is invalid; the message names the key and the fix."""


# --------------------------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class AugCfg:
    """Multi-view augmentation. ``preset='art'`` keeps colour statistics (no jitter, no grayscale): colour is style."""

    preset: str = "simclr"  # simclr | art | none (eval-style resize + centre crop)
    min_scale: float = 0.25  # RandomResizedCrop lower scale bound; art keeps more of the canvas (texture context)
    hflip_prob: float = 0.5
    color_jitter_prob: float = 0.8  # ignored by preset=art
    color_jitter_strength: float = 0.5  # brightness/contrast/saturation = 0.8*s, hue = 0.2*s (SimCLR)
    grayscale_prob: float = 0.2  # ignored by preset=art
    blur_prob: float = 0.0  # Gaussian blur destroys brush texture; off by default
    n_views: int = 2


@dataclass(frozen=True)
class DataCfg:
    """Where the images come from and how they are batched."""

    path: str = ""  # folder, ImageFolder tree or CSV manifest; "" = embedded synthetic collection
    format: str = "auto"  # auto | folder | imagefolder | csv
    label_column: str = "label"  # CSV column (or 'label' for an ImageFolder tree) used as the class
    root: str = ""  # base folder for relative CSV paths; "" = the CSV's own folder
    image_size: int = 112
    batch_size: int = 64
    num_workers: int = 2
    pin_memory: bool = False
    persistent_workers: bool = False
    max_bad_fraction: float = 0.05  # stop with a clear error when more of the collection is unreadable
    max_image_pixels: int = 178_956_970  # decompression-bomb guard (PIL's default limit)
    synthetic_size: int = 1400  # images in the embedded synthetic collection
    synthetic_image_size: int = 64  # side of the generated images
    aug: AugCfg = field(default_factory=AugCfg)


@dataclass(frozen=True)
class GramCfg:
    """Learnable Gram-matrix style head (issue 4)."""

    enabled: bool = False
    layers: tuple[int, ...] = (2, 3)  # indices into the backbone's intermediate maps
    rank: int = 32  # learnable 1x1 projection to r channels -> r x r Gram
    out_dim: int = 128


@dataclass(frozen=True)
class FusionCfg:
    """Multi-scale attention fusion of intermediate maps (issue 4)."""

    enabled: bool = False
    dim: int = 256  # common width each scale is projected to
    heads: int = 4
    pool: str = "avg"  # avg | gem: how each scale's map is pooled into its token (GeM assumes non-negative maps)


@dataclass(frozen=True)
class ModelCfg:
    """Backbone and heads. ``models/build.py`` is the only place these become constructor kwargs."""

    backbone: str = "resnet18"  # any timm model name
    pretrained: bool = False  # timm hub weights; needs network access
    init_checkpoint: str = ""  # local file with backbone weights (timm or ssl_art checkpoint)
    n_intermediates: int = 4  # how many intermediate maps the backbone exposes (stages / evenly spaced blocks)
    proj_hidden_dim: int = 512
    proj_out_dim: int = 128
    fusion: FusionCfg = field(default_factory=FusionCfg)
    gram: GramCfg = field(default_factory=GramCfg)


@dataclass(frozen=True)
class LossCfg:
    """Weighted sum of named loss terms (issue 4). SimCLR uses only ``ntxent``."""

    temperature: float = 0.2  # NT-Xent / InfoNCE temperature
    w_ntxent: float = 1.0
    w_gram: float = 0.0  # contrastive loss between the two views' Gram style embeddings
    w_distill: float = 0.0  # teacher -> student multi-layer distillation
    distill_layers: tuple[int, ...] = (1, 2, 3)
    distill_layer_weights: tuple[float, ...] = (0.25, 0.5, 1.0)
    w_soft: float = 0.0  # similarity-weighted soft positives (SCE-style)
    soft_lambda: float = 0.5
    soft_tau: float = 0.1
    soft_tau_t: float = 0.05
    queue_size: int = 4096
    ema_momentum: float = 0.996  # start; cosine schedule to ema_momentum_end
    ema_momentum_end: float = 1.0
    teacher_views: str = "alternate"  # alternate (teacher encodes one view per step, in turn: ~1/2 the cost) | all


@dataclass(frozen=True)
class OptimCfg:
    """Optimiser and schedules (per-step warmup + cosine)."""

    name: str = "adamw"  # adamw | sgd | lars
    lr: float = 1e-3  # base lr for batch 256; scaled linearly by batch_size / 256
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    momentum: float = 0.9  # sgd / lars
    epochs: int = 10
    max_steps: int = 0  # > 0 stops after this many steps (wins over epochs)
    warmup_epochs: float = 1.0
    clip_grad: float = 3.0  # 0 disables
    accum_steps: int = 1


@dataclass(frozen=True)
class RunCfg:
    """Run directory, checkpointing, logging, device and reproducibility."""

    output_dir: str = "runs/default"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | mps
    amp: str = "auto"  # auto | off | bf16 | fp16 (auto = bf16 on CUDA, off elsewhere)
    deterministic: bool = False
    resume: bool = False  # continue from <output_dir>/checkpoints/last.pt
    overwrite: bool = False  # allow writing into a non-empty output_dir without resume
    ckpt_every_steps: int = 0  # 0 = once per epoch only
    keep_last: int = 2
    log_every: int = 10
    time_budget_s: float = 0.0  # > 0 stops training after this wall-clock time (equal-budget benchmarks)
    budget_clock: str = "wall"  # wall | process (CPU seconds of this process: equal compute on a busy machine)
    max_nonfinite: int = 5  # stop after this many non-finite steps in a row
    progress: bool = True


@dataclass(frozen=True)
class DistCfg:
    """torch.distributed; a single process needs nothing here."""

    backend: str = "auto"  # auto | nccl | gloo
    gather: bool = True  # gather embeddings across ranks for contrastive negatives


@dataclass(frozen=True)
class EvalCfg:
    """Frozen-feature evaluation: FAISS kNN and a linear probe."""

    checkpoint: str = ""  # ssl_art checkpoint; "" = random init (still useful as a baseline)
    train_path: str = ""  # labelled collection; "" = the embedded synthetic collection
    eval_path: str = ""  # "" = stratified k-fold CV on train_path
    folds: int = 5
    knn_k: int = 20
    knn_t: float = 0.07
    linear_epochs: int = 100
    linear_lrs: tuple[float, ...] = (0.1, 0.01, 0.001)
    linear_wds: tuple[float, ...] = (0.0, 1e-4)
    compare_random: bool = True  # also evaluate a randomly initialised backbone
    embedding: str = "auto"  # auto | pooled | fused | gram


@dataclass(frozen=True)
class PretrainConfig:
    """``main_pretrain.py``."""

    method: str = "simclr"  # simclr | art_ssl
    data: DataCfg = field(default_factory=DataCfg)
    model: ModelCfg = field(default_factory=ModelCfg)
    loss: LossCfg = field(default_factory=LossCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    run: RunCfg = field(default_factory=RunCfg)
    dist: DistCfg = field(default_factory=DistCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)  # used by `make demo` after pretraining


@dataclass(frozen=True)
class LinearConfig:
    """``main_linear.py``."""

    data: DataCfg = field(default_factory=DataCfg)
    model: ModelCfg = field(default_factory=ModelCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)
    run: RunCfg = field(default_factory=lambda: RunCfg(output_dir="runs/linear"))
    dist: DistCfg = field(default_factory=DistCfg)


# ---------------------------------------------------------------------- finetune (issue 6): FinetuneConfig here


@dataclass(frozen=True)
class FtCfg:
    """Fine-tuning recipe (issue 6): where the weights come from, what trains, and the loss options."""

    checkpoint: str = (
        ""  # ssl_art pretraining run dir or .pt; "" = model.* (timm pretrained / init_checkpoint / random)
    )
    mode: str = "full"  # linear (heads only) | last_n (last N stages/blocks + heads) | full
    last_n: int = 1  # stages (CNN) or blocks (ViT) unfrozen by mode=last_n
    layer_decay: float = 0.75  # MAE layer-wise lr decay: layer l of L gets lr * decay**(L+1-l); 1.0 = off
    label_columns: tuple[str, ...] = ()  # CSV columns, one head each (style, artist, genre); () = data.label_column
    task_weights: tuple[float, ...] = ()  # loss weight per head; () = all 1
    label_map: str = ""  # YAML {column: {fine: coarse}} applied on load (27 styles -> 5 movements); data untouched
    label_smoothing: float = 0.1
    mixup: float = 0.0  # timm Mixup alpha (> 0 enables; single-head runs only)
    cutmix: float = 0.0  # timm CutMix alpha (> 0 enables; single-head runs only)
    imbalance: str = "none"  # none | weighted_loss (inverse-frequency CE weights) | balanced_sampler
    head_dropout: float = 0.0
    select_metric: str = "top1"  # val metric of the first head used for model selection: top1 | balanced_acc | macro_f1
    patience: int = 0  # stop after this many epochs without val improvement; 0 = never stop early
    ensemble: tuple[str, ...] = ()  # other fine-tune run dirs / .pt files soft-voted with this one on the test split
    ensemble_weighting: str = "val"  # val (weights = val top-1) | uniform


@dataclass(frozen=True)
class SplitCfg:
    """Seeded stratified train/val/test split, made once and saved as ``<output_dir>/splits.json``."""

    val_fraction: float = 0.15
    test_fraction: float = 0.15  # ignored when test_path is given
    group_column: str = ""  # e.g. "artist": all works of one artist land in one split (no leakage)
    seed: int = 0
    test_path: str = ""  # a given test CSV/folder is honoured as the test split
    file: str = ""  # reuse this splits.json; "" = <output_dir>/splits.json (created on the first run)


@dataclass(frozen=True)
class GateCfg:
    """SHMNet-style gated two-branch head: cheap branch, expensive branch, selector and fusion."""

    enabled: bool = False
    cheap_backbone: str = ""  # a small timm CNN; "" = the first cheap_stages stages of model.backbone
    cheap_stages: int = 2  # stages/blocks kept in the cheap branch when cheap_backbone is ""
    cheap_epochs: int = 0  # stage 0 epochs for the cheap branch; 0 = optim.epochs
    threshold: float = 0.9  # cheap confidence below this falls back to the expensive branch
    alpha: float = 1.0  # fusion weight w = alpha * sigmoid(MLP(features, confidences))
    budget: float = 0.4  # at most this fraction of val images may use the expensive branch
    hidden_dim: int = 64  # selector / fusion MLP width
    stage1_epochs: int = 40  # selector + fusion on the frozen branches' cached outputs
    stage1_lr: float = 3e-3
    stage2_epochs: int = 0  # optional end-to-end fine-tune with sampled routing; 0 = off
    cost: float = 0.2  # reward penalty per expensive call (REINFORCE)
    budget_weight: float = 1.0  # weight of relu(mean P(hard) - budget)**2
    pg_weight: float = 1.0  # weight of the policy-gradient term
    baseline_momentum: float = 0.9  # moving-average reward baseline
    bench_repeats: int = 3  # timed passes over the test set for images/s (best is reported)


@dataclass(frozen=True)
class FinetuneConfig:
    """``main_finetune.py``."""

    data: DataCfg = field(default_factory=lambda: DataCfg(aug=AugCfg(preset="art", n_views=1)))
    model: ModelCfg = field(default_factory=ModelCfg)
    optim: OptimCfg = field(default_factory=lambda: OptimCfg(lr=5e-4, epochs=20, warmup_epochs=2.0))
    run: RunCfg = field(default_factory=lambda: RunCfg(output_dir="runs/finetune"))
    dist: DistCfg = field(default_factory=DistCfg)
    ft: FtCfg = field(default_factory=FtCfg)
    split: SplitCfg = field(default_factory=SplitCfg)
    gate: GateCfg = field(default_factory=GateCfg)


# ------------------------------------------------------------------------ retrieval (issue 7): RetrievalCfg here


@dataclass(frozen=True)
class RetrievalCfg:
    """Nearest-style retrieval (issue 7): embedding export and the FAISS index (``ssl-art ... --config FILE``).

    Index choice for ``index_kind=auto``: exact ``flat`` up to ``exact_max`` vectors, then ``ivf_flat`` while the raw
    vectors fit in ``ivf_flat_max_bytes``, then ``ivf_pq``; ``hnsw`` only when asked for (fastest single queries,
    slowest build, most memory). Documented in ``ssl_art/retrieval/index.py``.
    """

    embedding: str = "auto"  # auto (the method's default) | pooled | fused | gram
    dtype: str = "float16"  # on-disk embedding dtype: float16 halves the memmap (cosine error ~1e-3) | float32
    image_size: int = 224
    batch_size: int = 64
    num_workers: int = 2
    chunk_rows: int = 4096  # rows flushed to disk and recorded at a time: the resume granularity
    index_kind: str = "auto"  # auto | flat | ivf_flat | ivf_pq | hnsw
    exact_max: int = 100_000  # auto: exact search up to this many vectors
    ivf_flat_max_bytes: int = 4 << 30  # auto: IVF-Flat while n*d*4 bytes fit, IVF-PQ beyond
    nlist: int = 0  # IVF cells; 0 = 4*sqrt(n)
    nprobe: int = 0  # IVF cells visited per query; 0 = auto (2*sqrt(nlist) clamped to [16, 512])
    pq_m: int = 0  # IVF-PQ sub-quantisers; 0 = d/8 (64 bytes per 512-d vector at 8 bits)
    pq_nbits: int = 8
    rerank: int = 4  # IVF-PQ: re-score k*rerank candidates exactly from the embedding memmap; 0 = off
    hnsw_m: int = 32  # HNSW graph degree
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128
    train_size: int = 0  # IVF training sample; 0 = min(n, max(40*nlist, 10000))
    k: int = 10  # hits per query image
    seed: int = 0  # IVF training-sample seed


RetrievalConfig = RetrievalCfg  # top-level name (``*Config``) for configs/retrieval/*.yaml, like the other entry points


# ------------------------------------------------------------------------------------------- loading

T = TypeVar("T")

_CHOICES: dict[str, tuple[str, ...]] = {
    "method": ("simclr", "art_ssl"),
    "data.format": ("auto", "folder", "imagefolder", "csv"),
    "data.aug.preset": ("simclr", "art", "none"),
    "optim.name": ("adamw", "sgd", "lars"),
    "run.device": ("auto", "cpu", "cuda", "mps"),
    "run.amp": ("auto", "off", "bf16", "fp16"),
    "dist.backend": ("auto", "nccl", "gloo"),
    "eval.embedding": ("auto", "pooled", "fused", "gram"),
    "model.fusion.pool": ("avg", "gem"),
    "loss.teacher_views": ("alternate", "all"),
    "run.budget_clock": ("wall", "process"),
}


def register_choices(key: str, choices: tuple[str, ...]) -> None:
    """Declare the valid values of a string option (checked on load); used by configs defined elsewhere."""
    _CHOICES[key] = choices


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


_SCI_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats, lists for tuples."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            value = [value]
        elem = args[0]
        return tuple(_coerce(key, v, elem) for v in value)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(key, value, arg)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} does not match {tp}")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _SCI_FLOAT.match(value.strip()):
        return float(value)  # YAML 1.1 reads 3e-4 (no dot) as a string; on the command line it means a float
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is str and value is None:
        return ""
    if not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return value


def _build(cls: type[T], values: dict[str, Any], prefix: str = "") -> T:
    """Instantiate dataclass ``cls`` from a nested dict, strictly."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" Did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{full}'.{hint} Valid keys: {', '.join(prefix + n for n in names)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{full}: expected a section (mapping), got {value!r}")
            kwargs[key] = _build(tp, value, prefix=f"{full}.")  # type: ignore[arg-type]
        else:
            kwargs[key] = _coerce(full, value, tp)
            if full in _CHOICES and kwargs[key] not in _CHOICES[full]:
                raise ConfigError(f"{full}: {value!r} is not one of {', '.join(_CHOICES[full])}")
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["optim.lr=0.1", "model.gram.layers=[1,2]"]`` -> nested dict; values are parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value (e.g. optim.lr=0.1)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override '{item}': '{key}' is not a dotted key (e.g. optim.lr=0.1)")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw  # not YAML: take it as a plain string (type-checked against the field later)
        _set_dotted(tree, key, value)
    return tree


def config_from_dict(cls: type[T], values: dict[str, Any]) -> T:
    """Strictly build ``cls`` from a (possibly partial) nested dict; missing keys keep their defaults."""
    return _build(cls, values)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (tuples as lists) of a config, for YAML and checkpoints."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    result: dict[str, Any] = plain(dataclasses.asdict(cfg))
    return result


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file; ``_base_: other.yaml`` (relative path) is merged underneath."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping of sections")
    base = data.pop("_base_", None)
    if base:
        data = _deep_merge(load_yaml(p.parent / base), data)
    return data


def _help_lines(cls: type, prefix: str = "") -> list[str]:
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            lines += _help_lines(tp, f"{prefix}{f.name}.")  # type: ignore[arg-type]
        else:
            factory: Any = f.default_factory
            default = f.default if f.default is not dataclasses.MISSING else factory()
            choices = _CHOICES.get(prefix + f.name)
            extra = f"  [{'|'.join(choices)}]" if choices else ""
            lines.append(f"  {prefix}{f.name} = {default!r}{extra}")
    return lines


def load_config(cls: type[T], argv: list[str] | None = None, description: str = "") -> T:
    """Parse ``--config FILE`` and ``key=value`` overrides into ``cls``; ``--help`` lists every key with its default."""
    parser = argparse.ArgumentParser(
        description=description or cls.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="options (override as key=value, e.g. optim.lr=0.1):\n" + "\n".join(_help_lines(cls)),
    )
    parser.add_argument("--config", default="", help="YAML config file (keys as below)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    args = parser.parse_args(argv)
    try:
        values: dict[str, Any] = load_yaml(args.config) if args.config else {}
        values = _deep_merge(values, parse_overrides(args.overrides))
        cfg = _build(cls, values)
        validate(cfg)
        return cfg
    except ConfigError as e:
        parser.error(str(e))  # usage + one clear message, exit status 2 (no traceback)
        raise  # unreachable; keeps type checkers happy


# ------------------------------------------------------------------------------------ value checks (issue 5)


def _need(ok: bool, key: str, value: Any, need: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is out of range: {need}")


def _validate_section(sec: Any, prefix: str) -> None:
    """Range checks of the shared sections (``data``, ``model``, ``optim``, ``run``, ``eval``) where present."""
    if isinstance(sec, DataCfg):
        _need(sec.image_size >= 1, f"{prefix}image_size", sec.image_size, "set a positive image side in pixels")
        _need(sec.batch_size >= 1, f"{prefix}batch_size", sec.batch_size, "set data.batch_size >= 1")
        _need(sec.num_workers >= 0, f"{prefix}num_workers", sec.num_workers, "use 0 (main process) or more")
        frac = sec.max_bad_fraction
        _need(0.0 <= frac <= 1.0, f"{prefix}max_bad_fraction", frac, "a fraction in [0, 1], e.g. 0.05")
        _need(sec.max_image_pixels >= 1, f"{prefix}max_image_pixels", sec.max_image_pixels, "a positive pixel count")
        _need(sec.synthetic_size >= 1, f"{prefix}synthetic_size", sec.synthetic_size, "at least 1 image")
        _need(sec.synthetic_image_size >= 1, f"{prefix}synthetic_image_size", sec.synthetic_image_size, "pixels >= 1")
        _validate_section(sec.aug, f"{prefix}aug.")
    elif isinstance(sec, AugCfg):
        _need(0.0 < sec.min_scale <= 1.0, f"{prefix}min_scale", sec.min_scale, "a crop area fraction in (0, 1]")
        for name in ("hflip_prob", "color_jitter_prob", "grayscale_prob", "blur_prob"):
            v = getattr(sec, name)
            _need(0.0 <= v <= 1.0, f"{prefix}{name}", v, "a probability in [0, 1]")
        s = sec.color_jitter_strength
        _need(s >= 0.0, f"{prefix}color_jitter_strength", s, "use 0 (no jitter) or more")
        _need(sec.n_views >= 1, f"{prefix}n_views", sec.n_views, "at least 1 view per image")
    elif isinstance(sec, ModelCfg):
        for name in ("n_intermediates", "proj_hidden_dim", "proj_out_dim"):
            _need(getattr(sec, name) >= 1, f"{prefix}{name}", getattr(sec, name), "a positive integer")
    elif isinstance(sec, OptimCfg):
        _need(sec.lr > 0, f"{prefix}lr", sec.lr, "a positive learning rate, e.g. optim.lr=1e-3")
        _need(sec.min_lr >= 0, f"{prefix}min_lr", sec.min_lr, "0 or a positive floor for the cosine schedule")
        _need(sec.weight_decay >= 0, f"{prefix}weight_decay", sec.weight_decay, "0 (off) or positive")
        _need(0.0 <= sec.momentum < 1.0, f"{prefix}momentum", sec.momentum, "in [0, 1), e.g. 0.9")
        _need(sec.max_steps >= 0, f"{prefix}max_steps", sec.max_steps, "0 (use optim.epochs) or a positive count")
        _need(
            sec.epochs >= 1 or sec.max_steps > 0, f"{prefix}epochs", sec.epochs, "at least 1 (or set optim.max_steps)"
        )
        _need(sec.warmup_epochs >= 0, f"{prefix}warmup_epochs", sec.warmup_epochs, "0 (no warmup) or positive")
        _need(sec.clip_grad >= 0, f"{prefix}clip_grad", sec.clip_grad, "0 (off) or a positive max grad norm")
        _need(sec.accum_steps >= 1, f"{prefix}accum_steps", sec.accum_steps, "1 (no accumulation) or more")
    elif isinstance(sec, RunCfg):
        _need(sec.keep_last >= 1, f"{prefix}keep_last", sec.keep_last, "keep at least 1 checkpoint")
        _need(sec.ckpt_every_steps >= 0, f"{prefix}ckpt_every_steps", sec.ckpt_every_steps, "0 (per epoch) or more")
        _need(sec.log_every >= 1, f"{prefix}log_every", sec.log_every, "log every 1 or more steps")
        _need(sec.time_budget_s >= 0, f"{prefix}time_budget_s", sec.time_budget_s, "0 (no budget) or seconds")
        _need(sec.max_nonfinite >= 1, f"{prefix}max_nonfinite", sec.max_nonfinite, "stop after 1 or more in a row")
    elif isinstance(sec, EvalCfg):
        _need(sec.folds >= 2, f"{prefix}folds", sec.folds, "cross-validation needs at least 2 folds")
        _need(sec.knn_k >= 1, f"{prefix}knn_k", sec.knn_k, "at least 1 neighbour, e.g. eval.knn_k=20")
        _need(sec.knn_t > 0, f"{prefix}knn_t", sec.knn_t, "a positive kNN temperature, e.g. 0.07")
        _need(sec.linear_epochs >= 1, f"{prefix}linear_epochs", sec.linear_epochs, "at least 1 epoch")
        lrs = sec.linear_lrs
        _need(bool(lrs) and min(lrs) > 0, f"{prefix}linear_lrs", list(lrs), "one or more positive learning rates")
        _need(all(w >= 0 for w in sec.linear_wds), f"{prefix}linear_wds", list(sec.linear_wds), "weight decays >= 0")


def validate(cfg: Any) -> None:
    """Check value ranges and cross-field rules of a loaded config (types were checked by the loader).

    Run by :func:`load_config` and again by the engines, so a bad value stops before any data is read or a model is
    built. Sections other than ``data``/``model``/``optim``/``run``/``eval`` (and ``loss`` for pretraining) are left
    to their owners.

    Raises:
        ConfigError: naming the key, its value and the valid range.
    """
    for f in dataclasses.fields(cfg):
        _validate_section(getattr(cfg, f.name), f"{f.name}.")
    if isinstance(cfg, PretrainConfig):
        n = cfg.data.aug.n_views
        _need(n >= 2, "data.aug.n_views", n, f"{cfg.method} contrasts views of one image: use data.aug.n_views >= 2")
        b = cfg.data.batch_size
        _need(b >= 2, "data.batch_size", b, "contrastive pretraining needs at least 2 images per batch")
        t = cfg.loss.temperature
        _need(t > 0, "loss.temperature", t, "a positive temperature, e.g. loss.temperature=0.2")


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (next to every run)."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
