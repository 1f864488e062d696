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
    hflip_prob: float = 0.5  # probability of a horizontal flip
    color_jitter_prob: float = 0.8  # ignored by preset=art
    color_jitter_strength: float = 0.5  # brightness/contrast/saturation = 0.8*s, hue = 0.2*s (SimCLR)
    grayscale_prob: float = 0.2  # ignored by preset=art
    blur_prob: float = 0.0  # Gaussian blur destroys brush texture; off by default
    n_views: int = 2  # augmented views per image (contrastive pretraining needs >= 2)
    crop_overlap: str = "any"  # any | split: views crop disjoint halves of the canvas (shared style, not content)
    jitter_views: str = "all"  # all | first: colour jitter + grayscale on every view or on the first view only
    max_scale: float = 1.0  # RandomResizedCrop upper scale bound of the n_views (global) views
    # multi-crop (Caron et al. 2020): n_local small crops per image, each matched to every global view. Style is
    # shared across a canvas, so a patch should embed like the whole painting. Locals follow jitter_views like the
    # views after the first (first: they keep the painting's colours).
    n_local: int = 0  # multi-crop: small local views per image, each paired with every global view (0 = off)
    local_size: int = 0  # their side in pixels; 0 = image_size // 2
    local_min_scale: float = 0.05  # their crop area fraction is in [local_min_scale, min_scale]


@dataclass(frozen=True)
class DataCfg:
    """Where the images come from and how they are batched."""

    path: str = ""  # folder, ImageFolder tree or CSV manifest; "" = embedded synthetic collection
    format: str = "auto"  # auto | folder | imagefolder | csv
    label_column: str = "label"  # CSV column (or 'label' for an ImageFolder tree) used as the class
    root: str = ""  # base folder for relative CSV paths; "" = the CSV's own folder
    image_size: int = 112  # side in pixels of the square crops the model sees
    batch_size: int = 64  # images per step (per process)
    num_workers: int = 2  # DataLoader worker processes; 0 = load in the main process
    pin_memory: bool = False  # page-locked host memory for faster GPU copies
    persistent_workers: bool = False  # keep DataLoader workers alive between epochs
    max_bad_fraction: float = 0.05  # stop with a clear error when more of the collection is unreadable
    max_image_pixels: int = 178_956_970  # decompression-bomb guard (PIL's default limit)
    synthetic_size: int = 1400  # images in the embedded synthetic collection
    synthetic_image_size: int = 64  # side of the generated images
    # decode-once uint8 cache + batched augmentation on the training device (ssl_art.data.cache):
    cache: str = "auto"  # off (per-image PIL path) | auto (cache when it fits cache_max_gb) | ram | disk (memmap)
    cache_max_gb: float = 20.0  # auto: largest cache file to build; bigger collections use the PIL path
    cache_ram_gb: float = 4.0  # auto: caches up to this size are read into RAM (GPU memory on CUDA), larger memmapped
    cache_dir: str = ""  # where caches live; "" = <parent of run.output_dir>/.ssl_art_cache (never the data folder)
    cache_scale: float = 1.15  # stored shorter side = ceil(cache_scale * image_size)
    cache_max_aspect: float = 1.34  # stored longer side at most this x the shorter one (centre region kept)
    aug: AugCfg = field(default_factory=AugCfg)


@dataclass(frozen=True)
class GramCfg:
    """Learnable Gram-matrix style head (``art_ssl``)."""

    enabled: bool = False  # add the Gram style branch (the 'gram' embedding)
    layers: tuple[int, ...] = (2, 3)  # indices into the backbone's intermediate maps
    rank: int = 32  # learnable 1x1 projection to r channels -> r x r Gram
    out_dim: int = 128  # width of the 'gram' style embedding


@dataclass(frozen=True)
class FusionCfg:
    """Multi-scale attention fusion of intermediate maps (``art_ssl``)."""

    enabled: bool = False  # add the multi-scale fusion branch (the 'fused' embedding)
    dim: int = 256  # common width each scale is projected to
    heads: int = 4  # attention heads of the fusion
    pool: str = "avg"  # avg | gem: how each scale's map is pooled into its token (GeM assumes non-negative maps)


@dataclass(frozen=True)
class ModelCfg:
    """Backbone and heads. ``models/build.py`` builds the backbone; each method's ``from_config`` maps the rest."""

    backbone: str = "resnet18"  # any timm model name
    pretrained: bool = False  # timm hub weights; needs network access
    init_checkpoint: str = ""  # local file with backbone weights (timm or ssl_art checkpoint)
    n_intermediates: int = 4  # how many intermediate maps the backbone exposes (stages / evenly spaced blocks)
    proj_hidden_dim: int = 512  # projection MLP hidden width (pretraining head, not exported)
    proj_out_dim: int = 128  # projection MLP output width (the contrastive space)
    fusion: FusionCfg = field(default_factory=FusionCfg)
    gram: GramCfg = field(default_factory=GramCfg)


