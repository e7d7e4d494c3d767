#!/usr/bin/env bash
# Side by side on one collection: wbs's features + matching + verification into a COLMAP
# database, then COLMAP's own SIFT pipeline (pycolmap extract_features + match_exhaustive), then
# pycolmap's incremental mapping on both databases. Usage:
#   tools/collection_vs_colmap.sh IMAGES OUT [PYTHON] [extra wbs collection flags...]
# PYTHON is an interpreter with pycolmap (default: python3). Prints the wbs run's summary and
# tools/colmap_check.py's JSON (also written to OUT/check.json).
set -euo pipefail
images=$1 out=$2 python=${3:-python3}
shift $(( $# < 3 ? $# : 3 ))
here="$(cd "$(dirname "$0")/.." && pwd)"
wbs="${WBS:-$here/target/release/wbs}"
rm -rf "$out" && mkdir -p "$out"
"$wbs" collection --images "$images" --out "$out/wbs" "$@"
"$python" "$here/tools/colmap_check.py" --images "$images" --database "$out/wbs/database.db" \
  --out "$out/check" --colmap --json "$out/check.json" ${CHECK_FLAGS:-} 2> "$out/pycolmap.log"
