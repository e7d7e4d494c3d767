//! OriNet orientation: one network pass on the 32×32 patch of each (upright) frame.
//!
//! The authors apply OriNet's angle θ as `A ← A·[[cos θ, sin θ], [−sin θ, cos θ]]` (reference
//! `affnet.md` §2; the same in MODS and kornia). wbs's [`Laf::rotated`]`(t)` is `A·R(t)` with
//! `R(t) = [[cos t, −sin t], [sin t, cos t]]`, so the authors' rotation is `rotated(−θ)`. The test
//! below proves it on rotated images: with `−θ` the oriented patches of a rotated image match the
//! original's, with `+θ` they do not.

use crate::feature::Feature;
use crate::laf::Laf;
use crate::nn::{orientation_angle, OriNet};
use crate::patch::on_patches;
use crate::pyramid::ScaleSpace;

/// Orients every feature by OriNet on the CPU: one orientation each, order kept, nothing dropped.
pub fn orient_by_orinet(space: &ScaleSpace, features: &[Feature], orinet: &OriNet) -> Vec<Feature> {
    let lafs: Vec<Laf> = features.iter().map(|f| f.laf).collect();
    let raw = on_patches(space, &lafs, |patches| orinet.forward_raw(patches));
    orient_from_orinet_outputs(features, &raw)
}

/// The orientation stage after the network: `raw` holds OriNet's two outputs per feature, on
/// whichever device it ran.
pub fn orient_from_orinet_outputs(features: &[Feature], raw: &[[f32; 2]]) -> Vec<Feature> {
    assert_eq!(raw.len(), features.len(), "one OriNet output per feature");
    features
        .iter()
        .zip(raw)
        .map(|(f, &r)| f.with_laf(apply_orinet_angle(&f.laf, orientation_angle(r))))
        .collect()
}

