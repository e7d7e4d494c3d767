//! The evaluation protocol's verdict (`protocol.md`): a pair is registered when LO-RANSAC keeps at
//! least 15 inliers **and** the model is right where ground truth exists:
//! - homography ground truth: the median ground-truth transfer error of the inliers
//!   (‖H_gt·x1 − x2‖) is at most 5 px;
//! - annotated correspondences (WxBS style): at least half of them lie within 5 px of their
//!   epipolar lines under the estimated F (mean of the two one-sided point-to-line distances).
//!   A homography estimated on such a pair (`--geometry homography`) is held to the stricter
//!   test its model allows: at least half of the correspondences within 5 px of their transfer
//!   under H (mean of ‖H·x1 − x2‖ and ‖H⁻¹·x2 − x1‖); reading an H as an F would be meaningless.
//!
//! A pair without ground truth is judged on the inlier count alone. `tools/score.py` in the shared
//! folder implements the same rules independently; the two must agree.

use nalgebra::{Matrix3, Vector3};
use serde::{Deserialize, Serialize};

use crate::geometry::Geometry;

/// The median ground-truth error allowed for a homography pair, px.
pub const MAX_MEDIAN_TRANSFER_ERROR: f64 = 5.0;
/// The epipolar distance within which an annotated correspondence counts as explained, px.
pub const MAX_EPIPOLAR_DISTANCE: f64 = 5.0;
/// The fraction of annotated correspondences that must be explained.
pub const MIN_EXPLAINED_FRACTION: f64 = 0.5;

/// What is known about the true geometry of a pair.
#[derive(Clone, Debug, PartialEq)]
pub enum GroundTruth {
    /// A homography mapping image 1 to image 2.
    Homography(Matrix3<f64>),
    /// Annotated correspondences `[x1, y1, x2, y2]`.
    Correspondences(Vec<[f64; 4]>),
    /// Nothing: judged on the inlier count alone.
    None,
}

/// The verdict on one pair.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// Enough inliers and, where ground truth exists, a model that agrees with it.
    pub registered: bool,
    /// The number of inliers judged.
    pub inliers: usize,
    /// Median ground-truth transfer error of the inliers in px (homography) or the fraction of
    /// annotated correspondences explained (correspondences); None without ground truth, without
    /// inliers (homography) or without a model (correspondences).
    pub metric: Option<f64>,
    /// Whether ground truth was available.
    pub has_ground_truth: bool,
    /// The verdict in words, one line (e.g. `"40 inliers ≥ 15; median ground-truth error …"`).
    pub reason: String,
}

/// Judges a match result (its inliers as `[x1, y1, x2, y2]` in pixels and its model) against
/// ground truth. `model` (its kind and row-major matrix: F with `x2ᵀ·F·x1 = 0`, or H mapping
/// image 1 to image 2) is only read for annotated correspondences; homography ground truth is
/// checked on the inliers alone.
pub fn judge(
    inlier_matches: &[[f64; 4]],
    model: Option<(Geometry, &[[f64; 3]; 3])>,
    truth: &GroundTruth,
    min_inliers: usize,
) -> Judgement {
    let model = model.map(|(geometry, m)| (geometry, rows_to_matrix(m)));
    let inliers = inlier_matches.len();
    let enough = inliers >= min_inliers;
    let count_reason = if enough {
        format!("{inliers} inliers ≥ {min_inliers}")
    } else {
        format!("only {inliers} inliers (< {min_inliers})")
    };
    match truth {
        GroundTruth::None => Judgement {
            registered: enough,
            inliers,
            metric: None,
            has_ground_truth: false,
            reason: format!("{count_reason}; no ground truth"),
        },
        GroundTruth::Homography(h) => {
            let median = median_transfer_error(inlier_matches, h);
            let right = median.is_some_and(|m| m <= MAX_MEDIAN_TRANSFER_ERROR);
            Judgement {
                registered: enough && right,
                inliers,
                metric: median,
                has_ground_truth: true,
                reason: match median {
                    Some(m) => format!(
                        "{count_reason}; median ground-truth error {m:.2} px {} {MAX_MEDIAN_TRANSFER_ERROR}",
                        if right { "≤" } else { ">" }
                    ),
                    None => format!("{count_reason}; no inliers to check"),
                },
            }
        }
        GroundTruth::Correspondences(points) => {
            let fraction = model.and_then(|(geometry, m)| match geometry {
                Geometry::Fundamental => explained_fraction(points, &m),
                Geometry::Homography => transferred_fraction(points, &m),
            });
            let right = fraction.is_some_and(|f| f >= MIN_EXPLAINED_FRACTION);
            Judgement {
                registered: enough && right,
                inliers,
                metric: fraction,
                has_ground_truth: true,
                reason: match fraction {
                    Some(f) => format!(
                        "{count_reason}; {:.0} % of the annotated correspondences within {MAX_EPIPOLAR_DISTANCE} px of {}",
                        100.0 * f,
                        match model.map(|(g, _)| g) {
                            Some(Geometry::Homography) => "their transfer under H",
                            _ => "their epipolar lines",
                        }
                    ),
                    None => format!("{count_reason}; no model to check"),
                },
            }
        }
    }
}

