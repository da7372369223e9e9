#!/bin/bash
# How stage 11 was made: stage 10's weights fine-tuned on the build machine's CPU (2 cores, no
# GPU), run from the repository root of a clone. It generates the four training worlds, merges
# them into one archive, and trains into /tmp/stage11 (about 65 minutes: 8 for the worlds, 50 for
# the time-limited fit, 2 to cut the crops, 2 to write the bundle). Calibrate and evaluate
# afterwards as models/tl-resnet18-synthetic/MODEL_CARD.md says.
# Stage 10's weights come from the commit that shipped them; pass STAGE10=PATH to use a copy.
set -euo pipefail
W=${WORLD:-/tmp/world11}
STAGE10=${STAGE10:-$W/stage10.safetensors}
JOBS=${JOBS:-2}
rm -rf "$W" /tmp/stage11
mkdir -p "$W/all/archive"
if [ ! -f "$STAGE10" ]; then
  git show 8928c21:models/tl-resnet18-synthetic/weights.safetensors > "$STAGE10"
fi
echo "stage 10 weights: $(sha256sum "$STAGE10" | cut -c1-64) (expected 64f70583b9bd2f62...)"
C="--distractor-rate 0 --max-side 1500 --no-preview -j $JOBS"
H="--subtle-share 0.5 --wedge-variants 0.2"
for world in "31 400 hard" "32 400 hard" "33 400 hard" "34 300 default"; do
  read -r seed studies kind <<< "$world"
  extra=""
  [ "$kind" = hard ] && extra=$H
  # shellcheck disable=SC2086  # C and extra are lists of options
  tlaudit synth "$W/s$seed" --studies "$studies" --seed "$seed" $C $extra
  mv "$W/s$seed/archive" "$W/all/archive/w$seed"
done
python - "$W" 31 32 33 34 <<'PY'
import sys

import pandas as pd

w, seeds = sys.argv[1], sys.argv[2:]
pd.concat(
    pd.read_csv(f"{w}/s{s}/ground_truth.csv", dtype=str, keep_default_na=False).assign(
        image=lambda t, s=s: f"w{s}/" + t.image
    )
    for s in seeds
).to_csv(f"{w}/all/ground_truth.csv", index=False)
PY
tlaudit train "$W/all/archive" --annotations "$W/all/ground_truth.csv" --out /tmp/stage11 \
  --name tl-resnet18-synthetic --input-size 128 --crop-normalisation percentile \
  --batch-grid 64 --cv-folds 0 --test-fraction 0 --val-fraction 0.15 --monitor auc \
  --class-weighting sampler --seed 9 --pretrained "$STAGE10" --trainable all \
  --feature-stride 8 --box-jitter 0.1 --jitter-copies 1 --epochs 12 --early-stop 12 \
  --plateau-patience 4 --lr-grid 0.0001 --zone-loss 1 --device cpu --workers "$JOBS" \
  --max-minutes 50 \
  --source "tlaudit synth --distractor-rate 0 --max-side 1500: hard seeds 31, 32, 33 (400 studies each, --subtle-share 0.5 --wedge-variants 0.2) and default seed 34 (300 studies); fine-tuned from stage 10 (synthetic only)"
