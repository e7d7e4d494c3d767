//! `wbs train-data`: positive pairs of 64×64 patches cut from photographs, for `wbs train
//! affnet --data`. See `train::data::photo_pairs` and docs/training.md.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;

use crate::image::LoadOptions;
use crate::train::data::photo_pairs::{list_photos, pairs_from_photos, PhotoPairParams};
use crate::Result;

#[derive(Args, Debug)]
pub struct TrainDataArgs {
    /// Photo folder(s) or file(s) (png, jpg, bmp, pnm; folders are not searched recursively).
    #[arg(long, value_name = "DIR", required = true)]
    pub images: Vec<PathBuf>,
    /// Leave out photos with this file name (repeatable), e.g. the validation photo.
    #[arg(long, value_name = "NAME")]
    pub exclude: Vec<String>,
    /// The pair file to write (safetensors).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Pairs to make, split evenly over the photos.
    #[arg(long, default_value_t = 100_000)]
    pub pairs: usize,
    /// Seed of the views and the choices of features; the same seed gives the same file.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Half-width of the 64×64 patches in measurement-region radii (mrSize·σ).
    #[arg(long, default_value_t = 4.0)]
    pub support: f32,
    /// Largest tilt of the random views (the training augmentation adds more).
    #[arg(long, default_value_t = 2.0)]
    pub max_tilt: f64,
    /// At most this many pairs per random view.
    #[arg(long, default_value_t = 200)]
    pub pairs_per_view: usize,
    /// Zoom range of the random views, log-uniform (e.g. `--zoom 0.5 2.5` for the scale changes
    /// of OxAff's zoom sequences).
    #[arg(long, num_args = 2, value_names = ["MIN", "MAX"], default_values_t = [0.6, 1.6],
        action = clap::ArgAction::Set)]
    pub zoom: Vec<f64>,
}

pub fn run(args: TrainDataArgs) -> Result<()> {
    crate::files::check_writable(&args.out, &[])?;
    let photos = list_photos(&args.images, &args.exclude)?;
    let params = PhotoPairParams {
        pairs: args.pairs,
        seed: args.seed,
        support: args.support,
        max_view_tilt: args.max_tilt,
        pairs_per_view: args.pairs_per_view,
        zoom: [args.zoom[0], args.zoom[1]],
        ..Default::default()
    };
    eprintln!("train-data: {} photos, {} pairs", photos.len(), args.pairs);
    let terminal = std::io::stderr().is_terminal();
    let mut last = String::new();
    let set = pairs_from_photos(
        &photos,
        &params,
        &LoadOptions::default(),
        |done, name| {
            if terminal {
                eprint!("\r  {done}/{} pairs ({name})    ", args.pairs);
            } else if name != last {
                eprintln!("  {name}...");
                last = name.to_string();
            }
        },
        |line| eprintln!("  {line}"),
    )?;
    if terminal {
        eprintln!();
    }
    set.save(&args.out)?;
    println!(
        "wrote {}: {} pairs of {} points from {} photos",
        args.out.display(),
        set.len(),
        set.distinct_points(),
        set.metadata
            .get("wbs.sources")
            .map_or(0, |s| s.split(',').count())
    );
    Ok(())
}
