//! A [`Config`] from named settings: the names of the `wbs match` flags (with `_` or `-`) and their
//! values as text, for callers that have no flag parser, such as the Python package
//! (`wbs.Matcher(method="hesaffnet", ratio=0.85)`).
//!
//! ```
//! use wbs::settings::config_from_settings;
//!
//! let config = config_from_settings([("method", "hesaffnet"), ("inlier_threshold", "2.5")])?;
//! assert_eq!(config.method, wbs::Method::Hesaffnet);
//! assert_eq!(config.ransac.threshold_px, 2.5);
//! assert!(config_from_settings([("ratio", "high")]).is_err());
//! # Ok::<(), wbs::Error>(())
//! ```
//!
//! The settings are applied in a fixed order whatever order they come in, so that they mean what
//! the flags mean: `method` picks the preset first, `geometry` then resets the inlier threshold to
//! its protocol default, and every other setting changes one field after that. Errors are one
//! line ([`Error::Invalid`]) and name the setting.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use crate::choice::Choice;
use crate::detect::{Threshold, DEFAULT_THRESHOLD};
use crate::pipeline::{Config, Method, DEFAULT_ADAPTIVE_TARGET};
use crate::{Error, Result};

/// Every setting name [`config_from_settings`] accepts (the `wbs match` flags, `-` written `_`),
/// with what it sets.
pub const SETTINGS: &[(&str, &str)] = &[
    (
        "method",
        "preset: hesaff, adhesaff, hesaffnet, adhesaffnet, mods or modsnet",
    ),
    (
        "detector",
        "hessian (fixed threshold) or adaptive (default: the preset's)",
    ),
    ("threshold", "Hessian threshold in hesaff units (16/3)"),
    (
        "target_features",
        "adaptive detector: detections to reach (3000)",
    ),
    (
        "threshold_floor",
        "adaptive detector: lowest threshold (2/3)",
    ),
    ("shape", "affine shape (default: the preset's)"),
    ("shape_failures", "circle or drop"),
    ("orientation", "orientation method"),
    ("descriptor", "descriptor"),
    ("max_megapixels", "refuse larger images"),
    ("device", "auto, cpu or cuda"),
    ("affnet_weights", "AffNet weights file"),
    ("orinet_weights", "OriNet weights file"),
    ("hardnet_weights", "HardNet weights file"),
    (
        "affnet_turns",
        "AffNet shape averaged over this many turns (1..=8)",
    ),
    ("geometry", "homography or fundamental"),
    ("ransac", "lo-ransac or arrsac"),
    (
        "inlier_threshold",
        "inlier threshold in px (3 for H, 1.5 for F)",
    ),
    ("homography_error", "forward, symmetric-max or sampson"),
    ("confidence", "RANSAC confidence (0.999)"),
    ("max_iterations", "RANSAC iteration cap (10000)"),
    (
        "min_inliers",
        "registered with at least this many inliers (15)",
    ),
    ("ratio", "second-nearest-neighbour ratio (0.8)"),
    ("duplicate_radius", "duplicate filter radius in px (2)"),
    ("seed", "seed of every random choice (0)"),
    (
        "schedule",
        "MODS schedule of mods/modsnet: wbs, cviu, wxbs or a JSON file (wbs)",
    ),
    (
        "laf_check",
        "true: the LAF check after verification (on for mods/modsnet through their schedule)",
    ),
];

/// The name in [`SETTINGS`] (the `wbs match` flag with `_` for `-`) of a [`Config`] field that
/// an [`Error::Setting`] names (`ransac.confidence` → `confidence`); other names are returned as
/// they are. The CLI writes it as a flag, the Python package as a keyword.
pub fn setting_name(config_field: &str) -> &str {
    match config_field {
        "ransac.threshold_px" => "inlier_threshold",
        "ransac.confidence" => "confidence",
        "ransac.max_iterations" => "max_iterations",
        "threshold.target" => "target_features",
        "threshold.floor" => "threshold_floor",
        other => other,
    }
}

/// The settings of `Config::preset(method)` with each named setting applied (see the
/// [module documentation](self)). Unknown or repeated names and values that do not parse are
/// errors; range checks are [`Config::validate`]'s (run by [`crate::Matcher::new`]).
pub fn config_from_settings<'a, I>(settings: I) -> Result<Config>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut named = Named::new();
    for (name, value) in settings {
        let key = canonical(name)?;
        if named.insert(key, value).is_some() {
            return Err(Error::invalid(format!("setting {key} is given twice")));
        }
    }
    let method: Method = parse_choice("method", named.get("method").unwrap_or(&"hesaff"))?;
    let mut config = Config::preset(method);
    if let Some(v) = named.get("geometry") {
        config.set_geometry(parse_choice("geometry", v)?);
    }
    config.threshold = threshold(&named, method.is_adaptive())?;
    for (&key, &value) in &named {
        apply(&mut config, key, value)?;
    }
    Ok(config)
}

type Named<'a> = BTreeMap<&'static str, &'a str>;

