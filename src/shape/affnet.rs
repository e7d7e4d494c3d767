//! HesAffNet's shape stage: one AffNet pass per detection, as in the authors' detector
//! (reference `affnet.md` §1.4 and §6).
//!
//! Each detection's circular frame (radius mrSize·σ) is sampled into a 32×32 patch, AffNet turns
//! the patch into an upright determinant-1 shape `A_affnet`, and the new frame is
//! `mrSize·σ·A_affnet`: composing with the circle is the same as replacing it, and since
//! `det A_affnet = 1` the scale is kept exactly. Orientation is assigned later. Regions more
//! elongated than 6:1 or touching the border are dropped, always: unlike Baumberg, AffNet never
//! "fails", so there is no circle to fall back on, and the paper's HesAffNet drops them.
//!
//! With `turns` > 1 (`--affnet-turns`, not in the paper) AffNet also sees the circle's patch
//! turned by 360°/turns, 2·360°/turns, …; each answer is turned back and the ellipses are averaged
//! ([`average_turned_shapes`]). A covariant network would give the same ellipse every time; a
//! trained one does not quite, and the mean is covariant to those turns by construction (for 4,
//! quarter turns, which permute the patch's sample points exactly). It costs `turns` AffNet passes.

use rayon::prelude::*;

use crate::detect::Detection;
use crate::feature::Feature;
use crate::laf::Laf;
use crate::nn::{affine_shape, AffNet};
use crate::patch::on_patches;
use crate::pyramid::ScaleSpace;

use super::{keep_if_valid, shaped_laf};

/// Shapes `detections` with AffNet on the CPU, averaged over `turns` turns of each patch (1: one
/// pass, as in the paper); order follows the detections, dropped ones leave no trace.
pub fn shape_by_affnet(
    space: &ScaleSpace,
    detections: &[Detection],
    affnet: &AffNet,
    turns: usize,
) -> Vec<Feature> {
    let circles = turned_circles(detections, turns);
    let raw = on_patches(space, &circles, |patches| affnet.forward_raw(patches));
    let (w, h) = (space.input.width(), space.input.height());
    shape_from_affnet_outputs(detections, &raw, turns, w, h)
}

/// The shape stage after the network: `raw` holds AffNet's three outputs for each frame of
/// [`turned_circles`]`(detections, turns)`, on whichever device it ran; the shapes are averaged
/// over the turns, and regions more elongated than 6:1 or touching the `width × height` image's
/// border are dropped.
pub fn shape_from_affnet_outputs(
    detections: &[Detection],
    raw: &[[f32; 3]],
    turns: usize,
    width: usize,
    height: usize,
) -> Vec<Feature> {
    assert_eq!(
        raw.len(),
        detections.len() * turns.max(1),
        "one AffNet output per turned circle"
    );
    let shapes = raw.iter().map(|&r| affine_shape(r)).collect();
    let shapes = average_turned_shapes(shapes, turns);
    detections
        .par_iter()
        .zip(shapes)
        .filter_map(|(d, shape)| {
            keep_if_valid(
                Feature::from_detection(d).with_laf(shaped_laf(d, shape)),
                width,
                height,
            )
        })
        .collect()
}

/// Each detection's measurement circle turned by `k·360°/turns` for k = 0..turns, detection by
/// detection (turns ≥ 1).
pub fn turned_circles(detections: &[Detection], turns: usize) -> Vec<Laf> {
    let turns = turns.max(1);
    let step = std::f32::consts::TAU / turns as f32;
    detections
        .iter()
        .flat_map(|d| {
            let circle = Laf::from_detection(d.x, d.y, d.sigma);
            (0..turns).map(move |k| circle.rotated(k as f32 * step))
        })
        .collect()
}