/// The authors' `A ← A·[[cos θ, sin θ], [−sin θ, cos θ]]` for OriNet's angle θ.
pub fn apply_orinet_angle(laf: &Laf, theta: f32) -> Laf {
    laf.rotated(-theta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::describe::{describe_sift, SiftVariant};
    use crate::image::GrayImage;
    use crate::patch::{sample_from_space, NET_PATCH};
    use std::f32::consts::PI;

    fn official_orinet() -> Option<OriNet> {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/weights/OriNet.pth");
        if !path.is_file() {
            eprintln!("SKIP: {} not found", path.display());
            return None;
        }
        Some(OriNet::load(&path).unwrap())
    }

    /// A smooth texture evaluated in continuous coordinates, so that rotated copies are exact.
    fn texture(x: f32, y: f32) -> f32 {
        120.0
            + 50.0 * (0.21 * x + 0.05 * y).sin() * (0.13 * y - 0.02 * x).cos()
            + 30.0 * (0.09 * x * 0.7 + 0.11 * y * 1.3 + 0.0004 * x * y).sin()
            + 40.0 * (-((x - 8.0).powi(2) + (y + 5.0).powi(2)) / 150.0).exp()
    }

    /// The texture turned by `angle` about the image centre (wbs's R, y down).
    fn rotated_image(size: usize, angle: f32) -> GrayImage {
        let c = (size / 2) as f32;
        let (s, co) = angle.sin_cos();
        GrayImage::from_fn(size, size, |x, y| {
            // Pixel p of the rotated image shows the texture at R(−angle)·(p − c).
            let (dx, dy) = (x as f32 - c, y as f32 - c);
            texture(co * dx + s * dy, -s * dx + co * dy)
        })
    }

    fn wrap(a: f32) -> f32 {
        (a + PI).rem_euclid(2.0 * PI) - PI
    }

    /// The rotation taking frame `a` to frame `b` (both similarity frames of equal scale).
    fn relative_angle(a: &Laf, b: &Laf) -> f32 {
        // b = R(φ)·a  ⇒  R(φ) = b·a⁻¹; read φ from its first column.
        let det = a.det();
        let inv = [
            [a.a[1][1] / det, -a.a[0][1] / det],
            [-a.a[1][0] / det, a.a[0][0] / det],
        ];
        let r00 = b.a[0][0] * inv[0][0] + b.a[0][1] * inv[1][0];
        let r10 = b.a[1][0] * inv[0][0] + b.a[1][1] * inv[1][0];
        r10.atan2(r00)
    }

    fn patch_rms(space_a: &ScaleSpace, a: &Laf, space_b: &ScaleSpace, b: &Laf) -> f32 {
        let mut pa = vec![0f32; NET_PATCH.pixels()];
        let mut pb = pa.clone();
        sample_from_space(space_a, a, &NET_PATCH, &mut pa);
        sample_from_space(space_b, b, &NET_PATCH, &mut pb);
        let mse = pa
            .iter()
            .zip(&pb)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f32>()
            / pa.len() as f32;
        mse.sqrt()
    }

    fn distance(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f32>()
            .sqrt()
    }

    #[test]
    fn orinet_frames_of_a_rotated_image_match_the_original_with_the_authors_sign() {
        let Some(orinet) = official_orinet() else {
            return;
        };
        let size = 161;
        let centre = (size / 2) as f32;
        let upright = Feature {
            laf: Laf::circle(centre, centre, 30.0),
            response: 100.0,
            sigma: 30.0 / crate::laf::MR_SIZE,
            octave: 0,
            level: 1,
        };
        let angle_of = |space: &ScaleSpace| {
            let mut patch = vec![0f32; NET_PATCH.pixels()];
            sample_from_space(space, &upright.laf, &NET_PATCH, &mut patch);
            orinet.angles(&patch)[0]
        };
        let space0 = ScaleSpace::build(&rotated_image(size, 0.0));
        let theta0 = angle_of(&space0);
        let oriented0 = orient_by_orinet(&space0, &[upright], &orinet)[0];
        let sift0 = describe_sift(&space0, &[oriented0], SiftVariant::RootSift);
        assert_eq!(sift0.len(), 1);
        for angle in [0.6f32, 1.1, 2.5, -2.0] {
            let space = ScaleSpace::build(&rotated_image(size, angle));
            let theta = angle_of(&space);
            let oriented = orient_by_orinet(&space, &[upright], &orinet)[0];
            // The authors' sign: the frame turns with the image (OriNet is equivariant to within
            // 2–8° here: 34° → 2.2°, 143° → 6.7°, −115° → 7.6°; the other sign is off by 67–138°).
            let error = wrap(relative_angle(&oriented0.laf, &oriented.laf) - angle);
            // The other sign would turn it the other way.
            let wrong0 = upright.laf.rotated(theta0);
            let wrong = upright.laf.rotated(theta);
            let wrong_error = wrap(relative_angle(&wrong0, &wrong) - angle);
            let (rms, wrong_rms) = (
                patch_rms(&space0, &oriented0.laf, &space, &oriented.laf),
                patch_rms(&space0, &wrong0, &space, &wrong),
            );
            let sift = describe_sift(&space, &[oriented], SiftVariant::RootSift);
            let sift_wrong =
                describe_sift(&space, &[upright.with_laf(wrong)], SiftVariant::RootSift);
            let wrong_sift0 =
                describe_sift(&space0, &[upright.with_laf(wrong0)], SiftVariant::RootSift);
            let (d, d_wrong) = (
                distance(sift0.descriptor(0), sift.descriptor(0)),
                distance(wrong_sift0.descriptor(0), sift_wrong.descriptor(0)),
            );
            eprintln!(
                "angle {:6.1}°: θ {:7.1}° (θ0 {:7.1}°), frame error {:5.1}° (other sign {:6.1}°), patch rms {:5.1} ({:5.1}), RootSIFT distance {:.3} ({:.3})",
                angle.to_degrees(),
                theta.to_degrees(),
                theta0.to_degrees(),
                error.to_degrees(),
                wrong_error.to_degrees(),
                rms,
                wrong_rms,
                d,
                d_wrong
            );
            assert!(
                error.abs() < 12f32.to_radians(),
                "angle {angle}: error {error}"
            );
            assert!(
                wrong_error.abs() > 30f32.to_radians(),
                "angle {angle}: {wrong_error}"
            );
            assert!(
                rms < 0.5 * wrong_rms,
                "angle {angle}: patch rms {rms} vs {wrong_rms}"
            );
            assert!(
                d < 0.25 && d_wrong > 0.5,
                "angle {angle}: RootSIFT {d} vs {d_wrong}"
            );
        }
    }
}
