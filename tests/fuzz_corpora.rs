//! The fuzz corpora (`fuzz/corpus/<target>/`) replayed through the fuzz targets' entry points
//! (`fuzz/src/lib.rs`, compiled here as a module: the same code `cargo fuzz` runs): a regression
//! check, in seconds, that no committed input (seeds, and inputs that once crashed, hung or
//! blew up memory) panics. Long fuzzing runs are `cargo +nightly fuzz run TARGET` (fuzz/README.md).

#[path = "../fuzz/src/lib.rs"]
mod entry;
mod nn_support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

#[test]
fn every_corpus_input_runs_without_a_panic_or_a_hang() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut total = 0;
    for (target, run) in entry::TARGETS {
        let dir = root.join(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{}: no seed inputs", dir.display());
        for file in &files {
            let data = std::fs::read(file).unwrap();
            let start = Instant::now();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target}: {} panics", file.display());
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{target}: {} took {:?}",
                file.display(),
                start.elapsed()
            );
        }
        total += files.len();
    }
    assert!(total >= entry::TARGETS.len());
}

/// The image target's own promise: a PNG header that claims 100,000 × 100,000 pixels is refused
/// from the header, before anything is allocated for it.
#[test]
fn a_huge_png_header_is_refused_before_decoding() {
    let mut png = Vec::new();
    png.extend_from_slice(&[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a]);
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit gray, no interlace
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&nn_support::crc32(&ihdr).to_be_bytes());
    // The decoder reads the header chunks up to the first IDAT: an empty one, then IEND.
    for chunk in [&b"IDAT"[..], &b"IEND"[..]] {
        png.extend_from_slice(&0u32.to_be_bytes());
        png.extend_from_slice(chunk);
        png.extend_from_slice(&nn_support::crc32(chunk).to_be_bytes());
    }
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("huge-header.png");
    std::fs::write(&path, &png).unwrap();
    let start = Instant::now();
    let e = wbs::image::load_gray(&path, &wbs::image::LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("100000x100000") && e.contains("over the"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(1));
}
