//! MODS schedules (`--method mods`, `--schedule FILE`): matching on demand as data.
//!
//! A [`Schedule`] is a list of steps of growing cost. Each step names a detector, the affine
//! views to synthesise (tilts, and the rotation step Φ that sets how many rotations per tilt), and
//! the descriptors with their ratio thresholds. The pair is matched after each step with the
//! regions of every view made so far pooled per descriptor, and the schedule stops at the first
//! step that registers it. The recipe and its constants are those of MODS (Mishkin, Matas,
//! Perdoch, CVIU 2015); `docs/mods.md` documents the file format and the built-in schedules.
//!
//! The file format is JSON:
//!
//! ```json
//! {
//!   "name": "mine",
//!   "fginn": { "neighbours": 50, "contradiction_px": 30 },
//!   "duplicate_radius": 2,
//!   "laf_check": { "homography_coef": 12, "fundamental_coef": 2, "min_survivors": 8, "frame_factor": 2 },
//!   "upsample_below": 500,
//!   "steps": [
//!     { "detector": "hessian", "tilts": [1], "descriptors": [{ "descriptor": "rootsift", "ratio": 0.8 }] },
//!     { "detector": "hessian", "tilts": [1, 2, 4, 6, 8], "rotation_step_deg": 360, "init_sigma": 1.6,
//!       "descriptors": [{ "descriptor": "rootsift", "ratio": 0.8 }] }
//!   ]
//! }
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::describe::DescriptorKind;
use crate::geometry::LafCheck;
use crate::shape::ShapeMethod;
use crate::{Error, Result};

choices! {
    /// The detector of a step.
    pub enum StepDetector {
        /// Hessian-Affine: the method's detector and shape (Baumberg, or AffNet for `modsnet`).
        Hessian = "hessian",
        /// MSER, dark and bright regions, each framed by its second moments (no shape stage).
        Mser = "mser",
    }
}

/// One descriptor of a step and its ratio threshold.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepDescriptor {
    /// The descriptor.
    pub descriptor: DescriptorKind,
    /// Its ratio threshold (2-NN for single views, FGINN across views).
    pub ratio: f32,
}

/// One step of a schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The detector.
    pub detector: StepDetector,
    /// Tilts t ≥ 1 of the synthesised views (1: the image itself).
    pub tilts: Vec<f32>,
    /// Scales in (0, 1] of the synthesised views (1: full size); every tilt is made at every
    /// scale, the image blurred against aliasing before it is shrunk.
    #[serde(default = "unit_scales")]
    pub scales: Vec<f32>,
    /// Φ in degrees: a tilt t gets `floor(180·t/Φ)` rotations `r·180°/n` (360: the reference's
    /// coarsest, 60 its finest).
    #[serde(default = "full_turn")]
    pub rotation_step_deg: f32,
    /// The anti-aliasing blur before shrinking by 1/t: σ_x = init_sigma·t/2, σ_y = init_sigma/2
    /// (pixels of the rotated image).
    #[serde(default = "default_init_sigma")]
    pub init_sigma: f32,
    /// The descriptors, each matched in its own pool.
    pub descriptors: Vec<StepDescriptor>,
    /// The affine shape of this step's Hessian regions: `none`, `baumberg` or `affnet` (absent:
    /// the method's, Baumberg for `mods`, AffNet for `modsnet`). MSER regions have their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<ShapeMethod>,
}

fn full_turn() -> f32 {
    360.0
}

fn unit_scales() -> Vec<f32> {
    vec![1.0]
}

fn unit() -> f32 {
    1.0
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

/// The `wbs` schedule's `min_regions`: a low-contrast image (a thermal frame) or view keeps at
/// least this many Hessian regions.
pub const WBS_MIN_REGIONS: usize = 1000;

/// The `wbs` schedule's `view_max_side`: views of larger images are made from a copy this long.
pub const WBS_VIEW_MAX_SIDE: usize = 1000;

/// The smallest `view_max_side` a schedule may set (px).
pub const VIEW_MAX_SIDE_MIN: usize = 100;

/// The anti-aliasing constant of the built-in schedules (ASIFT's 0.8·t in x).
pub const DEFAULT_INIT_SIGMA: f32 = 1.6;

fn default_init_sigma() -> f32 {
    DEFAULT_INIT_SIGMA
}

/// FGINN's settings (reference §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FginnSettings {
    /// Neighbours searched per query (50).
    pub neighbours: usize,
    /// A neighbour further than this from the nearest one in image 2 is "geometrically
    /// inconsistent" (30 px CVIU, 10 px WxBS).
    pub contradiction_px: f32,
}

