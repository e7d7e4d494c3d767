//! Synthetic wide-baseline pairs: one photo and a copy seen through a known homography with a
//! strong viewpoint change (tilt, rotation, scale, a little perspective) and a photometric change
//! (gamma, gain, noise). Used by the tests and to make the sample pair in `data/`.
//!
//! The viewpoint follows the affine camera model of ASIFT: `A = λ·R(ψ)·R(−φ)·T_t·R(φ)` where
//! `T_t = diag(1/t, 1)`, so that the image is compressed by the tilt t along direction φ and then
//! rotated by ψ; the homography is `A` about the image centre followed by a small projective term.
//! It maps image 1 to image 2 (the Oxford `H1to2p`).

use std::path::Path;

use image::{Rgb, RgbImage};
use nalgebra::Matrix3;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Everything that defines a synthetic view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SynthParams {
    /// Absolute tilt t ≥ 1 (compression 1/t along `tilt_direction_deg`).
    pub tilt: f64,
    /// The direction φ of the compression, degrees.
    pub tilt_direction_deg: f64,
    /// In-plane rotation ψ, degrees.
    pub rotation_deg: f64,
    /// Overall zoom λ.
    pub scale: f64,
    /// The projective row (h31, h32), in units of 1/image size (the longer side).
    pub perspective: [f64; 2],
    /// The gamma of the photometric change of image 2, `255·gain·(v/255)^gamma + noise` per
    /// channel.
    pub gamma: f64,
    /// The gain of the photometric change (1 keeps the brightness).
    pub gain: f64,
    /// Standard deviation of the added Gaussian noise, gray levels.
    pub noise: f64,
    /// Seeds the noise (and, through [`SynthParams::random`], the parameters themselves).
    pub seed: u64,
}

impl SynthParams {
    /// Random parameters: tilt uniform in [1, max_tilt], any rotation and tilt direction, a zoom
    /// of 0.75..1.05 (so that most of the scene stays in view), mild perspective and
    /// illumination change.
    pub fn random(seed: u64, max_tilt: f64) -> SynthParams {
        let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed);
        let tilt = rng.random_range(1.0..=max_tilt.max(1.0));
        SynthParams {
            tilt,
            tilt_direction_deg: rng.random_range(0.0..180.0),
            rotation_deg: rng.random_range(-180.0..180.0),
            scale: rng.random_range(0.75..1.05),
            perspective: [rng.random_range(-0.15..0.15), rng.random_range(-0.15..0.15)],
            gamma: rng.random_range(0.7..1.4),
            gain: rng.random_range(0.8..1.15),
            noise: 2.0,
            seed,
        }
    }

    /// The homography image 1 → image 2 for images of `width` × `height` (both the same size).
    pub fn homography(&self, width: u32, height: u32) -> Matrix3<f64> {
        let (cx, cy) = ((width as f64 - 1.0) / 2.0, (height as f64 - 1.0) / 2.0);
        let rot = |deg: f64| {
            let (s, c) = deg.to_radians().sin_cos();
            Matrix3::new(c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)
        };
        let compress = Matrix3::new(1.0 / self.tilt, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0);
        let zoom = Matrix3::new(self.scale, 0.0, 0.0, 0.0, self.scale, 0.0, 0.0, 0.0, 1.0);
        let affine = zoom
            * rot(self.rotation_deg)
            * rot(-self.tilt_direction_deg)
            * compress
            * rot(self.tilt_direction_deg);
        let size = width.max(height) as f64;
        let projective = Matrix3::new(
            1.0,
            0.0,
            0.0,
            0.0,
            1.0,
            0.0,
            self.perspective[0] / size,
            self.perspective[1] / size,
            1.0,
        );
        let to_centre = Matrix3::new(1.0, 0.0, -cx, 0.0, 1.0, -cy, 0.0, 0.0, 1.0);
        let back = Matrix3::new(1.0, 0.0, cx, 0.0, 1.0, cy, 0.0, 0.0, 1.0);
        let h = back * projective * affine * to_centre;
        h / h[(2, 2)]
    }
}

