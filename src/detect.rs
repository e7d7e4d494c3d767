//! The Hessian blob detector of Perdoch's Hessian-Affine, with a fixed or adaptive threshold.
//!
//! Response `R = (Lxx·Lyy − Lxy²)·σ⁴` on each Gaussian level (3×3 finite differences, σ in octave
//! pixels). Candidates are 3×3×3 extrema (maxima of positive R, minima of negative R: saddles count)
//! above 0.8·T; they are refined by a quadratic fit in (x, y, scale) for at most 5 steps, must pass
//! the edge test and the final threshold T, and one feature is kept per pixel per octave.
//!
//! **Threshold units.** `threshold` is hesaff's user-facing value (16/3 by default). Because det H is
//! quadratic in the image derivatives, the response is compared with its square, T = threshold²
//! (28.44), exactly as hesaff does.
//!
//! **Adaptive threshold (AdHess).** [`Threshold::Adaptive`] lowers the threshold until `target`
//! features are found, but never below `floor`: detection runs at the standard threshold, and
//! when that finds fewer than `target`, once more at the floor (on the same responses); features
//! are then ranked by |response|, and every feature above the standard threshold is kept plus the
//! strongest weaker ones until `target` is reached. This equals lowering the threshold
//! continuously from the standard value and stopping at the first value that yields `target`
//! features; an image that has `target` at the standard value gets exactly the fixed threshold's.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::image::GrayImage;
use crate::pyramid::{ScaleSpace, BORDER, IMAGES_PER_OCTAVE, LEVELS_PER_OCTAVE};

/// hesaff's threshold (0.04·256/3).
pub const DEFAULT_THRESHOLD: f32 = 16.0 / 3.0;
/// The edge test's ratio r = 10, giving the bound (r + 1)²/r.
const EDGE_RATIO: f32 = 10.0;
/// Refinement: step to the neighbouring pixel when the offset exceeds this.
const MAX_SUBPIXEL_SHIFT: f32 = 0.6;
/// Refinement: reject when the final offset exceeds this in any coordinate.
const MAX_OFFSET: f32 = 1.5;
/// Refinement may not step closer than this to the octave image's edge.
const POINT_SAFETY_BORDER: usize = 3;
/// At most this many refinement steps.
const REFINEMENT_STEPS: usize = 5;

/// How the detection threshold is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Threshold {
    /// A fixed threshold (hesaff units; 16/3 is standard).
    Fixed {
        /// The threshold in hesaff units; responses are compared with its square.
        threshold: f32,
    },
    /// AdHess: lowered from `threshold` until `target` features, never below `floor`.
    Adaptive {
        /// The standard threshold (hesaff units): every feature above it is kept.
        threshold: f32,
        /// The number of features to reach by lowering the threshold.
        target: usize,
        /// The lowest threshold (hesaff units); detection runs again at this value when the
        /// standard threshold finds fewer than `target`.
        floor: f32,
    },
}

impl Default for Threshold {
    fn default() -> Self {
        Threshold::Fixed {
            threshold: DEFAULT_THRESHOLD,
        }
    }
}

impl Threshold {
    /// The adaptive threshold with wbs's defaults: standard 16/3, floor 2/3 (16/3 ÷ 8).
    pub fn adaptive(target: usize) -> Threshold {
        Threshold::Adaptive {
            threshold: DEFAULT_THRESHOLD,
            target,
            floor: DEFAULT_THRESHOLD / 8.0,
        }
    }

    fn detection_floor(&self) -> f32 {
        match *self {
            Threshold::Fixed { threshold } => threshold,
            Threshold::Adaptive {
                threshold, floor, ..
            } => floor.min(threshold),
        }
    }
}

/// The sign structure of a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobKind {
    /// Bright blob on a dark background (R > 0, Lxx < 0).
    Bright,
    /// Dark blob on a bright background (R > 0, Lxx > 0).
    Dark,
    /// A saddle point (R < 0).
    Saddle,
}

/// One detected blob in input-image coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// The refined column in input-image pixels.
    pub x: f32,
    /// The refined row in input-image pixels.
    pub y: f32,
    /// The characteristic scale σ in input-image pixels.
    pub sigma: f32,
    /// The interpolated response at the refined position (negative for saddles).
    pub response: f32,
    /// The octave it was detected in: 0 is the input resolution, a pixel of octave k is 2ᵏ
    /// input pixels.
    pub octave: usize,
    /// The scale-space level it was detected at, 1..=3.
    pub level: usize,
    /// Bright blob, dark blob or saddle.
    pub kind: BlobKind,
}

