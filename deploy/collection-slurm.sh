#!/usr/bin/env bash
# Slurm job array: one `wbs collection` shard per task, then one merge job that waits for all of
# them. Submit from a folder on a filesystem every node sees:
#
#   IMAGES=/data/photos OUT=/data/sfm SHARDS=16 sbatch --array=1-16 deploy/collection-slurm.sh
#   sbatch --dependency=afterok:<array job id> --wrap \
#     "wbs collection merge /data/sfm/database.shard-*-of-16.db --out /data/sfm/database.db"
#
# The shards share OUT/features/, the per-image feature cache (files are written atomically, so
# two shards that need one image may both extract it; neither reads half a file). A task that
# was preempted or ran out of time is simply resubmitted: --resume continues its database.
# Add MAX_PAIRS=N to match at most N pairs per run within a short time limit, and resubmit.
#SBATCH --job-name=wbs-collection
#SBATCH --cpus-per-task=8
#SBATCH --mem=16G
#SBATCH --time=04:00:00
#SBATCH --requeue
set -euo pipefail
: "${IMAGES:?set IMAGES to the folder of images}" "${OUT:?set OUT to the output folder}"
: "${SHARDS:?set SHARDS to the array size}" "${SLURM_ARRAY_TASK_ID:?submit with sbatch --array=1-N}"
export RAYON_NUM_THREADS="${SLURM_CPUS_PER_TASK:-8}"
db="$OUT/database.shard-${SLURM_ARRAY_TASK_ID}-of-${SHARDS}.db"
resume=()
[ -e "$db" ] && resume=(--resume)
exec wbs collection --images "$IMAGES" --out "$OUT" --shard "${SLURM_ARRAY_TASK_ID}/${SHARDS}" \
  ${MAX_PAIRS:+--max-pairs "$MAX_PAIRS"} "${resume[@]}" ${WBS_FLAGS:-}