/// The shapes AffNet gave for [`turned_circles`], one per detection: the mean of the ellipses
/// `R_k·A_k·A_kᵀ·R_kᵀ` (turn k's answer seen from the unturned circle), as an upright det-1 shape.
pub fn average_turned_shapes(shapes: Vec<[[f32; 2]; 2]>, turns: usize) -> Vec<[[f32; 2]; 2]> {
    let turns = turns.max(1);
    if turns == 1 {
        return shapes; // one pass: nothing to average, nothing copied
    }
    let step = std::f64::consts::TAU / turns as f64;
    shapes
        .chunks_exact(turns)
        .map(|answers| {
            let mut e = [[0.0f64; 2]; 2];
            for (k, a) in answers.iter().enumerate() {
                let (s, c) = (k as f64 * step).sin_cos();
                // M = R_k·A_k with R(θ) = [[c, −s], [s, c]] (`Laf::rotated`'s convention).
                let a = a.map(|row| row.map(f64::from));
                let m = [
                    [c * a[0][0] - s * a[1][0], c * a[0][1] - s * a[1][1]],
                    [s * a[0][0] + c * a[1][0], s * a[0][1] + c * a[1][1]],
                ];
                for (i, row) in e.iter_mut().enumerate() {
                    for (j, v) in row.iter_mut().enumerate() {
                        *v += m[i][0] * m[j][0] + m[i][1] * m[j][1];
                    }
                }
            }
            upright_of_ellipse(e)
        })
        .collect()
}

