//! Synthetic two-view scenes with known geometry, for the tests and [`super::bench_report`].
//!
//! Two pinhole cameras looking at the same region (800×600 images, focal length 600–900 px,
//! camera 2 rotated by up to ~14° and translated by 0.5–1.5 units, points 4–10 units deep), so that
//! the ground-truth F and plane-induced H are known in closed form:
//! `F = K2⁻ᵀ·[t]ₓ·R·K1⁻¹` and `H = K2·(R + t·nᵀ/d)·K1⁻¹` for the plane `nᵀX = d`, with
//! `X₂ = R·X₁ + t`.

use nalgebra::{Matrix3, Rotation3, Vector3};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::linalg::skew;
use super::Geometry;

pub(crate) const WIDTH: f64 = 800.0;
pub(crate) const HEIGHT: f64 = 600.0;

/// A seeded generator with the few distributions the scenes need.
pub(crate) struct SceneRng(Xoshiro256PlusPlus);

impl SceneRng {
    pub fn new(seed: u64) -> Self {
        Self(Xoshiro256PlusPlus::seed_from_u64(seed))
    }

    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.0.random::<f64>()
    }

    /// Standard normal by Box–Muller.
    pub fn gaussian(&mut self) -> f64 {
        let u1: f64 = 1.0 - self.0.random::<f64>();
        let u2: f64 = self.0.random::<f64>();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    pub fn index(&mut self, n: usize) -> usize {
        self.0.random_range(0..n)
    }

    pub fn pixel(&mut self) -> [f64; 2] {
        [self.uniform(0.0, WIDTH), self.uniform(0.0, HEIGHT)]
    }
}

/// Two calibrated views; world frame = camera 1.
#[derive(Clone, Debug)]
pub(crate) struct Scene {
    pub k1: Matrix3<f64>,
    pub k2: Matrix3<f64>,
    pub r: Matrix3<f64>,
    pub t: Vector3<f64>,
}

fn inside(p: [f64; 2]) -> bool {
    (0.0..WIDTH).contains(&p[0]) && (0.0..HEIGHT).contains(&p[1])
}

fn intrinsics(f: f64) -> Matrix3<f64> {
    Matrix3::new(f, 0.0, WIDTH / 2.0, 0.0, f, HEIGHT / 2.0, 0.0, 0.0, 1.0)
}

impl Scene {
    pub fn random(rng: &mut SceneRng) -> Self {
        let k1 = intrinsics(rng.uniform(600.0, 900.0));
        let k2 = intrinsics(rng.uniform(600.0, 900.0));
        let r = Rotation3::from_euler_angles(
            rng.uniform(-0.25, 0.25),
            rng.uniform(-0.25, 0.25),
            rng.uniform(-0.25, 0.25),
        )
        .into_inner();
        let dir = Vector3::new(rng.gaussian(), rng.gaussian(), 0.3 * rng.gaussian());
        let t = dir.normalize() * rng.uniform(0.5, 1.5);
        Self { k1, k2, r, t }
    }

    pub fn fundamental(&self) -> Matrix3<f64> {
        let (Some(k1i), Some(k2i)) = (self.k1.try_inverse(), self.k2.try_inverse()) else {
            return Matrix3::zeros();
        };
        let f = k2i.transpose() * skew(&self.t) * self.r * k1i;
        f / f.norm()
    }

    /// The point of image 2 seeing the camera-1 point `x`, if it is in front and in the image.
    fn project2(&self, x: &Vector3<f64>) -> Option<[f64; 2]> {
        let c = self.k2 * (self.r * x + self.t);
        (c.z > 0.0)
            .then(|| [c.x / c.z, c.y / c.z])
            .filter(|p| inside(*p))
    }

    fn ray(&self, p: [f64; 2]) -> Vector3<f64> {
        self.k1.try_inverse().unwrap_or_else(Matrix3::identity) * Vector3::new(p[0], p[1], 1.0)
    }

    /// `n` noise-free correspondences of general 3-D points, with the true F.
    pub fn general_points(
        &self,
        rng: &mut SceneRng,
        n: usize,
    ) -> (Matrix3<f64>, Vec<[f64; 2]>, Vec<[f64; 2]>) {
        let (mut p1, mut p2) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..1000 * n.max(1) {
            if p1.len() == n {
                break;
            }
            let a = rng.pixel();
            let x = self.ray(a) * rng.uniform(4.0, 10.0);
            if let Some(b) = self.project2(&x) {
                p1.push(a);
                p2.push(b);
            }
        }
        (self.fundamental(), p1, p2)
    }

    /// A random plane facing camera 1 (tilted up to ~40°) through a point 5–7 units deep.
    fn random_plane(&self, rng: &mut SceneRng) -> (Vector3<f64>, f64) {
        let n = Vector3::new(rng.uniform(-0.8, 0.8), rng.uniform(-0.8, 0.8), 1.0).normalize();
        let d = n.dot(&Vector3::new(0.0, 0.0, rng.uniform(5.0, 7.0)));
        (n, d)
    }

    pub fn plane_homography(&self, n: &Vector3<f64>, d: f64) -> Matrix3<f64> {
        let h = self.k2
            * (self.r + self.t * n.transpose() / d)
            * self.k1.try_inverse().unwrap_or_else(Matrix3::identity);
        h / h[(2, 2)]
    }

