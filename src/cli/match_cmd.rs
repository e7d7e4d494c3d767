//! `wbs match A B`: match two images and report.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::{FeatureArgs, VerifyArgs};
use crate::files::check_writable;
use crate::matcher::Matcher;
use crate::pipeline::MatchReport;
use crate::viz::{draw_matches, MatchDrawing};
use crate::{Error, Result};

#[derive(Args, Debug)]
pub struct MatchArgs {
    /// First image (PNG, JPEG, PNM, BMP).
    pub image1: PathBuf,
    /// Second image.
    pub image2: PathBuf,
    /// Write the full report as JSON to FILE ("-" for stdout; the summary then goes to stderr).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw both images side by side with the inliers and their regions to FILE; the format
    /// follows the extension: .png, .jpg/.jpeg, .bmp or .ppm.
    #[arg(long, value_name = "FILE")]
    pub viz: Option<PathBuf>,
    /// Judge the result against ground truth as the evaluation protocol does: a homography file
    /// (image 1 → image 2, 9 numbers) or annotated correspondences (rows x1 y1 x2 y2).
    #[arg(long, value_name = "FILE")]
    pub ground_truth: Option<PathBuf>,
    /// Include every tentative correspondence ([x1, y1, x2, y2, ratio]) in the JSON report.
    #[arg(long)]
    pub tentatives: bool,
    /// Also draw the outlier tentatives (faint) in --viz.
    #[arg(long)]
    pub viz_outliers: bool,
    #[command(flatten)]
    pub features: FeatureArgs,
    #[command(flatten)]
    pub verify: VerifyArgs,
}

pub fn run(args: MatchArgs) -> Result<()> {
    let mut config = args.features.config()?;
    args.verify.apply(&mut config)?;
    // Output paths are checked before any work, so that a typo costs no match.
    if let Some(path) = args
        .json
        .as_deref()
        .filter(|p| *p != std::path::Path::new("-"))
    {
        check_writable(path, &[])?;
    }
    if let Some(path) = &args.viz {
        check_writable(path, super::IMAGE_OUTPUTS)?;
    }
    let truth = args
        .ground_truth
        .as_deref()
        .map(crate::protocol::load_ground_truth)
        .transpose()?;
    let start = std::time::Instant::now();
    let matcher = Matcher::new(config.clone())?;
    let mut report = matcher.match_files(&args.image1, &args.image2)?;
    report
        .timings_ms
        .insert("models".into(), matcher.loading_ms());
    report
        .timings_ms
        .insert("total".into(), start.elapsed().as_secs_f64() * 1e3);
    if let Some(truth) = &truth {
        report.judge_against(truth);
    }
    if args.tentatives {
        report.include_tentatives();
    }

    let json_to_stdout = args.json.as_deref() == Some(std::path::Path::new("-"));
    let summary = summary(&report);
    if json_to_stdout {
        eprint!("{summary}");
    } else {
        print!("{summary}");
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::invalid(format!("cannot encode the report: {e}")))?;
        if json_to_stdout {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{text}").map_err(|e| Error::io("<stdout>", e))?;
        } else {
            std::fs::write(path, text + "\n").map_err(|e| Error::cannot_write(path, e))?;
        }
    }
    if let Some(path) = &args.viz {
        let options = config.load_options();
        let a = crate::image::load_rgb(&args.image1, &options)?;
        let b = crate::image::load_rgb(&args.image2, &options)?;
        let drawing = MatchDrawing {
            outliers: args.viz_outliers,
            ..Default::default()
        };
        draw_matches(&a, &b, &report, &drawing)
            .save(path)
            .map_err(|e| Error::cannot_write(path, e))?;
    }
    Ok(())
}

/// The human summary printed by `wbs match`.
pub fn summary(report: &MatchReport) -> String {
    let s = &report.settings;
    let mut out = String::new();
    let verdict = if report.registered {
        "REGISTERED"
    } else {
        "NOT REGISTERED"
    };
    let name = |v: &dyn std::fmt::Debug| format!("{v:?}").to_lowercase();
    out += &format!(
        "{verdict}  ({} + {} shape + {} orientation + {}, {} by {}, {})\n",
        s.method.name(),
        name(&s.shape),
        name(&s.orientation),
        name(&s.descriptor),
        report.geometry,
        name(&s.ransac_method),
        report.device
    );
    if let Some(note) = &report.device_note {
        out += &format!("  device      {} ({note})\n", report.device);
    }
    out += &format!("  {}\n", report.verdict);
    for w in &report.weights {
        out += &format!("  weights     {}\n", w.describe());
    }
    out += &format!(
        "  features    {} / {}   (detections {} / {}, shaped {} / {})\n",
        report.features[0],
        report.features[1],
        report.detections[0],
        report.detections[1],
        report.shaped[0],
        report.shaped[1]
    );
    out += &format!("  tentatives  {}\n", report.tentatives);
    out += &format!("  inliers     {}\n", report.inliers);
    if let Some(m) = &report.model {
        out += &format!("  {}\n", report.geometry);
        for row in m {
            out += &format!(
                "    [{:>14.6e} {:>14.6e} {:>14.6e}]\n",
                row[0], row[1], row[2]
            );
        }
    } else {
        out += &format!("  {}    none found\n", report.geometry);
    }
    if let Some(mods) = &report.mods {
        let views = if mods.view_zoom == mods.zoom {
            String::new()
        } else {
            format!(
                " (views {:.2} / {:.2})",
                mods.view_zoom[0], mods.view_zoom[1]
            )
        };
        out += &format!(
            "  mods        schedule {}, zoom {:.2} / {:.2}{views}, {}\n",
            mods.schedule,
            mods.zoom[0],
            mods.zoom[1],
            match mods.registered_at {
                Some(step) => format!("registered at step {step}"),
                None => "no step registered".to_string(),
            }
        );
        for (i, step) in mods.steps.iter().enumerate() {
            out += &format!(
                "    step {i}: views {} / {}, features {} / {}, tentatives {}, inliers {}, {:.0} ms\n",
                step.views[0],
                step.views[1],
                step.features[0],
                step.features[1],
                step.tentatives,
                step.inliers,
                step.timings_ms.get("total").copied().unwrap_or(0.0)
            );
        }
    }
    let order = [
        "models", "load", "pyramid", "detect", "shape", "orient", "describe", "views", "match",
        "verify", "total",
    ];
    let times: Vec<String> = order
        .iter()
        .filter_map(|k| report.timings_ms.get(*k).map(|v| format!("{k} {v:.0}")))
        .collect();
    out += &format!("  time (ms)   {}\n", times.join(" | "));
    out
}