/// A synthesised view: a rotation, then a tilt, at a scale.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ViewSpec {
    /// Tilt t ≥ 1: the rotated image is shrunk by 1/t along x.
    pub tilt: f32,
    /// Rotation in degrees before the tilt.
    pub phi_deg: f32,
    /// Scale in (0, 1]: the view is shrunk by it in both directions (1: full size).
    #[serde(default = "unit")]
    pub scale: f32,
}

/// A MODS schedule; see the [module documentation](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// A name for reports.
    pub name: String,
    /// FGINN's settings, used whenever a pool holds more than one view.
    pub fginn: FginnSettings,
    /// The duplicate filter's radius in px at both ends (2 CVIU, 3 WxBS).
    pub duplicate_radius: f32,
    /// The LAF check after verification (None: off).
    #[serde(default)]
    pub laf_check: Option<LafCheck>,
    /// Images whose longer side is shorter than this are upsampled to it before detection
    /// (0: never).
    #[serde(default)]
    pub upsample_below: usize,
    /// Hessian images and views with fewer regions than this above the method's fixed threshold
    /// also get the strongest weaker ones, down to 1/8 of the threshold, until they have this
    /// many (the adaptive threshold, AdHess; MODS's `NotLessThanRegions`); absent: the method's
    /// threshold as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_regions: Option<usize>,
    /// Synthesised views are made from the image shrunk so that its longer side is at most this
    /// (0: never); the image itself (tilt 1 at scale 1) keeps its size. Bounds the cost of the
    /// views steps on large photos: their regions, and FGINN's search over them, grow with the
    /// pixels (the search with their square).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub view_max_side: usize,
    /// The steps, cheapest first.
    pub steps: Vec<Step>,
}

impl ViewSpec {
    /// The image itself: tilt 1 at scale 1 (no rotation, no shrinking).
    pub fn is_image_itself(&self) -> bool {
        self.tilt <= 1.0 && self.scale >= 1.0 && self.phi_deg == 0.0
    }
}

impl Step {
    /// The views of this step, each once, for every scale: tilt 1 unrotated, tilt t with
    /// `floor(180·t/Φ)` rotations (at least one).
    pub fn views(&self) -> Vec<ViewSpec> {
        let mut out: Vec<ViewSpec> = Vec::new();
        for &scale in &self.scales {
            for &tilt in &self.tilts {
                let n = if tilt <= 1.0 {
                    1
                } else {
                    ((180.0 * tilt / self.rotation_step_deg).floor() as usize).max(1)
                };
                for r in 0..n {
                    let view = ViewSpec {
                        tilt,
                        phi_deg: r as f32 * 180.0 / n as f32,
                        scale,
                    };
                    if !out.contains(&view) {
                        out.push(view);
                    }
                }
            }
        }
        out
    }
}

impl Schedule {
    /// A built-in schedule by name: `wbs`, `cviu` or `wxbs`.
    pub fn builtin(name: &str) -> Option<Schedule> {
        match name {
            "wbs" => Some(Schedule::wbs()),
            "cviu" => Some(Schedule::cviu()),
            "wxbs" => Some(Schedule::wxbs()),
            _ => None,
        }
    }