    fn points_on_plane(
        &self,
        rng: &mut SceneRng,
        count: usize,
        n: &Vector3<f64>,
        d: f64,
    ) -> (Vec<[f64; 2]>, Vec<[f64; 2]>) {
        let (mut p1, mut p2) = (Vec::with_capacity(count), Vec::with_capacity(count));
        for _ in 0..1000 * count.max(1) {
            if p1.len() == count {
                break;
            }
            let a = rng.pixel();
            let ray = self.ray(a);
            let lambda = d / n.dot(&ray);
            if lambda.is_nan() || lambda <= 0.0 {
                continue;
            }
            if let Some(b) = self.project2(&(ray * lambda)) {
                p1.push(a);
                p2.push(b);
            }
        }
        (p1, p2)
    }

    /// `count` noise-free correspondences on a random plane, with its homography.
    pub fn plane_points(
        &self,
        rng: &mut SceneRng,
        count: usize,
    ) -> (Matrix3<f64>, Vec<[f64; 2]>, Vec<[f64; 2]>) {
        let (n, d) = self.random_plane(rng);
        let (p1, p2) = self.points_on_plane(rng, count, &n, d);
        (self.plane_homography(&n, d), p1, p2)
    }
}

/// Tentative correspondences with known truth: inliers with Gaussian noise, outliers uniform.
pub(crate) struct Synthetic {
    pub p1: Vec<[f64; 2]>,
    pub p2: Vec<[f64; 2]>,
    /// The true model (H image 1 → 2, or F).
    pub truth: Matrix3<f64>,
    pub is_inlier: Vec<bool>,
    /// For dominant-plane scenes: which inliers lie on the plane.
    pub on_plane: Vec<bool>,
}

impl Synthetic {
    fn push(&mut self, a: [f64; 2], b: [f64; 2], inlier: bool, on_plane: bool) {
        self.p1.push(a);
        self.p2.push(b);
        self.is_inlier.push(inlier);
        self.on_plane.push(on_plane);
    }

    fn add_noise_and_outliers(&mut self, rng: &mut SceneRng, noise_px: f64, outliers: usize) {
        for p in self.p1.iter_mut().chain(self.p2.iter_mut()) {
            p[0] += noise_px * rng.gaussian();
            p[1] += noise_px * rng.gaussian();
        }
        for _ in 0..outliers {
            let (a, b) = (rng.pixel(), rng.pixel());
            self.push(a, b, false, false);
        }
        // Shuffle so that inliers are not a prefix (matchers do not sort them).
        for i in (1..self.p1.len()).rev() {
            let j = rng.index(i + 1);
            self.p1.swap(i, j);
            self.p2.swap(i, j);
            self.is_inlier.swap(i, j);
            self.on_plane.swap(i, j);
        }
    }

    pub fn inlier_indices(&self) -> Vec<usize> {
        (0..self.p1.len()).filter(|&i| self.is_inlier[i]).collect()
    }
}

/// `n` correspondences of which `round(n·inlier_ratio)` follow a random model of `kind` (plane
/// points for H, general 3-D points for F) with `noise_px` Gaussian noise per coordinate in both
/// images; the rest are uniform over the 800×600 images.
pub(crate) fn matches(
    kind: Geometry,
    n: usize,
    inlier_ratio: f64,
    noise_px: f64,
    seed: u64,
) -> Synthetic {
    let mut rng = SceneRng::new(seed);
    let scene = Scene::random(&mut rng);
    let n_in = ((n as f64) * inlier_ratio).round() as usize;
    let (truth, p1, p2) = match kind {
        Geometry::Homography => scene.plane_points(&mut rng, n_in),
        Geometry::Fundamental => scene.general_points(&mut rng, n_in),
    };
    let mut s = Synthetic {
        truth,
        is_inlier: vec![true; p1.len()],
        on_plane: vec![kind == Geometry::Homography; p1.len()],
        p1,
        p2,
    };
    let outliers = n - s.p1.len();
    s.add_noise_and_outliers(&mut rng, noise_px, outliers);
    s
}

#[cfg(test)]
/// A scene for DEGENSAC: `n_plane` inliers on one plane, `n_off` inliers off it (general depth),
/// `n_out` outliers, `noise_px` Gaussian noise; the truth is F.
pub(crate) fn dominant_plane(
    n_plane: usize,
    n_off: usize,
    n_out: usize,
    noise_px: f64,
    seed: u64,
) -> Synthetic {
    let mut rng = SceneRng::new(seed);
    let scene = Scene::random(&mut rng);
    let (n, d) = scene.random_plane(&mut rng);
    let (a1, a2) = scene.points_on_plane(&mut rng, n_plane, &n, d);
    // Off-plane points with real parallax (≥ 10 px from where the plane would put them).
    let h = scene.plane_homography(&n, d);
    let (truth, g1, g2) = scene.general_points(&mut rng, 20 * n_off);
    let (b1, b2): (Vec<_>, Vec<_>) = g1
        .into_iter()
        .zip(g2)
        .filter(|(a, b)| super::transfer_error(&h, *a, *b) >= 10.0)
        .take(n_off)
        .unzip();
    let mut s = Synthetic {
        p1: Vec::new(),
        p2: Vec::new(),
        truth,
        is_inlier: Vec::new(),
        on_plane: Vec::new(),
    };
    for (a, b) in a1.into_iter().zip(a2) {
        s.push(a, b, true, true);
    }
    for (a, b) in b1.into_iter().zip(b2) {
        s.push(a, b, true, false);
    }
    s.add_noise_and_outliers(&mut rng, noise_px, n_out);
    s
}