@dataclass(frozen=True)
class LossCfg:
    """Weighted sum of named loss terms, shared by the built-in methods.

    ``simclr`` reads only ``temperature``; ``art_ssl`` reads every field (see :mod:`ssl_art.methods.registry` for how
    a method owns its options). The section keeps this flat layout so existing YAML, overrides and the configs
    stored in checkpoints load unchanged.
    """

    temperature: float = 0.2  # NT-Xent / InfoNCE temperature (simclr, art_ssl); the rest are art_ssl only
    w_ntxent: float = 1.0  # weight of the NT-Xent (SimCLR) term
    w_gram: float = 0.0  # contrastive loss between the two views' Gram style embeddings
    w_distill: float = 0.0  # teacher -> student multi-layer distillation
    distill_layers: tuple[int, ...] = (1, 2, 3)  # intermediate maps distilled from the teacher
    distill_layer_weights: tuple[float, ...] = (0.25, 0.5, 1.0)  # one weight per distill_layers entry
    w_soft: float = 0.0  # similarity-weighted soft positives (SCE-style)
    soft_lambda: float = 0.5  # mix of the hard positive (1) and the soft similarity targets (0)
    soft_tau: float = 0.1  # student temperature of the soft-positive loss
    soft_tau_t: float = 0.05  # teacher temperature of the soft-positive targets
    queue_size: int = 4096  # teacher embeddings kept as extra soft-positive candidates
    ema_momentum: float = 0.996  # start; cosine schedule to ema_momentum_end
    ema_momentum_end: float = 1.0  # EMA momentum at the end of training
    teacher_views: str = "alternate"  # alternate (teacher encodes one view per step, in turn: ~1/2 the cost) | all


@dataclass(frozen=True)
class OptimCfg:
    """Optimiser and schedules (per-step warmup + cosine)."""

    name: str = "adamw"  # adamw | sgd | lars
    lr: float = 1e-3  # base lr for batch 256; scaled linearly by batch_size / 256
    min_lr: float = 1e-6  # floor of the cosine schedule
    weight_decay: float = 0.05  # decoupled weight decay (none on biases and norms)
    momentum: float = 0.9  # sgd / lars
    epochs: int = 10  # passes over the collection
    max_steps: int = 0  # > 0 stops after this many steps (wins over epochs)
    warmup_epochs: float = 1.0  # linear lr warmup, in epochs (fractions allowed)
    clip_grad: float = 3.0  # 0 disables
    accum_steps: int = 1  # gradient accumulation: optimiser step every N batches


@dataclass(frozen=True)
class RunCfg:
    """Run directory, checkpointing, logging, device and reproducibility."""

    output_dir: str = "runs/default"  # run folder: config.yaml, checkpoints/, logs, metrics
    seed: int = 0  # seeds Python, NumPy and torch
    device: str = "auto"  # auto | cpu | cuda | mps
    amp: str = "auto"  # auto | off | bf16 | fp16 (auto = bf16 on CUDA, off elsewhere; bf16 also on CPUs with AMX)
    deterministic: bool = False  # ask torch for deterministic kernels (slower)
    resume: bool = False  # continue from <output_dir>/checkpoints/last.pt
    overwrite: bool = False  # allow writing into a non-empty output_dir without resume
    ckpt_every_steps: int = 0  # 0 = once per epoch only
    keep_last: int = 2  # step checkpoints kept besides last.pt
    log_every: int = 10  # log and write metrics.jsonl every N steps
    time_budget_s: float = 0.0  # > 0 stops training after this wall-clock time (equal-budget benchmarks)
    budget_clock: str = "wall"  # wall | process (CPU seconds of this process: equal compute on a busy machine)
    max_nonfinite: int = 5  # stop after this many non-finite steps in a row
    progress: bool = True  # show progress bars
    channels_last: bool = False  # model and input views in channels_last memory format (faster convs on CUDA)
    compile: bool = False  # torch.compile the backbone (nn.Module.compile: state_dict keys unchanged)


@dataclass(frozen=True)
class DistCfg:
    """torch.distributed; a single process needs nothing here."""

    backend: str = "auto"  # auto | nccl | gloo
    gather: bool = True  # gather embeddings across ranks for contrastive negatives
    sync_bn: str = "auto"  # auto (SyncBatchNorm when > 1 process: BatchNorm statistics of the global batch) | on | off


