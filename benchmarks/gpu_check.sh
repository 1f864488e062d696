#!/usr/bin/env bash
# GPU check for issue 11 (<= 8 minutes on one card). Run from the repository root of a checkout that carries the
# 5k pool as the ignored folder data_local/wikiart7-unlabeled (or pass DATA=/path/to/images):
#
#   bash benchmarks/gpu_check.sh            # prints one JSON line per measurement, then a markdown table
#
# 1. GPU-resident SimCLR resnet18 @112 px on the pool: epochs/s and img/s (cache in GPU memory, batched
#    augmentation on the GPU, bf16 autocast, channels_last). Anchor: 563 epochs / 170 s on an H100.
# 2. resnet50 @224 px: input-path rate (GPU-resident gather + batched augmentation only) vs the model's step rate
#    (target: input >= model).
# 3. resnet50 @224 px model step rate with fp32 / bf16 / bf16 + channels_last / bf16 + channels_last + compile.
#
# SMOKE=1 runs the same code on the CPU with tiny sizes (resnet18, 32/48 px, batch 8, no compile, no bf16): it
# only checks that the script works, the numbers mean nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DATA=${DATA:-data_local/wikiart7-unlabeled}
SECONDS_PER=${SECONDS_PER:-25}   # timed seconds per measurement
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ -d "$DATA" ] || { echo "error: $DATA is not a folder; carry the 5k pool as data_local/wikiart7-unlabeled or set DATA=" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

timeout 460 "$PY" - "$DATA" "$SECONDS_PER" "$OUT" <<'PYEOF'
import json, os, sys, time
from pathlib import Path

import torch

from ssl_art.config import AugCfg, DataCfg
from ssl_art.data.batch_aug import BatchAugment
from ssl_art.data.cache import build_cache, cache_key, open_cache, stored_shape
from ssl_art.data.cached_loader import CachedBatches
from ssl_art.data.loaders import build_collection
from ssl_art.engine.fast_path import apply_speed_options
from ssl_art.engine.sampler import ResumableSampler

data, per_s, out = sys.argv[1], float(sys.argv[2]), Path(sys.argv[3])
SMOKE = os.environ.get("SMOKE") == "1"
if SMOKE:
    dev, S1, S2, B1, B2, BIG, per_s = torch.device("cpu"), 32, 48, 8, 8, "resnet18", 1.0
else:
    assert torch.cuda.is_available(), "no CUDA device (SMOKE=1 checks the script on the CPU)"
    dev, S1, S2, B1, B2, BIG = torch.device("cuda"), 112, 224, 256, 128, "resnet50"
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
CUDA = dev.type == "cuda"
results = {"card": torch.cuda.get_device_name(0) if CUDA else "cpu (smoke)", "torch": torch.__version__}
print(json.dumps(results), flush=True)


def pool(size):
    cfg = DataCfg(path=data, image_size=size, num_workers=2 if SMOKE else 8)
    coll = build_collection(cfg)
    shape = stored_shape(coll, size, cfg.cache_scale, cfg.cache_max_aspect)
    folder = out / "cache" / cache_key(coll, shape, cfg.max_image_pixels)
    t0 = time.time()
    build_cache(coll, folder, shape, cfg.max_image_pixels, cfg.num_workers, progress=False)
    return coll, open_cache(folder, "ram"), time.time() - t0


def batches(coll, cache, size, bs, aug):
    sampler = ResumableSampler(len(cache), 0)
    cb = CachedBatches(cache, sampler, bs, BatchAugment(aug, size), 2, 0, dev, coll.paths, channels_last=True)
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        for b in cb:
            yield b.views, epoch
        epoch += 1


def simclr_model(backbone, channels_last, compile_model):
    from ssl_art.config import PretrainConfig, config_from_dict
    from ssl_art.methods.registry import build_pretrain_model

    cfg = config_from_dict(PretrainConfig, {"method": "simclr", "model": {"backbone": backbone}})
    m = build_pretrain_model(cfg).to(dev).train()
    apply_speed_options(m, channels_last, compile_model)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4, fused=CUDA)
    return m, opt


