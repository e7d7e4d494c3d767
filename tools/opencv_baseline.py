#!/usr/bin/env python3
"""Reproduces the issue's baseline: OpenCV SIFT -> RootSIFT, ratio 0.8, duplicates 2 px, USAC_MAGSAC at 3 px,
judged by the protocol (score.py's judge). Needs python3, numpy, opencv-python-headless (5.x).
usage: tools/opencv_baseline.py EF,SymB,homogr,OxAff"""
import sys, os, json, numpy as np, cv2
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared', 'tools')); import score
cv2.setRNGSeed(0)
sift = cv2.SIFT_create()
def feats(p):
    img = cv2.imread(p, cv2.IMREAD_GRAYSCALE)
    kp, d = sift.detectAndCompute(img, None)
    if d is None: return np.zeros((0,2)), np.zeros((0,128), np.float32)
    d = d / (d.sum(1, keepdims=True) + 1e-7); d = np.sqrt(d).astype(np.float32)
    return np.array([k.pt for k in kp]), d
out = {}
for ds in sys.argv[1].split(','):
    rows = []
    for name, a, b, gt in score.pairs(os.path.join(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared', 'datasets'), ds), ds):
        (p1, d1), (p2, d2) = feats(a), feats(b)
        bf = cv2.BFMatcher(cv2.NORM_L2)
        m = bf.knnMatch(d1, d2, k=2) if len(d1) and len(d2) > 1 else []
        t = [(x[0].queryIdx, x[0].trainIdx, x[0].distance / max(x[1].distance, 1e-9)) for x in m if len(x) == 2 and x[0].distance <= 0.8 * x[1].distance]
        t.sort(key=lambda z: z[2]); kept = []
        for q, r, rr in t:
            if any(np.linalg.norm(p1[q]-p1[k[0]]) <= 2 and np.linalg.norm(p2[r]-p2[k[1]]) <= 2 for k in kept): continue
            kept.append((q, r))
        inl = []
        if len(kept) >= 4:
            A = np.float32([p1[q] for q, r in kept]); B = np.float32([p2[r] for q, r in kept])
            H, mask = cv2.findHomography(A, B, cv2.USAC_MAGSAC, 3.0, maxIters=10000, confidence=0.999)
            if H is not None:
                mask = mask.ravel().astype(bool)
                inl = np.c_[A[mask], B[mask]].tolist()
        rep = {'inliers': len(inl), 'inlier_matches': inl}
        ok, metric = score.judge(rep, gt)
        rows.append((name, ok, len(inl), len(kept), metric))
        print(f"{name:28s} reg={int(ok)} inl={len(inl):4d} tent={len(kept):4d} feats={len(p1)}/{len(p2)} metric={metric}", flush=True)
    print(ds, sum(r[1] for r in rows), '/', len(rows), flush=True)
