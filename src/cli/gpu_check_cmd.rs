//! `wbs gpu-check`: every CUDA kernel against its CPU reference, then `wbs match` on both devices
//! (docs/gpu-validation.md). Without a GPU it fails with one line.

use std::path::PathBuf;

use clap::Args;

use crate::{Error, Result};

#[derive(Args, Debug)]
pub struct GpuCheckArgs {
    /// Another image pair for the end-to-end comparison, besides data/sample (default: OxAff graf
    /// img1/img3 from ../shared/datasets when present).
    #[arg(long, num_args = 2, value_names = ["IMAGE1", "IMAGE2"])]
    pub pair: Option<Vec<PathBuf>>,
    /// Seed of the random kernel inputs.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Only the kernel checks (no end-to-end matches).
    #[arg(long)]
    pub kernels_only: bool,
}

/// The pairs of the end-to-end comparison: data/sample, and `--pair` or graf 1/3.
pub fn check_pairs(pair: &Option<Vec<PathBuf>>) -> Vec<(PathBuf, PathBuf)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut pairs = Vec::new();
    let sample = root.join("data/sample");
    if sample.join("img1.png").exists() {
        pairs.push((sample.join("img1.png"), sample.join("img2.png")));
    }
    match pair {
        Some(p) => pairs.push((p[0].clone(), p[1].clone())),
        None => {
            let graf = root.join("../shared/datasets/OxAff/graf");
            if graf.join("img1.png").exists() {
                pairs.push((graf.join("img1.png"), graf.join("img3.png")));
            }
        }
    }
    pairs
}

pub fn run(args: GpuCheckArgs) -> Result<()> {
    #[cfg(feature = "cuda")]
    {
        let gpu = crate::gpu::Gpu::open("wbs gpu-check")?;
        let kernels = crate::gpu::check::kernel_checks(&gpu, args.seed);
        let matches = if args.kernels_only {
            Vec::new()
        } else {
            crate::gpu::check::match_checks(&gpu, &check_pairs(&args.pair))
        };
        let (text, ok) = crate::gpu::check::report(&gpu, &kernels, &matches);
        print!("{text}");
        if ok {
            Ok(())
        } else {
            Err(Error::Device(
                "gpu-check: some checks failed (see the table)".into(),
            ))
        }
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (args, check_pairs);
        Err(Error::Device(
            "wbs gpu-check: this wbs was built without the `cuda` feature".into(),
        ))
    }
}