/// The upright (lower-triangular, positive diagonal) det-1 shape `L` with `L·Lᵀ ∝ e`, e
/// symmetric positive definite: its Cholesky factor, scaled.
fn upright_of_ellipse(e: [[f64; 2]; 2]) -> [[f32; 2]; 2] {
    let l11 = e[0][0].max(f64::MIN_POSITIVE).sqrt();
    let l21 = e[1][0] / l11;
    let l22 = (e[1][1] - l21 * l21).max(f64::MIN_POSITIVE).sqrt();
    let s = (l11 * l22).sqrt();
    [
        [(l11 / s) as f32, 0.0],
        [(l21 / s) as f32, (l22 / s) as f32],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{detect, Threshold, DEFAULT_THRESHOLD};
    use crate::image::GrayImage;
    use crate::laf::MR_SIZE;
    use crate::nn::{random_weights, NetworkKind};
    use crate::patch::{sample_from_space, NET_PATCH};
    use crate::shape::MAX_ELONGATION;

    fn textured(size: usize) -> GrayImage {
        GrayImage::from_fn(size, size, |x, y| {
            let (x, y) = (x as f32, y as f32);
            128.0
                + 50.0 * (0.11 * x + 0.05 * y).sin() * (0.07 * y - 0.03 * x).cos()
                + 40.0 * ((x - 40.0) * (y - 30.0) / 900.0).sin()
        })
    }

    fn official_affnet() -> Option<AffNet> {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/weights/AffNet.pth");
        if !path.is_file() {
            eprintln!("SKIP: {} not found", path.display());
            return None;
        }
        Some(AffNet::load(&path).unwrap())
    }

    /// Every kept frame: centre of its detection, scale mrSize·σ, upright, at most 6:1, inside the
    /// image, and its shape is what AffNet says for the detection's own patch.
    fn check_frames(affnet: &AffNet, what: &str) {
        let image = textured(240);
        let space = ScaleSpace::build(&image);
        let detections = detect(
            &space,
            &Threshold::Fixed {
                threshold: DEFAULT_THRESHOLD,
            },
        );
        assert!(
            detections.len() > 30,
            "{what}: {} detections",
            detections.len()
        );
        let features = shape_by_affnet(&space, &detections, affnet, 1);
        assert!(!features.is_empty(), "{what}: everything was dropped");
        let mut not_circular = 0;
        let mut patch = vec![0f32; NET_PATCH.pixels()];
        for f in &features {
            let d = detections
                .iter()
                .find(|d| [d.x, d.y] == f.laf.c && d.sigma == f.sigma)
                .expect("a kept frame comes from a detection");
            let a = f.laf.a;
            let expected_scale = MR_SIZE * d.sigma;
            assert!(
                (f.laf.scale() - expected_scale).abs() < 1e-4 * expected_scale,
                "{what}: scale {} vs mrSize·σ {expected_scale}",
                f.laf.scale()
            );
            assert!(
                a[0][1] == 0.0 && a[0][0] > 0.0 && a[1][1] > 0.0,
                "{what}: not upright {a:?}"
            );
            assert!(f.laf.elongation() <= MAX_ELONGATION, "{what}: {a:?}");
            assert!(!f.laf.touches_border(240, 240), "{what}: {:?}", f.laf);
            sample_from_space(
                &space,
                &Laf::from_detection(d.x, d.y, d.sigma),
                &NET_PATCH,
                &mut patch,
            );
            let single = affnet.shapes(&patch)[0];
            let r = expected_scale;
            for (got, want) in [
                (a[0][0], single[0][0] * r),
                (a[1][0], single[1][0] * r),
                (a[1][1], single[1][1] * r),
            ] {
                assert!(
                    (got - want).abs() < 1e-3 * r,
                    "{what}: {a:?} vs {single:?}·{r}"
                );
            }
            if f.laf.elongation() > 1.05 {
                not_circular += 1;
            }
        }
        assert!(
            not_circular * 2 > features.len(),
            "{what}: only {not_circular} of {} frames changed shape",
            features.len()
        );
    }

    #[test]
    fn frames_keep_the_scale_are_upright_and_at_most_6_to_1_random_weights() {
        let affnet = AffNet::from_weights(&random_weights(NetworkKind::AffNet, 5)).unwrap();
        check_frames(&affnet, "random weights");
    }

    #[test]
    fn frames_keep_the_scale_are_upright_and_at_most_6_to_1_official_weights() {
        if let Some(affnet) = official_affnet() {
            check_frames(&affnet, "official weights");
        }
    }

    #[test]
    fn elongated_and_border_regions_are_dropped() {
        // Random weights scaled up saturate the tanh outputs, so many shapes exceed 6:1.
        let mut w = random_weights(NetworkKind::AffNet, 9);
        let last = w.tensors.get_mut("features.19.weight").unwrap();
        last.data.iter_mut().for_each(|v| *v *= 40.0);
        let affnet = AffNet::from_weights(&w).unwrap();
        let image = textured(240);
        let space = ScaleSpace::build(&image);
        let detections = detect(
            &space,
            &Threshold::Fixed {
                threshold: DEFAULT_THRESHOLD,
            },
        );
        let circles: Vec<Laf> = detections
            .iter()
            .map(|d| Laf::from_detection(d.x, d.y, d.sigma))
            .collect();
        let shapes = on_patches(&space, &circles, |p| affnet.shapes(p));
        let elongated = detections
            .iter()
            .zip(&shapes)
            .filter(|(d, s)| shaped_laf(d, **s).elongation() > MAX_ELONGATION)
            .count();
        assert!(elongated > 0, "the test needs elongated shapes");
        let kept = shape_by_affnet(&space, &detections, &affnet, 1);
        assert!(kept.len() + elongated <= detections.len());
        assert!(kept.iter().all(|f| f.laf.elongation() <= MAX_ELONGATION));
    }

    /// `e` as a symmetric matrix's three entries (e11, e12, e22).
    fn entries(e: [[f64; 2]; 2]) -> [f64; 3] {
        [e[0][0], e[0][1], e[1][1]]
    }

    fn ellipse(a: [[f32; 2]; 2]) -> [[f64; 2]; 2] {
        let a = a.map(|r| r.map(f64::from));
        let mut e = [[0.0; 2]; 2];
        for (i, row) in e.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = a[i][0] * a[j][0] + a[i][1] * a[j][1];
            }
        }
        e
    }

    /// `R(θ)·e·R(θ)ᵀ`.
    fn turn(e: [[f64; 2]; 2], theta: f64) -> [[f64; 2]; 2] {
        let (s, c) = theta.sin_cos();
        let r = [[c, -s], [s, c]];
        let mut out = [[0.0; 2]; 2];
        for (i, row) in out.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                for p in 0..2 {
                    for q in 0..2 {
                        *v += r[i][p] * e[p][q] * r[j][q];
                    }
                }
            }
        }
        out
    }

    fn close(a: [f64; 3], b: [f64; 3], tol: f64) -> bool {
        a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= tol)
    }

    /// The mean of the turned answers is covariant to the turns by construction: if the patch is
    /// turned one step, turn k sees what turn k + 1 saw before, and the mean ellipse turns back
    /// by one step. Also: answers that are one ellipse seen from each turned frame give it back.
    #[test]
    fn turned_answers_average_to_a_turn_covariant_shape() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 40) as f64 / (1u64 << 24) as f64
        };
        for turns in [2usize, 3, 4, 8] {
            let step = std::f64::consts::TAU / turns as f64;
            for _ in 0..20 {
                let answers: Vec<[[f32; 2]; 2]> = (0..turns)
                    .map(|_| {
                        let (a, b) = (0.4 + 2.0 * next(), next() * 2.0 - 1.0);
                        [[a as f32, 0.0], [b as f32, (1.0 / a) as f32]]
                    })
                    .collect();
                let mean = ellipse(average_turned_shapes(answers.clone(), turns)[0]);
                let mut shifted = answers.clone();
                shifted.rotate_left(1);
                let mean_shifted = ellipse(average_turned_shapes(shifted, turns)[0]);
                assert!(
                    close(entries(mean_shifted), entries(turn(mean, -step)), 1e-4),
                    "{turns} turns: {mean_shifted:?} vs {mean:?} turned by −{step}"
                );
                let det = mean[0][0] * mean[1][1] - mean[0][1] * mean[1][0];
                assert!((det - 1.0).abs() < 1e-4, "det {det}");

                // One ellipse, as each turned frame sees it: R_k·A_k·A_kᵀ·R_kᵀ = E for every k.
                let e = mean;
                let consistent: Vec<[[f32; 2]; 2]> = (0..turns)
                    .map(|k| upright_of_ellipse(turn(e, -(k as f64) * step)))
                    .collect();
                let back = ellipse(average_turned_shapes(consistent, turns)[0]);
                assert!(close(entries(back), entries(e), 1e-4), "{back:?} vs {e:?}");
            }
        }
        let one = [[[2.0f32, 0.0], [0.3, 0.5]]];
        assert_eq!(average_turned_shapes(one.to_vec(), 1), one.to_vec());
    }

    /// End to end: on an image and its exact quarter turn, `shape_by_affnet` with 4 turns gives
    /// corresponding detections ellipses that correspond (turned a quarter), even with random
    /// weights, which one pass does not.
    #[test]
    fn four_turns_make_shapes_follow_a_quarter_turn_of_the_image() {
        // 241 pixels: the quarter turn maps even rows and columns to even ones, so the pyramid's
        // 2× subsampling commutes with it.
        const N: usize = 241;
        let f = |x: usize, y: usize| {
            let (x, y) = (x as f32, y as f32);
            128.0
                + 50.0 * (0.11 * x + 0.05 * y).sin() * (0.07 * y - 0.03 * x).cos()
                + 40.0 * ((x - 40.0) * (y - 30.0) / 900.0).sin()
        };
        let image = GrayImage::from_fn(N, N, &f);
        // turned(x', y') = image(y', N−1−x'): image point (x, y) lands at (N−1−y, x).
        let turned = GrayImage::from_fn(N, N, |x, y| f(y, N - 1 - x));
        let affnet = AffNet::from_weights(&random_weights(NetworkKind::AffNet, 5)).unwrap();
        let threshold = Threshold::Fixed {
            threshold: DEFAULT_THRESHOLD,
        };
        let worst = |turns: usize| {
            let (s0, s1) = (ScaleSpace::build(&image), ScaleSpace::build(&turned));
            let f0 = shape_by_affnet(&s0, &detect(&s0, &threshold), &affnet, turns);
            let f1 = shape_by_affnet(&s1, &detect(&s1, &threshold), &affnet, turns);
            let mut matched = 0;
            let mut worst = 0.0f64;
            for a in &f0 {
                let want = [(N - 1) as f32 - a.laf.c[1], a.laf.c[0]];
                let Some(b) = f1.iter().find(|b| {
                    (b.laf.c[0] - want[0]).abs() < 1e-2
                        && (b.laf.c[1] - want[1]).abs() < 1e-2
                        && (b.sigma / a.sigma - 1.0).abs() < 1e-4
                }) else {
                    continue;
                };
                matched += 1;
                let r2 = (a.laf.scale() as f64).powi(2);
                let scaled = |e: [[f64; 2]; 2]| e.map(|row| row.map(|v| v / r2));
                // The image's quarter turn maps (x, y) to (−y, x) + const: R(+90°).
                let expected = turn(scaled(ellipse(a.laf.a)), std::f64::consts::FRAC_PI_2);
                let got = scaled(ellipse(b.laf.a));
                for (g, w) in entries(got).iter().zip(entries(expected)) {
                    worst = worst.max((g - w).abs());
                }
            }
            assert!(matched >= 8, "{turns} turns: {matched} matched frames");
            worst
        };
        let (one, four) = (worst(1), worst(4));
        assert!(four < 1e-3, "4 turns: the shapes differ by up to {four}");
        assert!(
            one > 1e-2,
            "1 turn: the test needs a non-covariant net ({one})"
        );
    }
}
