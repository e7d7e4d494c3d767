//! The entry points the fuzz targets (`fuzz_targets/*.rs`, run by `cargo fuzz`) and the corpus
//! replay test (`tests/fuzz_corpora.rs`, run by `cargo test`) feed bytes to. Each one gives the
//! bytes to the same public function a user's file reaches; any outcome but a panic, a hang or a
//! memory blow-up is a pass (errors are the expected answer to most inputs).
//!
//! Parsers that read a path get the bytes through a file in the temporary folder, one per
//! process and target, so that the fuzzer exercises exactly what `wbs` runs.

use std::path::PathBuf;

/// One fuzz target's entry point: any bytes in, no panic out.
pub type Entry = fn(&[u8]);

/// The fuzz targets, by name: the folder names under `fuzz/corpus/`.
pub const TARGETS: &[(&str, Entry)] = &[
    ("pth", pth),
    ("safetensors_weights", safetensors_weights),
    ("checkpoint", checkpoint),
    ("image", image),
    ("ground_truth", ground_truth),
    ("pair_list", pair_list),
    ("eval_journal", eval_journal),
    ("train_pairs", train_pairs),
    ("exif", exif),
];

/// A file in the temporary folder holding `data`, named for this process and `target`.
fn scratch(target: &str, name: &str, data: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wbs-fuzz-{}-{target}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary folder");
    let path = dir.join(name);
    std::fs::write(&path, data).expect("temporary file");
    path
}

/// The `.pth` importer (pickle VM and zip reader), then the network check a loaded file gets.
pub fn pth(data: &[u8]) {
    if let Ok(w) = wbs::nn::Weights::from_pth(data, "fuzz.pth") {
        let _ = wbs::nn::NetworkKind::detect(&w);
        for kind in [
            wbs::nn::NetworkKind::AffNet,
            wbs::nn::NetworkKind::OriNet,
            wbs::nn::NetworkKind::HardNet,
        ] {
            let _ = kind.check(&w);
        }
    }
}

/// Safetensors weights, as `--affnet-weights FILE` reads them (format sniffed from the content:
/// a pickle-looking file goes to the `.pth` importer).
pub fn safetensors_weights(data: &[u8]) {
    let path = scratch("safetensors_weights", "w.safetensors", data);
    if let Ok(w) = wbs::nn::Weights::load(&path) {
        let _ = wbs::nn::NetworkKind::detect(&w);
        let _ = wbs::nn::NetworkKind::AffNet.check(&w);
    }
    let _ = wbs::nn::inspect_file(&path);
}

/// A training checkpoint, as `wbs train --resume` reads it.
pub fn checkpoint(data: &[u8]) {
    let path = scratch("checkpoint", "c.safetensors", data);
    let _ = wbs::train::run::checkpoint::Checkpoint::load(&path);
}

/// Image decoding with a 1 MP limit (the limit is checked from the header before decoding).
pub fn image(data: &[u8]) {
    let path = scratch("image", "i.img", data);
    let options = wbs::image::LoadOptions {
        max_megapixels: 1.0,
        ..wbs::image::LoadOptions::default()
    };
    let _ = wbs::image::load_gray(&path, &options);
}

/// A ground-truth file: a homography (9 numbers) or correspondences (rows x1 y1 x2 y2).
pub fn ground_truth(data: &[u8]) {
    let path = scratch("ground_truth", "H1to2p", data);
    let _ = wbs::protocol::load_ground_truth(&path);
}

/// A pair list (`wbs eval --list`).
pub fn pair_list(data: &[u8]) {
    let path = scratch("pair_list", "pairs.txt", data);
    if let Ok(set) = wbs::eval::datasets::load_pair_list(None, &path) {
        for pair in &set.pairs {
            let _ = pair.truth.kind();
        }
    }
}

/// An evaluation journal, as `wbs eval --resume` reads it.
pub fn eval_journal(data: &[u8]) {
    let path = scratch("eval_journal", "journal.jsonl", data);
    let _ = wbs::eval::run::read_journal(&path);
    let _ = wbs::eval::record::EvalFile::read(&path);
}

/// A training pair file (`wbs train --data`).
pub fn train_pairs(data: &[u8]) {
    let path = scratch("train_pairs", "pairs.safetensors", data);
    let _ = wbs::train::data::PairSet::load(&path);
}

/// The EXIF of an image file (`wbs collection`'s cameras): the container (JPEG, TIFF, PNG, WebP,
/// HEIF) and the TIFF structure, then the focal length prior and the camera key from what was
/// read.
pub fn exif(data: &[u8]) {
    use wbs::collection::camera;
    let status = camera::read_exif(&mut std::io::Cursor::new(data));
    let info = camera::ImageInfo {
        size: [4000, 3000],
        exif: status,
    };
    if let camera::ExifStatus::Found(e) = &info.exif {
        let _ = camera::focal_prior(e, info.size);
    }
    let _ = camera::camera_spec(camera::CameraMode::Auto, "a/b.jpg", &info);
}
