//! AffNet's three outputs to its affine shape, forward and backward.
//!
//! The authors' `AffNetFast.forward` builds `A_raw = [[1 + y0, 0], [y1, 1 + y2]]` and returns
//! `rectifyAffineTransformationUpIsUp(A_raw)`: with `det = sqrt(|a11·a22 − a12·a21 + 1e-10|)` and
//! `n = sqrt(a11² + a12²)`, `A = [[n/det, 0], [(a22·a12 + a21·a11)/(n·det), det/n]]`
//! (reference `affnet.md` §1.3). With `a12 = 0` and `a11 = 1 + tanh(·) > 0` this is
//! `[[a11/det, 0], [a21/det, det/a11]]`, upright with determinant 1; it equals
//! [`crate::nn::affine_shape`] up to the 1e-10 (a relative 1e-10/(a11·a22), invisible in f32).
//! The gradient flows through that formula as autograd would (the `a12` paths carry a factor
//! `a12 = 0`, so they vanish).

use crate::train::data::augment::mul as mul2;

/// `A` (rows top to bottom) from the raw outputs `(y0, y1, y2)`.
pub fn affine_shape_forward(raw: [f32; 3]) -> [[f32; 2]; 2] {
    let (a11, a21, a22) = (1.0 + raw[0] as f64, raw[1] as f64, 1.0 + raw[2] as f64);
    let det = (a11 * a22 + 1e-10).abs().sqrt();
    let n = a11.abs();
    [
        [(n / det) as f32, 0.0],
        [(a21 * a11 / (n * det)) as f32, (det / n) as f32],
    ]
}

/// `dL/d(y0, y1, y2)` from `dL/dA` (the `[0][1]` entry is a constant 0 and ignored).
pub fn affine_shape_backward(raw: [f32; 3], d_a: [[f32; 2]; 2]) -> [f32; 3] {
    let (a11, a21, a22) = (1.0 + raw[0] as f64, raw[1] as f64, 1.0 + raw[2] as f64);
    let p = a11 * a22 + 1e-10;
    let sp = p.signum();
    let det = p.abs().sqrt();
    // d det / d a11 and d a22.
    let (ddet_11, ddet_22) = (sp * a22 / (2.0 * det), sp * a11 / (2.0 * det));
    let (n, s) = (a11.abs(), a11.signum());
    let (g00, g10, g11) = (d_a[0][0] as f64, d_a[1][0] as f64, d_a[1][1] as f64);
    // A00 = n/det, A10 = a21·s/det, A11 = det/n.
    let d11 = g00 * (s / det - n * ddet_11 / (det * det))
        + g10 * (-a21 * s * ddet_11 / (det * det))
        + g11 * (ddet_11 / n - det * s / (n * n));
    let d22 = g00 * (-n * ddet_22 / (det * det))
        + g10 * (-a21 * s * ddet_22 / (det * det))
        + g11 * (ddet_22 / n);
    let d21 = g10 * s / det;
    [d11 as f32, d21 as f32, d22 as f32]
}

/// `S = |A|²_F` of a det-1 shape at the elongation the matcher still accepts
/// (`shape::MAX_ELONGATION` = 6): for singular values `s, 1/s`, `S = r + 1/r` with `r = s²`.
pub const ELONGATION_HINGE: f64 = 6.0 + 1.0 / 6.0;

/// The elongation penalty of one predicted shape and its derivative w.r.t. the shape:
/// `relu(ln |A|²_F − ln ELONGATION_HINGE)`. AffNet trained with HardNegC and a SIFT descriptor can
/// drift into needle-like shapes (anisotropy 20+) that smear every patch alike and lower the loss
/// while matching nothing; the matcher drops any region beyond 6:1 anyway, so shapes past that
/// are pushed back, and shapes within it are untouched. In log space, so that the gradient
/// (`2A/|A|²_F`) stays bounded for nearly degenerate shapes: a linear or squared hinge on
/// `|A|²_F` itself blows the first steps' gradients up and saturates the network's tanh.
pub fn elongation_penalty(a: &[[f32; 2]; 2]) -> (f64, [[f32; 2]; 2]) {
    let s: f64 = a.iter().flatten().map(|&v| v as f64 * v as f64).sum();
    if s <= ELONGATION_HINGE {
        return (0.0, [[0.0; 2]; 2]);
    }
    let d = |v: f32| (2.0 * v as f64 / s) as f32;
    (
        s.ln() - ELONGATION_HINGE.ln(),
        [[d(a[0][0]), d(a[0][1])], [d(a[1][0]), d(a[1][1])]],
    )
}

/// The source-frame elongation beyond which `--source-elongation-penalty` acts (2:1).
pub const SOURCE_ELONGATION_HINGE: f64 = 2.0;