/// Detects Hessian blobs in a scale space, octave by octave in scan order (level, row, column);
/// the adaptive threshold then keeps its selection in that order. The adaptive threshold first
/// detects at the standard threshold and stops there when that gives `target` regions (the
/// continuous lowering stops at its first value); only an image with fewer is detected again at
/// the floor, on the same responses.
pub fn detect(space: &ScaleSpace, threshold: &Threshold) -> Vec<Detection> {
    let responses = |octave: &crate::pyramid::Octave| -> Vec<GrayImage> {
        octave
            .levels
            .par_iter()
            .zip(octave.sigmas.par_iter())
            .map(|(level, &sigma)| hessian_response(level, sigma))
            .collect()
    };
    // Detections at threshold `t`, on the responses `kept` (per octave) when given, else on
    // responses computed per octave and dropped (a fixed threshold holds no more than before).
    let at = |t: f32, kept: Option<&[Vec<GrayImage>]>| -> Vec<Detection> {
        let mut per_octave: Vec<Vec<Detection>> = space
            .octaves
            .par_iter()
            .enumerate()
            .map(|(index, octave)| {
                let fresh;
                let responses = match kept {
                    Some(kept) => &kept[index],
                    None => {
                        fresh = responses(octave);
                        &fresh
                    }
                };
                detect_octave(
                    responses,
                    &octave.levels,
                    &octave.sigmas,
                    octave.pixel_distance,
                    index,
                    t * t,
                )
            })
            .collect();
        per_octave.iter_mut().flat_map(std::mem::take).collect()
    };
    match *threshold {
        Threshold::Fixed { threshold } => at(threshold, None),
        Threshold::Adaptive {
            threshold: standard,
            target,
            ..
        } => {
            let kept: Vec<Vec<GrayImage>> = space.octaves.par_iter().map(responses).collect();
            let strong = at(standard, Some(&kept));
            let floor = threshold.detection_floor();
            if strong.len() >= target || floor >= standard {
                return strong;
            }
            let mut detections = at(floor, Some(&kept));
            select_adaptive(&mut detections, standard * standard, target);
            detections
        }
    }
}

/// Keeps every detection with |response| ≥ `standard` and the strongest others up to `target`.
fn select_adaptive(detections: &mut Vec<Detection>, standard: f32, target: usize) {
    let strong = detections
        .iter()
        .filter(|d| d.response.abs() >= standard)
        .count();
    let keep = strong.max(target);
    if detections.len() <= keep {
        return;
    }
    // Rank by strength; ties keep scale-space order, so the result is deterministic.
    let mut order: Vec<usize> = (0..detections.len()).collect();
    order.sort_by(|&a, &b| {
        detections[b]
            .response
            .abs()
            .total_cmp(&detections[a].response.abs())
            .then(a.cmp(&b))
    });
    let mut chosen = vec![false; detections.len()];
    for &i in &order[..keep] {
        chosen[i] = true;
    }
    let mut index = 0;
    detections.retain(|_| {
        index += 1;
        chosen[index - 1]
    });
}

/// The scale-normalised determinant of the Hessian, `(Lxx·Lyy − Lxy²)·σ⁴`; the one-pixel frame is 0.
pub fn hessian_response(image: &GrayImage, sigma: f32) -> GrayImage {
    let (w, h) = (image.width(), image.height());
    let norm = sigma * sigma * sigma * sigma;
    let mut out = vec![0f32; w * h];
    if w < 3 || h < 3 {
        return GrayImage::from_vec(w, h, out);
    }
    let data = image.data();
    out.par_chunks_mut(w)
        .enumerate()
        .skip(1)
        .take(h - 2)
        .for_each(|(y, row)| {
            let above = &data[(y - 1) * w..y * w];
            let here = &data[y * w..(y + 1) * w];
            let below = &data[(y + 1) * w..(y + 2) * w];
            for x in 1..w - 1 {
                let centre = here[x];
                let dxx = here[x - 1] - 2.0 * centre + here[x + 1];
                let dyy = above[x] - 2.0 * centre + below[x];
                let dxy = 0.25 * (below[x + 1] - below[x - 1] - above[x + 1] + above[x - 1]);
                row[x] = norm * (dxx * dyy - dxy * dxy);
            }
        });
    GrayImage::from_vec(w, h, out)
}

