"""The config schema: one frozen dataclass per section, shared by every entry point.

``data``, ``optim``, ``run`` and ``dist`` are defined once and used by the pretrain, linear and finetune configs;
each field carries its default and a comment saying what it does. Loading (YAML, dotted overrides, strict type
checks) lives in :mod:`ssl_art.config.load`, range checks in :mod:`ssl_art.config.validate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
    # decode-once uint8 cache + batched augmentation on the training device (ssl_art.data.cache, issue 11):
    cache: str = "auto"  # off (per-image PIL path) | auto (cache when it fits cache_max_gb) | ram | disk (memmap)
    cache_max_gb: float = 20.0  # auto: largest cache file to build; bigger collections use the PIL path
    cache_ram_gb: float = 4.0  # auto: caches up to this size are read into RAM (GPU memory on CUDA), larger memmapped
    cache_dir: str = ""  # where caches live; "" = <parent of run.output_dir>/.ssl_art_cache (never the data folder)
    cache_scale: float = 1.15  # stored shorter side = ceil(cache_scale * image_size)
    cache_max_aspect: float = 1.34  # stored longer side at most this x the shorter one (centre region kept)
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
    channels_last: bool = False  # model and input views in channels_last memory format (faster convs on CUDA)
    compile: bool = False  # torch.compile the backbone (nn.Module.compile: state_dict keys unchanged)


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
    image_size: int = 0  # 0 = the checkpoint's data.image_size (no checkpoint: data.image_size)


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
