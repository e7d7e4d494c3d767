//! Training throughput: `cargo test --release -j1 --test train_bench -- --ignored --nocapture`.

#[test]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
fn training_throughput() {
    println!("{}", wbs::train::bench_report());
}
