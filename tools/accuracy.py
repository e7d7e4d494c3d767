#!/usr/bin/env python3
"""A finer accuracy signal than registered pairs, for development.

For each pair of the named datasets (authors' layouts, via ../shared/tools/score.py's loaders),
runs `wbs match --json - --tentatives [ARGS]` and reports per dataset: registered pairs (the
protocol's verdict), ground-truth-correct tentatives and inliers (transfer error < 5 px), and the
sum over pairs of log(1 + correct tentatives), which weighs the hard pairs that decide
registration. Needs python3 + numpy.

usage: tools/accuracy.py WBS [ARGS] [DATASETS]     e.g. tools/accuracy.py target/release/wbs "--shape none" EF,SymB
"""
import json, os, subprocess, sys
import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
shared = os.path.join(here, "..", "..", "shared")
sys.path.insert(0, os.path.join(shared, "tools"))
import score  # noqa: E402

wbs = sys.argv[1]
extra = sys.argv[2].split() if len(sys.argv) > 2 else []
datasets = (sys.argv[3] if len(sys.argv) > 3 else "EF,SymB").split(",")


def run(item):
    name, a, b, gt = item
    p = subprocess.run([wbs, "match", a, b, "--json", "-", "--tentatives"] + extra, capture_output=True, text=True)
    rep = json.loads(p.stdout)
    ok, _ = score.judge(rep, gt)
    H = gt[1]

    def correct(m):
        if len(m) == 0:
            return 0
        m = np.array(m)[:, :4]
        P = np.c_[m[:, :2], np.ones(len(m))] @ H.T
        return int((np.linalg.norm(P[:, :2] / P[:, 2:] - m[:, 2:], axis=1) < 5).sum())

    return ok, correct(rep.get("tentative_matches") or []), correct(rep["inlier_matches"])


for ds in datasets:
    rows = [run(item) for item in score.pairs(os.path.join(shared, "datasets", ds), ds)]
    print(f"{ds:7s} registered {sum(r[0] for r in rows):3d}/{len(rows)}  correct tentatives {sum(r[1] for r in rows):6d}  "
          f"correct inliers {sum(r[2] for r in rows):6d}  log-correct-tentatives {sum(np.log1p(r[1]) for r in rows):.1f}", flush=True)
