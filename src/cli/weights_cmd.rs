//! `wbs weights import FILE.pth --out FILE.safetensors` and `wbs weights inspect FILE`: the
//! authors' PyTorch checkpoints in, the project's safetensors out, and a look inside either.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use crate::nn::{self, Inspection, NetworkKind, TensorInfo};
use crate::Result;

#[derive(Args, Debug)]
pub struct WeightsArgs {
    #[command(subcommand)]
    pub command: WeightsCommand,
}

#[derive(Subcommand, Debug)]
pub enum WeightsCommand {
    /// Convert a PyTorch checkpoint (.pth, legacy or zip) of AffNet, OriNet or HardNet to
    /// safetensors, checking every tensor name and shape against the network.
    Import(ImportArgs),
    /// List the tensors (name, type, shape, statistics) of a .safetensors or .pth file.
    Inspect(InspectArgs),
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The checkpoint, e.g. AffNet.pth from ducha-aiki/affnet.
    pub input: PathBuf,
    /// Where to write the safetensors file.
    #[arg(long, short, value_name = "FILE")]
    pub out: PathBuf,
    /// The network the file holds (default: recognised from the tensor names and shapes).
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A .safetensors or .pth file.
    pub file: PathBuf,
}

/// The network named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    Affnet,
    Orinet,
    Hardnet,
}

impl From<KindArg> for NetworkKind {
    fn from(k: KindArg) -> NetworkKind {
        match k {
            KindArg::Affnet => NetworkKind::AffNet,
            KindArg::Orinet => NetworkKind::OriNet,
            KindArg::Hardnet => NetworkKind::HardNet,
        }
    }
}

pub fn run(args: WeightsArgs) -> Result<()> {
    match args.command {
        WeightsCommand::Import(a) => {
            let report = nn::import_pth(&a.input, &a.out, a.kind.map(NetworkKind::from))?;
            println!("{report}");
        }
        WeightsCommand::Inspect(a) => print!("{}", describe(&nn::inspect_file(&a.file)?)),
    }
    Ok(())
}

/// The text `wbs weights inspect` prints.
fn describe(inspection: &Inspection) -> String {
    let mut out = format!("format   {}\n", inspection.format);
    let model = inspection
        .model
        .map_or("none of AffNet, OriNet, HardNet", NetworkKind::name);
    out += &format!("model    {model}\n");
    for (key, value) in &inspection.metadata {
        out += &format!("meta     {key} = {value}\n");
    }
    let values: usize = inspection.tensors.iter().map(|t| t.count).sum();
    out += &format!("tensors  {} ({values} values)\n", inspection.tensors.len());
    let width = inspection
        .tensors
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(0);
    for t in &inspection.tensors {
        out += &format!("  {:<width$}  {}\n", t.name, tensor_line(t));
    }
    out
}

fn tensor_line(t: &TensorInfo) -> String {
    let shape = format!("{:?}", t.shape);
    let mut line = format!("{:<8} {:<16} {:>8}", t.dtype, shape, t.count);
    if let Some(s) = &t.stats {
        line += &format!(
            "  min {:>10.6}  max {:>10.6}  mean {:>10.6}  std {:>10.6}",
            s.min, s.max, s.mean, s.std
        );
    }
    line
}