/// The fraction of annotated correspondences whose mean two-way transfer error under the
/// homography `h` (‖H·x1 − x2‖ and ‖H⁻¹·x2 − x1‖) is at most [`MAX_EPIPOLAR_DISTANCE`]; None
/// without correspondences or for a singular `h`.
pub fn transferred_fraction(points: &[[f64; 4]], h: &Matrix3<f64>) -> Option<f64> {
    let inverse = h.try_inverse()?;
    if points.is_empty() {
        return None;
    }
    let transfer = |m: &Matrix3<f64>, x: f64, y: f64, u: f64, v: f64| {
        let p = m * Vector3::new(x, y, 1.0);
        if p[2].abs() < 1e-15 {
            f64::INFINITY
        } else {
            ((p[0] / p[2] - u).powi(2) + (p[1] / p[2] - v).powi(2)).sqrt()
        }
    };
    let explained = points
        .iter()
        .filter(|p| {
            let forward = transfer(h, p[0], p[1], p[2], p[3]);
            let backward = transfer(&inverse, p[2], p[3], p[0], p[1]);
            0.5 * (forward + backward) <= MAX_EPIPOLAR_DISTANCE
        })
        .count();
    Some(explained as f64 / points.len() as f64)
}

/// The median of ‖H·x1 − x2‖ over the matches; None when there are none.
pub fn median_transfer_error(matches: &[[f64; 4]], h: &Matrix3<f64>) -> Option<f64> {
    let mut errors: Vec<f64> = matches
        .iter()
        .map(|m| {
            let p = h * Vector3::new(m[0], m[1], 1.0);
            if p[2].abs() < 1e-15 {
                f64::INFINITY
            } else {
                ((p[0] / p[2] - m[2]).powi(2) + (p[1] / p[2] - m[3]).powi(2)).sqrt()
            }
        })
        .collect();
    if errors.is_empty() {
        return None;
    }
    errors.sort_by(f64::total_cmp);
    let n = errors.len();
    // numpy's median: the mean of the two middle values for an even count.
    Some(if n % 2 == 1 {
        errors[n / 2]
    } else {
        0.5 * (errors[n / 2 - 1] + errors[n / 2])
    })
}

