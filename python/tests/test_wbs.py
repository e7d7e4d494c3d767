"""The Python package against the CLI, numpy round trips, errors, threads, memory, verification."""

import json
import math
import threading
import time

import numpy as np
import pytest

import wbs
from conftest import REPO, run_cli

try:
    import cv2
except ImportError:  # opencv-python-headless did not install: those tests say so and skip
    cv2 = None
needs_cv2 = pytest.mark.skipif(cv2 is None, reason="opencv-python-headless is not installed")


def without_times(report):
    report = dict(report)
    report.pop("timings_ms")
    return report


def cli_report(cli, a, b, *flags):
    out = run_cli(cli, "match", a, b, "--json", "-", *flags)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def matcher():
    return wbs.Matcher()


@pytest.fixture(scope="module")
def result(matcher, images):
    a, b, _ = images
    return matcher.match(a, b)


def gray_of(path):
    """The file's pixels as numpy (RGB order does not matter: gray is the mean of the three)."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image


# --- the same results as the CLI ---------------------------------------------------------------

def test_match_equals_the_cli_json(cli, images, result):
    a, b, _ = images
    expected = cli_report(cli, a, b)
    got = result.to_dict()
    assert got["inliers"] == expected["inliers"] > 15
    np.testing.assert_allclose(got["model"], expected["model"], rtol=0, atol=1e-9)
    assert without_times(got) == without_times(expected)
    assert result.inliers == expected["inliers"]
    assert result.registered is expected["registered"] is True
    np.testing.assert_allclose(result.model, np.array(expected["model"]), rtol=0, atol=1e-9)
    # the inliers the report lists are the tentatives the mask marks
    pts = result.points[result.inlier_mask]
    np.testing.assert_allclose(pts, np.array(expected["inlier_matches"]), atol=1e-4)


def test_settings_reach_the_matcher_as_cli_flags_do(cli, images):
    a, b, _ = images
    flags = ["--ratio", "0.7", "--inlier-threshold", "2", "--seed", "3", "--min-inliers", "20"]
    expected = cli_report(cli, a, b, *flags)
    m = wbs.Matcher(ratio=0.7, inlier_threshold=2, seed=3, min_inliers=20)
    got = m.match(a, b).to_dict()
    assert without_times(got) == without_times(expected)
    assert got["tentatives"] < cli_report(cli, a, b)["tentatives"]  # the ratio did something


def test_hesaffnet_equals_the_cli_with_the_shipped_weights(cli, images):
    a, b, _ = images
    weights = REPO / "data" / "affnet.safetensors"
    expected = cli_report(cli, a, b, "--method", "hesaffnet", "--affnet-weights", weights)
    m = wbs.Matcher(method="hesaffnet", affnet_weights=weights)
    got = m.match(a, b).to_dict()
    assert without_times(got) == without_times(expected)
    # without affnet_weights the package uses the copy it ships: same numbers
    shipped = wbs.Matcher(method="hesaffnet").match(a, b)
    assert shipped.inliers == got["inliers"]


def mods_results(report):
    """A MODS report without its times and its count of views taken from a ViewStore."""
    report = without_times(report)
    report["mods"] = dict(report["mods"])
    report["mods"]["steps"] = [
        {k: v for k, v in step.items() if k not in ("timings_ms", "reused_views")}
        for step in report["mods"]["steps"]
    ]
    return report


def test_mods_with_a_schedule_and_view_stores_equals_the_cli(cli, images):
    a, b, _ = images
    expected = cli_report(cli, a, b, "--method", "mods", "--schedule", "cviu")
    m = wbs.Matcher(method="mods", schedule="cviu")
    assert m.settings["schedule"]["name"] == "cviu"
    got = m.match(a, b).to_dict()
    assert mods_results(got) == mods_results(expected)
    assert got["mods"]["registered_at"] == 0
    # A store keeps image 1's view: the next pair that names it takes it, same results.
    store = wbs.ViewStore()
    first = m.match(a, b, views=(store, None)).to_dict()
    assert len(store) == 1 and "reused_views" not in first["mods"]["steps"][0]
    again = m.match(a, b, views=(store, None)).to_dict()
    assert again["mods"]["steps"][0]["reused_views"] == [1, 0]
    assert mods_results(again) == mods_results(expected)
    # A store is one image's, with one Matcher's settings.
    one_line_error(wbs.SettingsError, lambda: m.match(b, a, views=(store, None)), "ViewStore")
    one_line_error(wbs.SettingsError, lambda: wbs.Matcher(method="mods").match(
        a, b, views=(store, None)), "ViewStore")
    one_line_error(wbs.SettingsError, lambda: wbs.Matcher(schedule="cviu"),
                   "schedule needs method mods or modsnet")
    # MODS makes its regions per pair: no per-image features, said in one line.
    one_line_error(wbs.SettingsError, lambda: m.detect(a), "has no per-image features",
                   "such as hesaff")
    hesaff = wbs.Matcher().detect(a)
    one_line_error(wbs.SettingsError, lambda: m.match_features(hesaff, hesaff),
                   "has no per-image features")


def test_tentatives_in_the_dict_as_with_the_flag(cli, images, result):
    a, b, _ = images
    expected = cli_report(cli, a, b, "--tentatives")
    got = result.to_dict(tentatives=True)
    assert got["tentative_matches"] == expected["tentative_matches"]
    assert len(got["tentative_matches"]) == result.tentatives == len(result.matches)
    assert "tentative_matches" not in result.to_dict()


@needs_cv2
def test_arrays_give_the_results_of_the_files(matcher, images, result):
    a, b, _ = images
    arr1, arr2 = gray_of(a), gray_of(b)
    from_arrays = matcher.match(arr1, arr2)
    assert from_arrays.inliers == result.inliers
    np.testing.assert_array_equal(from_arrays.model, result.model)
    assert from_arrays.to_dict()["images"] == ["", ""]
    # non-contiguous views and other dtypes of the same pixels
    flipped = np.ascontiguousarray(arr1[:, ::-1])[:, ::-1]
    assert matcher.match(flipped, arr2).inliers == result.inliers
    wide = matcher.match(arr1.astype(np.uint16) * 257, arr2)
    assert abs(wide.inliers - result.inliers) <= 0.05 * result.inliers
    unit = matcher.match((arr1 / np.float32(255)).astype(np.float32), arr2)
    assert abs(unit.inliers - result.inliers) <= 0.05 * result.inliers


# --- numpy round trips and conventions ---------------------------------------------------------

def test_features_are_consistent_kornia_lafs(matcher, images):
    f = matcher.detect(images[0])
    n = len(f)
    assert n > 500
    assert f.lafs.shape == (n, 2, 3) and f.lafs.dtype == np.float32
    assert f.descriptors.shape == (n, 128) and f.descriptors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f.descriptors, axis=1), 1, atol=1e-4)
    np.testing.assert_array_equal(f.keypoints, f.lafs[:, :, 2])
    det = np.linalg.det(f.lafs[:, :, :2].astype(np.float64))
    np.testing.assert_allclose(f.scales, np.sqrt(np.abs(det)), rtol=1e-4)
    ori = np.degrees(np.arctan2(f.lafs[:, 0, 1], f.lafs[:, 0, 0]))
    np.testing.assert_allclose(f.orientations, ori, atol=1e-3)
    assert wbs.to_kornia_lafs(f).shape == (1, n, 2, 3)
    w, h = f.image_size
    assert (f.keypoints >= 0).all() and (f.keypoints[:, 0] < w).all() and (f.keypoints[:, 1] < h).all()


def test_features_from_arrays_match_as_detected_ones(matcher, images, result):
    f1, f2 = matcher.detect(images[0]), matcher.detect(images[1])
    direct = matcher.match_features(f1, f2)
    assert direct.inliers == result.inliers
    rebuilt = [wbs.Features(f.lafs, f.descriptors, f.responses, f.image_size) for f in (f1, f2)]
    again = matcher.match_features(*rebuilt)
    assert again.inliers == result.inliers
    np.testing.assert_array_equal(again.model, result.model)
    np.testing.assert_array_equal(again.matches, result.matches)
    np.testing.assert_array_equal(rebuilt[0].lafs, f1.lafs)
    np.testing.assert_array_equal(rebuilt[0].responses, f1.responses)
    # the matches index the features
    m = result.matches
    assert m.shape == (result.tentatives, 2) and m.dtype == np.int64
    np.testing.assert_allclose(result.points[:, :2], f1.keypoints[m[:, 0]], atol=1e-4)
    np.testing.assert_allclose(result.points[:, 2:], f2.keypoints[m[:, 1]], atol=1e-4)
    assert result.inlier_mask.sum() == result.inliers
    assert (result.ratios <= 0.8).all()


@needs_cv2
def test_opencv_keypoints_round_trip(matcher, images):
    f = matcher.detect(images[0])
    kps = wbs.to_opencv_keypoints(f)
    assert len(kps) == len(f)
    k = kps[7]
    assert k.pt == pytest.approx(tuple(f.keypoints[7]), abs=1e-3)
    assert 0 <= k.angle < 360
    assert k.angle == pytest.approx((-f.orientations[7]) % 360, abs=1e-3)
    back = wbs.lafs_from_opencv_keypoints(kps)
    rebuilt = wbs.Features(back, f.descriptors)
    np.testing.assert_allclose(rebuilt.keypoints, f.keypoints, atol=1e-3)
    np.testing.assert_allclose(rebuilt.scales, f.scales, rtol=1e-4)
    d = (rebuilt.orientations - f.orientations + 180) % 360 - 180
    np.testing.assert_allclose(d, 0, atol=1e-2)


@needs_cv2
def test_draw_matches_is_an_rgb_picture(images, result):
    a, b, _ = images
    picture = wbs.draw_matches(a, b, result, max_width=800)
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    assert picture.shape[1] <= 800
    from_arrays = wbs.draw_matches(gray_of(a), gray_of(b), result, max_width=800)
    assert from_arrays.shape == picture.shape
    assert picture.std() > 10  # not blank


# --- errors ------------------------------------------------------------------------------------

def one_line_error(kind, call, *words):
    with pytest.raises(kind) as info:
        call()
    text = str(info.value)
    assert "\n" not in text, text
    for w in words:
        assert w in text, text
    return text


def test_bad_images_are_image_errors(matcher, images):
    a = images[0]
    e = wbs.ImageError
    one_line_error(e, lambda: matcher.match(np.zeros((64, 64), np.int64), a), "image 1", "int64")
    one_line_error(e, lambda: matcher.match(a, np.zeros((64, 64), np.float64)), "image 2", "float64")
    one_line_error(e, lambda: matcher.detect(np.zeros((64, 64, 4), np.uint8)), "(64, 64, 4)", "H×W×3")
    one_line_error(e, lambda: matcher.detect(np.zeros(64, np.uint8)), "(64,)")
    one_line_error(e, lambda: matcher.detect(np.zeros((8, 8), np.uint8)), "8x8", "16x16")
    one_line_error(e, lambda: matcher.detect(np.full((64, 64), 2, np.float32)), "outside 0..1")
    one_line_error(e, lambda: matcher.detect("/nonexistent/x.png"), "no such file")
    one_line_error(e, lambda: matcher.detect(42), "expected a path or a numpy array", "int")
    assert issubclass(wbs.ImageError, wbs.Error)


def test_bad_settings_are_settings_errors_with_the_cli_messages(cli, images):
    e = wbs.SettingsError
    one_line_error(e, lambda: wbs.Matcher(ratios=0.8), "unknown setting 'ratios'")
    one_line_error(e, lambda: wbs.Matcher(method="sift"), "setting method", "hesaffnet")
    one_line_error(e, lambda: wbs.Matcher(ratio="high"), "setting ratio: expected a number")
    # a range error is the library's: the CLI's text, the setting named as the keyword
    text = one_line_error(e, lambda: wbs.Matcher(ratio=1.5), "ratio must be in (0, 1], got 1.5")
    out = run_cli(cli, "match", images[0], images[1], "--ratio", "1.5")
    assert out.returncode == 2 and out.stderr.strip() == f"error: --{text}"
    one_line_error(e, lambda: wbs.Matcher(confidence=1.5), "confidence must be in (0, 1)")
    one_line_error(e, lambda: wbs.Matcher(threshold_floor=-1, method="adhesaff"),
                   "threshold_floor must be")
    one_line_error(wbs.WeightsError, lambda: wbs.Matcher(method="hesaffnet",
                                                          affnet_weights="/nonexistent.safetensors"),
                   "no such")
    assert issubclass(wbs.SettingsError, wbs.Error) and issubclass(wbs.WeightsError, wbs.Error)


def test_bad_arrays_elsewhere_are_value_errors(matcher, images):
    p = np.zeros((10, 2))
    one_line_error(ValueError, lambda: wbs.verify(p, np.zeros((9, 2))), "10 rows", "9")
    one_line_error(ValueError, lambda: wbs.verify(np.zeros((10, 3)), p), "points1", "N×2")
    one_line_error(ValueError, lambda: wbs.Features(np.zeros((3, 2, 2)), np.zeros((3, 8))), "lafs")
    one_line_error(ValueError, lambda: wbs.Features(np.zeros((3, 2, 3)), np.zeros((4, 8))), "descriptors")
    f = matcher.detect(images[0])
    short = wbs.Features(f.lafs, f.descriptors[:, :64])
    one_line_error(ValueError, lambda: matcher.match_features(f, short), "128", "64")


# --- threads and memory -------------------------------------------------------------------------

def test_the_gil_is_released_while_matching(matcher, images):
    a, b, _ = images
    done = threading.Event()
    ticks = 0

    def work():
        matcher.match(a, b)
        done.set()

    t = threading.Thread(target=work)
    t.start()
    while not done.is_set():
        ticks += 1
        time.sleep(0)
    t.join()
    assert ticks > 1000, f"the main thread ran only {ticks} times while a match ran"


def test_two_threads_on_one_matcher_give_the_results_of_one(images):
    # Two threads share one Matcher (no lock inside, the GIL released): each must get exactly
    # what one thread alone gets. How much faster two threads are is a benchmark
    # (python/bench/overhead.py --threads), not a test: CI machines are shared.
    m = wbs.Matcher()
    f1, f2 = m.detect(images[0]), m.detect(images[1])
    alone = m.match_features(f1, f2)
    assert alone.inliers > 0
    out = [[], []]

    def work(k):
        for _ in range(3):
            out[k].append(m.match_features(f1, f2))

    ts = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for r in out[0] + out[1]:
        assert r.inliers == alone.inliers
        np.testing.assert_array_equal(r.inlier_mask, alone.inlier_mask)
        np.testing.assert_array_equal(r.model, alone.model)
    assert len(out[0]) == len(out[1]) == 3


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@needs_cv2
def test_no_leak_over_200_matches(matcher, images):
    a = cv2.resize(gray_of(images[0]), None, fx=0.3, fy=0.3, interpolation=cv2.INTER_AREA)
    b = cv2.resize(gray_of(images[1]), None, fx=0.3, fy=0.3, interpolation=cv2.INTER_AREA)
    for _ in range(20):
        r = matcher.match(a, b)
        r.to_dict(), r.matches, r.model, matcher.detect(a).descriptors
    before = rss_mb()
    for _ in range(200):
        r = matcher.match(a, b)
        r.to_dict(), r.matches, r.model, matcher.detect(a).descriptors
    grown = rss_mb() - before
    print(f"RSS {before:.1f} MB, grew {grown:.1f} MB over 200 matches ({r.tentatives} tentatives)")
    assert r.tentatives > 20
    assert grown < 15


# --- verification alone -------------------------------------------------------------------------

def transfer(h, pts):
    p = np.c_[pts, np.ones(len(pts))] @ h.T
    return p[:, :2] / p[:, 2:]


def test_verify_alone_reproduces_the_match(result):
    pts = result.points
    v = wbs.verify(pts[:, :2], pts[:, 2:])
    assert v.inliers == result.inliers
    np.testing.assert_array_equal(v.inlier_mask, result.inlier_mask)
    np.testing.assert_allclose(v.model, result.model, rtol=0, atol=1e-9)
    f = wbs.verify(pts[:, :2], pts[:, 2:], geometry="fundamental", seed=1)
    assert f.inliers >= result.inliers * 0.8 and f.model.shape == (3, 3)
    none = wbs.verify(pts[:3, :2], pts[:3, 2:])
    assert none.model is None and none.inliers == 0


@needs_cv2
def test_verify_with_frames_applies_the_laf_check(result):
    f1, f2 = result.features
    k = result.matches
    l1, l2 = f1.lafs[k[:, 0]], f2.lafs[k[:, 1]]
    p = result.points
    plain = wbs.verify(p[:, :2], p[:, 2:])
    checked = wbs.verify(p[:, :2], p[:, 2:], lafs1=l1, lafs2=l2)
    # the frames of a right match agree with the model: most inliers stay, none is added
    assert 0.8 * plain.inliers <= checked.inliers <= plain.inliers
    assert not (checked.inlier_mask & ~plain.inlier_mask).any()
    # frames of image 2 twenty times too large disagree with the model: none stays
    blown = l2.copy()
    blown[:, :, :2] *= 20
    assert wbs.verify(p[:, :2], p[:, 2:], lafs1=l1, lafs2=blown).inliers == 0
    one_line_error(wbs.SettingsError, lambda: wbs.verify(p[:, :2], p[:, 2:], lafs1=l1), "both")
    one_line_error(ValueError, lambda: wbs.verify(p[:, :2], p[:, 2:], lafs1=l1[:-1], lafs2=l2),
                   "frames")


def test_verify_and_opencv_magsac_both_find_the_true_homography(images, result):
    truth = np.loadtxt(images[2])
    pts = result.points
    v = wbs.verify(pts[:, :2], pts[:, 2:])
    h, mask = cv2.findHomography(pts[:, :2], pts[:, 2:], cv2.USAC_MAGSAC, 3.0, confidence=0.999,
                                 maxIters=10000)
    ours, theirs = pts[v.inlier_mask], pts[mask.ravel() > 0]
    for inl in (ours, theirs):
        err = np.linalg.norm(transfer(truth, inl[:, :2]) - inl[:, 2:], axis=1)
        assert len(inl) > 100 and np.median(err) < 5
    print(f"inliers: wbs {len(ours)}, MAGSAC {len(theirs)}")
    assert len(ours) >= 0.9 * len(theirs)


def test_version_and_settings_list():
    assert wbs.__version__
    names = wbs.settings()
    assert "ratio" in names and "inlier_threshold" in names
    for name in names:  # every name listed is accepted by Matcher (the value may be wrong)
        try:
            wbs.Matcher(**{name: "x"})
        except wbs.SettingsError as e:
            assert "unknown setting" not in str(e)
        except wbs.Error:
            pass
    assert math.isfinite(wbs.Matcher().loading_ms)
