#!/usr/bin/env bash
# Runs, on a GPU machine, every check docs/gpu-validation.md lists, from what tools/gpu-prepare.sh
# wrote to target/gpu (no Rust toolchain, NVRTC or shared data needed there). Results go to
# target/gpu/results: device.txt, gpu-check.txt, device_parity.txt (the `cargo test --test
# device_parity` binary, its cuda instances included), bench.txt, and two short training runs of
# the same settings, train-cuda/ (--device cuda) and train-cpu/ (--device cpu), whose log.csv rows
# should agree up to f32 drift, and {modsnet,mods}-{cuda,cpu}.json/.txt (MODS with AffNet on
# graf 1->6 and with Baumberg on graf 1 and its tilt-6 view, on both devices). Where $OUT is set
# (the device tool), they are also packed into $OUT/gpu-results.tar.gz (the tool brings back at
# most 8 files) beside $OUT/summary.txt. Exit status: 0 only when every `wbs gpu-check` row and
# every parity test passed.
set -uo pipefail
cd "$(dirname "$0")/.."
g=target/gpu
res=$g/results
rm -rf "$res"
mkdir -p "$res"
export WBS_PTX_DIR="$g/ptx" WBS_WEIGHTS="$g/weights"
pair=(--pair "$g/graf/img1.png" "$g/graf/img3.png")
nvidia-smi -L > "$res/device.txt" 2>&1
"$g/wbs" gpu-check "${pair[@]}" 2>&1 | tee "$res/gpu-check.txt"
check=${PIPESTATUS[0]}
if [ -x "$g/device_parity" ]; then
  "$g/device_parity" --test-threads 1 2>&1 | tee "$res/device_parity.txt" | tail -n 25
  parity=${PIPESTATUS[0]}
else
  echo "no $g/device_parity: run tools/gpu-prepare.sh again" | tee "$res/device_parity.txt"
  parity=1
fi
"$g/wbs" bench --device cuda "${pair[@]}" 2>&1 | tee "$res/bench.txt"
train=(train affnet --data "$g/pairs.safetensors" --pairs 51200 --epochs 1 --batch 512
       --log-every 10 --checkpoint-every 0 --seed 1)
"$g/wbs" "${train[@]}" --device cuda --out "$res/train-cuda" 2>&1 | tail -n 20 | tee "$res/train-cuda.txt"
"$g/wbs" "${train[@]}" --device cpu --out "$res/train-cpu" --stop-after 30 2>&1 | tail -n 5 | tee "$res/train-cpu.txt"
# MODS on pairs that a views step registers: modsnet on graf 1->6 with wbs's shipped AffNet
# (registered at step 2 on the CPU, 757 inliers; with the authors' AffNet of WBS_WEIGHTS step 0
# registers it and no view would run) (AffNet passes of the views take turns on the device
# while their CPU stages run in parallel), mods on graf 1 against its
# tilt-6 view (`wbs synth --seed 1 --tilt 6`: registered at step 2 on the CPU, 386 inliers).
# From step 2 on FGINN's neighbour lists come from the device (k_nearest_scores). Expected: same
# step and inliers within a few on both devices (f32 drift moves single regions), less match
# time on cuda.
"$g/wbs" synth "$g/graf/img1.png" --seed 1 --tilt 6 --out-dir "$res/graf-t6" 2>&1 | tail -n 1
for d in cuda cpu; do
  "$g/wbs" match "$g/graf/img1.png" "$g/graf/img6.png" --method modsnet --device "$d" \
    --affnet-weights data/affnet.safetensors --json "$res/modsnet-$d.json" 2>&1 | tail -n 9 | tee "$res/modsnet-$d.txt"
  "$g/wbs" match "$res/graf-t6/img1.png" "$res/graf-t6/img2.png" --method mods --device "$d" \
    --ground-truth "$res/graf-t6/H1to2p" --json "$res/mods-$d.json" 2>&1 | tail -n 9 \
    | tee "$res/mods-$d.txt"
done
echo "first log rows, cuda then cpu (step,epoch,lr,loss,...):"
head -n 4 "$res/train-cuda/log.csv" "$res/train-cpu/log.csv"
status=$(( check != 0 || parity != 0 ))
{
  echo "gpu-check exit $check, device_parity exit $parity"
  cat "$res/device.txt"
  grep -E "ALL PASSED|FAILED" "$res/gpu-check.txt"
  grep -E "^test result|FAILED|panicked|no CUDA here" "$res/device_parity.txt"
  for f in "$res"/{modsnet,mods}-{cuda,cpu}.txt; do echo "== $f"; grep -E "inliers|step" "$f"; done
} > "$res/summary.txt" 2>&1
if [ -n "${OUT:-}" ]; then
  cp "$res/summary.txt" "$OUT/summary.txt"
  tar czf "$OUT/gpu-results.tar.gz" -C "$g" results
fi
exit "$status"