/// `relu(ln(|M|²_F / |det M|) − ln(h + 1/h))` for a 2×2 region map `M` and its derivative: 0
/// while the ellipse `M·Mᵀ` is at most `h`:1 (`|M|²_F/|det M| = r + 1/r` for singular-value
/// ratio `r`), then the log of its excess elongation. Used on the region in the *source* patch
/// (`train::chain`, `--source-elongation-penalty`): with sources cut as circles about detections,
/// a covariant network's regions there stay near round, and a descriptor loss that would rather
/// smear every patch alike is kept from stretching them.
pub fn region_elongation(m: [[f64; 2]; 2], h: f64) -> (f64, [[f64; 2]; 2]) {
    match log_elongation(m) {
        Some((e, g)) if e > (h + 1.0 / h).ln() => (e - (h + 1.0 / h).ln(), g),
        _ => (0.0, [[0.0; 2]; 2]),
    }
}

/// `ln(|M|²_F / |det M|)` (`= ln(r + 1/r)` for singular-value ratio `r`, so `ln 2` for a
/// circle) and its derivative `2M/|M|²_F − M⁻ᵀ`; None for a (nearly) singular `M`.
fn log_elongation(m: [[f64; 2]; 2]) -> Option<(f64, [[f64; 2]; 2])> {
    let f = m[0][0] * m[0][0] + m[0][1] * m[0][1] + m[1][0] * m[1][0] + m[1][1] * m[1][1];
    let d = m[0][0] * m[1][1] - m[0][1] * m[1][0];
    if !(d.abs() > 1e-12) || !f.is_finite() {
        return None;
    }
    // d ln|det M| = tr(M⁻¹ dM), hence the −M⁻ᵀ.
    let g = [
        [
            2.0 * m[0][0] / f - m[1][1] / d,
            2.0 * m[0][1] / f + m[1][0] / d,
        ],
        [
            2.0 * m[1][0] / f + m[0][1] / d,
            2.0 * m[1][1] / f - m[0][0] / d,
        ],
    ];
    Some(((f / d.abs()).ln(), g))
}

/// How far two measurement regions, given as 2×2 maps `B_a`, `B_p` from patch coordinates to one
/// common frame, are from being the same ellipse up to scale: `ln(|C|²_F / (2·|det C|))` with
/// `C = B_a⁻¹·B_p`, and its derivatives w.r.t. `B_a` and `B_p`.
///
/// This is the paper's geometric ("Geom") baseline loss made invariant to what AffNet cannot
/// know: the region's rotation (the shapes are upright), its scale, and the common frame. It is
/// 0 exactly when `B_a·B_aᵀ ∝ B_p·B_pᵀ` and, for an eigenvalue ratio `λ` of `C·Cᵀ`, equals
/// `ln((√λ + 1/√λ)/2)`: it grows with the log of the relative elongation, so its gradient stays
/// bounded for the augmentation's large tilts. Degenerate inputs give 0 and no gradient.
pub fn shape_disagreement(
    b_a: [[f64; 2]; 2],
    b_p: [[f64; 2]; 2],
) -> (f64, [[f64; 2]; 2], [[f64; 2]; 2]) {
    let zero = (0.0, [[0.0; 2]; 2], [[0.0; 2]; 2]);
    let det_a = b_a[0][0] * b_a[1][1] - b_a[0][1] * b_a[1][0];
    if !(det_a.abs() > 1e-12) {
        return zero;
    }
    let inv_a = [
        [b_a[1][1] / det_a, -b_a[0][1] / det_a],
        [-b_a[1][0] / det_a, b_a[0][0] / det_a],
    ];
    let c = mul2(inv_a, b_p);
    let Some((e, g)) = log_elongation(c) else {
        return zero;
    };
    let value = (e - 2f64.ln()).max(0.0);
    let inv_a_t = transpose2(inv_a);
    // C = B_a⁻¹·B_p: dL/dB_p = B_a⁻ᵀ·G, dL/dB_a = −B_a⁻ᵀ·G·Cᵀ.
    let d_p = mul2(inv_a_t, g);
    let d_a = mul2(d_p, transpose2(c)).map(|row| row.map(|v| -v));
    (value, d_a, d_p)
}

/// The same region in its "up is up" form: `M·Qᵀ` for the rotation `Q` that turns `M`'s first
/// row onto the x axis, i.e. `[[n, 0], [(m10·m00 + m11·m01)/n, det M/n]]` with `n = ‖row 0‖`.
///
/// `M` maps descriptor-patch coordinates into a source frame; `M` and `M·R` (any rotation `R`)
/// cover the same ellipse and differ only in the patch's orientation. The upright form fixes that
/// orientation by the source frame's vertical, as a perfect orientation estimator would for two
/// patches whose sources share a frame: it is what lets the trainer rotate a pair's two patches
/// independently (`--relative-rotation`) and still compare their descriptors. Unlike
/// `augment::rectify_up_is_up` it keeps the determinant (the descriptor patch's scale).
pub fn upright(m: [[f64; 2]; 2]) -> [[f64; 2]; 2] {
    let n = m[0][0].hypot(m[0][1]);
    if !(n > 1e-12) {
        return m;
    }
    let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
    [
        [n, 0.0],
        [(m[1][0] * m[0][0] + m[1][1] * m[0][1]) / n, det / n],
    ]
}

