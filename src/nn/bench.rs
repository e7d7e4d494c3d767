//! Throughput measurement of the three networks with random weights (no files needed), for
//! `wbs bench`.

use std::fmt;
use std::time::{Duration, Instant};

use super::arch::{LayerSpec, NetworkKind, PATCH_LEN, PATCH_SIZE};
use super::models::{AffNet, HardNet, OriNet};
use super::weights::Weights;

/// A small xorshift generator: deterministic values without a dependency on `rand`'s API.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Uniform in [-1, 1).
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }
}

/// Random weights of the right names and shapes for `kind`: conv weights uniform with a
/// He-style range (so activations neither vanish nor explode), small biases and means,
/// variances in [0.5, 1.5].
pub fn random_weights(kind: NetworkKind, seed: u64) -> Weights {
    let mut rng = XorShift::new(seed);
    let mut w = Weights::new(format!("random {kind} weights"));
    for (name, shape) in kind.expected_tensors() {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = if name.ends_with(".weight") {
            let fan_in: usize = shape[1..].iter().product();
            let range = (6.0 / fan_in as f32).sqrt();
            (0..n).map(|_| rng.next() * range).collect()
        } else if name.ends_with("running_var") {
            (0..n).map(|_| 1.0 + 0.5 * rng.next()).collect()
        } else {
            (0..n).map(|_| 0.1 * rng.next()).collect()
        };
        w.insert(name, shape, data);
    }
    w
}

/// `n` random patches (values in [0, 1)).
pub fn random_patches(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = XorShift::new(seed);
    (0..n * PATCH_LEN).map(|_| 0.5 + 0.5 * rng.next()).collect()
}

/// Multiply-adds ×2 of one forward pass on one patch.
pub fn flops_per_patch(kind: NetworkKind) -> f64 {
    let (mut h, mut w) = (PATCH_SIZE, PATCH_SIZE);
    let mut flops = 0.0;
    for layer in kind.spec() {
        if let LayerSpec::Conv {
            cin,
            cout,
            k,
            stride,
            padding,
            ..
        } = layer
        {
            h = (h + 2 * padding - k) / stride + 1;
            w = (w + 2 * padding - k) / stride + 1;
            flops += 2.0 * (cin * cout * k * k * h * w) as f64;
        }
    }
    flops
}

/// One network's measured throughput.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchResult {
    /// The network timed.
    pub kind: NetworkKind,
    /// Patches per batch.
    pub batch: usize,
    /// Best wall-clock time of one batch.
    pub seconds: f64,
    /// `batch / seconds`.
    pub patches_per_second: f64,
    /// Convolution GFLOP/s of the best run (a multiply-add counts as two).
    pub gflops: f64,
    /// Patches per second of CPU time summed over all threads, from the run with the least CPU
    /// time (Linux only). Unlike the wall-clock rate it barely changes when other processes
    /// compete for the cores, so `threads × this` is the rate on otherwise idle cores.
    pub patches_per_cpu_second: Option<f64>,
}

/// CPU time used so far by all threads of this process (Linux: `/proc/self/task/*/schedstat`).
pub(crate) fn process_cpu_seconds() -> Option<f64> {
    let mut ns: u64 = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        ns += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(ns as f64 * 1e-9)
}

impl fmt::Display for BenchResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<8} batch {:>5}: {:>8.1} ms  {:>8.0} patches/s  ({:.1} MFLOP/patch, {:.0} GFLOP/s)",
            self.kind.name(),
            self.batch,
            self.seconds * 1e3,
            self.patches_per_second,
            flops_per_patch(self.kind) / 1e6,
            self.gflops
        )?;
        if let Some(cpu) = self.patches_per_cpu_second {
            write!(f, "  {cpu:>6.0} patches per CPU-second")?;
        }
        Ok(())
    }
}

/// Times `kind` on `batch` random patches: one warm-up batch, then repeats for at least
/// `min_time` (and at least 3 runs); reports the best run.
pub fn bench(kind: NetworkKind, batch: usize, min_time: Duration) -> BenchResult {
    let weights = random_weights(kind, 7);
    let patches = random_patches(batch, 11);
    // Models built from `random_weights` always pass the checks.
    let run: Box<dyn Fn()> = match kind {
        NetworkKind::AffNet => {
            let m = AffNet::from_weights(&weights).expect("random AffNet weights are valid");
            Box::new(move || drop(std::hint::black_box(m.forward_raw(&patches))))
        }
        NetworkKind::OriNet => {
            let m = OriNet::from_weights(&weights).expect("random OriNet weights are valid");
            Box::new(move || drop(std::hint::black_box(m.forward_raw(&patches))))
        }
        NetworkKind::HardNet => {
            let m = HardNet::from_weights(&weights).expect("random HardNet weights are valid");
            Box::new(move || drop(std::hint::black_box(m.describe(&patches))))
        }
    };
    run();
    let start = Instant::now();
    let (mut best, mut best_cpu) = (f64::INFINITY, f64::INFINITY);
    let mut runs = 0;
    while runs < 3 || start.elapsed() < min_time {
        let (t, cpu) = (Instant::now(), process_cpu_seconds());
        run();
        best = best.min(t.elapsed().as_secs_f64());
        if let (Some(a), Some(b)) = (cpu, process_cpu_seconds()) {
            best_cpu = best_cpu.min(b - a);
        }
        runs += 1;
    }
    let pps = batch as f64 / best;
    BenchResult {
        kind,
        batch,
        seconds: best,
        patches_per_second: pps,
        gflops: pps * flops_per_patch(kind) / 1e9,
        patches_per_cpu_second: (best_cpu.is_finite() && best_cpu > 0.0)
            .then(|| batch as f64 / best_cpu),
    }
}

/// A few lines with the throughput of AffNet, OriNet and HardNet on `batch` patches, using all
/// rayon threads.
pub fn bench_report(batch: usize) -> String {
    let mut out = format!(
        "nn inference, {} rayon threads, random weights\n",
        rayon::current_num_threads()
    );
    for kind in NetworkKind::ALL {
        out += &format!("{}\n", bench(kind, batch, Duration::from_secs(2)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flop_counts_match_the_reference() {
        // affnet.md: AffNet 19.2 MFLOP and HardNet 78 MFLOP per patch.
        assert!((flops_per_patch(NetworkKind::AffNet) / 1e6 - 19.2).abs() < 0.1);
        assert!((flops_per_patch(NetworkKind::HardNet) / 1e6 - 78.0).abs() < 0.5);
    }

    #[test]
    fn random_weights_pass_the_checks() {
        for kind in NetworkKind::ALL {
            kind.check(&random_weights(kind, 1)).unwrap();
        }
    }
}
