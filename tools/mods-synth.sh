#!/bin/sh
# The extreme synthetic benchmark of docs/mods.md: 30 pairs from 6 OxAff photos, tilts 4–10,
# random rotation, zoom and illumination (seeded), in the OxAff layout so that
# ../shared/tools/score.py --datasets OxAff --root OUT scores it.
# usage: tools/mods-synth.sh WBS DATASETS OUT   (e.g. target/release/wbs ../shared/datasets synth-x)
set -e
wbs=$1; data=$2; out=$3
for photo in graf boat wall bark trees ubc; do
  seed=0
  for tilt in 4 5.5 7 8.5 10; do
    "$wbs" synth "$data/OxAff/$photo/img1.png" --out-dir "$out/OxAff/$photo-t$tilt" \
      --seed "$seed" --tilt "$tilt" > /dev/null
    seed=$((seed + 1))
  done
done
