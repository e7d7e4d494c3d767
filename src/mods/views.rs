//! Affine view synthesis (reference §4.1): rotate by φ, blur anisotropically against aliasing,
//! shrink x by 1/t (and zoom small images); regions found on a view map back to the image
//! through the inverse of the same affinity.

use crate::feature::Feature;
use crate::image::GrayImage;
use crate::laf::{Laf, MR_SIZE};
use crate::pyramid::gaussian_blur_xy;
use crate::schedule::{ViewSpec, DEFAULT_INIT_SIGMA};

/// The value of view pixels outside the rotated image (the reference's 128).
const OUTSIDE: f32 = 128.0;

/// An affinity `v = m·p + t` from image pixels to view pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Affine {
    /// The linear part, row-major.
    pub m: [[f32; 2]; 2],
    /// The translation.
    pub t: [f32; 2],
}

impl Affine {
    /// Maps a point.
    pub fn apply(&self, p: [f32; 2]) -> [f32; 2] {
        let m = self.m;
        [
            m[0][0] * p[0] + m[0][1] * p[1] + self.t[0],
            m[1][0] * p[0] + m[1][1] * p[1] + self.t[1],
        ]
    }

    /// The inverse affinity.
    pub fn inverse(&self) -> Affine {
        let m = self.m;
        let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
        let i = [
            [m[1][1] / det, -m[0][1] / det],
            [-m[1][0] / det, m[0][0] / det],
        ];
        let t = [
            -(i[0][0] * self.t[0] + i[0][1] * self.t[1]),
            -(i[1][0] * self.t[0] + i[1][1] * self.t[1]),
        ];
        Affine { m: i, t }
    }

    /// The frame seen through this affinity: `[m·A | m·c + t]`.
    pub fn map_laf(&self, laf: &Laf) -> Laf {
        let (m, a) = (self.m, laf.a);
        Laf {
            a: [
                [
                    m[0][0] * a[0][0] + m[0][1] * a[1][0],
                    m[0][0] * a[0][1] + m[0][1] * a[1][1],
                ],
                [
                    m[1][0] * a[0][0] + m[1][1] * a[1][0],
                    m[1][0] * a[0][1] + m[1][1] * a[1][1],
                ],
            ],
            c: self.apply(laf.c),
        }
    }

    /// This affinity after scaling the image by `z` in both directions: `p ↦ self(z·p)`.
    pub fn after_scale(&self, z: f32) -> Affine {
        let m = self.m;
        Affine {
            m: [[m[0][0] * z, m[0][1] * z], [m[1][0] * z, m[1][1] * z]],
            t: self.t,
        }
    }
}

/// `image` shrunk by `z` < 1 in both directions, after a Gaussian blur of σ = 0.8/z against
/// aliasing (the views' rule with the default init_sigma 1.6): the copy large images' views are
/// made from. Pixel (x, y) of the copy is the image's (x/z, y/z).
pub fn shrink(image: &GrayImage, z: f32) -> GrayImage {
    let sigma = DEFAULT_INIT_SIGMA / (2.0 * z);
    let blurred = gaussian_blur_xy(image, sigma, sigma);
    let w = ((image.width() - 1) as f32 * z).floor() as usize + 1;
    let h = ((image.height() - 1) as f32 * z).floor() as usize + 1;
    GrayImage::from_fn(w, h, |x, y| {
        blurred.sample_clamped(x as f32 / z, y as f32 / z)
    })
}

/// A synthesised view and the affinity from the image to it.
pub struct View {
    /// The view's pixels.
    pub image: GrayImage,
    /// Image pixels → view pixels.
    pub to_view: Affine,
}