@dataclass(frozen=True)
class EvalCfg:
    """Frozen-feature evaluation: FAISS kNN and a linear probe."""

    checkpoint: str = ""  # ssl_art checkpoint; "" = random init (still useful as a baseline)
    train_path: str = ""  # labelled collection; "" = the embedded synthetic collection
    eval_path: str = ""  # "" = stratified k-fold CV on train_path
    folds: int = 5  # cross-validation folds when eval_path is empty
    knn_k: int = 20  # neighbours of the weighted kNN vote
    knn_t: float = 0.07  # temperature of the kNN vote weights exp(sim / t)
    knn_backend: str = "auto"  # auto | faiss | torch: exact kNN search (torch = the FAISS-free fallback)
    linear_epochs: int = 100  # epochs of each linear-probe fit
    linear_lrs: tuple[float, ...] = (0.1, 0.01, 0.001)  # linear-probe learning rates tried (best kept)
    linear_wds: tuple[float, ...] = (0.0, 1e-4)  # linear-probe weight decays tried
    linear_batch_size: int = 256  # linear-probe minibatch (adamw)
    linear_optimizer: str = "adamw"  # adamw (minibatch, lr x wd grid) | lbfgs (full batch)
    compare_random: bool = True  # also evaluate a randomly initialised backbone
    embedding: str = "auto"  # auto | pooled | fused | gram | stats
    image_size: int = 0  # 0 = the checkpoint's data.image_size (no checkpoint: data.image_size)


@dataclass(frozen=True)
class MonitorCfg:
    """Online kNN monitor: kNN top-1 of the current backbone on a small labelled set, every N epochs of pretraining.

    The images are decoded once when the run starts (``max_images`` x 3 x S x S float32 in memory) and embedded in
    eval mode at each check, so a check costs one forward pass over them plus an exact FAISS search (seconds for
    ~1000 images at 64-112 px). Results go to TensorBoard (``monitor/*``) and ``metrics.jsonl``; a resumed run
    continues the curve. The check runs on rank 0 only and leaves the training RNG streams untouched.
    """

    every_epochs: int = 0  # 0 = off; N = after every N-th epoch (and once before the first step)
    path: str = ""  # labelled collection (ImageFolder tree or CSV); "" = the embedded synthetic collection
    eval_path: str = ""  # fixed split: path is the kNN bank, eval_path the queries; "" = stratified folds of path
    folds: int = 5  # stratified k-fold over path (each image is a query once); ignored with eval_path
    label_columns: tuple[str, ...] = ("label",)  # first -> monitor/knn_top1; others -> monitor/knn_top1_<column>
    k: int = 20  # neighbours (capped at the bank size)
    t: float = 0.07  # vote temperature, as eval.knn_t
    image_size: int = 0  # 0 = data.image_size
    max_images: int = 1000  # seeded random subset of path (and of eval_path) to keep a check cheap; 0 = all
    embedding: str = "auto"  # auto | pooled | fused | gram | stats, as eval.embedding
    batch_size: int = 128  # images embedded at once
    at_start: bool = True  # also measure before the first step (epoch 0: the initialisation's kNN)


