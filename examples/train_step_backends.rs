//! Times a training step of `TrainChain` (the CPU reference chain) against the chain over the
//! `Cpu` backend (`train::chain::on_backend`, what `--device cuda` runs on CUDA), on the same
//! synthetic batches, alternating so that load from other processes hits both alike.
//!
//! `cargo run --release --example train_step_backends -- [BATCH] [SECONDS] [sift|hardnet]`
//! (defaults 256, 5, sift; HardNet with random weights).

use std::time::Duration;

use wbs::nn::backend::Cpu;
use wbs::nn::{random_weights, NetworkKind};
use wbs::train::{bench_step, bench_step_on, Descriptor, FrozenHardNet};

fn main() -> wbs::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or(default.to_string());
    let batch: usize = arg(0, "256")
        .parse()
        .map_err(|_| wbs::Error::invalid("BATCH: a positive integer"))?;
    let seconds: f64 = arg(1, "5")
        .parse()
        .map_err(|_| wbs::Error::invalid("SECONDS: a number"))?;
    let descriptor = || -> wbs::Result<Descriptor> {
        Ok(match arg(2, "sift").as_str() {
            "sift" => Descriptor::sift(),
            "hardnet" => Descriptor::hardnet(FrozenHardNet::from_weights(&random_weights(
                NetworkKind::HardNet,
                1,
            ))?),
            other => return Err(wbs::Error::invalid(format!("unknown descriptor {other:?}"))),
        })
    };
    let min_time = Duration::from_secs_f64(seconds);
    for round in 1..=2 {
        println!("round {round}");
        println!(
            "TrainChain:\n{}",
            bench_step(batch, descriptor()?, min_time)
        );
        let on_cpu = bench_step_on(&Cpu, batch, descriptor()?, min_time)?;
        println!("BackendTrainChain on Cpu:\n{on_cpu}");
    }
    Ok(())
}