/// The fraction of correspondences `[x1, y1, x2, y2]` whose mean one-sided epipolar distance under
/// `f` (with `x2ᵀ·F·x1 = 0`) is at most [`MAX_EPIPOLAR_DISTANCE`]; None when there are none.
pub fn explained_fraction(points: &[[f64; 4]], f: &Matrix3<f64>) -> Option<f64> {
    if points.is_empty() {
        return None;
    }
    let explained = points
        .iter()
        .filter(|p| {
            let x1 = Vector3::new(p[0], p[1], 1.0);
            let x2 = Vector3::new(p[2], p[3], 1.0);
            let l2 = f * x1; // epipolar line of x1 in image 2
            let l1 = f.transpose() * x2; // epipolar line of x2 in image 1
            let d2 = x2.dot(&l2).abs() / (l2[0] * l2[0] + l2[1] * l2[1]).sqrt();
            let d1 = x1.dot(&l1).abs() / (l1[0] * l1[0] + l1[1] * l1[1]).sqrt();
            0.5 * (d1 + d2) <= MAX_EPIPOLAR_DISTANCE
        })
        .count();
    Some(explained as f64 / points.len() as f64)
}

/// Reads a ground-truth file: nine numbers are a homography (image 1 → image 2, any notation);
/// rows of four numbers are annotated correspondences `x1 y1 x2 y2`. An unreadable file is an
/// [`Error::Io`](crate::Error::Io), a malformed one an [`Error::Dataset`](crate::Error::Dataset).
pub fn load_ground_truth(path: &std::path::Path) -> crate::Result<GroundTruth> {
    let text = std::fs::read_to_string(path).map_err(|e| crate::Error::io(path, e))?;
    let tokens = text.split_whitespace().count();
    if tokens == 9 {
        return crate::synth::parse_homography(&text)
            .map(GroundTruth::Homography)
            .map_err(|m| crate::Error::Dataset(format!("{}: {m}", path.display())));
    }
    parse_correspondences(&text)
        .map(GroundTruth::Correspondences)
        .map_err(|m| crate::Error::Dataset(format!("{}: {m}", path.display())))
}

/// Parses rows `x1 y1 x2 y2` (blank lines and `#` comments ignored). The error names the first bad
/// line; a text without rows is an error too.
pub fn parse_correspondences(text: &str) -> std::result::Result<Vec<[f64; 4]>, String> {
    let mut points = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let values: Vec<f64> = line
            .split_whitespace()
            .map(|t| {
                t.parse::<f64>()
                    .map_err(|_| format!("line {}: '{t}' is not a number", n + 1))
            })
            .collect::<std::result::Result<_, _>>()?;
        if values.len() != 4 || values.iter().any(|v| !v.is_finite()) {
            return Err(format!(
                "line {}: expected 4 numbers (x1 y1 x2 y2) or a file of 9 numbers (a homography)",
                n + 1
            ));
        }
        points.push([values[0], values[1], values[2], values[3]]);
    }
    if points.is_empty() {
        return Err("no correspondences in the file".into());
    }
    Ok(points)
}