/// Makes image 2 of a pair, the same size as `image1`; returns it with the homography
/// image 1 → image 2. Pixels that fall outside image 1 are black and get no photometric change.
/// Fails with [`Error::Invalid`] when the homography is singular.
pub fn synthesize(image1: &RgbImage, params: &SynthParams) -> Result<(RgbImage, Matrix3<f64>)> {
    let (w, h) = image1.dimensions();
    let homography = params.homography(w, h);
    let inverse = homography
        .try_inverse()
        .ok_or_else(|| Error::invalid("the synthetic homography is singular"))?;
    let mut out = warp(image1, &inverse, w, h);
    photometric_change(&mut out, params);
    Ok((out, homography))
}

/// Output pixel p shows the input at `inverse·p` (bilinear; black outside): `inverse` maps the
/// output image to the input, i.e. it is the inverse of the homography input → output.
pub fn warp(image: &RgbImage, inverse: &Matrix3<f64>, width: u32, height: u32) -> RgbImage {
    let (iw, ih) = (image.width() as f64, image.height() as f64);
    RgbImage::from_fn(width, height, |x, y| {
        let p = inverse * nalgebra::Vector3::new(x as f64, y as f64, 1.0);
        if p[2].abs() < 1e-12 {
            return Rgb([0, 0, 0]);
        }
        let (sx, sy) = (p[0] / p[2], p[1] / p[2]);
        if !(sx >= 0.0 && sy >= 0.0 && sx <= iw - 1.0 && sy <= ih - 1.0) {
            return Rgb([0, 0, 0]);
        }
        let (x0, y0) = (sx.floor() as u32, sy.floor() as u32);
        let (x1, y1) = (
            (x0 + 1).min(image.width() - 1),
            (y0 + 1).min(image.height() - 1),
        );
        let (fx, fy) = (sx - x0 as f64, sy - y0 as f64);
        let mut rgb = [0u8; 3];
        for (c, v) in rgb.iter_mut().enumerate() {
            let at = |x: u32, y: u32| image.get_pixel(x, y)[c] as f64;
            let top = at(x0, y0) * (1.0 - fx) + at(x1, y0) * fx;
            let bottom = at(x0, y1) * (1.0 - fx) + at(x1, y1) * fx;
            *v = (top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8;
        }
        Rgb(rgb)
    })
}

fn photometric_change(image: &mut RgbImage, params: &SynthParams) {
    let mut rng =
        rand::rngs::Xoshiro256PlusPlus::seed_from_u64(params.seed ^ 0x9E37_79B9_7F4A_7C15);
    for p in image.pixels_mut() {
        if p.0 == [0, 0, 0] {
            continue; // outside the warped image
        }
        for c in 0..3 {
            let v = p[c] as f64 / 255.0;
            let noise = params.noise * gaussian(&mut rng);
            p[c] = (255.0 * params.gain * v.powf(params.gamma) + noise)
                .round()
                .clamp(0.0, 255.0) as u8;
        }
    }
}

/// A standard normal sample (Box–Muller).
fn gaussian(rng: &mut impl rand::Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.random_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Writes a homography as three lines of three numbers (the Oxford `H1to2p` format).
pub fn write_homography(path: &Path, h: &Matrix3<f64>) -> Result<()> {
    let mut text = String::new();
    for r in 0..3 {
        text += &format!("{:.12e} {:.12e} {:.12e}\n", h[(r, 0)], h[(r, 1)], h[(r, 2)]);
    }
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

/// Reads a homography file: nine numbers in plain, scientific or engineering notation
/// (`883.39e-003`), any whitespace; normalised so that `H[2,2] = 1`. A malformed file is an
/// [`Error::Dataset`].
pub fn read_homography(path: &Path) -> Result<Matrix3<f64>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_homography(&text)
        .map_err(|message| Error::Dataset(format!("{}: {message}", path.display())))
}

/// Parses nine numbers (row-major, any notation and whitespace) into a homography normalised by
/// `H[2,2]`; non-finite, singular or `H[2,2] = 0` matrices are refused with a one-line message.
pub fn parse_homography(text: &str) -> std::result::Result<Matrix3<f64>, String> {
    let values: Vec<f64> = text
        .split_whitespace()
        .map(|t| {
            t.parse::<f64>()
                .map_err(|_| format!("'{t}' is not a number"))
        })
        .collect::<std::result::Result<_, _>>()?;
    if values.len() != 9 {
        return Err(format!(
            "expected 9 numbers (a 3x3 homography), found {}",
            values.len()
        ));
    }
    let h = Matrix3::from_row_slice(&values);
    if !h.iter().all(|v| v.is_finite()) {
        return Err("the homography has non-finite entries".into());
    }
    if h[(2, 2)].abs() < 1e-12 {
        return Err("H[2,2] is zero; cannot normalise".into());
    }
    if h.determinant().abs() < 1e-12 * h.norm().powi(3) {
        return Err("the homography is singular".into());
    }
    Ok(h / h[(2, 2)])
}

/// Maps a point through a homography (None at infinity).
pub fn transfer(h: &Matrix3<f64>, p: [f64; 2]) -> Option<[f64; 2]> {
    let v = h * nalgebra::Vector3::new(p[0], p[1], 1.0);
    (v[2].abs() > 1e-12).then(|| [v[0] / v[2], v[1] / v[2]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homography_files_in_every_notation() {
        let h = parse_homography("883.39e-003 0 1.5e1\n 0\t1 -2\n0 0 1").unwrap();
        assert!((h[(0, 0)] - 0.88339).abs() < 1e-12 && (h[(0, 2)] - 15.0).abs() < 1e-12);
        let scaled = parse_homography("2 0 0 0 2 0 0 0 2").unwrap();
        assert!((scaled[(0, 0)] - 1.0).abs() < 1e-12);
        assert!(parse_homography("1 0 0 0 1 0 0 0")
            .unwrap_err()
            .contains("9 numbers"));
        assert!(parse_homography("1 0 0 0 1 0 0 0 x")
            .unwrap_err()
            .contains("not a number"));
        assert!(parse_homography("1 0 0 0 0 0 0 0 1")
            .unwrap_err()
            .contains("singular"));
    }

    #[test]
    fn synthetic_view_follows_its_homography() {
        // A pattern with distinct pixels: image 2 at H·p must look like image 1 at p.
        let img = RgbImage::from_fn(120, 90, |x, y| {
            let v = ((x as f64 * 0.3).sin() * 60.0 + (y as f64 * 0.2).cos() * 60.0 + 128.0) as u8;
            Rgb([v, v, v])
        });
        let params = SynthParams {
            noise: 0.0,
            gamma: 1.0,
            gain: 1.0,
            ..SynthParams::random(3, 2.0)
        };
        let (out, h) = synthesize(&img, &params).unwrap();
        let mut checked = 0;
        for &(x, y) in &[(60.0, 45.0), (50.0, 40.0), (70.0, 50.0), (55.0, 47.0)] {
            let q = transfer(&h, [x, y]).unwrap();
            if q[0] < 1.0 || q[1] < 1.0 || q[0] > 118.0 || q[1] > 88.0 {
                continue;
            }
            let a = img.get_pixel(x as u32, y as u32)[0] as f64;
            let b = out.get_pixel(q[0].round() as u32, q[1].round() as u32)[0] as f64;
            assert!((a - b).abs() < 25.0, "({x}, {y}) → {q:?}: {a} vs {b}");
            checked += 1;
        }
        assert!(checked >= 3);
        // The centre maps near the centre (the perspective term moves it a little).
        let c = transfer(&h, [59.5, 44.5]).unwrap();
        assert!((c[0] - 59.5).abs() < 10.0 && (c[1] - 44.5).abs() < 10.0);
    }
}
