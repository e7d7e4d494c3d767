//! Hartley normalisation: translate the centroid to the origin and scale so that the mean distance
//! from it is √2, separately per image.
//!
//! Why: the DLT and 8-point systems mix monomials of very different magnitude (1 and x·x′ ≈ 10⁵ for
//! pixel coordinates, 10¹² for the 10⁶ px coordinates we must survive); normalising makes them all
//! O(1), so the normal equations stay well conditioned and the smallest eigenvector is meaningful.

use nalgebra::Matrix3;

/// The similarity `x ↦ scale·(x − centre)`, always with a positive scale, so it preserves
/// orientation (which the oriented constraints rely on).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Similarity {
    pub scale: f64,
    pub centre: [f64; 2],
}

impl Similarity {
    pub fn apply(&self, p: [f64; 2]) -> [f64; 2] {
        [
            self.scale * (p[0] - self.centre[0]),
            self.scale * (p[1] - self.centre[1]),
        ]
    }

    /// The 3×3 matrix `T` of the map on homogeneous coordinates.
    pub fn matrix(&self) -> Matrix3<f64> {
        let s = self.scale;
        Matrix3::new(
            s,
            0.0,
            -s * self.centre[0],
            0.0,
            s,
            -s * self.centre[1],
            0.0,
            0.0,
            1.0,
        )
    }

    /// `T⁻¹`, written out rather than inverted numerically.
    pub fn inverse_matrix(&self) -> Matrix3<f64> {
        let r = 1.0 / self.scale;
        Matrix3::new(
            r,
            0.0,
            self.centre[0],
            0.0,
            r,
            self.centre[1],
            0.0,
            0.0,
            1.0,
        )
    }
}

/// The Hartley normalisation of a point set, or `None` when it does not exist: no points, a
/// non-finite coordinate, or all points (numerically) identical, so that there is no scale.
pub(crate) fn hartley<I>(points: I) -> Option<Similarity>
where
    I: Iterator<Item = [f64; 2]> + Clone,
{
    let mut count = 0usize;
    let (mut sx, mut sy) = (0.0, 0.0);
    for p in points.clone() {
        count += 1;
        sx += p[0];
        sy += p[1];
    }
    if count == 0 {
        return None;
    }
    let centre = [sx / count as f64, sy / count as f64];
    let mean_distance = points
        .map(|p| {
            // Not `hypot`: its overflow-safe libm version costs more than the rest of a fit.
            let (dx, dy) = (p[0] - centre[0], p[1] - centre[1]);
            (dx * dx + dy * dy).sqrt()
        })
        .sum::<f64>()
        / count as f64;
    // Distances below this are rounding noise of the centroid, not a spread of the points.
    let magnitude = centre[0].abs().max(centre[1].abs()).max(1.0);
    if !mean_distance.is_finite() || mean_distance <= 1e-12 * magnitude {
        return None;
    }
    Some(Similarity {
        scale: std::f64::consts::SQRT_2 / mean_distance,
        centre,
    })
}

/// Hartley normalisation of the points of `points` selected by `indices`.
pub(crate) fn hartley_of(points: &[[f64; 2]], indices: &[usize]) -> Option<Similarity> {
    hartley(indices.iter().map(|&i| points[i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalised_points_have_zero_mean_and_mean_distance_sqrt2() {
        let pts = [[10.0, 20.0], [30.0, -5.0], [400.0, 300.0], [7.0, 7.0]];
        let t = hartley(pts.iter().copied()).expect("spread points normalise");
        let n: Vec<[f64; 2]> = pts.iter().map(|&p| t.apply(p)).collect();
        let mx = n.iter().map(|p| p[0]).sum::<f64>() / 4.0;
        let my = n.iter().map(|p| p[1]).sum::<f64>() / 4.0;
        let md = n.iter().map(|p| p[0].hypot(p[1])).sum::<f64>() / 4.0;
        assert!(mx.abs() < 1e-12 && my.abs() < 1e-12);
        assert!((md - std::f64::consts::SQRT_2).abs() < 1e-12);
        // The matrix form agrees with `apply`, and the inverse undoes it.
        let h = t.matrix() * nalgebra::Vector3::new(pts[2][0], pts[2][1], 1.0);
        assert!((h.x - n[2][0]).abs() < 1e-12 && (h.y - n[2][1]).abs() < 1e-12);
        let back = t.inverse_matrix() * h;
        assert!((back.x - pts[2][0]).abs() < 1e-9 && (back.y - pts[2][1]).abs() < 1e-9);
    }

    #[test]
    fn identical_or_non_finite_points_have_no_normalisation() {
        assert!(hartley([[5.0, 5.0]; 6].iter().copied()).is_none());
        assert!(hartley([[1e6, -1e6]; 3].iter().copied()).is_none());
        assert!(hartley([[0.0, 0.0], [f64::NAN, 1.0]].iter().copied()).is_none());
        assert!(hartley(std::iter::empty()).is_none());
    }
}
