"""Binding overhead per call and ten matches on one Matcher against ten `wbs match` processes.

    python python/bench/overhead.py [--wbs target/release/wbs] [--method hesaff] [A B]

Also two threads on one Matcher against one thread doing both calls (features whose frames are
shuffled against their descriptors, so that LO-RANSAC runs to its cap: serial work that only
threads can overlap).

Overhead per call: the wall time of `Matcher.match(a, b)` seen from Python minus the library's own
"total" (timings_ms, measured inside `Matcher::match_files`), median over the calls; it is what
the binding adds (argument conversion, releasing the GIL, building the result). The ten-match
comparison alternates the two ways in one run so that both see the same machine.
"""

import argparse
import statistics
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

import wbs

REPO = Path(__file__).resolve().parents[2]
GRAF = REPO.parent / "shared" / "datasets" / "OxAff" / "graf"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("images", nargs="*", default=[GRAF / "img1.png", GRAF / "img3.png"])
    p.add_argument("--wbs", default=REPO / "target" / "release" / "wbs")
    p.add_argument("--method", default="hesaff")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    a, b = map(str, args.images)

    m = wbs.Matcher(method=args.method)
    m.match(a, b)
    overhead = []
    for _ in range(20):
        t = time.perf_counter()
        r = m.match(a, b)
        wall = (time.perf_counter() - t) * 1e3
        overhead.append(wall - r.timings["total"])
    print(f"binding overhead per match() call ({args.method}, graf 1→3): median "
          f"{statistics.median(overhead):.3f} ms, max {max(overhead):.3f} ms over 20 calls")
    t = time.perf_counter()
    for _ in range(20):
        r.to_dict(), r.matches, r.inlier_mask, r.model
    print(f"reading the result (to_dict, matches, inlier_mask, model): "
          f"{(time.perf_counter() - t) / 20 * 1e3:.3f} ms per result")

    flags = ["--method", args.method]
    for round in range(args.rounds):
        t = time.perf_counter()
        for _ in range(10):
            subprocess.run([str(args.wbs), "match", a, b, *flags], check=True,
                           stdout=subprocess.DEVNULL)
        cli = time.perf_counter() - t
        t = time.perf_counter()
        m = wbs.Matcher(method=args.method)
        for _ in range(10):
            m.match(a, b)
        py = time.perf_counter() - t
        print(f"round {round + 1}: ten `wbs match` processes {cli:.2f} s; "
              f"one Matcher (created in the timing), ten matches {py:.2f} s")

    m = wbs.Matcher(confidence=0.999999, max_iterations=300000)
    f1, f2 = m.detect(a), m.detect(b)
    perm = np.random.default_rng(0).permutation(len(f2))
    f2 = wbs.Features(f2.lafs[perm], f2.descriptors)

    def both_in_one():
        m.match_features(f1, f2)
        m.match_features(f1, f2)

    def two_threads():
        ts = [threading.Thread(target=m.match_features, args=(f1, f2)) for _ in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    one, two = [], []
    for _ in range(3):
        t = time.perf_counter(); both_in_one(); one.append(time.perf_counter() - t)
        t = time.perf_counter(); two_threads(); two.append(time.perf_counter() - t)
    print(f"two match_features calls: one thread {statistics.median(one):.3f} s, two threads "
          f"on one Matcher {statistics.median(two):.3f} s (medians of 3)")


if __name__ == "__main__":
    main()
