//! Local affine frames (LAFs), as in kornia.
//!
//! A LAF is a 2×3 matrix `[A | c]`: a point `u` of the normalised patch `[-1, 1]²` maps to the image
//! point `A·u + c`. Its scale is `sqrt(|det A|)`, its orientation `atan2(A[0][1], A[0][0])`, and it
//! is "upright" when `A` is lower-triangular with a positive diagonal (the patch's y axis points
//! along the image's y axis: up is up). A detector scale σ becomes `A = mrSize·σ·I` with
//! mrSize = 3√3, so the frame covers the measurement region of Hessian-Affine.

use serde::{Deserialize, Serialize};

/// The measurement-region multiplier of Hessian-Affine: the frame spans ±3√3·σ.
pub const MR_SIZE: f32 = 5.196_152; // 3·√3

/// A local affine frame `[A | c]`.
///
/// ```
/// use wbs::laf::Laf;
///
/// // A circle of radius 10 at (100, 50), its patch x axis turned to image direction 90°: down.
/// let laf = Laf::circle(100.0, 50.0, 10.0).rotated(std::f32::consts::FRAC_PI_2);
/// let [x, y] = laf.map([1.0, 0.0]); // the middle of the patch's right edge
/// assert!((x - 100.0).abs() < 1e-4 && (y - 60.0).abs() < 1e-4);
/// assert!((laf.scale() - 10.0).abs() < 1e-4);
/// assert!((laf.orientation() + std::f32::consts::FRAC_PI_2).abs() < 1e-6); // kornia's sign
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Laf {
    /// The 2×2 shape, row-major: `a[row][col]`.
    pub a: [[f32; 2]; 2],
    /// The centre in image pixels (x right, y down, top-left pixel centre at (0, 0)).
    pub c: [f32; 2],
}

impl Laf {
    /// A circular frame of radius `radius` around (x, y).
    pub fn circle(x: f32, y: f32, radius: f32) -> Laf {
        Laf {
            a: [[radius, 0.0], [0.0, radius]],
            c: [x, y],
        }
    }

    /// The frame of a detection at scale σ: radius mrSize·σ.
    pub fn from_detection(x: f32, y: f32, sigma: f32) -> Laf {
        Laf::circle(x, y, MR_SIZE * sigma)
    }

    /// det A; negative for a mirrored frame.
    pub fn det(&self) -> f32 {
        self.a[0][0] * self.a[1][1] - self.a[0][1] * self.a[1][0]
    }

    /// sqrt(|det A|): the radius of the circle of equal area.
    pub fn scale(&self) -> f32 {
        (self.det().abs() + 1e-10).sqrt()
    }

    /// `atan2(A[0][1], A[0][0])`, radians (kornia's `get_laf_orientation`). For an upright frame
    /// turned by [`Laf::rotated`]`(θ)` this is −θ.
    pub fn orientation(&self) -> f32 {
        self.a[0][1].atan2(self.a[0][0])
    }

    /// Maps a point of the normalised patch to the image.
    #[inline]
    pub fn map(&self, u: [f32; 2]) -> [f32; 2] {
        [
            self.a[0][0] * u[0] + self.a[0][1] * u[1] + self.c[0],
            self.a[1][0] * u[0] + self.a[1][1] * u[1] + self.c[1],
        ]
    }

    /// `A ← A·R(θ)` with `R(θ) = [[cos θ, −sin θ], [sin θ, cos θ]]`: the patch's x axis then points
    /// along direction θ of the old patch (e.g. the dominant gradient found in it).
    pub fn rotated(&self, theta: f32) -> Laf {
        let (s, c) = theta.sin_cos();
        let a = self.a;
        Laf {
            a: [
                [a[0][0] * c + a[0][1] * s, -a[0][0] * s + a[0][1] * c],
                [a[1][0] * c + a[1][1] * s, -a[1][0] * s + a[1][1] * c],
            ],
            c: self.c,
        }
    }

    /// Multiplies A by `factor` (the centre stays).
    pub fn scaled(&self, factor: f32) -> Laf {
        Laf {
            a: [
                [self.a[0][0] * factor, self.a[0][1] * factor],
                [self.a[1][0] * factor, self.a[1][1] * factor],
            ],
            c: self.c,
        }
    }

    /// The upright frame with the same ellipse and scale (kornia's `make_upright`, the
    /// `rectifyAffineTransformationUpIsUp` of hesaff/affnet): lower-triangular, positive diagonal.
    pub fn upright(&self) -> Laf {
        let shape = upright_shape(self.a);
        let s = self.scale();
        Laf {
            a: [[shape[0][0] * s, 0.0], [shape[1][0] * s, shape[1][1] * s]],
            c: self.c,
        }
    }