/// A candidate after refinement, before the one-per-pixel rule.
struct Refined {
    row: usize,
    col: usize,
    offset: [f32; 3],
    value: f32,
}

fn detect_octave(
    responses: &[GrayImage],
    levels: &[GrayImage],
    sigmas: &[f32; IMAGES_PER_OCTAVE],
    pixel_distance: f32,
    octave: usize,
    final_threshold: f32,
) -> Vec<Detection> {
    let (w, h) = (responses[0].width(), responses[0].height());
    let mut detections = Vec::new();
    if w <= 2 * BORDER || h <= 2 * BORDER {
        return detections;
    }
    let candidate_threshold = 0.8 * final_threshold;
    // Each pixel of an octave may yield one feature, in scan order (level, row, column) as hesaff.
    let mut taken = vec![false; w * h];
    for level in 1..=LEVELS_PER_OCTAVE {
        let (low, cur, high) = (
            &responses[level - 1],
            &responses[level],
            &responses[level + 1],
        );
        // Scan and refine in parallel (pure work), then apply the one-per-pixel rule in order.
        let refined: Vec<Refined> = (BORDER..h - BORDER)
            .into_par_iter()
            .flat_map_iter(|r| {
                let mut found = Vec::new();
                for c in BORDER..w - BORDER {
                    let v = cur.at(c, r);
                    let is_candidate = (v > candidate_threshold
                        && is_extremum(v, [low, cur, high], r, c, |n, v| n > v))
                        || (v < -candidate_threshold
                            && is_extremum(v, [low, cur, high], r, c, |n, v| n < v));
                    if is_candidate {
                        if let Some(p) = refine(low, cur, high, r, c, final_threshold) {
                            found.push(p);
                        }
                    }
                }
                found
            })
            .collect();
        for p in refined {
            let index = p.row * w + p.col;
            if taken[index] {
                continue;
            }
            taken[index] = true;
            let sigma = sigmas[level] * 2f32.powf(p.offset[2] / LEVELS_PER_OCTAVE as f32);
            let lxx = {
                let g = &levels[level];
                g.at(p.col - 1, p.row) - 2.0 * g.at(p.col, p.row) + g.at(p.col + 1, p.row)
            };
            let kind = if p.value < 0.0 {
                BlobKind::Saddle
            } else if lxx < 0.0 {
                BlobKind::Bright
            } else {
                BlobKind::Dark
            };
            detections.push(Detection {
                x: pixel_distance * (p.col as f32 + p.offset[0]),
                y: pixel_distance * (p.row as f32 + p.offset[1]),
                sigma: pixel_distance * sigma,
                response: p.value,
                octave,
                level,
                kind,
            });
        }
    }
    detections
}

/// Whether `v` at (r, c) of the middle map is an extremum over its 3×3×3 neighbourhood: no
/// neighbour `beats` it (non-strict, as hesaff: equal neighbours do not veto).
#[inline]
fn is_extremum(
    v: f32,
    maps: [&GrayImage; 3],
    r: usize,
    c: usize,
    beats: impl Fn(f32, f32) -> bool,
) -> bool {
    for map in maps {
        for y in r - 1..=r + 1 {
            let row = map.row(y);
            for &n in &row[c - 1..=c + 1] {
                if beats(n, v) {
                    return false;
                }
            }
        }
    }
    true
}