    /// The names of the built-in schedules, the default first.
    pub const BUILTIN: [&'static str; 3] = ["wbs", "cviu", "wxbs"];

    /// wbs's default: [`Schedule::cviu`] with HalfRootSIFT (MODS's WxBS descriptor for contrast
    /// reversal: thermal/visible, day/night) added where it costs least. Step 0 is `cviu`'s (the
    /// image, RootSIFT), so pairs it registers cost what `hesaff` costs; step 1 adds HalfRootSIFT
    /// on the image alone; step 2 is `cviu`'s first views step (RootSIFT); the two later steps
    /// describe their views with both. Low-contrast images and views keep at least
    /// [`WBS_MIN_REGIONS`] regions; images longer than [`WBS_VIEW_MAX_SIDE`] have their views made
    /// from a copy that long. `docs/mods.md` has the measurements behind these choices.
    pub fn wbs() -> Schedule {
        let r = vec![descriptor(DescriptorKind::Rootsift, 0.8)];
        let both = vec![
            descriptor(DescriptorKind::Rootsift, 0.8),
            descriptor(DescriptorKind::Halfrootsift, 0.8),
        ];
        let tilts = vec![1.0, 2.0, 4.0, 6.0, 8.0];
        Schedule {
            name: "wbs".into(),
            min_regions: Some(WBS_MIN_REGIONS),
            view_max_side: WBS_VIEW_MAX_SIDE,
            steps: vec![
                hessian_step(vec![1.0], 360.0, r.clone()),
                hessian_step(vec![1.0], 360.0, both.clone()),
                hessian_step(tilts.clone(), 360.0, r),
                hessian_step(tilts.clone(), 120.0, both.clone()),
                hessian_step(tilts, 60.0, both),
            ],
            ..Schedule::cviu()
        }
    }

    /// The Hessian steps of MODS's CVIU schedule (reference §4.1, steps 4–6), preceded by one
    /// step on the image alone (the `hesaff` pipeline): FGINN with 30 px, duplicates within
    /// 2 px, the LAF check with the CVIU constants.
    pub fn cviu() -> Schedule {
        let rootsift = |ratio| vec![descriptor(DescriptorKind::Rootsift, ratio)];
        Schedule {
            name: "cviu".into(),
            fginn: FginnSettings {
                neighbours: 50,
                contradiction_px: 30.0,
            },
            duplicate_radius: 2.0,
            laf_check: Some(LafCheck::default()),
            upsample_below: 500,
            min_regions: None,
            view_max_side: 0,
            steps: hessian_steps(rootsift(0.8), rootsift(0.8)),
        }
    }

    /// The WxBS variant: RootSIFT and HalfRootSIFT in every step (0.8; 0.9 in the last step),
    /// FGINN with 10 px, duplicates within 3 px, the LAF check with the WxBS constants.
    pub fn wxbs() -> Schedule {
        let both = |ratio| {
            vec![
                descriptor(DescriptorKind::Rootsift, ratio),
                descriptor(DescriptorKind::Halfrootsift, ratio),
            ]
        };
        Schedule {
            name: "wxbs".into(),
            fginn: FginnSettings {
                neighbours: 50,
                contradiction_px: 10.0,
            },
            duplicate_radius: 3.0,
            laf_check: Some(LafCheck {
                homography_coef: 13.0,
                fundamental_coef: 3.0,
                ..LafCheck::default()
            }),
            upsample_below: 500,
            min_regions: None,
            view_max_side: 0,
            steps: hessian_steps(both(0.8), both(0.9)),
        }
    }

    /// Parses a schedule from JSON and checks it.
    pub fn from_json(text: &str) -> Result<Schedule> {
        let schedule: Schedule =
            serde_json::from_str(text).map_err(|e| Error::invalid(format!("bad schedule: {e}")))?;
        schedule.validate()?;
        Ok(schedule)
    }

    /// A built-in schedule's name, or a JSON schedule file.
    pub fn load(spec: &str) -> Result<Schedule> {
        if let Some(s) = Schedule::builtin(spec) {
            return Ok(s);
        }
        let path = Path::new(spec);
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid(format!(
                "--schedule {spec}: neither a built-in schedule ({}) nor a readable file ({e})",
                Schedule::BUILTIN.join(", ")
            ))
        })?;
        Schedule::from_json(&text).map_err(|e| Error::invalid(format!("{}: {e}", path.display())))
    }

    /// Rejects schedules that cannot run.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::invalid(format!("schedule {}: {what}", self.name)));
        if self.steps.is_empty() {
            return bad("no steps".into());
        }
        if self.fginn.neighbours < 2 || self.fginn.contradiction_px.is_nan() {
            return bad("fginn needs at least 2 neighbours and a contradiction distance".into());
        }
        if self.min_regions == Some(0) {
            return bad("min_regions must be at least 1".into());
        }
        if self.view_max_side != 0 && self.view_max_side < VIEW_MAX_SIDE_MIN {
            return bad(format!(
                "view_max_side must be 0 (never) or at least {VIEW_MAX_SIDE_MIN}"
            ));
        }
        if !(self.duplicate_radius >= 0.0) {
            return bad("duplicate_radius must be ≥ 0".into());
        }
        for (i, step) in self.steps.iter().enumerate() {
            if step.tilts.is_empty() || step.tilts.iter().any(|t| !(*t >= 1.0 && *t <= 32.0)) {
                return bad(format!("step {i}: tilts must be in [1, 32]"));
            }
            if step.scales.is_empty() || step.scales.iter().any(|s| !(*s >= 0.05 && *s <= 1.0)) {
                return bad(format!("step {i}: scales must be in [0.05, 1]"));
            }
            if !(step.rotation_step_deg >= 1.0 && step.rotation_step_deg <= 360.0) {
                return bad(format!("step {i}: rotation_step_deg must be in [1, 360]"));
            }
            if !(step.init_sigma >= 0.0 && step.init_sigma <= 10.0) {
                return bad(format!("step {i}: init_sigma must be in [0, 10]"));
            }
            if step.descriptors.is_empty() {
                return bad(format!("step {i}: no descriptors"));
            }
            if step
                .descriptors
                .iter()
                .any(|d| !(d.ratio > 0.0 && d.ratio <= 1.0))
            {
                return bad(format!("step {i}: ratios must be in (0, 1]"));
            }
        }
        Ok(())
    }
}