    /// The ratio of the ellipse's long to short axis (singular values of A), ≥ 1.
    pub fn elongation(&self) -> f32 {
        let (s1, s2) = singular_values(self.a);
        if s2 <= 0.0 {
            f32::INFINITY
        } else {
            s1 / s2
        }
    }

    /// The four corners of the frame's square `A·[±1, ±1] + c`.
    pub fn corners(&self) -> [[f32; 2]; 4] {
        [
            self.map([-1.0, -1.0]),
            self.map([1.0, -1.0]),
            self.map([1.0, 1.0]),
            self.map([-1.0, 1.0]),
        ]
    }

    /// Whether the frame's square reaches the image border (hesaff's rule: a corner with
    /// floor ≤ 0 or ceil ≥ size − 2 touches it).
    pub fn touches_border(&self, width: usize, height: usize) -> bool {
        let (w, h) = (width as f32, height as f32);
        self.corners().iter().any(|p| {
            p[0].floor() <= 0.0
                || p[1].floor() <= 0.0
                || p[0].ceil() >= w - 2.0
                || p[1].ceil() >= h - 2.0
        }) || !self.c[0].is_finite()
            || !self.c[1].is_finite()
    }

    /// The Oxford ellipse `(x, y, a, b, c)`: `a·dx² + 2b·dx·dy + c·dy² = 1`, i.e. `E = (A·Aᵀ)⁻¹`.
    pub fn to_ellipse(&self) -> [f32; 5] {
        let a = self.a;
        // A·Aᵀ
        let m00 = (a[0][0] * a[0][0] + a[0][1] * a[0][1]) as f64;
        let m01 = (a[0][0] * a[1][0] + a[0][1] * a[1][1]) as f64;
        let m11 = (a[1][0] * a[1][0] + a[1][1] * a[1][1]) as f64;
        let det = m00 * m11 - m01 * m01;
        [
            self.c[0],
            self.c[1],
            (m11 / det) as f32,
            (-m01 / det) as f32,
            (m00 / det) as f32,
        ]
    }

    /// The upright frame of an Oxford ellipse: `A = E^(−1/2)` (symmetric root), made upright.
    /// Returns None for an ellipse that is not positive definite.
    pub fn from_ellipse(e: [f32; 5]) -> Option<Laf> {
        let (a, b, c) = (e[2] as f64, e[3] as f64, e[4] as f64);
        let det = a * c - b * b;
        if !(a > 0.0 && det > 0.0) {
            return None;
        }
        // M = E⁻¹ = A·Aᵀ; any A with A·Aᵀ = M describes the ellipse. Take the lower-triangular
        // (Cholesky) factor, which is exactly the upright frame.
        let m00 = c / det;
        let m01 = -b / det;
        let m11 = a / det;
        let l00 = m00.sqrt();
        let l10 = m01 / l00;
        let l11 = (m11 - l10 * l10).max(0.0).sqrt();
        Some(Laf {
            a: [[l00 as f32, 0.0], [l10 as f32, l11 as f32]],
            c: [e[0], e[1]],
        })
    }

    /// This frame expressed in the pixels of a pyramid image whose pixel is `pixel_distance`
    /// input pixels (pixel centres coincide at 0 because the octaves decimate without shift).
    pub fn in_level(&self, pixel_distance: f32) -> Laf {
        let f = 1.0 / pixel_distance;
        Laf {
            a: [
                [self.a[0][0] * f, self.a[0][1] * f],
                [self.a[1][0] * f, self.a[1][1] * f],
            ],
            c: [self.c[0] * f, self.c[1] * f],
        }
    }
}

/// The det-1 lower-triangular shape with the same "up" as `a` (hesaff's `rectifyAffine...UpIsUp`):
/// `[[n/√det, 0], [(a22·a12 + a21·a11)/(n·√det), √det/n]]` with n the norm of the first row.
pub fn upright_shape(a: [[f32; 2]; 2]) -> [[f32; 2]; 2] {
    let (a11, a12, a21, a22) = (
        a[0][0] as f64,
        a[0][1] as f64,
        a[1][0] as f64,
        a[1][1] as f64,
    );
    let det = (a11 * a22 - a12 * a21).abs().sqrt() + 1e-10;
    let n = (a11 * a11 + a12 * a12).sqrt() + 1e-9;
    [
        [(n / det) as f32, 0.0],
        [
            ((a22 * a12 + a21 * a11) / (n * det)) as f32,
            (det / n) as f32,
        ],
    ]
}

