#!/bin/bash
# How stages 9 and 10 were made: one command on a lent GPU machine (one H200, 16 cores, no network,
# no JPEG encoders), run from the repository root. It generates the training worlds, trains, and
# leaves the bundle in /tmp/$NAME (split into 15 MB parts under $OUT for the trip back).
# Worlds: SEEDS are default worlds; HARD_SEEDS are made with HARD_FLAGS added. Every world is
# written with --uncompressed (same pixels as the default syntaxes). Calibrate and evaluate
# afterwards as docs/models-history.md says (stages 9 and 10). The stage-10 run:
#   NAME=stage10 STUDIES=800 SEEDS="3 4 10" HARD_SEEDS="20 21 22" \
#     HARD_FLAGS="--subtle-share 0.5 --wedge-variants 0.2" JOBS=15 DEVICE=cuda BUDGET_S=520 \
#     EPOCHS=80 bash docs/models-history/tl-resnet18-synthetic/gpu_train.sh
# (stage 9: NAME=stage9 SEEDS="3 4 10 15 16 17", no HARD_SEEDS.)
# BUDGET_S bounds the whole script: the training time limit (--max-minutes) is what is left of it
# after generating the worlds, less two minutes for decoding and writing the bundle.
set -o pipefail
export PYTHONUNBUFFERED=1
T0=$(date +%s)
OUTDIR=${OUT:-/tmp/devout}; mkdir -p "$OUTDIR"
LOG="$OUTDIR/run.log"
say() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$LOG"; }
# Python packages the GPU machine lacks travel as wheels in .whl/ (pydicom, openpyxl, et_xmlfile)
if ls .whl/*.whl >/dev/null 2>&1 && ! python3 -c "import pydicom" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PY:-python3}
W=${WORLD:-/tmp/world}; rm -rf "$W"; mkdir -p "$W/all/archive"
NAME=${NAME:-stage10}
HARD_SEEDS=${HARD_SEEDS:-}
world() {  # world SEED [extra synth flags...]
  local seed=$1; shift
  $PY -m auditor synth "$W/s$seed" --studies "$STUDIES" --seed "$seed" --distractor-rate 0 \
    --max-side 1500 --no-preview --uncompressed -j "$JOBS" "$@" > "$W/synth$seed.log" 2>&1 \
    || { tail -20 "$W/synth$seed.log" | tee -a "$LOG"; exit 1; }
  mv "$W/s$seed/archive" "$W/all/archive/w$seed"
  say "synth seed $seed done $*"
}
for seed in $SEEDS; do world "$seed"; done
# shellcheck disable=SC2086  # HARD_FLAGS is a list of options
for seed in $HARD_SEEDS; do world "$seed" $HARD_FLAGS; done
$PY - "$W" $SEEDS $HARD_SEEDS <<'PY' 2>&1 | tee -a "$LOG"
import sys, pandas as pd
w, seeds = sys.argv[1], sys.argv[2:]
pd.concat(
    pd.read_csv(f"{w}/s{s}/ground_truth.csv", dtype=str, keep_default_na=False).assign(
        image=lambda t, s=s: f"w{s}/" + t.image
    )
    for s in seeds
).to_csv(f"{w}/all/ground_truth.csv", index=False)
PY
LEFT=$(( BUDGET_S - ($(date +%s) - T0) - 60 ))
MIN=$($PY -c "print(max(0.5, ($LEFT - 60) / 60))")
say "training with --max-minutes $MIN"
rm -rf "/tmp/$NAME"
ALL_SEEDS=$(echo $SEEDS $HARD_SEEDS | sed 's/ /, /g')
HARD_LIST=$(echo $HARD_SEEDS | sed 's/ /, /g')
SRC="tlaudit synth --studies $STUDIES --distractor-rate 0 --max-side 1500, seeds $ALL_SEEDS${HARD_SEEDS:+ (seeds $HARD_LIST also with $HARD_FLAGS)} (synthetic only; written uncompressed on the GPU machine, same pixels)"
$PY -m auditor train "$W/all/archive" --annotations "$W/all/ground_truth.csv" --out "/tmp/$NAME" \
  --name tl-resnet18-synthetic --input-size 128 --crop-normalisation percentile \
  --batch-grid 64 --cv-folds 0 --test-fraction 0 --val-fraction 0.15 --monitor auc \
  --class-weighting sampler --seed 9 --pretrained none --trainable all --feature-stride 8 \
  --box-jitter 0.1 --jitter-copies 2 --epochs "$EPOCHS" --early-stop 12 --plateau-patience 4 \
  --lr-grid 0.001 --zone-loss 1 --device "$DEVICE" --workers "$JOBS" --max-minutes "$MIN" \
  --source "$SRC" > "$OUTDIR/train_console.txt" 2>&1
say "train rc $?"
cp "/tmp/$NAME/train_log.txt" "/tmp/$NAME/history.csv" "$OUTDIR/" 2>/dev/null
tar -C /tmp -cf - "$NAME" | split -b 15M - "$OUTDIR/$NAME.tar.part_"
say "done"