/// A row-major 3×3 array as a matrix.
pub fn rows_to_matrix(rows: &[[f64; 3]; 3]) -> Matrix3<f64> {
    Matrix3::from_fn(|r, c| rows[r][c])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shifted(n: usize, dx: f64) -> Vec<[f64; 4]> {
        (0..n)
            .map(|i| {
                let (x, y) = (i as f64 * 7.0 % 100.0, i as f64 * 3.0 % 80.0);
                [x, y, x + dx, y]
            })
            .collect()
    }

    #[test]
    fn homography_verdicts_on_right_and_wrong_models() {
        let truth =
            GroundTruth::Homography(Matrix3::new(1.0, 0.0, 10.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0));
        let right = judge(&shifted(20, 10.0), None, &truth, 15);
        assert!(
            right.registered && right.metric.unwrap() < 1e-9,
            "{right:?}"
        );
        let wrong = judge(&shifted(20, 20.0), None, &truth, 15);
        assert!(!wrong.registered && (wrong.metric.unwrap() - 10.0).abs() < 1e-9);
        let few = judge(&shifted(14, 10.0), None, &truth, 15);
        assert!(!few.registered && few.reason.contains("only 14"));
        let none = judge(&shifted(20, 99.0), None, &GroundTruth::None, 15);
        assert!(none.registered && !none.has_ground_truth);
    }

    #[test]
    fn median_is_numpys() {
        let h = Matrix3::identity();
        let m = [
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 3.0, 0.0],
            [0.0, 0.0, 0.0, 10.0],
            [0.0, 0.0, 0.0, 0.5],
        ];
        assert!((median_transfer_error(&m, &h).unwrap() - 2.0).abs() < 1e-12);
    }

    #[test]
    fn fundamental_verdicts() {
        // A pure horizontal translation: F = [t]x with t = (1, 0, 0) → epipolar lines y = const.
        let f = [[0.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]];
        let good: Vec<[f64; 4]> = (0..10)
            .map(|i| {
                [
                    i as f64,
                    i as f64 * 2.0,
                    i as f64 + 30.0,
                    i as f64 * 2.0 + 1.0,
                ]
            })
            .collect();
        let inliers = shifted(20, 5.0);
        let j = judge(
            &inliers,
            Some((Geometry::Fundamental, &f)),
            &GroundTruth::Correspondences(good.clone()),
            15,
        );
        assert!(j.registered && j.metric == Some(1.0), "{j:?}");
        let bad: Vec<[f64; 4]> = good
            .iter()
            .map(|p| [p[0], p[1], p[2], p[3] + 20.0])
            .collect();
        let j = judge(
            &inliers,
            Some((Geometry::Fundamental, &f)),
            &GroundTruth::Correspondences(bad),
            15,
        );
        assert!(!j.registered && j.metric == Some(0.0));
        let j = judge(&inliers, None, &GroundTruth::Correspondences(good), 15);
        assert!(!j.registered);
    }

    #[test]
    fn a_homography_is_judged_by_transfer_not_as_an_f() {
        // Correspondences related by a translation (+30, +1): the H of that translation
        // explains them all. Read as an F (what the judge did before), the same matrix puts
        // the points far from their "epipolar lines".
        let h = [[1.0, 0.0, 30.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]];
        let points: Vec<[f64; 4]> = (0..10)
            .map(|i| {
                let (x, y) = (10.0 * i as f64, 7.0 * i as f64 + 3.0);
                [x, y, x + 30.0, y + 1.0]
            })
            .collect();
        let inliers = shifted(20, 5.0);
        let truth = GroundTruth::Correspondences(points.clone());
        let j = judge(&inliers, Some((Geometry::Homography, &h)), &truth, 15);
        assert!(j.registered && j.metric == Some(1.0), "{j:?}");
        assert!(j.reason.contains("transfer under H"), "{}", j.reason);
        let as_f = judge(&inliers, Some((Geometry::Fundamental, &h)), &truth, 15);
        assert_ne!(as_f.metric, Some(1.0), "{as_f:?}");
        // Half of the points moved 8 px off: exactly half explained, still registered; more
        // moved: not.
        let moved = |n: usize| -> Vec<[f64; 4]> {
            points
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    if i < n {
                        [p[0], p[1], p[2] + 8.0, p[3]]
                    } else {
                        *p
                    }
                })
                .collect()
        };
        let half = judge(
            &inliers,
            Some((Geometry::Homography, &h)),
            &GroundTruth::Correspondences(moved(5)),
            15,
        );
        assert!(half.registered && half.metric == Some(0.5), "{half:?}");
        let most = judge(
            &inliers,
            Some((Geometry::Homography, &h)),
            &GroundTruth::Correspondences(moved(6)),
            15,
        );
        assert!(!most.registered, "{most:?}");
        // A singular H explains nothing it can be checked against.
        let singular = [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]];
        let j = judge(
            &inliers,
            Some((Geometry::Homography, &singular)),
            &truth,
            15,
        );
        assert!(!j.registered && j.metric.is_none(), "{j:?}");
    }
}
