//! `wbs detect IMG`: features of one image in the Oxford ellipse format.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;

use super::FeatureArgs;
use crate::files::check_writable;
use crate::image::{load_gray, load_rgb, LoadOptions};
use crate::matcher::Matcher;
use crate::mser::{self, MserParams, Polarity};
use crate::viz::draw_features;
use crate::{Error, Result};

#[derive(Args, Debug)]
pub struct DetectArgs {
    /// The image.
    pub image: PathBuf,
    /// Write the features to FILE instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Also orient and describe, and append each descriptor to its line (Oxford format with
    /// descriptors: the first line is the dimension instead of 1.0).
    #[arg(long)]
    pub describe: bool,
    /// Write MSER regions instead (dark and bright, OpenCV's parameters): each region's own
    /// ellipse (x − c)ᵀ(4C)⁻¹(x − c) = 1 from its pixels' covariance C, followed by its
    /// polarity (0 dark, 1 bright), level and area; the feature flags do not apply.
    #[arg(long, conflicts_with = "describe")]
    pub mser: bool,
    /// With --mser: the min_diversity parameter (0 keeps nested regions of any area, as
    /// OpenCV's grey-level MSER does; default 0.2).
    #[arg(long, requires = "mser", value_name = "F")]
    pub mser_min_diversity: Option<f32>,
    /// Draw the regions over the image to FILE; the format follows the extension: .png,
    /// .jpg/.jpeg, .bmp or .ppm.
    #[arg(long, value_name = "FILE")]
    pub viz: Option<PathBuf>,
    #[command(flatten)]
    pub features: FeatureArgs,
}

pub fn run(args: DetectArgs) -> Result<()> {
    if args.mser {
        return run_mser(&args);
    }
    let config = args.features.config()?;
    if let Some(path) = &args.out {
        check_writable(path, &[])?;
    }
    if let Some(path) = &args.viz {
        check_writable(path, super::IMAGE_OUTPUTS)?;
    }
    let matcher = Matcher::new(config.clone())?;
    let image = load_gray(&args.image, &config.load_options())?;

    let mut text = String::new();
    let (detections, features) = if args.describe {
        let extracted = matcher.extract_features(&image)?;
        let described = extracted.described;
        writeln!(text, "{}\n{}", described.dimension, described.len()).ok();
        for (i, f) in described.features.iter().enumerate() {
            let e = f.laf.to_ellipse();
            write!(text, "{} {} {} {} {}", e[0], e[1], e[2], e[3], e[4]).ok();
            for v in described.descriptor(i) {
                write!(text, " {v}").ok();
            }
            text.push('\n');
        }
        (extracted.detections, described.features)
    } else {
        let (detections, shaped) = matcher.shaped_features(&image)?;
        writeln!(text, "1.0\n{}", shaped.len()).ok();
        for f in &shaped {
            let e = f.laf.to_ellipse();
            writeln!(text, "{} {} {} {} {}", e[0], e[1], e[2], e[3], e[4]).ok();
        }
        (detections, shaped)
    };
    write_text(args.out.as_deref(), &text)?;
    eprintln!(
        "{}: {} detections, {} features",
        args.image.display(),
        detections,
        features.len()
    );
    if let Some(path) = &args.viz {
        let rgb = load_rgb(&args.image, &config.load_options())?;
        draw_features(&rgb, &features)
            .save(path)
            .map_err(|e| Error::cannot_write(path, e))?;
    }
    Ok(())
}

/// `wbs detect IMG --mser`: MSER regions in the Oxford format plus polarity, level and area.
fn run_mser(args: &DetectArgs) -> Result<()> {
    let mut params = MserParams::default();
    if let Some(d) = args.mser_min_diversity {
        if !(0.0..=1.0).contains(&d) {
            return Err(Error::invalid(format!(
                "--mser-min-diversity {d}: must be in [0, 1]"
            )));
        }
        params.min_diversity = d;
    }
    if let Some(path) = &args.out {
        check_writable(path, &[])?;
    }
    let image = load_gray(&args.image, &LoadOptions::default())?;
    let t = std::time::Instant::now();
    let regions = mser::detect(&image, &params);
    let detect_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut text = format!("1.0\n{}\n", regions.len());
    for r in &regions {
        let e = r.ellipse();
        let polarity = u8::from(r.polarity == Polarity::Bright);
        writeln!(
            text,
            "{} {} {} {} {} {polarity} {} {}",
            e[0], e[1], e[2], e[3], e[4], r.level, r.area
        )
        .ok();
    }
    write_text(args.out.as_deref(), &text)?;
    eprintln!(
        "{}: {} MSER regions in {detect_ms:.1} ms ({}×{})",
        args.image.display(),
        regions.len(),
        image.width(),
        image.height()
    );
    Ok(())
}

/// Writes `text` to `out`, or to stdout.
fn write_text(out: Option<&std::path::Path>, text: &str) -> Result<()> {
    match out {
        Some(path) => std::fs::write(path, text).map_err(|e| Error::cannot_write(path, e)),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}
