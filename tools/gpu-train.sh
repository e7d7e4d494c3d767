#!/usr/bin/env bash
# The larger-budget AffNet run docs/training.md asks for ("What next"), on a GPU machine, from what
# tools/gpu-prepare.sh wrote to target/gpu (run with WBS_TRAIN_IMAGES set, so that
# target/gpu/train-images holds the shipped file's photos). The shipped recipe (sC3XL) over EPOCHS
# epochs instead of 40, the relative rotation grown over half of them, seed SEED.
#
# Made for a machine lent in calls of limited length: each call runs at most LIMIT seconds and
# leaves a checkpoint; the next call resumes it. The run folder is copied to $OUT (when set) at the
# end of every call, so that it can be carried back to a fresh machine as target/gpu/run. The pair
# file (820 MB, too large to carry) is cut again from the photos where it is missing: `wbs
# train-data` is deterministic, so a resumed run sees the same pairs.
#
# usage: [DEVICE=cuda] [EPOCHS=200] [SEED=0] [LIMIT=540] [PAIRS=150000] [BATCH=512]
#        [CHECKPOINT_EVERY=250] tools/gpu-train.sh
# Exit status: 0 when the run has finished (run/affnet.safetensors written), 3 when it stopped at
# LIMIT (call it again), anything else on an error.
set -uo pipefail
cd "$(dirname "$0")/.."
g=target/gpu
data=target/gpu-data # not under target/gpu: a carried target/gpu replaces the folder there
run=$g/run
device=${DEVICE:-cuda} epochs=${EPOCHS:-200} seed=${SEED:-0} limit=${LIMIT:-540}
pairs=${PAIRS:-150000} batch=${BATCH:-512} every=${CHECKPOINT_EVERY:-250}
for f in "$g/wbs" "$g/train-images/coffee.png"; do
  [ -e "$f" ] || { echo "gpu-train: $f not found (run WBS_TRAIN_IMAGES=DIR tools/gpu-prepare.sh)" >&2; exit 2; }
done
export WBS_PTX_DIR="$g/ptx"
mkdir -p "$data"
start=$SECONDS

# The shipped file's training pairs and validation pair (docs/training.md, "How it was made").
if [ ! -f "$data/pairs-t1.safetensors" ]; then
  "$g/wbs" train-data --images "$g/train-images" --exclude coffee.png --out "$data/pairs-t1.safetensors" \
    --pairs 100000 --seed 0 --max-tilt 1 || exit 1
fi
if [ ! -f "$data/val/H1to2p" ]; then
  "$g/wbs" synth "$g/train-images/coffee.png" --out-dir "$data/val" --seed 7 --tilt 2.5 \
    --rotation 30 --scale 1.0 > /dev/null || exit 1
fi

resume=()
[ -f "$run/checkpoint.safetensors" ] && resume=(--resume)
left=$((limit - (SECONDS - start)))
[ "$left" -gt 30 ] || { echo "gpu-train: no time left for training in LIMIT=$limit" >&2; exit 3; }
timeout --signal=INT --kill-after=20 "$left" "$g/wbs" train affnet --device "$device" --seed "$seed" \
  --data "$data/pairs-t1.safetensors" --out "$run" --pairs "$pairs" --epochs "$epochs" \
  --batch "$batch" --lr 0.005 --geom-weight 2 --source-elongation-penalty 1 \
  --relative-rotation 180 --relative-rotation-warmup $((epochs / 2)) --tilt-cap 3 \
  --log-every 10 --checkpoint-every "$every" \
  --validate "$data/val/img1.png" "$data/val/img2.png" "$data/val/H1to2p" "${resume[@]}" 2>&1 |
  tail -n 5
status=${PIPESTATUS[0]}
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT/run" && cp -f "$run"/* "$OUT/run/"
fi
if [ -f "$run/affnet.safetensors" ]; then
  echo "gpu-train: finished; weights in $run/affnet.safetensors"
  exit 0
fi
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
  echo "gpu-train: stopped at LIMIT=$limit s; call again to resume from the last checkpoint"
  exit 3
fi
echo "gpu-train: wbs train stopped with status $status and no weights" >&2
[ "$status" -ne 0 ] && exit "$status"
exit 1
