//! `wbs synth IMG --out-dir DIR`: a wide-baseline pair with a known homography.

use std::path::PathBuf;

use clap::Args;

use crate::image::{load_rgb, LoadOptions};
use crate::synth::{synthesize, write_homography, SynthParams};
use crate::{Error, Result};

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// The photo to start from.
    pub image: PathBuf,
    /// Folder for img1.png, img2.png, H1to2p (image 1 → image 2) and params.json.
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
    /// Seed of the random viewpoint and illumination.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Largest random tilt (1 = no tilt; 3 ≈ 70° out of plane).
    #[arg(long, default_value_t = 3.0)]
    pub max_tilt: f64,
    /// Fix the tilt instead of drawing it.
    #[arg(long)]
    pub tilt: Option<f64>,
    /// Fix the in-plane rotation (degrees).
    #[arg(long)]
    pub rotation: Option<f64>,
    /// Fix the zoom.
    #[arg(long)]
    pub scale: Option<f64>,
    /// Fix the gamma of image 2 (1 = no illumination change).
    #[arg(long)]
    pub gamma: Option<f64>,
    /// Standard deviation of the noise added to image 2, gray levels.
    #[arg(long)]
    pub noise: Option<f64>,
    /// Refuse images larger than this many megapixels.
    #[arg(long, default_value_t = crate::image::DEFAULT_MAX_MEGAPIXELS)]
    pub max_megapixels: f64,
}

pub fn run(args: SynthArgs) -> Result<()> {
    if !(args.max_tilt >= 1.0) || args.tilt.is_some_and(|t| !(t >= 1.0)) {
        return Err(Error::invalid("tilts must be at least 1"));
    }
    if args.scale.is_some_and(|s| !(s > 0.0)) {
        return Err(Error::invalid("--scale must be positive"));
    }
    crate::files::check_writable_dir(&args.out_dir)?;
    let image = load_rgb(
        &args.image,
        &LoadOptions {
            max_megapixels: args.max_megapixels,
            ..LoadOptions::default()
        },
    )?;
    let mut params = SynthParams::random(args.seed, args.max_tilt);
    if let Some(t) = args.tilt {
        params.tilt = t;
    }
    if let Some(r) = args.rotation {
        params.rotation_deg = r;
    }
    if let Some(s) = args.scale {
        params.scale = s;
    }
    if let Some(g) = args.gamma {
        params.gamma = g;
        params.gain = 1.0;
    }
    if let Some(n) = args.noise {
        params.noise = n;
    }
    let (image2, h) = synthesize(&image, &params)?;
    std::fs::create_dir_all(&args.out_dir).map_err(|e| Error::io(&args.out_dir, e))?;
    let save = |img: &image::RgbImage, name: &str| {
        let path = args.out_dir.join(name);
        img.save(&path)
            .map_err(|e| Error::image(&path, format!("cannot write: {e}")))
    };
    save(&image, "img1.png")?;
    save(&image2, "img2.png")?;
    write_homography(&args.out_dir.join("H1to2p"), &h)?;
    let json = serde_json::to_string_pretty(&params).map_err(|e| Error::invalid(e.to_string()))?;
    let params_path = args.out_dir.join("params.json");
    std::fs::write(&params_path, json + "\n").map_err(|e| Error::io(&params_path, e))?;
    println!(
        "{}: tilt {:.2} along {:.0}°, rotation {:.0}°, zoom {:.2}, gamma {:.2} → {}",
        args.image.display(),
        params.tilt,
        params.tilt_direction_deg,
        params.rotation_deg,
        params.scale,
        params.gamma,
        args.out_dir.display()
    );
    Ok(())
}