/// The setting's name as [`SETTINGS`] writes it.
fn canonical(name: &str) -> Result<&'static str> {
    let wanted = name.replace('-', "_");
    SETTINGS
        .iter()
        .map(|(k, _)| *k)
        .find(|k| *k == wanted)
        .ok_or_else(|| {
            let names: Vec<&str> = SETTINGS.iter().map(|(k, _)| *k).collect();
            Error::invalid(format!(
                "unknown setting '{name}': expected one of {}",
                names.join(", ")
            ))
        })
}

/// The detector threshold from `detector`, `threshold`, `target_features` and `threshold_floor`,
/// with the flags' defaults.
fn threshold(named: &Named, preset_adaptive: bool) -> Result<Threshold> {
    let get = |key: &str| named.get(key).copied();
    let adaptive = match get("detector") {
        None => preset_adaptive,
        Some("adaptive") => true,
        Some("hessian") => false,
        Some(other) => {
            return Err(Error::invalid(format!(
                "setting detector: unknown value '{other}': expected hessian or adaptive"
            )))
        }
    };
    let threshold = number("threshold", get("threshold"), DEFAULT_THRESHOLD)?;
    Ok(if adaptive {
        Threshold::Adaptive {
            threshold,
            target: number(
                "target_features",
                get("target_features"),
                DEFAULT_ADAPTIVE_TARGET,
            )?,
            floor: number(
                "threshold_floor",
                get("threshold_floor"),
                DEFAULT_THRESHOLD / 8.0,
            )?,
        }
    } else {
        Threshold::Fixed { threshold }
    })
}

/// Sets the one field of `key` (the ones [`config_from_settings`] handles first are skipped).
fn apply(config: &mut Config, key: &str, value: &str) -> Result<()> {
    let path = || Some(PathBuf::from(value));
    match key {
        "method" | "geometry" | "detector" | "threshold" | "target_features"
        | "threshold_floor" => {}
        "shape" => config.shape = parse_choice(key, value)?,
        "shape_failures" => config.shape_failures = parse_choice(key, value)?,
        "orientation" => config.orientation = parse_choice(key, value)?,
        "descriptor" => config.descriptor = parse_choice(key, value)?,
        "max_megapixels" => config.max_megapixels = parse(key, value)?,
        "device" => config.device = parse_choice(key, value)?,
        "affnet_weights" => config.weights.affnet = path(),
        "orinet_weights" => config.weights.orinet = path(),
        "hardnet_weights" => config.weights.hardnet = path(),
        "affnet_turns" => {
            let turns: usize = parse(key, value)?;
            if !(1..=8).contains(&turns) {
                return Err(Error::invalid(format!(
                    "setting affnet_turns must be in 1..=8, got {turns}"
                )));
            }
            config.affnet_turns = turns;
        }
        "ransac" => config.ransac_method = parse_choice(key, value)?,
        "inlier_threshold" => config.ransac.threshold_px = parse(key, value)?,
        "homography_error" => config.ransac.homography_error = parse_choice(key, value)?,
        "confidence" => config.ransac.confidence = parse(key, value)?,
        "max_iterations" => config.ransac.max_iterations = parse(key, value)?,
        "min_inliers" => config.min_inliers = parse(key, value)?,
        "ratio" => config.ratio = parse(key, value)?,
        "duplicate_radius" => config.duplicate_radius = parse(key, value)?,
        "seed" => config.ransac.seed = parse(key, value)?,
        // A schedule with a method that runs none is `Config::validate`'s to refuse.
        "schedule" => config.schedule = Some(crate::schedule::Schedule::load(value)?),
        "laf_check" => {
            let on = match value.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => {
                    return Err(Error::invalid(format!(
                        "setting laf_check: expected true or false, got '{value}'"
                    )))
                }
            };
            config.laf_check = on.then(crate::geometry::LafCheck::default);
        }
        _ => unreachable!("every name of SETTINGS is handled"),
    }
    Ok(())
}

fn parse_choice<T: Choice>(key: &str, value: &str) -> Result<T> {
    T::from_name(value).ok_or_else(|| {
        Error::invalid(format!(
            "setting {key}: unknown value '{value}': expected {}",
            T::names()
        ))
    })
}

fn parse<T: FromStr>(key: &str, value: &str) -> Result<T> {
    value.trim().parse().map_err(|_| {
        let what = std::any::type_name::<T>();
        let kind = if what.starts_with('f') {
            "a number"
        } else {
            "a whole number ≥ 0"
        };
        Error::invalid(format!("setting {key}: expected {kind}, got '{value}'"))
    })
}

