//! HesAffNet's shape stage: one AffNet pass per detection, as in the authors' detector
//! (reference `affnet.md` §1.4 and §6).
//!
//! Each detection's circular frame (radius mrSize·σ) is sampled into a 32×32 patch, AffNet turns
//! the patch into an upright determinant-1 shape `A_affnet`, and the new frame is
//! `mrSize·σ·A_affnet`: composing with the circle is the same as replacing it, and since
//! `det A_affnet = 1` the scale is kept exactly. Orientation is assigned later. Regions more
//! elongated than 6:1 or touching the border are dropped, always: unlike Baumberg, AffNet never
//! "fails", so there is no circle to fall back on, and the paper's HesAffNet drops them.

use rayon::prelude::*;

use crate::detect::Detection;
use crate::feature::Feature;
use crate::laf::Laf;
use crate::models::on_patches;
use crate::nn::AffNet;
use crate::pyramid::ScaleSpace;

use super::{keep_if_valid, shaped_laf};

/// Shapes `detections` with AffNet; order follows the detections, dropped ones leave no trace.
pub fn shape_by_affnet(
    space: &ScaleSpace,
    detections: &[Detection],
    affnet: &AffNet,
) -> Vec<Feature> {
    let (w, h) = (space.input.width(), space.input.height());
    let circles: Vec<Laf> = detections
        .iter()
        .map(|d| Laf::from_detection(d.x, d.y, d.sigma))
        .collect();
    let shapes = on_patches(space, &circles, |patches| affnet.shapes(patches));
    detections
        .par_iter()
        .zip(shapes)
        .filter_map(|(d, shape)| {
            keep_if_valid(
                Feature::from_detection(d).with_laf(shaped_laf(d, shape)),
                w,
                h,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{detect, Threshold, DEFAULT_THRESHOLD};
    use crate::image::GrayImage;
    use crate::laf::MR_SIZE;
    use crate::nn::{random_weights, ModelKind};
    use crate::patch::{sample_from_space, NET_PATCH};
    use crate::shape::MAX_ELONGATION;

    fn textured(size: usize) -> GrayImage {
        GrayImage::from_fn(size, size, |x, y| {
            let (x, y) = (x as f32, y as f32);
            128.0
                + 50.0 * (0.11 * x + 0.05 * y).sin() * (0.07 * y - 0.03 * x).cos()
                + 40.0 * ((x - 40.0) * (y - 30.0) / 900.0).sin()
        })
    }

    fn official_affnet() -> Option<AffNet> {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/weights/AffNet.pth");
        if !path.is_file() {
            eprintln!("SKIP: {} not found", path.display());
            return None;
        }
        Some(AffNet::load(&path).unwrap())
    }

    /// Every kept frame: centre of its detection, scale mrSize·σ, upright, at most 6:1, inside the
    /// image, and its shape is what AffNet says for the detection's own patch.
    fn check_frames(affnet: &AffNet, what: &str) {
        let image = textured(240);
        let space = ScaleSpace::build(&image);
        let detections = detect(
            &space,
            &Threshold::Fixed {
                threshold: DEFAULT_THRESHOLD,
            },
        );
        assert!(
            detections.len() > 30,
            "{what}: {} detections",
            detections.len()
        );
        let features = shape_by_affnet(&space, &detections, affnet);
        assert!(!features.is_empty(), "{what}: everything was dropped");
        let mut not_circular = 0;
        let mut patch = vec![0f32; NET_PATCH.pixels()];
        for f in &features {
            let d = detections
                .iter()
                .find(|d| [d.x, d.y] == f.laf.c && d.sigma == f.sigma)
                .expect("a kept frame comes from a detection");
            let a = f.laf.a;
            let expected_scale = MR_SIZE * d.sigma;
            assert!(
                (f.laf.scale() - expected_scale).abs() < 1e-4 * expected_scale,
                "{what}: scale {} vs mrSize·σ {expected_scale}",
                f.laf.scale()
            );
            assert!(
                a[0][1] == 0.0 && a[0][0] > 0.0 && a[1][1] > 0.0,
                "{what}: not upright {a:?}"
            );
            assert!(f.laf.elongation() <= MAX_ELONGATION, "{what}: {a:?}");
            assert!(!f.laf.touches_border(240, 240), "{what}: {:?}", f.laf);
            sample_from_space(
                &space,
                &Laf::from_detection(d.x, d.y, d.sigma),
                &NET_PATCH,
                &mut patch,
            );
            let single = affnet.shapes(&patch)[0];
            let r = expected_scale;
            for (got, want) in [
                (a[0][0], single[0][0] * r),
                (a[1][0], single[1][0] * r),
                (a[1][1], single[1][1] * r),
            ] {
                assert!(
                    (got - want).abs() < 1e-3 * r,
                    "{what}: {a:?} vs {single:?}·{r}"
                );
            }
            if f.laf.elongation() > 1.05 {
                not_circular += 1;
            }
        }
        assert!(
            not_circular * 2 > features.len(),
            "{what}: only {not_circular} of {} frames changed shape",
            features.len()
        );
    }

    #[test]
    fn frames_keep_the_scale_are_upright_and_at_most_6_to_1_random_weights() {
        let affnet = AffNet::from_weights(&random_weights(ModelKind::AffNet, 5)).unwrap();
        check_frames(&affnet, "random weights");
    }

    #[test]
    fn frames_keep_the_scale_are_upright_and_at_most_6_to_1_official_weights() {
        if let Some(affnet) = official_affnet() {
            check_frames(&affnet, "official weights");
        }
    }

    #[test]
    fn elongated_and_border_regions_are_dropped() {
        // Random weights scaled up saturate the tanh outputs, so many shapes exceed 6:1.
        let mut w = random_weights(ModelKind::AffNet, 9);
        let last = w.tensors.get_mut("features.19.weight").unwrap();
        last.data.iter_mut().for_each(|v| *v *= 40.0);
        let affnet = AffNet::from_weights(&w).unwrap();
        let image = textured(240);
        let space = ScaleSpace::build(&image);
        let detections = detect(
            &space,
            &Threshold::Fixed {
                threshold: DEFAULT_THRESHOLD,
            },
        );
        let circles: Vec<Laf> = detections
            .iter()
            .map(|d| Laf::from_detection(d.x, d.y, d.sigma))
            .collect();
        let shapes = on_patches(&space, &circles, |p| affnet.shapes(p));
        let elongated = detections
            .iter()
            .zip(&shapes)
            .filter(|(d, s)| shaped_laf(d, **s).elongation() > MAX_ELONGATION)
            .count();
        assert!(elongated > 0, "the test needs elongated shapes");
        let kept = shape_by_affnet(&space, &detections, &affnet);
        assert!(kept.len() + elongated <= detections.len());
        assert!(kept.iter().all(|f| f.laf.elongation() <= MAX_ELONGATION));
    }
}
