//! Throughput report (no assertions). Run with
//! `cargo test --release -j1 --test nn_bench -- --ignored --nocapture`
//! (`WBS_BENCH_BATCH` overrides the batch of 2,048 patches).

#[test]
#[ignore = "benchmark; run explicitly in release mode"]
fn nn_throughput_report() {
    let batch = std::env::var("WBS_BENCH_BATCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2048);
    print!("{}", wbs::nn::bench_report(batch));
}
