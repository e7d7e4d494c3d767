#!/usr/bin/env bash
# Prepares, on a machine without a GPU, everything `wbs gpu-check` and `wbs bench --device cuda`
# need on a GPU machine that may have neither a Rust toolchain nor NVRTC nor the shared data
# (docs/gpu-validation.md). Writes only under target/ (git-ignored, so it can be carried):
#   target/gpu/wbs          the release binary, stripped (~6 MB)
#   target/gpu/device_parity  the `cargo test --test device_parity` binary, stripped
#   target/gpu/ptx/         every kernel compiled to PTX for compute_90 (H100/H200) and compute_75
#   target/gpu/weights/     AffNet and OriNet (and HardNet when found) as safetensors
#   target/gpu/graf/        OxAff graf img1/img3, the issue's end-to-end pair
#   target/gpu/pairs.safetensors  3,000 training pairs cut by `wbs train-data` from data/sample
#   target/gpu/train-images/  only with WBS_TRAIN_IMAGES=DIR: the shipped file's training photos
#                           (docs/training.md, "How it was made"), for tools/gpu-train.sh
# Needs NVRTC here: WBS_NVRTC_DIR=<dir with libnvrtc.so.13> (pip nvidia-cuda-nvrtc==13.0.88).
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${WBS_SHARED:-../shared}"
out=target/gpu
mkdir -p "$out/ptx" "$out/weights" "$out/graf"

cargo build --release
strip -o "$out/wbs" target/release/wbs
# The parity tests of `cargo test --test device_parity`, built here: the GPU machine has no Rust
# toolchain. They read data/sample from the checkout they run in.
parity=$(cargo test --release --test device_parity --no-run --message-format=json \
  | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[ -x "$parity" ] || { echo "gpu-prepare: the device_parity test binary was not built" >&2; exit 2; }
strip -o "$out/device_parity" "$parity"
for arch in compute_90 compute_75; do
  "$out/wbs" gpu-ptx --out "$out/ptx" --arch "$arch"
done
for pair in "AffNet.pth affnet" "OriNet.pth orinet" "HardNet.pth hardnet" "HardNet++.pth hardnet"; do
  set -- $pair
  if [ -f "$shared/weights/$1" ]; then
    "$out/wbs" weights import "$shared/weights/$1" --out "$out/weights/$2.safetensors"
  fi
done
if [ -f "$shared/datasets/OxAff/graf/img1.png" ]; then
  cp -f "$shared/datasets/OxAff/graf/img1.png" "$shared/datasets/OxAff/graf/img3.png" \
    "$shared/datasets/OxAff/graf/img6.png" "$out/graf/"
fi
if [ -n "${WBS_TRAIN_IMAGES:-}" ]; then
  mkdir -p "$out/train-images"
  cp -f "$WBS_TRAIN_IMAGES"/*.png "$WBS_TRAIN_IMAGES"/*.jpg "$out/train-images/"
  [ -f "$out/train-images/coffee.png" ] || { echo "gpu-prepare: no coffee.png in $WBS_TRAIN_IMAGES" >&2; exit 2; }
fi
"$out/wbs" train-data --images data/sample --out "$out/pairs.safetensors" --pairs 3000 --seed 0
du -sh "$out"
echo "carry target/gpu; on the GPU machine, from the repository root: tools/gpu-validate.sh"
echo "or step by step:"
echo "  WBS_PTX_DIR=target/gpu/ptx WBS_WEIGHTS=target/gpu/weights target/gpu/wbs gpu-check --pair target/gpu/graf/img1.png target/gpu/graf/img3.png"
echo "  WBS_PTX_DIR=target/gpu/ptx WBS_WEIGHTS=target/gpu/weights target/gpu/wbs bench --device cuda --pair target/gpu/graf/img1.png target/gpu/graf/img3.png"