/// One descriptor of a step.
fn descriptor(descriptor: DescriptorKind, ratio: f32) -> StepDescriptor {
    StepDescriptor { descriptor, ratio }
}

/// A Hessian step with the built-in schedules' anti-aliasing and the method's shape.
fn hessian_step(tilts: Vec<f32>, phi: f32, descriptors: Vec<StepDescriptor>) -> Step {
    Step {
        detector: StepDetector::Hessian,
        tilts,
        scales: unit_scales(),
        rotation_step_deg: phi,
        init_sigma: DEFAULT_INIT_SIGMA,
        descriptors,
        shape: None,
    }
}

/// Step 0 on the image alone, then MODS's Hessian steps: tilts {1, 2, 4, 6, 8} with Φ = 360°,
/// 120°, 60° (1 + 10, 31 and 61 views).
fn hessian_steps(descriptors: Vec<StepDescriptor>, last: Vec<StepDescriptor>) -> Vec<Step> {
    let tilts = vec![1.0, 2.0, 4.0, 6.0, 8.0];
    vec![
        hessian_step(vec![1.0], 360.0, descriptors.clone()),
        hessian_step(tilts.clone(), 360.0, descriptors.clone()),
        hessian_step(tilts.clone(), 120.0, descriptors),
        hessian_step(tilts, 60.0, last),
    ]
}

/// What each step of a MODS run did, for the report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// Views pooled per image (all views made so far, per descriptor pool summed).
    pub views: [usize; 2],
    /// Views added to the pool in this step per image (the views of earlier steps are reused).
    pub new_views: [usize; 2],
    /// Of `new_views`, those taken from the image's [`ViewStore`](crate::mods::ViewStore),
    /// where an earlier pair made them (`wbs eval`); absent when none.
    #[serde(default, skip_serializing_if = "is_none_reused")]
    pub reused_views: [usize; 2],
    /// Features pooled per image.
    pub features: [usize; 2],
    /// Tentatives after the ratio test (FGINN or 2-NN) and the duplicate filter.
    pub tentatives: usize,
    /// Inliers after verification and the LAF check.
    pub inliers: usize,
    /// Whether this step registered the pair.
    pub registered: bool,
    /// Milliseconds: "views" (synthesis and feature stages), "match", "verify", "total".
    pub timings_ms: std::collections::BTreeMap<String, f64>,
}

fn is_none_reused(reused: &[usize; 2]) -> bool {
    *reused == [0, 0]
}

