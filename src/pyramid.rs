//! The Gaussian scale space of Perdoch's Hessian-Affine (`hesaff`).
//!
//! The input is assumed blurred by σ = 0.5 already; it is pre-blurred to σ0 = 1.6 and each octave
//! holds 5 levels σ = 1.6·k^i (k = 2^(1/3), i = 0..4) in that octave's pixels, so that the
//! detector can compare levels 1..3 with their neighbours. The next octave is level 3 (σ = 3.2)
//! decimated by 2 (pixel (2r, 2c) → (r, c), no extra blur, no shift). Building stops when a side
//! would be at most `2·border + 2` pixels.

use rayon::prelude::*;

use crate::image::GrayImage;

/// Levels per octave at which features are detected (the octave holds two more).
pub const LEVELS_PER_OCTAVE: usize = 3;
/// Images per octave: the detection levels plus one below and one above.
pub const IMAGES_PER_OCTAVE: usize = LEVELS_PER_OCTAVE + 2;
/// The blur of the first level of every octave, in that octave's pixels.
pub const INITIAL_SIGMA: f32 = 1.6;
/// The blur the input image is assumed to have already.
pub const INPUT_SIGMA: f32 = 0.5;
/// The detector's border in octave pixels; also sets the smallest octave.
pub const BORDER: usize = 5;

/// One octave: `IMAGES_PER_OCTAVE` Gaussian levels of the same size.
#[derive(Clone, Debug)]
pub struct Octave {
    /// Size of one pixel of this octave in input-image pixels (1, 2, 4, ...).
    pub pixel_distance: f32,
    /// The blur of each level in this octave's pixels: 1.6·k^i.
    pub sigmas: [f32; IMAGES_PER_OCTAVE],
    /// The Gaussian images, least blurred first; levels 1..=3 are the detection levels.
    pub levels: Vec<GrayImage>,
}

/// The whole scale space, plus the input image for sampling small patches at full resolution.
#[derive(Clone, Debug)]
pub struct ScaleSpace {
    /// The input image as given (blur σ 0.5 assumed).
    pub input: GrayImage,
    /// The octaves, finest first; octave k has pixels of 2ᵏ input pixels. Empty for an image
    /// with a side of at most `2·BORDER + 2` pixels.
    pub octaves: Vec<Octave>,
}

/// An image of the scale space chosen for sampling, with what is needed to map input-image
/// coordinates into it.
#[derive(Clone, Copy, Debug)]
pub struct SamplingLevel<'a> {
    /// The chosen image: the input or one level of one octave.
    pub image: &'a GrayImage,
    /// Input-image pixels per pixel of `image`.
    pub pixel_distance: f32,
    /// The total blur of `image`, in input-image pixels.
    pub sigma: f32,
}

impl ScaleSpace {
    /// Builds the scale space of `input` (f32 gray, 0..255).
    pub fn build(input: &GrayImage) -> ScaleSpace {
        let k = 2f32.powf(1.0 / LEVELS_PER_OCTAVE as f32);
        let mut sigmas = [0f32; IMAGES_PER_OCTAVE];
        for (i, s) in sigmas.iter_mut().enumerate() {
            *s = INITIAL_SIGMA * k.powi(i as i32);
        }
        let min_side = 2 * BORDER + 2;
        let mut octaves = Vec::new();
        let mut base = gaussian_blur(
            input,
            (INITIAL_SIGMA * INITIAL_SIGMA - INPUT_SIGMA * INPUT_SIGMA).sqrt(),
        );
        let mut pixel_distance = 1.0;
        while base.width() > min_side && base.height() > min_side {
            let mut levels = Vec::with_capacity(IMAGES_PER_OCTAVE);
            levels.push(base);
            for i in 1..IMAGES_PER_OCTAVE {
                let increment = sigmas[i - 1] * (k * k - 1.0).sqrt();
                let next = gaussian_blur(&levels[i - 1], increment);
                levels.push(next);
            }
            base = levels[LEVELS_PER_OCTAVE].decimate();
            octaves.push(Octave {
                pixel_distance,
                sigmas,
                levels,
            });
            pixel_distance *= 2.0;
        }
        ScaleSpace {
            input: input.clone(),
            octaves,
        }
    }

    /// The scale-space image to sample a patch from: the most blurred image whose total blur does
    /// not exceed `sigma` (input-image pixels). The input image itself (σ 0.5) is the fallback
    /// for very small patches. Since every level's blur is at least 1.6 of its own pixels, the
    /// chosen image never has pixels coarser than `sigma / 1.6`.
    pub fn sampling_level(&self, sigma: f32) -> SamplingLevel<'_> {
        let mut best = SamplingLevel {
            image: &self.input,
            pixel_distance: 1.0,
            sigma: INPUT_SIGMA,
        };
        for octave in &self.octaves {
            for (level, &s) in octave.levels.iter().zip(octave.sigmas.iter()) {
                let total = s * octave.pixel_distance;
                if total <= sigma * 1.0001 && total > best.sigma {
                    best = SamplingLevel {
                        image: level,
                        pixel_distance: octave.pixel_distance,
                        sigma: total,
                    };
                }
            }
        }
        best
    }
}

/// The sampled Gaussian kernel of hesaff / OpenCV: `int(6σ + 1)` taps made odd, normalised.
pub fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let mut size = (6.0 * sigma + 1.0) as usize;
    if size.is_multiple_of(2) {
        size += 1;
    }
    let half = (size / 2) as i32;
    let mut kernel: Vec<f32> = (-half..=half)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|v| *v /= sum);
    kernel
}

