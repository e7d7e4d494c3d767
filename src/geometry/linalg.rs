//! Small fixed-size linear algebra the solvers share: the smallest eigenvector of a 9×9 normal
//! matrix, the 2-D null space of a 7×9 system, real roots of a cubic, cross-product matrices and
//! epipoles. Everything here is allocation-free and returns `None`/nothing instead of panicking.

use nalgebra::{Matrix3, SMatrix, SymmetricEigen, Vector3};

pub(crate) type Matrix9 = SMatrix<f64, 9, 9>;

/// The unit eigenvector of the symmetric matrix `ata` with the smallest eigenvalue, i.e. the
/// least-squares solution of `A·h = 0` subject to `‖h‖ = 1`. Only the lower triangle is read.
pub(crate) fn smallest_eigenvector(ata: &Matrix9) -> Option<[f64; 9]> {
    if !ata.iter().all(|v| v.is_finite()) {
        return None;
    }
    let eig = SymmetricEigen::try_new(*ata, f64::EPSILON, 10_000)?;
    let (mut best, mut best_value) = (0usize, f64::INFINITY);
    for (i, &v) in eig.eigenvalues.iter().enumerate() {
        if v < best_value {
            best = i;
            best_value = v;
        }
    }
    let col = eig.eigenvectors.column(best);
    let mut out = [0.0; 9];
    for (o, v) in out.iter_mut().zip(col.iter()) {
        *o = *v;
    }
    out.iter().all(|v| v.is_finite()).then_some(out)
}

/// A 3×3 matrix from 9 numbers in row-major order.
pub(crate) fn matrix_from_row_major(h: &[f64; 9]) -> Matrix3<f64> {
    Matrix3::new(h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8])
}

/// A basis of the null space of a 7×9 matrix of full rank 7, by Gaussian elimination with
/// partial pivoting (column swaps only where a column is exhausted) and back substitution (much cheaper than an SVD, and accurate on normalised data; it
/// runs once per 7-point sample). `None` when the rank is below 7, i.e. the null space has more
/// than two dimensions: a degenerate sample.
pub(crate) fn null_space_7x9(rows: &[[f64; 9]; 7]) -> Option<([f64; 9], [f64; 9])> {
    let mut a = *rows;
    let mut columns: [usize; 9] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
    let scale = a.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    if !scale.is_finite() || scale == 0.0 {
        return None;
    }
    let tolerance = 1e-11 * scale;
    for r in 0..7 {
        // Partial (row) pivoting; a column swap only when column r has no usable pivot left.
        let (mut pr, mut pv) = (r, a[r][r].abs());
        for (i, row) in a.iter().enumerate().skip(r + 1) {
            if row[r].abs() > pv {
                (pr, pv) = (i, row[r].abs());
            }
        }
        if pv <= tolerance {
            let (mut pc, mut cv) = (r, 0.0);
            for (i, row) in a.iter().enumerate().skip(r) {
                for (j, v) in row.iter().enumerate().skip(r + 1) {
                    if v.abs() > cv {
                        (pr, pc, cv) = (i, j, v.abs());
                    }
                }
            }
            if cv <= tolerance {
                return None;
            }
            for row in a.iter_mut() {
                row.swap(r, pc);
            }
            columns.swap(r, pc);
        }
        a.swap(r, pr);
        let pivot_row = a[r];
        for row in a.iter_mut().skip(r + 1) {
            let f = row[r] / pivot_row[r];
            for (v, p) in row.iter_mut().zip(pivot_row.iter()).skip(r) {
                *v -= f * p;
            }
        }
    }
    // Upper-triangular in permuted columns; the free variables are permuted columns 7 and 8.
    let mut basis = [[0.0; 9]; 2];
    for (k, b) in basis.iter_mut().enumerate() {
        let mut x = [0.0f64; 9];
        x[7 + k] = 1.0;
        for r in (0..7).rev() {
            let sum: f64 = (r + 1..9).map(|c| a[r][c] * x[c]).sum();
            x[r] = -sum / a[r][r];
        }
        for (c, v) in x.iter().enumerate() {
            b[columns[c]] = *v;
        }
    }
    Some((basis[0], basis[1]))
}