/// hesaff's `localizeKeypoint`: quadratic refinement in (x, y, scale) with integer steps.
fn refine(
    low: &GrayImage,
    cur: &GrayImage,
    high: &GrayImage,
    row: usize,
    col: usize,
    final_threshold: f32,
) -> Option<Refined> {
    let (w, h) = (cur.width(), cur.height());
    let edge_bound = (EDGE_RATIO + 1.0) * (EDGE_RATIO + 1.0) / EDGE_RATIO;
    let (mut r, mut c) = (row, col);
    let (mut nr, mut nc) = (row, col);
    let mut b = [0f32; 3];
    let mut value = 0.0;
    for iteration in 0..REFINEMENT_STEPS {
        r = nr;
        c = nc;
        let centre = cur.at(c, r);
        let dxx = cur.at(c - 1, r) - 2.0 * centre + cur.at(c + 1, r);
        let dyy = cur.at(c, r - 1) - 2.0 * centre + cur.at(c, r + 1);
        let dss = low.at(c, r) - 2.0 * centre + high.at(c, r);
        let dxy = 0.25
            * (cur.at(c + 1, r + 1) - cur.at(c - 1, r + 1) - cur.at(c + 1, r - 1)
                + cur.at(c - 1, r - 1));
        if iteration == 0 {
            // The response's own Hessian must not look like an edge.
            let edge_score = (dxx + dyy) * (dxx + dyy) / (dxx * dyy - dxy * dxy);
            if !(edge_score >= 0.0 && edge_score < edge_bound) {
                return None;
            }
        }
        let dxs =
            0.25 * (high.at(c + 1, r) - high.at(c - 1, r) - low.at(c + 1, r) + low.at(c - 1, r));
        let dys =
            0.25 * (high.at(c, r + 1) - high.at(c, r - 1) - low.at(c, r + 1) + low.at(c, r - 1));
        let dx = 0.5 * (cur.at(c + 1, r) - cur.at(c - 1, r));
        let dy = 0.5 * (cur.at(c, r + 1) - cur.at(c, r - 1));
        let ds = 0.5 * (high.at(c, r) - low.at(c, r));
        b = solve3(
            [[dxx, dxy, dxs], [dxy, dyy, dys], [dxs, dys, dss]],
            [-dx, -dy, -ds],
        )?;
        value = centre + 0.5 * (dx * b[0] + dy * b[1] + ds * b[2]);
        if b[0] > MAX_SUBPIXEL_SHIFT {
            if c < w - POINT_SAFETY_BORDER {
                nc += 1;
            } else {
                return None;
            }
        }
        if b[1] > MAX_SUBPIXEL_SHIFT {
            if r < h - POINT_SAFETY_BORDER {
                nr += 1;
            } else {
                return None;
            }
        }
        if b[0] < -MAX_SUBPIXEL_SHIFT {
            if c > POINT_SAFETY_BORDER {
                nc -= 1;
            } else {
                return None;
            }
        }
        if b[1] < -MAX_SUBPIXEL_SHIFT {
            if r > POINT_SAFETY_BORDER {
                nr -= 1;
            } else {
                return None;
            }
        }
        if nr == r && nc == c {
            break;
        }
    }
    if b.iter().any(|v| v.abs() > MAX_OFFSET) || value.abs() < final_threshold {
        return None;
    }
    Some(Refined {
        row: r,
        col: c,
        offset: b,
        value,
    })
}