/// Synthesises `spec` of `image` (zoomed by `zoom` first, for small images): rotation by φ about
/// the origin into a canvas that holds the whole image (128 outside it), a Gaussian blur of
/// σ_x = init_sigma·t/(2·z) along x and init_sigma/(2·z) along y when t > 1 or z < 1, with
/// z = zoom·scale the view's scale, then x scaled by z/t and y by z, all bilinear. The identity
/// view (t = 1, φ = 0, z = 1) is the image itself.
pub fn synthesize(image: &GrayImage, spec: ViewSpec, init_sigma: f32, zoom: f32) -> View {
    let (w, h) = (image.width(), image.height());
    let phi = spec.phi_deg.to_radians();
    let (s, c) = phi.sin_cos();
    let rotation = [[c, -s], [s, c]];
    // The rotated canvas: the image's corners under the rotation.
    let corners = [
        [0.0, 0.0],
        [w as f32 - 1.0, 0.0],
        [0.0, h as f32 - 1.0],
        [w as f32 - 1.0, h as f32 - 1.0],
    ];
    let rotate = Affine {
        m: rotation,
        t: [0.0, 0.0],
    };
    let mapped: Vec<[f32; 2]> = corners.iter().map(|&p| rotate.apply(p)).collect();
    let min_x = mapped.iter().map(|p| p[0]).fold(f32::INFINITY, f32::min);
    let min_y = mapped.iter().map(|p| p[1]).fold(f32::INFINITY, f32::min);
    let max_x = mapped
        .iter()
        .map(|p| p[0])
        .fold(f32::NEG_INFINITY, f32::max);
    let max_y = mapped
        .iter()
        .map(|p| p[1])
        .fold(f32::NEG_INFINITY, f32::max);
    let rotate = Affine {
        m: rotation,
        t: [-min_x, -min_y],
    };
    let rotated = if spec.phi_deg == 0.0 {
        image.clone()
    } else {
        let back = rotate.inverse();
        let (rw, rh) = (
            (max_x - min_x).ceil() as usize + 1,
            (max_y - min_y).ceil() as usize + 1,
        );
        let (xmax, ymax) = (w as f32 - 1.0, h as f32 - 1.0);
        GrayImage::from_fn(rw, rh, |x, y| {
            let p = back.apply([x as f32, y as f32]);
            if p[0] >= -0.5 && p[1] >= -0.5 && p[0] <= xmax + 0.5 && p[1] <= ymax + 0.5 {
                image.sample_clamped(p[0], p[1])
            } else {
                OUTSIDE
            }
        })
    };
    let tilt = spec.tilt.max(1.0);
    // The view's scale; images are only zoomed up (zoom ≥ 1), views only shrunk (scale ≤ 1).
    let z = zoom.max(1.0) * spec.scale.min(1.0);
    let blurred = if tilt > 1.0 || z < 1.0 {
        gaussian_blur_xy(
            &rotated,
            init_sigma * tilt / (2.0 * z),
            init_sigma / (2.0 * z),
        )
    } else {
        rotated
    };
    let (sx, sy) = (z / tilt, z);
    let view = if sx == 1.0 && sy == 1.0 {
        blurred
    } else {
        let vw = ((blurred.width() - 1) as f32 * sx).floor() as usize + 1;
        let vh = ((blurred.height() - 1) as f32 * sy).floor() as usize + 1;
        GrayImage::from_fn(vw, vh, |x, y| {
            blurred.sample_clamped(x as f32 / sx, y as f32 / sy)
        })
    };
    let to_view = Affine {
        m: [
            [sx * rotation[0][0], sx * rotation[0][1]],
            [sy * rotation[1][0], sy * rotation[1][1]],
        ],
        t: [sx * rotate.t[0], sy * rotate.t[1]],
    };
    View {
        image: view,
        to_view,
    }
}