/// The real roots of `c3·x³ + c2·x² + c1·x + c0` (at most 3, polished by Newton steps). When the
/// leading coefficient vanishes it degrades to the quadratic or linear case.
pub(crate) fn real_cubic_roots(c3: f64, c2: f64, c1: f64, c0: f64) -> ([f64; 3], usize) {
    let mut roots = [0.0; 3];
    let mut count = 0usize;
    let scale = c3.abs().max(c2.abs()).max(c1.abs()).max(c0.abs());
    if !scale.is_finite() || scale == 0.0 {
        return (roots, 0);
    }
    let (c3, c2, c1, c0) = (c3 / scale, c2 / scale, c1 / scale, c0 / scale);
    let mut push = |x: f64, roots: &mut [f64; 3]| {
        if x.is_finite() && count < 3 {
            roots[count] = x;
            count += 1;
        }
    };
    if c3.abs() < 1e-12 {
        if c2.abs() < 1e-12 {
            if c1.abs() >= 1e-12 {
                push(-c0 / c1, &mut roots);
            }
        } else {
            let disc = c1 * c1 - 4.0 * c2 * c0;
            if disc >= 0.0 {
                // Numerically stable quadratic formula.
                let q = -0.5 * (c1 + c1.signum() * disc.sqrt());
                if q != 0.0 {
                    push(q / c2, &mut roots);
                    push(c0 / q, &mut roots);
                } else {
                    push(0.0, &mut roots);
                }
            }
        }
    } else {
        // Depressed monic cubic t³ + p·t + q with x = t − a/3.
        let (a, b, c) = (c2 / c3, c1 / c3, c0 / c3);
        let p = b - a * a / 3.0;
        let q = 2.0 * a * a * a / 27.0 - a * b / 3.0 + c;
        let shift = -a / 3.0;
        let disc = q * q / 4.0 + p * p * p / 27.0;
        if disc > 0.0 {
            let s = disc.sqrt();
            let u = (-q / 2.0 + s).cbrt();
            let v = (-q / 2.0 - s).cbrt();
            push(u + v + shift, &mut roots);
        } else if p == 0.0 {
            push(shift, &mut roots);
        } else {
            // Three real roots (two possibly equal): the trigonometric form.
            let m = 2.0 * (-p / 3.0).sqrt();
            let arg = (3.0 * q / (p * m)).clamp(-1.0, 1.0);
            let theta = arg.acos() / 3.0;
            for k in 0..3 {
                push(
                    m * (theta - 2.0 * std::f64::consts::PI * k as f64 / 3.0).cos() + shift,
                    &mut roots,
                );
            }
        }
    }
    // Newton polish on the original polynomial: Cardano loses digits when roots are close.
    for x in roots.iter_mut().take(count) {
        for _ in 0..2 {
            let f = ((c3 * *x + c2) * *x + c1) * *x + c0;
            let df = (3.0 * c3 * *x + 2.0 * c2) * *x + c1;
            if df != 0.0 {
                let step = f / df;
                if step.is_finite() {
                    *x -= step;
                }
            }
        }
    }
    (roots, count)
}

/// `[v]ₓ`, the matrix with `[v]ₓ·w = v × w`.
pub(crate) fn skew(v: &Vector3<f64>) -> Matrix3<f64> {
    Matrix3::new(0.0, -v.z, v.y, v.z, 0.0, -v.x, -v.y, v.x, 0.0)
}

/// The left null vector `e` of a rank-2 matrix (`eᵀ·M = 0`): the largest cross product of two of
/// its columns. For a fundamental matrix this is the epipole in image 2.
pub(crate) fn left_null_vector(m: &Matrix3<f64>) -> Vector3<f64> {
    largest_cross(
        &m.column(0).into_owned(),
        &m.column(1).into_owned(),
        &m.column(2).into_owned(),
    )
}

fn largest_cross(a: &Vector3<f64>, b: &Vector3<f64>, c: &Vector3<f64>) -> Vector3<f64> {
    let candidates = [a.cross(b), b.cross(c), a.cross(c)];
    let mut best = candidates[0];
    for v in &candidates[1..] {
        if v.norm_squared() > best.norm_squared() {
            best = *v;
        }
    }
    best
}

/// Determinant of the 3×3 matrix `a + λ·b` as the cubic `c0 + c1·λ + c2·λ² + c3·λ³`, returned
/// as `[c0, c1, c2, c3]` (exact identity: `c1 = tr(adj(a)·b)`, `c2 = tr(adj(b)·a)`).
pub(crate) fn det_pencil(a: &Matrix3<f64>, b: &Matrix3<f64>) -> [f64; 4] {
    let c0 = a.determinant();
    let c3 = b.determinant();
    let c1 = (adjugate(a) * b).trace();
    let c2 = (adjugate(b) * a).trace();
    [c0, c1, c2, c3]
}

