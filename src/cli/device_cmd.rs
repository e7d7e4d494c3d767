//! The CLI's device subcommands (argument parsing and printing only; the checks themselves are
//! `cli::device_check` over `gpu` ops). `wbs gpu-check`: every CUDA kernel against its CPU
//! reference, then `wbs match` on both devices (docs/gpu-validation.md); without a GPU it fails
//! with one line. `wbs gpu-ptx`: the kernels compiled to PTX for a machine without NVRTC.

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
/// Looked up from the current directory first (a binary carried to another machine runs in its
/// repository copy), then from where wbs was built.
pub fn check_pairs(pair: &Option<Vec<PathBuf>>) -> Vec<(PathBuf, PathBuf)> {
    let roots = [
        PathBuf::from("."),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    ];
    let find = |rel: &str, a: &str, b: &str| {
        roots
            .iter()
            .map(|r| r.join(rel))
            .find(|d| d.join(a).exists() && d.join(b).exists())
            .map(|d| (d.join(a), d.join(b)))
    };
    let mut pairs = Vec::new();
    pairs.extend(find("data/sample", "img1.png", "img2.png"));
    match pair {
        Some(p) => pairs.push((p[0].clone(), p[1].clone())),
        None => pairs.extend(find(
            "../shared/datasets/OxAff/graf",
            "img1.png",
            "img3.png",
        )),
    }
    pairs
}

pub fn run(args: GpuCheckArgs) -> Result<()> {
    #[cfg(feature = "cuda")]
    {
        let gpu = crate::gpu::Gpu::open("wbs gpu-check")?;
        let kernels = crate::cli::device_check::kernel_checks(&gpu, args.seed);
        let matches = if args.kernels_only {
            Vec::new()
        } else {
            crate::cli::device_check::match_checks(&check_pairs(&args.pair))
        };
        let (text, ok) = crate::cli::device_check::report(&gpu, &kernels, &matches);
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

#[derive(Args, Debug)]
pub struct GpuPtxArgs {
    /// Folder to write `<module>.<arch>.ptx` into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Virtual architecture (`compute_90` for H100/H200; `compute_75` runs on any GPU NVRTC 13
    /// supports, more slowly).
    #[arg(long, default_value = "compute_90")]
    pub arch: String,
}

/// `wbs gpu-ptx`: compiles every kernel with NVRTC here (no GPU needed) for a GPU machine that
/// has a driver but no NVRTC; point `WBS_PTX_DIR` there at the folder.
pub fn run_ptx(args: GpuPtxArgs) -> Result<()> {
    let written = crate::gpu::nvrtc::write_ptx(&args.out, &args.arch).map_err(Error::Device)?;
    println!(
        "wrote {} PTX files for {} to {} (use: {}={} wbs gpu-check)",
        written.len(),
        args.arch,
        args.out.display(),
        crate::gpu::nvrtc::PTX_DIR_ENV,
        args.out.display()
    );
    Ok(())
}
