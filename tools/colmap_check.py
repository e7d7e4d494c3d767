#!/usr/bin/env python3
"""Reconstructs a collection with pycolmap from a COLMAP database and reports it; optionally runs
COLMAP's own SIFT pipeline on the same images first, for the side-by-side table.

    colmap_check.py --images DIR --database wbs.db --out DIR [--colmap] [--expect-registered N]
                    [--max-error PX] [--min-points N] [--json FILE]

With --colmap, COLMAP's pipeline (pycolmap.extract_features, match_exhaustive) writes
<out>/colmap.db, timed, and incremental_mapping runs on both databases. Exits 1 when a check
given on the command line fails (for wbs's database).
"""
import argparse
import json
import os
import shutil
import sys
import time

import pycolmap


def reconstruct(database, images, out):
    """Incremental mapping; the largest model's statistics."""
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    t = time.perf_counter()
    models = pycolmap.incremental_mapping(database, images, out)
    mapping_s = time.perf_counter() - t
    if not models:
        return {"registered": 0, "points": 0, "track_length": 0.0, "reprojection_error": None,
                "mapping_s": mapping_s, "models": 0}
    best = max(models.values(), key=lambda r: r.num_reg_images())
    return {
        "registered": best.num_reg_images(),
        "points": best.num_points3D(),
        "track_length": best.compute_mean_track_length(),
        "reprojection_error": best.compute_mean_reprojection_error(),
        "mapping_s": mapping_s,
        "models": len(models),
    }


def colmap_features_and_matches(images, database):
    """COLMAP's SIFT pipeline: features and exhaustive matching with verification, timed."""
    if os.path.exists(database):
        os.remove(database)
    t = time.perf_counter()
    pycolmap.extract_features(database, images)
    features_s = time.perf_counter() - t
    t = time.perf_counter()
    pycolmap.match_exhaustive(database)
    matching_s = time.perf_counter() - t
    return features_s, matching_s


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", required=True)
    p.add_argument("--database", required=True, help="the database wbs wrote")
    p.add_argument("--out", required=True)
    p.add_argument("--colmap", action="store_true", help="also run COLMAP's SIFT pipeline")
    p.add_argument("--expect-registered", type=int)
    p.add_argument("--max-error", type=float)
    p.add_argument("--min-points", type=int)
    p.add_argument("--json")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    result = {"pycolmap": pycolmap.__version__}
    result["wbs"] = reconstruct(a.database, a.images, os.path.join(a.out, "wbs-sparse"))
    if a.colmap:
        db = os.path.join(a.out, "colmap.db")
        features_s, matching_s = colmap_features_and_matches(a.images, db)
        result["colmap"] = reconstruct(db, a.images, os.path.join(a.out, "colmap-sparse"))
        result["colmap"].update(features_s=features_s, matching_s=matching_s)
    text = json.dumps(result, indent=2)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
    w = result["wbs"]
    failures = []
    if a.expect_registered is not None and w["registered"] < a.expect_registered:
        failures.append(f"registered {w['registered']} < {a.expect_registered}")
    if a.max_error is not None and (w["reprojection_error"] is None
                                    or w["reprojection_error"] > a.max_error):
        failures.append(f"reprojection error {w['reprojection_error']} > {a.max_error}")
    if a.min_points is not None and w["points"] < a.min_points:
        failures.append(f"3D points {w['points']} < {a.min_points}")
    for f in failures:
        print(f"FAILED: {f}")  # stdout: stderr holds COLMAP's log
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