/// The adjugate (transposed cofactor matrix), defined also for singular matrices.
pub(crate) fn adjugate(m: &Matrix3<f64>) -> Matrix3<f64> {
    let r0 = m.row(0).transpose();
    let r1 = m.row(1).transpose();
    let r2 = m.row(2).transpose();
    // Columns of the adjugate are the cross products of pairs of rows.
    Matrix3::from_columns(&[r1.cross(&r2), r2.cross(&r0), r0.cross(&r1)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cubic_roots_are_found_in_all_regimes() {
        // (x−1)(x−2)(x+3) = x³ − 7x + 6
        let (r, n) = real_cubic_roots(1.0, 0.0, -7.0, 6.0);
        let mut r: Vec<f64> = r[..n].to_vec();
        r.sort_by(f64::total_cmp);
        assert_eq!(n, 3);
        for (a, b) in r.iter().zip([-3.0, 1.0, 2.0]) {
            assert!((a - b).abs() < 1e-12, "{r:?}");
        }
        // x³ + x + 1: one real root near −0.6823.
        let (r, n) = real_cubic_roots(2.0, 0.0, 2.0, 2.0);
        assert_eq!(n, 1);
        assert!((r[0] + 0.682_327_803_828_019_3).abs() < 1e-12);
        // Degenerate leading coefficient: 2x² − 2 = 0.
        let (r, n) = real_cubic_roots(0.0, 2.0, 0.0, -2.0);
        assert_eq!(n, 2);
        assert!((r[0].abs() - 1.0).abs() < 1e-12 && (r[1].abs() - 1.0).abs() < 1e-12);
        assert_eq!(real_cubic_roots(0.0, 0.0, 0.0, 0.0).1, 0);
        assert_eq!(real_cubic_roots(f64::NAN, 1.0, 0.0, 0.0).1, 0);
    }

    #[test]
    fn determinant_pencil_matches_direct_evaluation() {
        let a = Matrix3::new(1.0, 2.0, 3.0, 0.5, -1.0, 4.0, 2.0, 0.0, 1.0);
        let b = Matrix3::new(-1.0, 0.3, 2.0, 1.0, 1.0, 0.0, 0.2, 5.0, -2.0);
        let c = det_pencil(&a, &b);
        for lambda in [-2.0, -0.5, 0.0, 0.7, 3.0] {
            let direct = (a + b * lambda).determinant();
            let poly = c[0] + lambda * (c[1] + lambda * (c[2] + lambda * c[3]));
            assert!((direct - poly).abs() < 1e-9 * (1.0 + direct.abs()));
        }
    }

    #[test]
    fn null_space_of_a_rank_7_system_annihilates_it() {
        let mut rows = [[0.0; 9]; 7];
        let mut s = 1u64;
        for row in rows.iter_mut() {
            for v in row.iter_mut() {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                *v = (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            }
        }
        let (a, b) = null_space_7x9(&rows).expect("random 7×9 has rank 7");
        for row in &rows {
            let da: f64 = row.iter().zip(&a).map(|(x, y)| x * y).sum();
            let db: f64 = row.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!(da.abs() < 1e-12 && db.abs() < 1e-12);
        }
        // A zero column (e.g. all u = 0) needs a column swap; the null space must still be right.
        let mut zero_col = rows;
        for row in zero_col.iter_mut() {
            row[0] = 0.0;
        }
        let (a, b) = null_space_7x9(&zero_col).expect("rank 7 without column 0");
        for row in &zero_col {
            let da: f64 = row.iter().zip(&a).map(|(x, y)| x * y).sum();
            let db: f64 = row.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!(da.abs() < 1e-12 && db.abs() < 1e-12);
        }
        // A repeated row leaves rank 6: rejected.
        rows[6] = rows[5];
        assert!(null_space_7x9(&rows).is_none());
    }

    #[test]
    fn epipoles_are_null_vectors() {
        let t = Vector3::new(1.0, 0.2, -0.3);
        let r = nalgebra::Rotation3::from_euler_angles(0.1, -0.2, 0.05).into_inner();
        let f = skew(&t) * r;
        let e2 = left_null_vector(&f);
        assert!((f.transpose() * e2).norm() < 1e-12 * e2.norm());
        assert!(e2.norm() > 0.1);
        let m = Matrix3::new(2.0, 1.0, 0.0, 1.0, 3.0, 1.0, 0.0, 1.0, 4.0);
        let inv = m.try_inverse().expect("invertible");
        assert!((adjugate(&m) - inv * m.determinant()).norm() < 1e-12);
    }
}
