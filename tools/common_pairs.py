#!/usr/bin/env python3
r"""Compare two runs of the scorer over the pairs both register.

Mean inliers over each run's own registered pairs (what ../shared/tools/score.py prints) are not
comparable when one run registers hard pairs, with few inliers, that the other misses; this
compares them over the pairs both register, per dataset, and names the pairs only one registers;
for OxAff it also sums each sequence's inliers over all its pairs, registered or not.
Inputs are the scorer's per-pair `--out` JSON files. Needs only python3.

usage: tools/common_pairs.py A.json B.json
  e.g. python3 ../shared/tools/score.py --wbs target/release/wbs --root ../shared/datasets \
           --args "--method hesaffnet --affnet-weights run/affnet.safetensors" --out run.json
       python3 ../shared/tools/score.py --wbs target/release/wbs --root ../shared/datasets \
           --args "--method hesaff" --out hesaff.json
       tools/common_pairs.py run.json hesaff.json
"""
import json
import sys


def registered(report, dataset):
    """The registered rows of one dataset as {pair name: inliers}."""
    rows = report[dataset]["rows"]
    return {r["pair"]: r["inliers"] for r in rows if r.get("registered")}


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().split("\n\n")[-1])
    try:
        a, b = (json.load(open(path)) for path in sys.argv[1:3])
    except (OSError, ValueError) as e:
        sys.exit(f"common_pairs: cannot read a scorer --out file: {e}")
    datasets = [d for d in a if isinstance(a[d], dict) and "rows" in a[d] and d in b]
    if not datasets:
        sys.exit("common_pairs: the two files share no dataset with per-pair rows")
    print("dataset  registered A / B  common  mean inliers A / B     A more on  only A; only B")
    for d in datasets:
        ra, rb = registered(a, d), registered(b, d)
        common = sorted(set(ra) & set(rb))
        n = max(len(common), 1)
        mean_a = sum(ra[p] for p in common) / n
        mean_b = sum(rb[p] for p in common) / n
        change = 100.0 * (mean_a - mean_b) / mean_b if mean_b else 0.0
        more = sum(ra[p] > rb[p] for p in common)
        only_a = ", ".join(sorted(set(ra) - set(rb))) or "-"
        only_b = ", ".join(sorted(set(rb) - set(ra))) or "-"
        print(f"{d:8} {len(ra):>6} / {len(rb):<6}  {len(common):>6}  "
              f"{mean_a:7.1f} / {mean_b:7.1f} ({change:+.1f} %)  {more:>4}       {only_a}; {only_b}")
    # OxAff's sequences: inliers summed over each sequence's pairs, registered or not.
    if "OxAff" in datasets:
        sums = [sequence_sums(r, "OxAff") for r in (a, b)]
        cells = []
        for seq in sorted(sums[0]):
            total_a, total_b = sums[0][seq], sums[1].get(seq, 0)
            change = f" ({100.0 * (total_a - total_b) / total_b:+.1f} %)" if total_b else ""
            cells.append(f"{seq} {total_a} / {total_b}{change}")
        print("OxAff per sequence, all pairs' inliers A / B: " + ", ".join(cells))


def sequence_sums(report, dataset):
    """{sequence: inliers summed over all its rows} for pairs named dataset/sequence/pair."""
    sums = {}
    for r in report[dataset]["rows"]:
        seq = r["pair"].split("/")[1]
        sums[seq] = sums.get(seq, 0) + r.get("inliers", 0)
    return sums


if __name__ == "__main__":
    main()
