#!/usr/bin/env python3
"""Could any homography on these tentatives pass the protocol? An oracle for unregistered H pairs.

The protocol registers a pair when the model has at least 15 inliers (3 px) and the median
ground-truth transfer error of those inliers is at most 5 px. So at least half of the inliers
of an accepted model lie within 5 px of the ground truth. This script asks, for one pair and the
tentatives wbs found (`wbs match A B --tentatives --json R.json ...`), whether such a model
exists: it draws homography hypotheses from 4-subsets of the tentatives the ground truth calls
good (within `--near` px; all subsets when there are few, else `--draws` random ones), refits
each on its inliers (least squares, 3 times), and reports the hypothesis with the most inliers
that the protocol accepts, and the one with the most inliers overall. A pair where none is
accepted cannot be registered from these tentatives by any verification step; what it lacks are
correct tentatives (or a ground truth that fits them).

usage: mods-oracle.py REPORT.json H1to2 [--near PX] [--draws N] [--seed S]
       (numpy only; prints one line)
"""
import argparse
import itertools
import json

import numpy as np


def dlt(p1, p2):
    """The homography p1 -> p2 by the normalised DLT (4 or more points), or None."""
    def norm(p):
        c = p.mean(0)
        s = np.sqrt(2) / max(np.sqrt(((p - c) ** 2).sum(1)).mean(), 1e-12)
        return np.array([[s, 0, -s * c[0]], [0, s, -s * c[1]], [0, 0, 1]])
    t1, t2 = norm(p1), norm(p2)
    a = np.c_[p1, np.ones(len(p1))] @ t1.T
    b = np.c_[p2, np.ones(len(p2))] @ t2.T
    rows = []
    for (x, y, w), (u, v, z) in zip(a, b):
        rows.append([0, 0, 0, -z * x, -z * y, -z * w, v * x, v * y, v * w])
        rows.append([z * x, z * y, z * w, 0, 0, 0, -u * x, -u * y, -u * w])
    _, s, vt = np.linalg.svd(np.array(rows))
    h = np.linalg.inv(t2) @ vt[-1].reshape(3, 3) @ t1
    if abs(h[2, 2]) < 1e-12:
        return None
    return h / h[2, 2]


def transfer(h, p):
    q = np.c_[p, np.ones(len(p))] @ h.T
    with np.errstate(divide="ignore", invalid="ignore"):
        return q[:, :2] / q[:, 2:]


def symmetric_error(h, p1, p2):
    """max of the forward and backward transfer errors (px)."""
    try:
        hi = np.linalg.inv(h)
    except np.linalg.LinAlgError:
        return np.full(len(p1), np.inf)
    e = np.maximum(np.linalg.norm(transfer(h, p1) - p2, axis=1),
                   np.linalg.norm(transfer(hi, p2) - p1, axis=1))
    return np.nan_to_num(e, nan=np.inf)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("report")
    ap.add_argument("truth")
    ap.add_argument("--near", type=float, default=5.0)
    ap.add_argument("--draws", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threshold", type=float, default=3.0)
    a = ap.parse_args()
    rep = json.load(open(a.report))
    m = np.array([t[:4] for t in rep.get("tentative_matches") or []], float).reshape(-1, 4)
    gt = np.loadtxt(a.truth).reshape(3, 3)
    p1, p2 = m[:, :2], m[:, 2:4]
    gerr = np.linalg.norm(transfer(gt, p1) - p2, axis=1) if len(m) else np.zeros(0)
    good = np.flatnonzero(gerr <= a.near)
    rng = np.random.default_rng(a.seed)
    subsets = list(itertools.combinations(good, 4)) if len(good) <= 24 else \
        [rng.choice(good, 4, replace=False) for _ in range(a.draws)]
    best_ok, best_any = (0, None), (0, None)
    for s in subsets:
        h = dlt(p1[list(s)], p2[list(s)])
        for _ in range(3):
            if h is None:
                break
            inl = np.flatnonzero(symmetric_error(h, p1, p2) <= a.threshold)
            if len(inl) < 4:
                break
            med = float(np.median(gerr[inl]))
            if len(inl) > best_any[0]:
                best_any = (len(inl), med)
            if med <= 5.0 and len(inl) > best_ok[0]:
                best_ok = (len(inl), med)
            h = dlt(p1[inl], p2[inl])
    verdict = "reachable" if best_ok[0] >= 15 else "unreachable"
    print(f"tentatives {len(m)} near-gt({a.near:g}px) {len(good)} | best accepted model: "
          f"{best_ok[0]} inliers" + (f" (gt median {best_ok[1]:.1f})" if best_ok[1] is not None else "")
          + f" | most inliers: {best_any[0]}" +
          (f" (gt median {best_any[1]:.1f})" if best_any[1] is not None else "") + f" | {verdict}")


if __name__ == "__main__":
    main()
