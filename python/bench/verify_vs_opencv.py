"""`wbs.verify` against `cv2.findHomography(..., cv2.USAC_MAGSAC)` and pydegensac (when
installed) on the same tentatives, over the development sets with ground-truth homographies.

    python python/bench/verify_vs_opencv.py [--datasets OxAff,EF,SymB] [--method hesaff]

Per pair: wbs's tentatives (ratio 0.8, duplicates removed: `Match.points`), then each verifier
with a 3 px threshold, confidence 0.999, at most 10 000 iterations. A pair counts as correct by
the protocol's rule: at least 15 inliers and a median ground-truth transfer error of the inliers
of at most 5 px. Pairs: OxAff img1→imgN (N = 2..6), EF img1→imgN for every H1toNp, SymB 01→02.
"""

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

import wbs

try:
    import cv2
except ImportError:
    cv2 = None
try:
    import pydegensac
except ImportError:
    pydegensac = None

DATA = Path(__file__).resolve().parents[3] / "shared" / "datasets"


def find(folder, stem):
    hits = sorted(folder.glob(stem + ".*"))
    return hits[0] if hits else None


def pairs(name):
    root = DATA / name
    for seq in sorted(p for p in root.iterdir() if p.is_dir()):
        if name == "SymB":
            a, b, h = find(seq, "01"), find(seq, "02"), seq / "H1to2"
            if a and b and h.is_file():
                yield f"{name}/{seq.name}", a, b, h
            continue
        for h in sorted(seq.glob("H1to*p")):
            n = h.name[4:-1]
            a, b = find(seq, "img1"), find(seq, f"img{n}")
            if a and b and n != "1":
                yield f"{name}/{seq.name}/1-{n}", a, b, h


def transfer(h, pts):
    p = np.c_[pts, np.ones(len(pts))] @ h.T
    return p[:, :2] / p[:, 2:]


def judge(truth, pts, mask):
    inl = pts[mask]
    if len(inl) < 15:
        return False, len(inl)
    err = np.linalg.norm(transfer(truth, inl[:, :2]) - inl[:, 2:], axis=1)
    return bool(np.median(err) <= 5.0), len(inl)


def verifiers():
    out = {"wbs.verify": lambda p1, p2: wbs.verify(p1, p2).inlier_mask}
    if cv2 is not None:
        def magsac(p1, p2):
            h, mask = cv2.findHomography(p1, p2, cv2.USAC_MAGSAC, 3.0, confidence=0.999,
                                         maxIters=10000)
            return np.zeros(len(p1), bool) if mask is None else mask.ravel() > 0
        out["cv2 USAC_MAGSAC"] = magsac
    if pydegensac is not None:
        def degensac(p1, p2):
            h, mask = pydegensac.findHomography(p1, p2, 3.0, 0.999, 10000)
            return np.asarray(mask, bool)
        out["pydegensac"] = degensac
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--datasets", default="OxAff,EF,SymB")
    p.add_argument("--method", default="hesaff")
    args = p.parse_args()
    m = wbs.Matcher(method=args.method)
    vs = verifiers()
    missing = [n for n, mod in (("opencv", cv2), ("pydegensac", pydegensac)) if mod is None]
    if missing:
        print("not installed, left out:", ", ".join(missing))
    for name in args.datasets.split(","):
        stats = {v: {"correct": 0, "inliers": [], "ms": []} for v in vs}
        n = 0
        for label, a, b, h in pairs(name):
            truth = np.loadtxt(h)
            truth = truth / truth[2, 2]
            pts = m.match(a, b).points
            n += 1
            if len(pts) < 4:
                continue
            p1, p2 = np.ascontiguousarray(pts[:, :2]), np.ascontiguousarray(pts[:, 2:])
            for v, fn in vs.items():
                t = time.perf_counter()
                mask = fn(p1, p2)
                stats[v]["ms"].append((time.perf_counter() - t) * 1e3)
                ok, k = judge(truth, pts, mask)
                stats[v]["correct"] += ok
                if ok:
                    stats[v]["inliers"].append(k)
        for v, s in stats.items():
            mean = statistics.mean(s["inliers"]) if s["inliers"] else 0
            print(f"{name:6} {v:16} correct {s['correct']:3}/{n}  mean inliers (correct pairs) "
                  f"{mean:7.1f}  median time {statistics.median(s['ms']):6.2f} ms")


if __name__ == "__main__":
    main()