/// Separable Gaussian blur with replicated borders ([`gaussian_kernel`] in both directions);
/// σ ≤ 0 returns a copy.
pub fn gaussian_blur(image: &GrayImage, sigma: f32) -> GrayImage {
    if sigma <= 0.0 {
        return image.clone();
    }
    let kernel = gaussian_kernel(sigma);
    let horizontal = convolve_rows(image, &kernel);
    convolve_columns(&horizontal, &kernel)
}

/// Anisotropic separable Gaussian blur: σ_x along rows, σ_y along columns (σ ≤ 0: that
/// direction untouched).
pub fn gaussian_blur_xy(image: &GrayImage, sigma_x: f32, sigma_y: f32) -> GrayImage {
    let rows = if sigma_x > 0.0 {
        convolve_rows(image, &gaussian_kernel(sigma_x))
    } else {
        image.clone()
    };
    if sigma_y > 0.0 {
        convolve_columns(&rows, &gaussian_kernel(sigma_y))
    } else {
        rows
    }
}

/// Convolves each row with `kernel` (odd length), replicating the end pixels.
fn convolve_rows(image: &GrayImage, kernel: &[f32]) -> GrayImage {
    let (w, h) = (image.width(), image.height());
    let half = kernel.len() / 2;
    let mut out = vec![0f32; w * h];
    out.par_chunks_mut(w)
        .enumerate()
        .for_each_init(Vec::new, |padded, (y, out_row)| {
            let row = image.row(y);
            padded.clear();
            padded.extend(std::iter::repeat_n(row[0], half));
            padded.extend_from_slice(row);
            padded.extend(std::iter::repeat_n(row[w - 1], half));
            // Shift-and-accumulate: each tap is a contiguous multiply-add over the row, which
            // vectorises (a per-pixel dot product does not).
            for (k, &weight) in kernel.iter().enumerate() {
                for (o, &v) in out_row.iter_mut().zip(&padded[k..k + w]) {
                    *o += weight * v;
                }
            }
        });
    GrayImage::from_vec(w, h, out)
}

/// Convolves each column with `kernel`, replicating the end rows. Works row by row so that the
/// inner loop runs over contiguous memory and vectorises.
fn convolve_columns(image: &GrayImage, kernel: &[f32]) -> GrayImage {
    let (w, h) = (image.width(), image.height());
    let half = kernel.len() as isize / 2;
    let mut out = vec![0f32; w * h];
    out.par_chunks_mut(w).enumerate().for_each(|(y, out_row)| {
        for (k, &weight) in kernel.iter().enumerate() {
            let source_y = (y as isize + k as isize - half).clamp(0, h as isize - 1) as usize;
            let source = image.row(source_y);
            for (o, &v) in out_row.iter_mut().zip(source) {
                *o += weight * v;
            }
        }
    });
    GrayImage::from_vec(w, h, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_size_follows_hesaff() {
        assert_eq!(gaussian_kernel(1.5199).len(), 11); // int(10.1) = 10 → 11
        assert_eq!(gaussian_kernel(1.2263).len(), 9); // int(8.36) = 8 → 9
        assert_eq!(gaussian_kernel(2.4525).len(), 15); // int(15.7) = 15
        let k = gaussian_kernel(2.0);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn blur_preserves_constant_and_mean_and_spreads_an_impulse() {
        let flat = GrayImage::from_fn(30, 20, |_, _| 42.0);
        let b = gaussian_blur(&flat, 2.0);
        assert!(b.data().iter().all(|&v| (v - 42.0).abs() < 1e-3));

        let impulse = GrayImage::from_fn(41, 41, |x, y| if x == 20 && y == 20 { 1.0 } else { 0.0 });
        let b = gaussian_blur(&impulse, 2.0);
        // The blurred impulse is the 2-D Gaussian: its second moment along x is σ².
        let mut sum = 0.0;
        let mut var = 0.0;
        for y in 0..41 {
            for x in 0..41 {
                let v = b.at(x, y) as f64;
                sum += v;
                var += v * ((x as f64) - 20.0).powi(2);
            }
        }
        assert!((sum - 1.0).abs() < 1e-4);
        assert!((var / sum - 4.0).abs() < 0.1, "variance {}", var / sum);
    }

    #[test]
    fn octaves_halve_until_the_border_limit() {
        let img = GrayImage::from_fn(200, 100, |x, y| ((x * 3 + y * 5) % 17) as f32);
        let ss = ScaleSpace::build(&img);
        let sizes: Vec<_> = ss
            .octaves
            .iter()
            .map(|o| (o.levels[0].width(), o.levels[0].height(), o.pixel_distance))
            .collect();
        assert_eq!(
            sizes,
            vec![
                (200, 100, 1.0),
                (100, 50, 2.0),
                (50, 25, 4.0),
                (25, 13, 8.0)
            ]
        );
        assert!(ss
            .octaves
            .iter()
            .all(|o| o.levels.len() == IMAGES_PER_OCTAVE));
        assert!((ss.octaves[0].sigmas[3] - 3.2).abs() < 1e-4);
    }

    #[test]
    fn sampling_level_picks_the_most_blurred_level_not_above_the_request() {
        let img = GrayImage::from_fn(256, 256, |x, y| ((x ^ y) & 31) as f32);
        let ss = ScaleSpace::build(&img);
        assert_eq!(ss.sampling_level(0.4).sigma, INPUT_SIGMA);
        assert_eq!(ss.sampling_level(1.0).sigma, INPUT_SIGMA);
        let l = ss.sampling_level(3.3);
        assert!((l.sigma - 3.2).abs() < 1e-3 && l.pixel_distance == 1.0);
        let l = ss.sampling_level(7.0);
        assert!(
            (l.sigma - 6.4).abs() < 1e-3 && l.pixel_distance == 2.0,
            "{}",
            l.sigma
        );
    }
}