/// Solves a 3×3 system by Gaussian elimination with partial pivoting; None when singular.
fn solve3(mut a: [[f32; 3]; 3], mut b: [f32; 3]) -> Option<[f32; 3]> {
    for k in 0..3 {
        let pivot = (k..3).max_by(|&i, &j| a[i][k].abs().total_cmp(&a[j][k].abs()))?;
        if a[pivot][k].abs() < 1e-12 || !a[pivot][k].is_finite() {
            return None;
        }
        a.swap(k, pivot);
        b.swap(k, pivot);
        let pivot_row = a[k];
        for i in k + 1..3 {
            let f = a[i][k] / pivot_row[k];
            for (x, p) in a[i][k..].iter_mut().zip(&pivot_row[k..]) {
                *x -= f * p;
            }
            b[i] -= f * b[k];
        }
    }
    let mut x = [0f32; 3];
    for i in (0..3).rev() {
        let mut s = b[i];
        for j in i + 1..3 {
            s -= a[i][j] * x[j];
        }
        x[i] = s / a[i][i];
    }
    if x.iter().all(|v| v.is_finite()) {
        Some(x)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dark Gaussian blob of standard deviation `sigma` on a bright background.
    fn blob(size: usize, cx: f32, cy: f32, sigma: f32) -> GrayImage {
        GrayImage::from_fn(size, size, |x, y| {
            let d2 = (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2);
            200.0 - 150.0 * (-d2 / (2.0 * sigma * sigma)).exp()
        })
    }

    #[test]
    fn a_blob_is_found_at_its_scale() {
        // The scale-normalised Hessian of a Gaussian blob of std s peaks at σ = s (for the
        // determinant, whose extremum over scale is at σ = s). Check several scales within ±10 %.
        for &s in &[3.0f32, 4.5, 7.0, 11.0] {
            let img = blob(160, 80.3, 79.6, s);
            let space = ScaleSpace::build(&img);
            let found = detect(&space, &Threshold::default());
            let best = found
                .iter()
                .filter(|d| (d.x - 80.3).abs() < 1.5 && (d.y - 79.6).abs() < 1.5)
                .max_by(|a, b| a.response.abs().total_cmp(&b.response.abs()))
                .unwrap_or_else(|| panic!("blob of scale {s} not found: {found:?}"));
            let error = (best.sigma - s).abs() / s;
            assert!(
                error < 0.10,
                "scale {s}: detected {} ({:.1} %)",
                best.sigma,
                error * 100.0
            );
            assert_eq!(best.kind, BlobKind::Dark);
            assert!(
                (best.x - 80.3).abs() < 0.3 && (best.y - 79.6).abs() < 0.3,
                "{best:?}"
            );
        }
    }

    #[test]
    fn uniform_image_has_no_features_and_threshold_matters() {
        let flat = GrayImage::from_fn(100, 100, |_, _| 128.0);
        assert!(detect(&ScaleSpace::build(&flat), &Threshold::default()).is_empty());

        // A faint blob: below the standard threshold, found by the adaptive one.
        let faint = GrayImage::from_fn(120, 120, |x, y| {
            let d2 = (x as f32 - 60.0).powi(2) + (y as f32 - 60.0).powi(2);
            100.0 + 4.0 * (-d2 / 32.0).exp()
        });
        let space = ScaleSpace::build(&faint);
        assert!(detect(&space, &Threshold::default()).is_empty());
        let adaptive = detect(&space, &Threshold::adaptive(10));
        assert!(adaptive
            .iter()
            .any(|d| (d.x - 60.0).abs() < 1.0 && (d.y - 60.0).abs() < 1.0));
    }

    #[test]
    fn adaptive_is_the_fixed_threshold_when_that_reaches_the_target() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample/img1.png");
        let image = crate::image::load_gray(&path, &Default::default()).unwrap();
        let space = ScaleSpace::build(&image);
        let fixed = detect(&space, &Threshold::default());
        let n = fixed.len();
        assert!(n > 500, "{n}");
        assert_eq!(detect(&space, &Threshold::adaptive(n)), fixed);
        assert_eq!(detect(&space, &Threshold::adaptive(n / 2)), fixed);
        // Above it, the floor pass tops the strong ones up to the target.
        let more = detect(&space, &Threshold::adaptive(n + 500));
        assert_eq!(more.len(), n + 500);
        let t = DEFAULT_THRESHOLD * DEFAULT_THRESHOLD;
        let strong = more.iter().filter(|d| d.response.abs() >= t).count();
        assert!(
            strong as f64 >= 0.98 * n as f64,
            "{strong} of {n} strong kept"
        );
    }

    #[test]
    fn adaptive_keeps_all_strong_and_tops_up_to_target() {
        let make = |response: f32| Detection {
            x: 0.0,
            y: 0.0,
            sigma: 2.0,
            response,
            octave: 0,
            level: 1,
            kind: BlobKind::Bright,
        };
        let mut d: Vec<_> = [50.0, 3.0, -40.0, 10.0, 30.0, -2.0]
            .iter()
            .map(|&r| make(r))
            .collect();
        select_adaptive(&mut d, 28.0, 4);
        let kept: Vec<f32> = d.iter().map(|d| d.response).collect();
        assert_eq!(kept, vec![50.0, -40.0, 10.0, 30.0]);
        let mut d: Vec<_> = [50.0, 3.0, -40.0, 31.0].iter().map(|&r| make(r)).collect();
        select_adaptive(&mut d, 28.0, 1);
        assert_eq!(d.len(), 3, "all strong ones stay even above the target");
    }

    #[test]
    fn solve3_solves_and_detects_singularity() {
        let x = solve3(
            [[2.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 4.0]],
            [3.0, 5.0, 5.0],
        )
        .unwrap();
        assert!(
            (x[0] - 1.0).abs() < 1e-5 && (x[1] - 1.0).abs() < 1e-5 && (x[2] - 1.0).abs() < 1e-5
        );
        assert!(solve3(
            [[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 0.0, 1.0]],
            [1.0, 1.0, 1.0]
        )
        .is_none());
    }
}
