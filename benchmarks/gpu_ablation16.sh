#!/usr/bin/env bash
# Issue 16's GPU run: the ablation at 112 px for 100 epochs per run, the whole pool GPU-resident (decode-once cache
# in GPU memory, batched augmentation on the GPU), in one device call of at most ~9.5 minutes. Prepare on the CPU:
#
#   python benchmarks/device_data.py                  # ../shared/data -> data_local/ (35 MiB at 132 px, ignored)
#   SMOKE=1 bash benchmarks/gpu_ablation16.sh         # the same script on the CPU, tiny synthetic sizes (~1 min)
#   # the device's image has torch, timm, einops, scikit-learn, tensorboard but not lightly or faiss: carry their
#   # wheels (19 MiB; hydra-core/omegaconf are not imported on this path) in the ignored .whl/
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl lightly==1.6.0 faiss-cpu==1.15.1
#   run(carry=["data_local", ".whl"], timeout_s=600, command="python3 -m pip install -q --no-index --no-deps \
#       --no-compile --no-cache-dir --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site \
#       PYTHONUNBUFFERED=1 && bash benchmarks/gpu_ablation16.sh")
#
# Then copy the returned ablation16_gpu112px.jsonl and its _step_cost.json to benchmarks/results/, and table.md and
# curves.png to docs/ (ablation16_gpu112px_table.md, img/ablation16_gpu112px_curves.png): keep the table made on
# the device. A --report rerun on a CPU never re-times a step; the GPU's step costs are keyed to cuda and show '-'.
#
# Rows, in the order they run (a run cut by the budget resumes on the next call, from the records carried back in
# benchmarks/results/): the best SimCLR baseline and the full method first, then standard SimCLR and the full method
# with the standard augmentation, then the four removals. Settings differ from the CPU table on purpose: batch 256
# (SimCLR's own; the lr scales linearly with batch), 100 epochs, the monitor every 10 epochs. The table reports wall
# time (--clock wall): a GPU process's CPU time measures nothing useful.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DATA=${DATA:-data_local}
SUFFIX=""; [ "${SMOKE:-0}" != 1 ] || SUFFIX=_smoke
OUT=${OUT:-runs/gpu_ablation16_out$SUFFIX}  # the device tool sets OUT: what is written there comes back
BUDGET=${BUDGET:-520}                  # seconds of training + evaluation before the report
VARIANTS=${VARIANTS:-simclr_jitter_first,full_jitter_first,simclr,full_simclr_aug,no_fusion,no_gram,no_distill,no_soft}
RES="$OUT/ablation16_gpu112px.jsonl"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ "${SMOKE:-0}" = 1 ]; then   # proves the script on the CPU: tiny synthetic run, numbers mean nothing
    ARGS=(--quick --clock wall --seeds 1 --core simclr_jitter_first,full_jitter_first --out runs/gpu_ablation16_smoke)
    VARIANTS=simclr_jitter_first,full_jitter_first
else
    for d in "$DATA/wikiart7-unlabeled" "$DATA/wikiart7-dev"; do
        [ -d "$d" ] || { echo "error: $d is not a folder; run python benchmarks/device_data.py and carry data_local" >&2; exit 2; }
    done
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'error: no CUDA device (SMOKE=1 checks the script on the CPU)')"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/card.txt" || true
    ARGS=(--image-size 112 --epochs 100 --batch-size 256 --seeds 1 --removal-seeds 1 --workers 8
          --core simclr_jitter_first,full_jitter_first --monitor-every 10 --clock wall
          --unlabeled "$DATA/wikiart7-unlabeled" --labelled "$DATA/wikiart7-dev" --out runs/gpu_ablation16
          --set run.amp=bf16 run.channels_last=true)
    # records of an earlier call (brought back and committed) let this one continue where that one stopped
    for f in ablation16_gpu112px.jsonl ablation16_gpu112px_step_cost.json; do
        [ -f "$OUT/$f" ] || [ ! -f "benchmarks/results/$f" ] || cp "benchmarks/results/$f" "$OUT/$f"
    done
fi

t0=$(date +%s)
rc=0
timeout --signal=TERM --kill-after=30 "$BUDGET" "$PY" benchmarks/ablation.py "${ARGS[@]}" --results "$RES" \
    --variants "$VARIANTS" > "$OUT/train.log" 2>&1 || rc=$?
echo "training + evaluation: rc=$rc after $(( $(date +%s) - t0 )) s (124 = budget reached; rerun to continue)"
tail -n 5 "$OUT/train.log"
"$PY" benchmarks/ablation.py "${ARGS[@]}" --results "$RES" --variants "$VARIANTS" --report \
    --baseline simclr_jitter_first --md "$OUT/table.md" --png "$OUT/curves.png" 2>&1 | grep -v "^20..-..-.. " | tail -n 25
