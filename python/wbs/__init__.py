"""wbs: wide-baseline stereo matching with Hessian-Affine / AffNet features and LO-RANSAC.

No PyTorch, no GPU needed: the matcher is the wbs Rust library, and the results are those of the
``wbs match`` command line (``Match.to_dict()`` equals its ``--json`` report).

>>> import wbs
>>> m = wbs.match("graf/img1.ppm", "graf/img3.ppm", method="hesaffnet")
>>> m.registered, m.inliers, m.model            # doctest: +SKIP

Conventions (as in kornia): a local affine frame (LAF) is a 2×3 matrix ``[A | c]`` that maps a
point ``u`` of the normalised patch ``[-1, 1]²`` to the image point ``A·u + c``; pixel centres are
at integer coordinates, the top-left pixel's centre is (0, 0); homographies map image 1 to
image 2. See docs/python.md for the API.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Optional, Union

import numpy as np

from ._wbs import (
    DeviceError,
    Error,
    Features,
    ImageError,
    Match,
    SettingsError,
    Verification,
    ViewStore,
    WeightsError,
    __version__,
    draw_matches,
    settings,
    verify,
)
from ._wbs import Matcher as _NativeMatcher

__all__ = [
    "Matcher",
    "Features",
    "Match",
    "Verification",
    "ViewStore",
    "Error",
    "ImageError",
    "WeightsError",
    "SettingsError",
    "DeviceError",
    "match",
    "verify",
    "draw_matches",
    "settings",
    "to_opencv_keypoints",
    "lafs_from_opencv_keypoints",
    "to_kornia_lafs",
    "__version__",
]

Image = Union[str, "os.PathLike[str]", np.ndarray]

# The AffNet weights wbs ships, inside the package (the library's own lookup looks beside the
# executable, which is Python here).
_SHIPPED = Path(__file__).parent / "data"


class Matcher(_NativeMatcher):
    """Finds local affine features and matches images with one configuration.

    ``Matcher(method="hesaff", descriptor="rootsift", geometry="homography", device="auto",
    **settings)``: the settings are the ``wbs match`` flags with ``_`` for ``-``
    (``wbs.settings()`` lists them), e.g. ``ratio=0.85``, ``inlier_threshold=2.0``,
    ``min_inliers=20``, ``seed=1``. The networks are loaded once; one Matcher may be used from
    several threads at once, and the GIL is released while it works.
    """

    def __new__(cls, method: str = "hesaff", descriptor: str = "rootsift",
                geometry: str = "homography", device: str = "auto", **settings: Any) -> "Matcher":
        # Only where AffNet runs, so that other settings equal the CLI's report exactly.
        shipped = _SHIPPED / "affnet.safetensors"
        shape = settings.get("shape") or ("affnet" if "affnet" in str(method) else "")
        if (str(shape) == "affnet" and settings.get("affnet_weights") is None
                and "WBS_WEIGHTS" not in os.environ and shipped.is_file()):
            settings["affnet_weights"] = shipped
        return super().__new__(cls, method, descriptor, geometry, device, **settings)


def match(image1: Image, image2: Image, **settings: Any) -> Match:
    """Matches two images (paths or arrays) with a Matcher made for this call.

    Loading the networks is part of the call; use ``Matcher`` to match many pairs.
    """
    return Matcher(**settings).match(image1, image2)


def to_opencv_keypoints(features: Features, mr_size: float = 6.0) -> List[Any]:
    """The frames as ``cv2.KeyPoint`` s (needs OpenCV).

    ``pt`` is the centre, ``size = scale / mr_size`` and ``angle = (-orientation) mod 360``
    degrees, ``response`` the detector's: the inverse of kornia_moons'
    ``laf_from_opencv_kpts(kps, mrSize=6.0)`` (see ``lafs_from_opencv_keypoints``). OpenCV's angle
    is measured clockwise in the image (y down); kornia's orientation ``atan2(A[0,1], A[0,0])`` is
    its negative. The affine shape is lost: a KeyPoint is a circle.
    """
    import cv2

    xy = features.keypoints
    size = features.scales / mr_size
    angle = np.mod(-features.orientations, 360.0)
    resp = features.responses
    return [cv2.KeyPoint(float(x), float(y), float(s), float(a), float(r))
            for (x, y), s, a, r in zip(xy, size, angle, resp)]


def lafs_from_opencv_keypoints(keypoints: Any, mr_size: float = 6.0) -> np.ndarray:
    """N×2×3 float32 LAFs of ``cv2.KeyPoint`` s: ``A = mr_size·size·R``, with ``R`` the rotation
    whose kornia orientation is ``-angle`` (kornia_moons' ``laf_from_opencv_kpts``)."""
    out = np.zeros((len(keypoints), 2, 3), np.float32)
    for i, kp in enumerate(keypoints):
        s = mr_size * kp.size
        t = np.deg2rad(-kp.angle)
        c, n = np.cos(t), np.sin(t)
        out[i] = [[s * c, s * n, kp.pt[0]], [-s * n, s * c, kp.pt[1]]]
    return out


def to_kornia_lafs(features: Features) -> np.ndarray:
    """1×N×2×3 float32: kornia's LAF layout with its batch axis (``torch.from_numpy`` it)."""
    return features.lafs[None]