/// The singular values (largest first) of a 2×2 matrix.
pub fn singular_values(a: [[f32; 2]; 2]) -> (f32, f32) {
    let (p, q, r, s) = (
        a[0][0] as f64,
        a[0][1] as f64,
        a[1][0] as f64,
        a[1][1] as f64,
    );
    let sum_sq = p * p + q * q + r * r + s * s;
    let det = (p * s - q * r).abs();
    let disc = (sum_sq * sum_sq - 4.0 * det * det).max(0.0).sqrt();
    let s1 = ((sum_sq + disc) / 2.0).sqrt();
    let s2 = if s1 > 0.0 { det / s1 } else { 0.0 };
    (s1 as f32, s2 as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32, tol: f32) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn scale_and_orientation_follow_kornia() {
        // kornia: get_laf_scale([[5, 1, 0], [1, 1, 0]]) = 2; orientation of [[1, 1], [1, 1]] = 45°.
        let l = Laf {
            a: [[5.0, 1.0], [1.0, 1.0]],
            c: [0.0, 0.0],
        };
        assert!(close(l.scale(), 2.0, 1e-5));
        let l = Laf {
            a: [[1.0, 1.0], [1.0, 1.0]],
            c: [0.0, 0.0],
        };
        assert!(close(l.orientation().to_degrees(), 45.0, 1e-4));
    }

    #[test]
    fn rotation_turns_the_patch_x_axis() {
        let l = Laf::circle(10.0, 20.0, 3.0).rotated(0.5);
        let p = l.map([1.0, 0.0]);
        assert!(close(p[0], 10.0 + 3.0 * 0.5f32.cos(), 1e-5));
        assert!(close(p[1], 20.0 + 3.0 * 0.5f32.sin(), 1e-5));
        assert!(close(l.scale(), 3.0, 1e-5));
        // Rotating back restores the frame.
        let back = l.rotated(-0.5);
        assert!(close(back.a[0][1], 0.0, 1e-6) && close(back.a[0][0], 3.0, 1e-6));
    }

    #[test]
    fn upright_keeps_the_ellipse_and_scale() {
        let l = Laf {
            a: [[4.0, 1.5], [-0.7, 2.0]],
            c: [5.0, 6.0],
        };
        let u = l.upright();
        assert_eq!(u.a[0][1], 0.0);
        assert!(u.a[0][0] > 0.0 && u.a[1][1] > 0.0);
        assert!(close(u.scale(), l.scale(), 1e-4));
        let (e1, e2) = (l.to_ellipse(), u.to_ellipse());
        for i in 0..5 {
            assert!(close(e1[i], e2[i], 1e-4), "{e1:?} vs {e2:?}");
        }
    }

    #[test]
    fn ellipse_round_trip_with_nonzero_b() {
        // kornia's ellipse_to_laf is wrong when b ≠ 0 (#4684); ours must round-trip.
        let e = [3.0, 4.0, 0.05, 0.02, 0.09];
        let l = Laf::from_ellipse(e).unwrap();
        let back = l.to_ellipse();
        for i in 0..5 {
            assert!(close(e[i], back[i], 1e-5), "{e:?} vs {back:?}");
        }
        // kornia's own example: [10, -20, 0.01, 0, 0.01] → [[10, 0, 10], [0, 10, -20]].
        let l = Laf::from_ellipse([10.0, -20.0, 0.01, 0.0, 0.01]).unwrap();
        assert!(close(l.a[0][0], 10.0, 1e-4) && close(l.a[1][1], 10.0, 1e-4));
        assert!(Laf::from_ellipse([0.0, 0.0, -1.0, 0.0, 1.0]).is_none());
    }

    #[test]
    fn elongation_is_the_axis_ratio() {
        let l = Laf {
            a: [[6.0, 0.0], [0.0, 1.0]],
            c: [0.0, 0.0],
        }
        .rotated(0.3);
        assert!(close(l.elongation(), 6.0, 1e-4));
    }

    #[test]
    fn border_rule() {
        let l = Laf::circle(10.0, 10.0, 5.0);
        assert!(!l.touches_border(100, 100));
        assert!(l.touches_border(16, 100)); // right corner at 15 ≥ 16 − 2
        assert!(Laf::circle(5.0, 50.0, 5.0).touches_border(100, 100)); // left corner at 0
    }
}