fn number<T: FromStr>(key: &str, value: Option<&str>, default: T) -> Result<T> {
    value.map_or(Ok(default), |v| parse(key, v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::describe::DescriptorKind;
    use crate::geometry::{Geometry, HomographyError, RansacMethod};
    use crate::shape::ShapeMethod;

    #[test]
    fn no_settings_is_the_hesaff_preset() {
        let config = config_from_settings([]).unwrap();
        let preset = Config::preset(Method::Hesaff);
        assert_eq!(
            serde_json::to_value(&config).unwrap(),
            serde_json::to_value(&preset).unwrap()
        );
    }

    #[test]
    fn every_setting_reaches_its_field() {
        let config = config_from_settings([
            ("ratio", "0.85"),
            ("inlier-threshold", "2"), // given before geometry: geometry must not reset it
            ("geometry", "fundamental"),
            ("method", "adhesaffnet"),
            ("descriptor", "hardnet"),
            ("homography_error", "sampson"),
            ("ransac", "arrsac"),
            ("max_iterations", "500"),
            ("min_inliers", "20"),
            ("seed", "7"),
            ("target_features", "1000"),
            ("shape", "baumberg"),
            ("affnet_turns", "4"),
            ("hardnet_weights", "/x/h.safetensors"),
            ("duplicate_radius", "0"),
        ])
        .unwrap();
        assert_eq!(config.method, Method::Adhesaffnet);
        assert_eq!(config.ratio, 0.85);
        assert_eq!(config.ransac.kind, Geometry::Fundamental);
        assert_eq!(config.ransac.threshold_px, 2.0);
        assert_eq!(config.descriptor, DescriptorKind::Hardnet);
        assert_eq!(config.ransac.homography_error, HomographyError::Sampson);
        assert_eq!(config.ransac_method, RansacMethod::Arrsac);
        assert_eq!(config.ransac.max_iterations, 500);
        assert_eq!(config.min_inliers, 20);
        assert_eq!(config.ransac.seed, 7);
        assert_eq!(config.shape, ShapeMethod::Baumberg);
        assert_eq!(config.affnet_turns, 4);
        assert_eq!(config.duplicate_radius, 0.0);
        assert_eq!(
            config.weights.hardnet.as_deref(),
            Some(std::path::Path::new("/x/h.safetensors"))
        );
        assert_eq!(
            config.threshold,
            Threshold::Adaptive {
                threshold: DEFAULT_THRESHOLD,
                target: 1000,
                floor: DEFAULT_THRESHOLD / 8.0
            }
        );
        let mods = config_from_settings([("schedule", "cviu"), ("method", "mods")]).unwrap();
        mods.validate().unwrap();
        // A schedule is parsed whatever the method; `Config::validate` refuses it without one.
        let e = config_from_settings([("schedule", "cviu")])
            .unwrap()
            .validate();
        assert_eq!(
            e.unwrap_err().to_string(),
            "a schedule needs method mods or modsnet, not hesaff"
        );
        assert_eq!(
            mods.schedule.as_ref().map(|s| s.name.as_str()),
            Some("cviu")
        );
        let checked = config_from_settings([("laf_check", "True")]).unwrap();
        assert_eq!(
            checked.laf_check,
            Some(crate::geometry::LafCheck::default())
        );
        assert_eq!(
            config_from_settings([("laf_check", "false")])
                .unwrap()
                .laf_check,
            None
        );
        // geometry alone takes the protocol's F threshold
        let f = config_from_settings([("geometry", "fundamental")]).unwrap();
        assert_eq!(f.ransac.threshold_px, 1.5);
        let fixed = config_from_settings([("method", "adhesaff"), ("detector", "hessian")]);
        assert!(matches!(
            fixed.unwrap().threshold,
            Threshold::Fixed { threshold } if threshold == DEFAULT_THRESHOLD
        ));
    }

    #[test]
    fn bad_names_and_values_are_one_line_errors_naming_the_setting() {
        for (settings, expected) in [
            (vec![("ratios", "0.8")], "unknown setting 'ratios'"),
            (
                vec![("ratio", "x")],
                "setting ratio: expected a number, got 'x'",
            ),
            (
                vec![("method", "sift")],
                "setting method: unknown value 'sift'",
            ),
            (
                vec![("min_inliers", "-1")],
                "setting min_inliers: expected a whole",
            ),
            (
                vec![("detector", "fast")],
                "setting detector: unknown value 'fast'",
            ),
            (vec![("affnet_turns", "9")], "affnet_turns must be in 1..=8"),
            (vec![("method", "mods"), ("schedule", "nope")], "nope"),
            (
                vec![("laf_check", "maybe")],
                "setting laf_check: expected true or false, got 'maybe'",
            ),
            (
                vec![("seed", "1"), ("seed", "2")],
                "setting seed is given twice",
            ),
        ] {
            let e = config_from_settings(settings).unwrap_err().to_string();
            assert!(e.contains(expected), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn every_listed_setting_is_accepted() {
        for (name, _) in SETTINGS {
            let value = match *name {
                "method" => "hesaff",
                "detector" => "adaptive",
                "shape" => "baumberg",
                "shape_failures" => "drop",
                "orientation" => "histogram",
                "descriptor" => "rootsift",
                "device" => "cpu",
                "geometry" => "homography",
                "ransac" => "lo-ransac",
                "homography_error" => "forward",
                "affnet_weights" | "orinet_weights" | "hardnet_weights" => "w.safetensors",
                "ratio" | "confidence" => "0.5",
                "schedule" => "wxbs",
                "laf_check" => "true",
                _ => "3",
            };
            config_from_settings([(*name, value)]).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
