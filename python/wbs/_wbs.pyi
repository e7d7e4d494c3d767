"""Type stubs of wbs's native module (the classes are re-exported by ``wbs``)."""

import os
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import numpy.typing as npt

Image = Union[str, "os.PathLike[str]", np.ndarray]
__version__: str

class Error(Exception):
    """Every error of wbs: one line, as the CLI prints it."""

class ImageError(Error):
    """An image that is missing, unreadable or unusable (also a wrong array dtype or shape)."""

class WeightsError(Error):
    """Network weights that are missing or malformed."""

class SettingsError(Error):
    """Settings that are unknown or do not make sense."""

class DeviceError(Error):
    """A device (GPU) that was asked for but cannot be used."""

class Features:
    """The features of one image. Made by ``Matcher.detect``, or from your own frames."""

    def __init__(
        self,
        lafs: npt.ArrayLike,
        descriptors: npt.ArrayLike,
        responses: Optional[npt.ArrayLike] = None,
        image_size: Optional[Tuple[int, int]] = None,
    ) -> None: ...
    def __len__(self) -> int: ...
    @property
    def lafs(self) -> npt.NDArray[np.float32]:
        """N×2×3 ``[A | c]`` (kornia's LAF, no batch axis)."""
    @property
    def keypoints(self) -> npt.NDArray[np.float32]:
        """N×2 centres (x, y), top-left pixel centre (0, 0)."""
    @property
    def scales(self) -> npt.NDArray[np.float32]:
        """N: sqrt(|det A|) in pixels (kornia's get_laf_scale)."""
    @property
    def orientations(self) -> npt.NDArray[np.float32]:
        """N degrees: atan2(A[0,1], A[0,0]) (kornia's get_laf_orientation); OpenCV's angle is
        its negative mod 360."""
    @property
    def responses(self) -> npt.NDArray[np.float32]:
        """N detector responses (signed)."""
    @property
    def descriptors(self) -> npt.NDArray[np.float32]:
        """N×D descriptors (empty N×0 for the features of a ``Match``)."""
    @property
    def image_size(self) -> Tuple[int, int]:
        """(width, height), (0, 0) when unknown."""

class Match:
    """The outcome of matching two images."""

    @property
    def registered(self) -> bool: ...
    @property
    def verdict(self) -> str: ...
    @property
    def inliers(self) -> int: ...
    @property
    def tentatives(self) -> int: ...
    @property
    def model(self) -> Optional[npt.NDArray[np.float64]]:
        """3×3: H maps image 1 → image 2; F satisfies x2ᵀ·F·x1 = 0. None when none was found."""
    @property
    def matches(self) -> npt.NDArray[np.int64]:
        """K×2: each tentative as (index in features 1, index in features 2)."""
    @property
    def inlier_mask(self) -> npt.NDArray[np.bool_]:
        """K: which rows of ``matches`` are inliers."""
    @property
    def ratios(self) -> npt.NDArray[np.float32]:
        """K second-nearest-neighbour ratios."""
    @property
    def points(self) -> npt.NDArray[np.float64]:
        """K×4: (x1, y1, x2, y2) of each tentative."""
    @property
    def timings(self) -> Dict[str, float]:
        """Milliseconds per stage."""
    @property
    def features(self) -> Tuple[Features, Features]:
        """The frames ``matches`` indexes (without descriptors)."""
    def to_dict(self, tentatives: bool = False) -> Dict[str, Any]:
        """The CLI's JSON report (``wbs match --json``; ``--tentatives`` with tentatives=True)."""

class Verification:
    """The outcome of ``verify``."""

    @property
    def model(self) -> Optional[npt.NDArray[np.float64]]: ...
    @property
    def inlier_mask(self) -> npt.NDArray[np.bool_]: ...
    @property
    def inliers(self) -> int: ...
    @property
    def iterations(self) -> int: ...

class ViewStore:
    """The synthesised views of one image, kept across the pairs that name it (MODS methods)."""

    def __init__(self) -> None: ...
    def __len__(self) -> int: ...

class Matcher:
    """Finds local affine features and matches images; networks loaded once, thread-safe."""

    def __new__(
        cls,
        method: str = "hesaff",
        descriptor: str = "rootsift",
        geometry: str = "homography",
        device: str = "auto",
        **settings: Any,
    ) -> "Matcher": ...
    @property
    def settings(self) -> Dict[str, Any]:
        """Every setting, as the report's ``settings``."""
    @property
    def device(self) -> str:
        """"cpu" or "cuda"."""
    @property
    def device_note(self) -> Optional[str]: ...
    @property
    def loading_ms(self) -> float: ...
    def detect(self, image: Image) -> Features: ...
    def match(
        self,
        image1: Image,
        image2: Image,
        views: Optional[Tuple[Optional["ViewStore"], Optional["ViewStore"]]] = None,
    ) -> Match: ...
    def match_features(self, f1: Features, f2: Features) -> Match: ...

def verify(
    points1: npt.ArrayLike,
    points2: npt.ArrayLike,
    geometry: str = "homography",
    lafs1: Optional[npt.ArrayLike] = None,
    lafs2: Optional[npt.ArrayLike] = None,
    **settings: Any,
) -> Verification:
    """wbs's LO-RANSAC (DEGENSAC for F) on N×2 arrays; settings as Matcher's
    (inlier_threshold, confidence, max_iterations, seed, homography_error, ransac).
    With lafs1 and lafs2 (N×2×3 kornia-style frames, one per point, both or neither) MODS's
    LAF check follows: an inlier stays only if its two frames agree with the model, and with
    fewer than 8 survivors none stays (the model is still returned)."""

def draw_matches(
    image1: Image,
    image2: Image,
    result: Match,
    outliers: bool = False,
    ellipses: bool = True,
    max_width: int = 2400,
) -> npt.NDArray[np.uint8]:
    """H×W×3 RGB picture: both images side by side with the inliers and their regions."""

def settings() -> Dict[str, str]:
    """Every setting name ``Matcher(**settings)`` accepts, with what it sets."""