/// Maps features found on a view back into the `width`×`height` image; returns the kept
/// indices and features. Features whose centre falls outside the image or whose frame touches
/// its border are dropped (the reference's `ReprojectRegionsAndRemoveTouchBoundary`).
pub fn map_back(
    features: &[Feature],
    to_view: &Affine,
    width: usize,
    height: usize,
) -> Vec<(usize, Feature)> {
    let back = to_view.inverse();
    features
        .iter()
        .enumerate()
        .filter_map(|(i, f)| {
            let laf = back.map_laf(&f.laf);
            let inside = laf.c[0] >= 0.0
                && laf.c[1] >= 0.0
                && laf.c[0] <= width as f32 - 1.0
                && laf.c[1] <= height as f32 - 1.0;
            (inside && !laf.touches_border(width, height)).then(|| {
                let mut g = f.with_laf(laf);
                g.sigma = laf.scale() / MR_SIZE;
                (i, g)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_affinity_maps_image_points_onto_the_same_content() {
        // A smooth ramp image: a pixel's value says where it came from.
        let image = GrayImage::from_fn(200, 150, |x, y| x as f32 * 0.5 + y as f32 * 1.1);
        let spec = ViewSpec {
            tilt: 3.0,
            phi_deg: 40.0,
            scale: 1.0,
        };
        let view = synthesize(&image, spec, 0.0, 1.0);
        for p in [[50.0, 40.0], [120.0, 100.0], [10.0, 130.0]] {
            let v = view.to_view.apply(p);
            let got = view.image.sample_clamped(v[0], v[1]);
            let want = image.sample_clamped(p[0], p[1]);
            assert!((got - want).abs() < 1.0, "{p:?}: {got} vs {want}");
        }
        let back = view
            .to_view
            .inverse()
            .apply(view.to_view.apply([33.0, 77.0]));
        assert!((back[0] - 33.0).abs() < 1e-3 && (back[1] - 77.0).abs() < 1e-3);
        // The view is about 1/3 as wide as the rotated canvas.
        let canvas = 200.0 * 40f32.to_radians().cos() + 150.0 * 40f32.to_radians().sin();
        assert!((view.image.width() as f32 - canvas / 3.0).abs() < 2.0);

        // At scale 1/4 (blurred first: a ramp stays a ramp) the view is a quarter of the size
        // in both directions, and points still map onto the same content.
        let quarter = ViewSpec {
            scale: 0.25,
            ..spec
        };
        let view = synthesize(&image, quarter, 1.6, 1.0);
        assert!((view.image.width() as f32 - canvas / 12.0).abs() < 2.0);
        for p in [[60.0, 50.0], [120.0, 90.0]] {
            let v = view.to_view.apply(p);
            let got = view.image.sample_clamped(v[0], v[1]);
            let want = image.sample_clamped(p[0], p[1]);
            assert!((got - want).abs() < 1.0, "scale 1/4 {p:?}: {got} vs {want}");
        }
    }

    #[test]
    fn a_view_of_the_shrunk_copy_maps_image_points_onto_the_same_content() {
        // A large image's views come from a copy shrunk by z; the view's affinity from the
        // image is the copy's view affinity after the scaling by z.
        let image = GrayImage::from_fn(400, 300, |x, y| x as f32 * 0.25 + y as f32 * 0.55);
        let z = 0.4;
        let copy = shrink(&image, z);
        assert_eq!((copy.width(), copy.height()), (160, 120));
        let spec = ViewSpec {
            tilt: 2.0,
            phi_deg: 30.0,
            scale: 1.0,
        };
        let view = synthesize(&copy, spec, 1.6, 1.0);
        let to_view = view.to_view.after_scale(z);
        for p in [[100.0, 80.0], [250.0, 200.0], [40.0, 260.0]] {
            let v = to_view.apply(p);
            let got = view.image.sample_clamped(v[0], v[1]);
            let want = image.sample_clamped(p[0], p[1]);
            assert!((got - want).abs() < 1.0, "{p:?}: {got} vs {want}");
        }
    }

    #[test]
    fn frames_map_back_and_border_ones_are_dropped() {
        let to_view = Affine {
            m: [[0.25, 0.0], [0.0, 1.0]],
            t: [5.0, 0.0],
        };
        let inside = Feature {
            laf: Laf::circle(30.0, 50.0, 3.0),
            response: 1.0,
            sigma: 0.5,
            octave: 0,
            level: 1,
        };
        let near_edge = inside.with_laf(Laf::circle(6.0, 50.0, 3.0));
        let kept = map_back(&[inside, near_edge], &to_view, 200, 100);
        assert_eq!(kept.len(), 1);
        let laf = kept[0].1.laf;
        assert!((laf.c[0] - 100.0).abs() < 1e-4 && (laf.c[1] - 50.0).abs() < 1e-4);
        // The circle becomes an ellipse 4× wider along x.
        assert!((laf.a[0][0] - 12.0).abs() < 1e-4 && (laf.a[1][1] - 3.0).abs() < 1e-4);
    }
}