@dataclass(frozen=True)
class PretrainConfig:
    """``main_pretrain.py``."""

    method: str = "simclr"  # a name in ssl_art.methods.registry.METHODS: simclr | art_ssl
    data: DataCfg = field(default_factory=DataCfg)
    model: ModelCfg = field(default_factory=ModelCfg)
    loss: LossCfg = field(default_factory=LossCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    run: RunCfg = field(default_factory=RunCfg)
    dist: DistCfg = field(default_factory=DistCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)  # used by `make demo` after pretraining
    monitor: MonitorCfg = field(default_factory=MonitorCfg)  # online kNN learning curve; off by default


@dataclass(frozen=True)
class LinearConfig:
    """``main_linear.py``."""

    data: DataCfg = field(default_factory=DataCfg)
    model: ModelCfg = field(default_factory=ModelCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)
    run: RunCfg = field(default_factory=lambda: RunCfg(output_dir="runs/linear"))
    dist: DistCfg = field(default_factory=DistCfg)


# ----------------------------------------------------------------------------------- finetune: FinetuneConfig


@dataclass(frozen=True)
class FtCfg:
    """Fine-tuning recipe: where the weights come from, what trains, and the loss options."""

    checkpoint: str = (
        ""  # ssl_art pretraining run dir or .pt; "" = model.* (timm pretrained / init_checkpoint / random)
    )
    mode: str = "full"  # linear (heads only) | last_n (last N stages/blocks + heads) | full
    last_n: int = 1  # stages (CNN) or blocks (ViT) unfrozen by mode=last_n
    layer_decay: float = 0.75  # MAE layer-wise lr decay: layer l of L gets lr * decay**(L+1-l); 1.0 = off
    label_columns: tuple[str, ...] = ()  # CSV columns, one head each (style, artist, genre); () = data.label_column
    task_weights: tuple[float, ...] = ()  # loss weight per head; () = all 1
    label_map: str = ""  # YAML {column: {fine: coarse}} applied on load (27 styles -> 5 movements); data untouched
    label_smoothing: float = 0.1  # cross-entropy label smoothing
    mixup: float = 0.0  # timm Mixup alpha (> 0 enables; single-head runs only)
    cutmix: float = 0.0  # timm CutMix alpha (> 0 enables; single-head runs only)
    imbalance: str = "none"  # none | weighted_loss (inverse-frequency CE weights) | balanced_sampler
    head_dropout: float = 0.0  # dropout before each classification head
    select_metric: str = "top1"  # val metric of the first head used for model selection: top1 | balanced_acc | macro_f1
    patience: int = 0  # stop after this many epochs without val improvement; 0 = never stop early
    ensemble: tuple[str, ...] = ()  # other fine-tune run dirs / .pt files soft-voted with this one on the test split
    ensemble_weighting: str = "val"  # val (weights = val top-1) | uniform


@dataclass(frozen=True)
class SplitCfg:
    """Seeded stratified train/val/test split, made once and saved as ``<output_dir>/splits.json``."""

    val_fraction: float = 0.15  # fraction of the collection held out for model selection
    test_fraction: float = 0.15  # ignored when test_path is given
    group_column: str = ""  # e.g. "artist": all works of one artist land in one split (no leakage)
    seed: int = 0  # seed of the split (independent of run.seed)
    test_path: str = ""  # a given test CSV/folder is honoured as the test split
    file: str = ""  # reuse this splits.json; "" = <output_dir>/splits.json (created on the first run)


@dataclass(frozen=True)
class GateCfg:
    """SHMNet-style gated two-branch head: cheap branch, expensive branch, selector and fusion."""

    enabled: bool = False
    cheap_backbone: str = ""  # a small timm CNN; "" = the first cheap_stages stages of model.backbone
    cheap_stages: int = 2  # stages/blocks kept in the cheap branch when cheap_backbone is ""
    exit_width: int = 256  # shared-trunk exit head: 1x1 conv width (features: mean + std = 2 * exit_width)
    exit_lr_scale: float = 10.0  # shared-trunk exit head (a probe on the frozen trunk) trains at this x the ft lr
    cheap_epochs: int = 0  # stage 0 epochs for the cheap branch; 0 = optim.epochs
    fallback_threshold: float = 0.9  # SHMNet: an easy image whose cheap max prob is below this uses expensive alone
    alpha: float = 1.0  # hard images: fused logits with w = alpha * sigmoid(MLP(features, confidences))
    fusion_init_bias: float = 3.0  # initial fusion-MLP output bias: w = alpha * sigmoid(3) ~ 0.95 alpha at start
    budget: float = 0.4  # at most this fraction of val images may reach the expensive branch (selector + fall-back)
    calibration: str = "shmnet"  # rule fitted on val to the budget: shmnet (fall-back at fallback_threshold kept,
    # selector bias chosen) | selector (fall-back off) | confidence (selector off) | best (best val top-1 of all,
    # incl. expensive-alone instead of fusion); stage 1 trains under the fall-back the rule deploys (selector: off)
    hidden_dim: int = 64  # selector / fusion MLP width
    stage1_epochs: int = 40  # selector + fusion on the frozen branches' cached outputs
    stage1_lr: float = 3e-3
    stage1_weight_decay: float = 1e-4  # AdamW weight decay of the selector / fusion MLPs (stages 1 and 2)
    stage1_batch_size: int = 128  # cached outputs per stage-1 minibatch
    selector_weight: float = 1.0  # weight of the selector's supervised BCE on "the cheap branch is wrong"
    stage2_epochs: int = 0  # optional end-to-end fine-tune with sampled routing (on a copy); 0 = off
    stage2_lr_scale: float = 0.1  # stage-2 lr = this x the batch-scaled optim.lr
    cost: float = 0.2  # reward penalty per image reaching the expensive branch (REINFORCE; selector or fall-back)
    budget_weight: float = 1.0  # weight of relu(expected expensive fraction - budget)**2
    pg_weight: float = 1.0  # weight of the policy-gradient term
    baseline_momentum: float = 0.9  # moving-average reward baseline
    bench_repeats: int = 3  # timed passes over the test set for images/s (best and median reported)
    bench_warmup: int = 1  # untimed warm-up passes per mode before timing


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


# --------------------------------------------------------------------------------- retrieval: RetrievalCfg


@dataclass(frozen=True)
class RetrievalCfg:
    """Nearest-style retrieval: embedding export and the FAISS index (``ssl-art ... --config FILE``).

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