/// `dL/dM` from `dL/dU` of `U = upright(M)` (the `[0][1]` entry of `U` is a constant 0).
pub fn upright_backward(m: [[f64; 2]; 2], d_u: [[f64; 2]; 2]) -> [[f64; 2]; 2] {
    let (a, b, c, e) = (m[0][0], m[0][1], m[1][0], m[1][1]);
    let n = a.hypot(b);
    if !(n > 1e-12) {
        return d_u;
    }
    let (s, det) = (c * a + e * b, a * e - b * c);
    let n3 = n * n * n;
    let (g00, g10, g11) = (d_u[0][0], d_u[1][0], d_u[1][1]);
    // U00 = n, U10 = s/n, U11 = det/n.
    [
        [
            g00 * a / n + g10 * (c / n - s * a / n3) + g11 * (e / n - det * a / n3),
            g00 * b / n + g10 * (e / n - s * b / n3) + g11 * (-c / n - det * b / n3),
        ],
        [g10 * a / n + g11 * (-b / n), g10 * b / n + g11 * (a / n)],
    ]
}

fn transpose2(a: [[f64; 2]; 2]) -> [[f64; 2]; 2] {
    [[a[0][0], a[1][0]], [a[0][1], a[1][1]]]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Central differences of `f` at `m` against the claimed gradient `g`, entry by entry.
    fn assert_matches_finite_differences(
        f: impl Fn([[f64; 2]; 2]) -> f64,
        m: [[f64; 2]; 2],
        g: [[f64; 2]; 2],
    ) {
        for r in 0..2 {
            for c in 0..2 {
                let h = 1e-6;
                let (mut p, mut q) = (m, m);
                p[r][c] += h;
                q[r][c] -= h;
                let fd = (f(p) - f(q)) / (2.0 * h);
                assert!(
                    (fd - g[r][c]).abs() < 1e-6 * (1.0 + fd.abs()),
                    "{r}{c}: {fd} vs {}",
                    g[r][c]
                );
            }
        }
    }

    #[test]
    fn region_elongation_is_zero_within_the_hinge_and_its_gradient_is_right() {
        assert_eq!(region_elongation([[1.7, 0.0], [0.0, 1.0]], 2.0).0, 0.0);
        let v = region_elongation([[3.0, 0.0], [0.0, 0.5]], 2.0).0; // 6:1
        assert!((v - ((6.0f64 + 1.0 / 6.0) / 2.5).ln()).abs() < 1e-12, "{v}");
        let m = [[2.5, 0.4], [-1.0, 0.3]];
        assert_matches_finite_differences(
            |x| region_elongation(x, 2.0).0,
            m,
            region_elongation(m, 2.0).1,
        );
    }
    #[test]
    fn shape_disagreement_is_zero_for_the_same_ellipse_and_its_gradient_is_right() {
        // The same ellipse up to rotation and scale: 0.
        let b = [[2.0, 0.0], [0.7, 0.5]];
        let (c, s) = (0.3f64.cos(), 0.3f64.sin());
        let turned = mul2(b, [[1.7 * c, -1.7 * s], [1.7 * s, 1.7 * c]]);
        assert!(shape_disagreement(b, turned).0.abs() < 1e-12);
        // A relative 4:1 stretch (eigenvalue ratio 16 of C·Cᵀ): ln((4 + 1/4)/2).
        let stretched = mul2(b, [[2.0, 0.0], [0.0, 0.5]]);
        assert!((shape_disagreement(b, stretched).0 - (2.125f64).ln()).abs() < 1e-12);
        // Finite differences w.r.t. every entry of both maps.
        let (ba, bp) = ([[1.3, 0.2], [-0.4, 0.9]], [[0.6, -0.5], [0.8, 1.7]]);
        let (_, ga, gp) = shape_disagreement(ba, bp);
        for side in 0..2 {
            for r in 0..2 {
                for c in 0..2 {
                    let h = 1e-6;
                    let (mut pa, mut pp, mut ma, mut mp) = (ba, bp, ba, bp);
                    if side == 0 {
                        pa[r][c] += h;
                        ma[r][c] -= h;
                    } else {
                        pp[r][c] += h;
                        mp[r][c] -= h;
                    }
                    let fd =
                        (shape_disagreement(pa, pp).0 - shape_disagreement(ma, mp).0) / (2.0 * h);
                    let g = if side == 0 { ga[r][c] } else { gp[r][c] };
                    assert!(
                        (fd - g).abs() < 1e-6 * (1.0 + fd.abs()),
                        "{side}{r}{c}: {fd} vs {g}"
                    );
                }
            }
        }
    }

    #[test]
    fn upright_keeps_the_ellipse_drops_the_orientation_and_its_gradient_is_right() {
        let m = [[0.8, -1.1], [0.6, 0.9]];
        let u = upright(m);
        assert_eq!(u[0][1], 0.0);
        assert!(u[0][0] > 0.0);
        let gram = |x: [[f64; 2]; 2]| mul2(x, transpose2(x));
        let (gm, gu) = (gram(m), gram(u));
        for r in 0..2 {
            for c in 0..2 {
                assert!((gm[r][c] - gu[r][c]).abs() < 1e-12, "{gm:?} vs {gu:?}");
            }
        }
        // Any rotation on the patch side gives the same upright form; one on the source side
        // does not.
        let rot = crate::train::data::augment::rotation(1.2);
        let (turned, moved) = (upright(mul2(m, rot)), upright(mul2(rot, m)));
        for r in 0..2 {
            for c in 0..2 {
                assert!((turned[r][c] - u[r][c]).abs() < 1e-12);
            }
        }
        assert!((moved[1][0] - u[1][0]).abs() > 1e-3);
        // Mirrored maps keep their sign in U11.
        assert!(upright([[0.0, 1.0], [1.0, 0.0]])[1][1] < 0.0);
        // Finite differences of L = Σ w ⊙ upright(M).
        let w = [[0.7, 5.0], [-1.3, 0.4]];
        let loss = |x: [[f64; 2]; 2]| -> f64 {
            let u = upright(x);
            (0..2)
                .flat_map(|r| (0..2).map(move |c| (r, c)))
                .map(|(r, c)| w[r][c] * u[r][c])
                .sum()
        };
        assert_matches_finite_differences(loss, m, upright_backward(m, w));
    }

    #[test]
    fn elongation_penalty_is_zero_within_6_to_1_and_its_gradient_is_right() {
        // 3:1 (singular values sqrt 3, 1/sqrt 3): no penalty.
        let k = 3f32.sqrt();
        assert_eq!(elongation_penalty(&[[k, 0.0], [0.0, 1.0 / k]]).0, 0.0);
        // Exactly at 6:1 the value is 0; beyond it positive and growing.
        let at = |r: f32| elongation_penalty(&[[r.sqrt(), 0.0], [0.0, 1.0 / r.sqrt()]]).0;
        assert!(at(5.99) == 0.0 && at(6.5) > 0.0 && at(20.0) > at(6.5));
        // Finite differences of a sheared, elongated shape.
        let a = [[4.0f32, 0.0], [1.5, 0.25]];
        let (_, g) = elongation_penalty(&a);
        for (r, c) in [(0, 0), (1, 0), (1, 1)] {
            let h = 1e-3f32;
            let (mut p, mut m) = (a, a);
            p[r][c] += h;
            m[r][c] -= h;
            let fd = (elongation_penalty(&p).0 - elongation_penalty(&m).0) / (2.0 * h as f64);
            assert!(
                (fd - g[r][c] as f64).abs() < 1e-3 * (1.0 + fd.abs()),
                "{r}{c}: {fd} vs {}",
                g[r][c]
            );
        }
    }
    use crate::nn::gradcheck::{check_gradient, random_vec};

    #[test]
    fn forward_is_nn_affine_shape() {
        for raw in [[0.5, -0.2, -0.3], [0.0, 0.0, 0.0], [-0.9, 0.8, 0.95]] {
            let (a, b) = (affine_shape_forward(raw), crate::nn::affine_shape(raw));
            for r in 0..2 {
                for c in 0..2 {
                    assert!((a[r][c] - b[r][c]).abs() < 1e-6, "{a:?} vs {b:?}");
                }
            }
            assert!((a[0][0] * a[1][1] - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        for seed in 0..5 {
            let raw = random_vec(3, seed, 0.9);
            let r = random_vec(4, seed + 10, 1.0);
            let loss = |y: &[f32]| -> f64 {
                let a = affine_shape_forward([y[0], y[1], y[2]]);
                (a[0][0] * r[0] + a[0][1] * r[1] + a[1][0] * r[2] + a[1][1] * r[3]) as f64
            };
            let g = affine_shape_backward([raw[0], raw[1], raw[2]], [[r[0], r[1]], [r[2], r[3]]]);
            check_gradient(loss, &raw, &g, 1e-3, 5e-3).assert_ok("affine shape");
        }
    }
}
