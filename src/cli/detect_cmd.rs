//! `wbs detect IMG`: features of one image in the Oxford ellipse format.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;

use super::FeatureArgs;
use crate::files::check_writable;
use crate::image::{load_gray, load_rgb};
use crate::matcher::Matcher;
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
    /// Draw the regions over the image to FILE; the format follows the extension: .png,
    /// .jpg/.jpeg, .bmp or .ppm.
    #[arg(long, value_name = "FILE")]
    pub viz: Option<PathBuf>,
    #[command(flatten)]
    pub features: FeatureArgs,
}

pub fn run(args: DetectArgs) -> Result<()> {
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
    match &args.out {
        Some(path) => std::fs::write(path, text).map_err(|e| Error::cannot_write(path, e))?,
        None => print!("{text}"),
    }
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