def step(m, opt, views, bf16):
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16 and CUDA):
        loss = m.training_step(views, 0.5).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def sync():
    if CUDA:
        torch.cuda.synchronize()


def rate(fn, seconds, warmup=3):
    for _ in range(warmup):
        fn()
    sync()
    t0, n = time.time(), 0
    while time.time() - t0 < seconds:
        n += fn()
    sync()
    return n / (time.time() - t0)


# 1. GPU-resident r18 @112 SimCLR epochs/s
coll, cache, build_s = pool(S1)
bs = B1
it = batches(coll, cache, S1, bs, AugCfg(preset="simclr"))
m, opt = simclr_model("resnet18", True, False)


def r18_step():
    views, epoch = next(it)
    step(m, opt, views, True)
    return views[0].shape[0]


img_s = rate(r18_step, per_s * 2)
r = {"case": f"r18@{S1} simclr gpu-resident bf16+cl", "images": len(cache), "batch": bs, "img_s": img_s,
     "epochs_s": img_s / len(cache), "cache_build_s": build_s, "cache_gb": cache.nbytes / 1e9}
results["r18_112"] = r
print(json.dumps(r), flush=True)
del m, opt, it

# 2. r50 @224: input path vs model
coll, cache, build_s = pool(S2)
bs = B2
it = batches(coll, cache, S2, bs, AugCfg(preset="simclr"))
input_rate = rate(lambda: next(it)[0][0].shape[0], per_s)
fixed = [torch.randn(bs, 3, S2, S2, device=dev).contiguous(memory_format=torch.channels_last) for _ in range(2)]
m, opt = simclr_model(BIG, True, False)
model_rate = rate(lambda: (step(m, opt, fixed, True), bs)[1], per_s)


def e2e():
    views, _ = next(it)
    step(m, opt, views, True)
    return views[0].shape[0]


e2e_rate = rate(e2e, per_s)
r = {"case": f"{BIG}@{S2} simclr bf16+cl", "input_img_s": input_rate, "model_img_s": model_rate, "e2e_img_s": e2e_rate,
     "input_vs_model": input_rate / model_rate, "cache_build_s": build_s}
results["r50_224"] = r
print(json.dumps(r), flush=True)
del m, opt

# 3. precision / memory format / compile on-off (model only, r50 @224)
rows = []
for name, bf16, cl, comp in [("fp32", False, False, False), ("bf16", True, False, False),
                             ("bf16+channels_last", True, True, False), ("bf16+channels_last+compile", True, True, True)]:
    if SMOKE and comp:
        continue  # compiling takes minutes on the CPU
    m, opt = simclr_model(BIG, cl, comp)
    x = [v.contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format) for v in fixed]
    t0 = time.time()
    step(m, opt, x, bf16)  # compile happens here
    sync()
    first_s = time.time() - t0
    rr = {"case": f"{BIG}@{S2} model {name}", "img_s": rate(lambda: (step(m, opt, x, bf16), bs)[1], per_s),
          "first_step_s": first_s}
    rows.append(rr)
    print(json.dumps(rr), flush=True)
    del m, opt
results["options"] = rows
(out / "gpu_check.json").write_text(json.dumps(results, indent=2))
print("\n| measurement | value |\n|---|---|")
a, b = results["r18_112"], results["r50_224"]
print(f"| card | {results['card']} |")
print(f"| {a['case']} | {a['epochs_s']:.2f} epochs/s ({a['img_s']:.0f} img/s, {a['images']} images) |")
print(f"| {b['case']}: input path / model | {b['input_img_s']:.0f} / {b['model_img_s']:.0f} img/s = {b['input_vs_model']:.2f}x |")
print(f"| {b['case']}: end to end | {b['e2e_img_s']:.0f} img/s |")
for rr in rows:
    print(f"| {rr['case']} | {rr['img_s']:.0f} img/s (first step {rr['first_step_s']:.1f} s) |")
PYEOF
