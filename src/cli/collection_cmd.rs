//! `wbs collection`: match an image collection into a COLMAP database; `wbs collection merge`:
//! combine the databases of `--shard I/N` runs.

use std::path::PathBuf;

use clap::{ArgMatches, Args, FromArgMatches, Subcommand};

use super::eval_cmd::Bar;
use super::{FeatureArgs, VerifyArgs};
use crate::collection::{self, CameraMode, Options, PairSelection};
use crate::eval::Shard;
use crate::{Matcher, Result};

/// The ratio test's default for a collection.
const DEFAULT_RATIO: &str = "0.9";

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CollectionArgs {
    #[command(subcommand)]
    pub action: Option<CollectionAction>,
    /// The folder of images (searched recursively: png, jpg, pnm, bmp, tif, webp).
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,
    /// The output folder: features/ (cached per image) and database.db.
    #[arg(long, value_name = "DIR", default_value = "collection-out")]
    pub out: PathBuf,
    /// The COLMAP database to write (default: <out>/database.db, or
    /// <out>/database.shard-I-of-N.db with --shard).
    #[arg(long, value_name = "FILE")]
    pub database: Option<PathBuf>,
    /// Pairs: exhaustive, or sequential:N (each image with the next N in name order).
    #[arg(
        long,
        value_name = "SELECTION",
        default_value = "exhaustive",
        conflicts_with = "pairs"
    )]
    pub select: PairSelection,
    /// Pairs from a file: two image names (relative to --images) a line, as COLMAP and hloc list
    /// them.
    #[arg(long, value_name = "FILE")]
    pub pairs: Option<PathBuf>,
    /// Continue the database of an earlier run with the same flags: only pairs not yet in it
    /// are matched; features come from <out>/features.
    #[arg(long)]
    pub resume: bool,
    /// Add these images to a database that lists other images as well.
    #[arg(long)]
    pub add: bool,
    /// Match only shard I of N of the pairs (position modulo N is I-1); combine the shards with
    /// `wbs collection merge`.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// Match at most this many pairs in this run; the rest with --resume (a job's time limit).
    #[arg(long, value_name = "N")]
    pub max_pairs: Option<usize>,
    /// Which images share a camera (intrinsics): auto (the same EXIF make, model, focal length
    /// and size; one camera per image without EXIF), per-image, single (one per image size),
    /// per-folder (one per folder and size). The focal length prior comes from EXIF where it
    /// says enough (35 mm equivalent, or focal length and focal-plane resolution), else
    /// 1.2·max(width, height); unreadable EXIF gives no prior and is reported. Pixels are read
    /// as stored, without the EXIF orientation, as COLMAP reads them.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    pub camera_mode: CameraMode,
    /// The most images whose features are held in memory at once (about 5 MB each for 9,000
    /// features); the others are read again from <out>/features when a pair needs them.
    /// Default: 16 per thread.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(usize))]
    pub images_in_memory: Option<usize>,
    #[command(flatten)]
    pub features: FeatureArgs,
    #[command(flatten)]
    pub verify: SceneVerifyArgs,
}

/// The verification flags of `match`, with two defaults for structure from motion: a
/// fundamental matrix (a collection shows a scene from several places, not a plane) and the
/// ratio 0.9 (the mapper checks every track again; on sacre_coeur 0.8 gives 1,208 3D points,
/// 0.85 1,437, 0.9 1,653: docs/collection.md).
#[derive(Debug, Clone)]
pub struct SceneVerifyArgs(VerifyArgs);

impl Args for SceneVerifyArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        VerifyArgs::augment_args(cmd)
            .mut_arg("geometry", |a| a.default_value("fundamental"))
            .mut_arg("ratio", |a| a.default_value(DEFAULT_RATIO))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for SceneVerifyArgs {
    fn from_arg_matches(matches: &ArgMatches) -> std::result::Result<Self, clap::Error> {
        VerifyArgs::from_arg_matches(matches).map(SceneVerifyArgs)
    }

    fn update_from_arg_matches(
        &mut self,
        matches: &ArgMatches,
    ) -> std::result::Result<(), clap::Error> {
        self.0.update_from_arg_matches(matches)
    }
}

#[derive(Subcommand, Debug)]
pub enum CollectionAction {
    /// Combine the databases of `wbs collection --shard I/N` runs into one.
    Merge(MergeArgs),
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The shards' databases.
    #[arg(required = true, value_name = "SHARD.db")]
    pub shards: Vec<PathBuf>,
    /// The merged database (must not exist).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "collection-out/database.db"
    )]
    pub out: PathBuf,
}

pub fn run(args: CollectionArgs) -> Result<()> {
    if let Some(CollectionAction::Merge(merge)) = args.action {
        collection::merge(&merge.shards, &merge.out)?;
        println!(
            "merged {} shard databases into {}",
            merge.shards.len(),
            merge.out.display()
        );
        return Ok(());
    }
    let mut config = args.features.config()?;
    args.verify.0.apply(&mut config)?;
    let matcher = Matcher::new(config)?;
    let selection = match args.pairs {
        Some(file) => PairSelection::File(file),
        None => args.select,
    };
    let images = args.images.ok_or_else(|| {
        crate::Error::invalid("wbs collection: give the folder of images with --images DIR")
    })?;
    let mut options = Options::new(images, args.out, selection);
    options.database = args.database;
    options.shard = args.shard;
    options.resume = args.resume;
    options.add = args.add;
    options.max_pairs = args.max_pairs;
    options.camera_mode = args.camera_mode;
    options.images_in_memory = args.images_in_memory;
    let s = collection::run(&matcher, &options, &Bar::default())?;
    println!(
        "images: {} found, {} used ({} features from the cache), {} skipped",
        s.images,
        s.images_used,
        s.cached,
        s.skipped.len()
    );
    for (name, reason) in &s.skipped {
        println!("  skipped {name}: {reason}");
    }
    println!(
        "cameras: {} (--camera-mode {}), {} images with an EXIF focal prior, {} with unreadable EXIF",
        s.cameras,
        options.camera_mode,
        s.exif_priors,
        s.exif_unreadable.len()
    );
    for (name, reason) in &s.exif_unreadable {
        println!("  {name}: {reason}");
    }
    println!(
        "pairs: {} selected, {} already done, {} matched, {} registered, {} skipped, {} left \
         ({} feature reads from the cache for pairs)",
        s.pairs, s.already_done, s.matched, s.registered, s.pairs_skipped, s.left, s.reloaded
    );
    println!(
        "time: features {:.1} s, matching + verification {:.1} s, total {:.1} s",
        s.features_ms / 1e3,
        s.matching_ms / 1e3,
        s.total_ms / 1e3
    );
    println!("wrote {}", s.database.display());
    Ok(())
}
