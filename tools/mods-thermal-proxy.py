#!/usr/bin/env python3
"""The thermal-like proxy set of docs/mods.md (cross-modality pairs; no thermal data is available
to the project). Image 1 is a 240x225 rendering of a mild viewpoint change of the scene, low in
contrast, blurred, with noise, its grey levels mapped one of three ways: inverted (`invert`, as
warm/cold against bright/dark), folded around mid-grey (`abs`), or through gamma 2.2 (`gamma`, no
reversal); image 2 is the 800x533 photo. Ground truth H1to2p (image 1 -> image 2), OxAff layout
(<pair>/img1.png, img2.png, H1to2p), so that `../shared/tools/score.py --datasets OxAff --root OUT`
scores it. Seeded: the same 27 pairs every time.

usage: python3 tools/mods-thermal-proxy.py DATASETS OUT   (needs numpy and opencv-python)"""
import cv2, numpy as np, os, sys, glob
data, out = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(7)
srcs = sorted(glob.glob(os.path.join(data, 'OxAff/*/img1.png'))) + sorted(glob.glob(os.path.join(data, 'collection/sacre_coeur/*.jpg')))[:4]
modes = ['invert', 'abs', 'gamma']
n = 0
for si, src in enumerate(srcs):
    im = cv2.imread(src, cv2.IMREAD_GRAYSCALE)
    h, w = im.shape
    # image 2: 800x533 crop/resize of the photo
    s2 = 800 / w
    img2 = cv2.resize(im, (800, int(round(h * s2))), interpolation=cv2.INTER_AREA)
    if img2.shape[0] < 533:
        continue
    img2 = img2[:533]
    for mode in modes:
        # image 1: a mild viewpoint change of image 2 rendered at 240x225
        W1, H1 = 240, 225
        # corners of the image-2 region seen by image 1 (centre crop with perspective jitter)
        cx, cy = 400 + rng.uniform(-60, 60), 266 + rng.uniform(-40, 40)
        half_w, half_h = rng.uniform(250, 330), rng.uniform(200, 240)
        quad2 = np.float32([[cx - half_w, cy - half_h], [cx + half_w, cy - half_h], [cx + half_w, cy + half_h], [cx - half_w, cy + half_h]])
        quad2 += rng.uniform(-25, 25, quad2.shape).astype(np.float32)
        quad1 = np.float32([[0, 0], [W1, 0], [W1, H1], [0, H1]])
        H21 = cv2.getPerspectiveTransform(quad2, quad1)   # image 2 -> image 1
        img1 = cv2.warpPerspective(img2.astype(np.float32), H21, (W1, H1), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
        f = img1 / 255.0
        if mode == 'invert':
            f = 1.0 - f
        elif mode == 'abs':
            f = np.abs(f - 0.5) * 2
        else:
            f = f ** 2.2
        f = 0.35 + 0.3 * f                        # low contrast
        f = cv2.GaussianBlur(f, (0, 0), 1.2)
        f += rng.normal(0, 0.01, f.shape)
        img1 = np.clip(f * 255, 0, 255).astype(np.uint8)
        d = os.path.join(out, 'OxAff', f'{os.path.basename(os.path.dirname(src)) if "OxAff" in src else "sc%d" % si}-{mode}')
        os.makedirs(d, exist_ok=True)
        cv2.imwrite(os.path.join(d, 'img1.png'), img1)
        cv2.imwrite(os.path.join(d, 'img2.png'), img2)
        H12 = np.linalg.inv(H21); H12 /= H12[2, 2]
        np.savetxt(os.path.join(d, 'H1to2p'), H12)
        n += 1
print(n, 'pairs')