/// The MODS part of a report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModsReport {
    /// The schedule's name.
    pub schedule: String,
    /// The step that registered the pair (0-based), or None.
    pub registered_at: Option<usize>,
    /// The zoom applied to each image before detection (1: none; small images are upsampled).
    pub zoom: [f32; 2],
    /// The zoom of each image's synthesised views: `zoom`, or less where the schedule's
    /// `view_max_side` shrinks a large image for them.
    pub view_zoom: [f32; 2],
    /// One entry per step run.
    pub steps: Vec<StepReport>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_follow_the_reference_counts() {
        let s = Schedule::cviu();
        let counts: Vec<usize> = s.steps.iter().map(|st| st.views().len()).collect();
        // 1; 1 + (1 + 2 + 3 + 4); 1 + (3 + 6 + 9 + 12); 1 + (6 + 12 + 18 + 24).
        assert_eq!(counts, vec![1, 11, 31, 61]);
        let v = s.steps[2].views();
        assert!(v.contains(&ViewSpec {
            tilt: 2.0,
            phi_deg: 60.0,
            scale: 1.0
        }));
    }

    #[test]
    fn the_default_is_cviu_with_halfrootsift_after_step_0() {
        let (w, c) = (Schedule::wbs(), Schedule::cviu());
        assert_eq!(Schedule::builtin(Schedule::BUILTIN[0]), Some(w.clone()));
        let counts: Vec<usize> = w.steps.iter().map(|st| st.views().len()).collect();
        assert_eq!(counts, vec![1, 1, 11, 31, 61]);
        let half = |st: &Step| {
            st.descriptors
                .iter()
                .any(|d| d.descriptor == DescriptorKind::Halfrootsift)
        };
        let halves: Vec<bool> = w.steps.iter().map(half).collect();
        assert_eq!(halves, vec![false, true, false, true, true]);
        // Step 0 and the views of step 2 are cviu's steps 0 and 1; the constants are cviu's.
        assert_eq!((&w.steps[0], &w.steps[2]), (&c.steps[0], &c.steps[1]));
        assert_eq!(
            (w.fginn, w.duplicate_radius, w.laf_check),
            (c.fginn, c.duplicate_radius, c.laf_check)
        );
    }

    #[test]
    fn builtins_round_trip_through_json_and_bad_files_are_refused() {
        for name in Schedule::BUILTIN {
            let s = Schedule::builtin(name).unwrap();
            let text = serde_json::to_string_pretty(&s).unwrap();
            assert_eq!(Schedule::from_json(&text).unwrap(), s);
        }
        let mut s = Schedule::cviu();
        s.steps[1].tilts = vec![0.5];
        let text = serde_json::to_string(&s).unwrap();
        let e = Schedule::from_json(&text).unwrap_err().to_string();
        assert!(e.contains("tilts"), "{e}");
        assert!(Schedule::from_json("{").is_err());
        let minimal = r#"{"name":"m","fginn":{"neighbours":50,"contradiction_px":10},
            "duplicate_radius":2,"steps":[{"detector":"hessian","tilts":[1,4],
            "descriptors":[{"descriptor":"rootsift","ratio":0.8}]}]}"#;
        let m = Schedule::from_json(minimal).unwrap();
        assert_eq!(m.steps[0].views().len(), 3);
        assert_eq!(m.steps[0].scales, vec![1.0]);
        assert_eq!(m.laf_check, None);
        assert_eq!((m.steps[0].shape, m.min_regions), (None, None));
        let zero = minimal.replace(
            r#""duplicate_radius":2,"#,
            r#""duplicate_radius":2,"min_regions":0,"#,
        );
        let e = Schedule::from_json(&zero).unwrap_err().to_string();
        assert!(e.contains("min_regions must be at least 1"), "{e}");
        assert_eq!(m.view_max_side, 0);
        let side = |v: &str| {
            minimal.replace(
                r#""duplicate_radius":2,"#,
                &format!(r#""duplicate_radius":2,"view_max_side":{v},"#),
            )
        };
        assert_eq!(
            Schedule::from_json(&side("1200")).unwrap().view_max_side,
            1200
        );
        let e = Schedule::from_json(&side("40")).unwrap_err().to_string();
        assert!(
            e.contains("view_max_side must be 0 (never) or at least 100"),
            "{e}"
        );
        assert!(Schedule::from_json(&side("-5")).is_err());
        let none = minimal.replace(r#""tilts":[1,4],"#, r#""tilts":[1,4],"shape":"none","#);
        let none = Schedule::from_json(&none).unwrap();
        assert_eq!(none.steps[0].shape, Some(ShapeMethod::None));
        let text = serde_json::to_string(&none).unwrap();
        assert!(text.contains(r#""shape":"none""#), "{text}");
        assert!(!serde_json::to_string(&m).unwrap().contains("shape"));
        let bad_shape = minimal.replace(r#""tilts":[1,4],"#, r#""tilts":[1,4],"shape":"round","#);
        assert!(Schedule::from_json(&bad_shape).is_err());
        let bad_scale = minimal.replace(r#""tilts":[1,4],"#, r#""tilts":[1,4],"scales":[2],"#);
        let e = Schedule::from_json(&bad_scale).unwrap_err().to_string();
        assert!(e.contains("scales must be in [0.05, 1]"), "{e}");
    }

    #[test]
    fn mser_steps_make_every_tilt_at_every_scale() {
        // MODS's step 3: tilts {1, 3, 6, 9} × scales {1, 1/4, 1/8}, Φ = 360°:
        // (1 + 1 + 3 + 4) views per scale.
        let text = r#"{"name":"m","fginn":{"neighbours":50,"contradiction_px":10},
            "duplicate_radius":2,"steps":[{"detector":"mser","tilts":[1,3,6,9],
            "scales":[1,0.25,0.125],"descriptors":[{"descriptor":"rootsift","ratio":0.8}]}]}"#;
        let s = Schedule::from_json(text).unwrap();
        assert_eq!(s.steps[0].detector, StepDetector::Mser);
        let views = s.steps[0].views();
        assert_eq!(views.len(), 27);
        assert_eq!(views.iter().filter(|v| v.scale == 0.125).count(), 9);
        assert!(views.contains(&ViewSpec {
            tilt: 9.0,
            phi_deg: 135.0,
            scale: 0.25
        }));
    }
}
