#!/usr/bin/env bash
# The tilt and turn probes of docs/training.md for one AffNet weights file: hesaffnet inliers on
# the coffee photo seen at tilts 1.5 / 2 / 2.5 / 3, unturned, turned 45° / 90°, zoomed 2.5 and
# zoomed 2.5 with 45° (made by `wbs synth`), and on OxAff graf 1–4 / 1–5 / 1–6 and bark 1–3 / 1–4:
# the tilt table's row and the turn table's column. "– (n)" is a pair not registered, with its n
# inliers. The synthetic pairs are cached in the work folder.
#
# usage: [MATCH_ARGS="..."] tools/probes.sh WBS WEIGHTS COFFEE_PNG [WORK_DIR]
#   e.g. tools/probes.sh target/release/wbs data/affnet.safetensors train-images/coffee.png
#   MATCH_ARGS: more `wbs match` flags for every pair, e.g. MATCH_ARGS="--affnet-turns 4"
# The photo is scikit-image's skimage/data/coffee.png (docs/training.md, "How it was made");
# OxAff is read from ../shared/datasets beside the checkout.
set -euo pipefail
if [ $# -lt 3 ]; then echo "usage: tools/probes.sh WBS WEIGHTS COFFEE_PNG [WORK_DIR]" >&2; exit 2; fi
wbs=$1 weights=$2 coffee=$3 work=${4:-probes}
oxaff="$(cd "$(dirname "$0")/.." && pwd)/../shared/datasets/OxAff"
for f in "$wbs" "$weights" "$coffee" "$oxaff/graf/H1to6p" "$oxaff/bark/H1to4p"; do
  [ -e "$f" ] || { echo "probes: $f not found" >&2; exit 2; }
done
mkdir -p "$work"

# synth NAME ARGS...: the coffee photo through one `wbs synth` view, made once.
synth() {
  local dir="$work/$1"; shift
  [ -f "$dir/H1to2p" ] || "$wbs" synth "$coffee" --out-dir "$dir" --seed 3 --gamma 1 --noise 0 \
    "$@" > /dev/null
}

# inliers IMG1 IMG2 H: the cell for one pair, judged against its ground truth.
inliers() {
  # shellcheck disable=SC2086 # MATCH_ARGS is split into flags on purpose
  "$wbs" match "$1" "$2" --method hesaffnet --affnet-weights "$weights" --ground-truth "$3" \
    ${MATCH_ARGS:-} --json - 2> /dev/null | python3 -c 'import json, sys
r = json.load(sys.stdin)
print(r["inliers"] if r["registered"] else "– (%d)" % r["inliers"])'
}

tilt="" turn=""
for t in 1.5 2 2.5 3; do
  synth "tilt$t" --tilt "$t" --rotation 0 --scale 1
  tilt="$tilt | $(inliers "$work/tilt$t/img1.png" "$work/tilt$t/img2.png" "$work/tilt$t/H1to2p")"
done
for k in 4 5 6; do
  tilt="$tilt | $(inliers "$oxaff/graf/img1.png" "$oxaff/graf/img$k.png" "$oxaff/graf/H1to${k}p")"
done
# NAME ROTATION SCALE: the turn table's coffee rows, in its order.
for view in "turn0 0 1" "turn45 45 1" "turn90 90 1" "zoom2.5 0 2.5" "zoom2.5turn45 45 2.5"; do
  read -r name r z <<< "$view"
  synth "$name" --tilt 1 --rotation "$r" --scale "$z"
  turn="$turn | $(inliers "$work/$name/img1.png" "$work/$name/img2.png" "$work/$name/H1to2p")"
done
for k in 3 4; do
  turn="$turn | $(inliers "$oxaff/bark/img1.png" "$oxaff/bark/img$k.png" "$oxaff/bark/H1to${k}p")"
done
echo "tilt 1.5 / 2 / 2.5 / 3, graf 1–4 / 1–5 / 1–6$tilt |"
echo "coffee no turn / 45° / 90° / zoom 2.5 / zoom 2.5 and 45°, bark 1–3 / 1–4$turn |"
