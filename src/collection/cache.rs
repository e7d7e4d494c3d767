//! The feature cache: one safetensors file per image, so that features are extracted once per
//! image and settings, reused by every pair, by `--resume` and by shards that share the folder.
//!
//! A file holds `frames` (f32, N×8: the frame's `a11 a12 a21 a22 cx cy`, the response and σ, in
//! wbs's convention), `levels` (u8, N×2: octave and level) and `descriptors` (f32, N×D), with
//! the image size, the detection counts and the feature settings as metadata. A file made with
//! other settings, or unreadable, is not used (the features are extracted again and the file
//! replaced); writes are atomic, so several processes may share the folder.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, View};

use crate::describe::Described;
use crate::feature::Feature;
use crate::files::write_atomically;
use crate::laf::Laf;
use crate::pipeline::{Config, ImageFeatures};
use crate::{Error, Result};

/// The settings that decide an image's features, as one string: the configuration (JSON) with
/// the matching and verification settings left at the preset's, and the pixel frame (as stored,
/// no EXIF orientation: files cached before that rule are not used).
pub fn features_key(config: &Config) -> String {
    let preset = Config::preset(config.method);
    let mut c = config.clone();
    c.ratio = preset.ratio;
    c.duplicate_radius = preset.duplicate_radius;
    c.ransac = preset.ransac;
    c.ransac_method = preset.ransac_method;
    c.min_inliers = preset.min_inliers;
    format!(
        "{}; pixels as stored",
        serde_json::to_string(&c).unwrap_or_default()
    )
}

struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Bytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Writes `features` to `path` (atomically) with the settings `key`.
pub fn save(path: &Path, features: &ImageFeatures, key: &str) -> Result<()> {
    let d = &features.described;
    let n = d.len();
    let frames = Bytes {
        dtype: Dtype::F32,
        shape: vec![n, 8],
        data: d
            .features
            .iter()
            .flat_map(|f| {
                let a = f.laf.a;
                [
                    a[0][0], a[0][1], a[1][0], a[1][1], f.laf.c[0], f.laf.c[1], f.response, f.sigma,
                ]
            })
            .flat_map(f32::to_le_bytes)
            .collect(),
    };
    let levels = Bytes {
        dtype: Dtype::U8,
        shape: vec![n, 2],
        data: d
            .features
            .iter()
            .flat_map(|f| [f.octave, f.level])
            .collect(),
    };
    let descriptors = Bytes {
        dtype: Dtype::F32,
        shape: vec![n, d.dimension],
        data: d.descriptors.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    let meta: HashMap<String, String> = [
        ("width", features.width.to_string()),
        ("height", features.height.to_string()),
        ("detections", features.detections.to_string()),
        ("shaped", features.shaped.to_string()),
        ("settings", key.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let tensors = [
        ("frames", &frames),
        ("levels", &levels),
        ("descriptors", &descriptors),
    ];
    let bytes = safetensors::serialize(tensors, Some(meta)).map_err(|e| {
        Error::invalid(format!(
            "{}: cannot serialise features: {e}",
            path.display()
        ))
    })?;
    write_atomically(path, &crate::nn::with_sorted_header(bytes))
}

/// The features cached at `path` for the settings `key`; `None` when there is no file, it was
/// made with other settings, or it cannot be read.
pub fn load(path: &Path, key: &str) -> Option<ImageFeatures> {
    let bytes = std::fs::read(path).ok()?;
    let (_, header) = SafeTensors::read_metadata(&bytes).ok()?;
    let meta = header.metadata().as_ref()?;
    if meta.get("settings").map(String::as_str) != Some(key) {
        return None;
    }
    let number = |k: &str| meta.get(k)?.parse::<usize>().ok();
    let st = SafeTensors::deserialize(&bytes).ok()?;
    let f32s = |name: &str| -> Option<(Vec<usize>, Vec<f32>)> {
        let t = st.tensor(name).ok()?;
        (t.dtype() == Dtype::F32).then_some(())?;
        let values = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        Some((t.shape().to_vec(), values))
    };
    let (frame_shape, frames) = f32s("frames")?;
    let (descriptor_shape, descriptors) = f32s("descriptors")?;
    let levels = st.tensor("levels").ok()?;
    let n = *frame_shape.first()?;
    let dimension = *descriptor_shape.get(1)?;
    if frame_shape != [n, 8]
        || descriptor_shape != [n, dimension]
        || levels.dtype() != Dtype::U8
        || levels.shape() != [n, 2]
    {
        return None;
    }
    let features = frames
        .chunks_exact(8)
        .zip(levels.data().chunks_exact(2))
        .map(|(f, l)| Feature {
            laf: Laf {
                a: [[f[0], f[1]], [f[2], f[3]]],
                c: [f[4], f[5]],
            },
            response: f[6],
            sigma: f[7],
            octave: l[0],
            level: l[1],
        })
        .collect();
    Some(ImageFeatures {
        width: number("width")?,
        height: number("height")?,
        detections: number("detections")?,
        shaped: number("shaped")?,
        described: Described {
            features,
            descriptors,
            dimension,
        },
        times: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_round_trip_bit_for_bit_and_other_settings_miss() {
        let dir = std::env::temp_dir().join(format!("wbs-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.safetensors");
        let feature = |x: f32| Feature {
            laf: Laf {
                a: [[x, 0.1], [-0.2, 3.0]],
                c: [x * 7.0, 1.0 / 3.0],
            },
            response: -x,
            sigma: 1.7,
            octave: 2,
            level: 3,
        };
        let features = ImageFeatures {
            width: 640,
            height: 480,
            detections: 9,
            shaped: 5,
            described: Described {
                features: vec![feature(1.0), feature(std::f32::consts::PI)],
                descriptors: (0..256).map(|i| (i as f32).sqrt() / 100.0).collect(),
                dimension: 128,
            },
            times: Default::default(),
        };
        save(&path, &features, "key").unwrap();
        let back = load(&path, "key").unwrap();
        assert_eq!(back.described.features, features.described.features);
        assert_eq!(back.described.descriptors, features.described.descriptors);
        assert_eq!(
            (back.width, back.height, back.detections, back.shaped),
            (640, 480, 9, 5)
        );
        assert!(load(&path, "other").is_none());
        std::fs::write(&path, b"not a file of features").unwrap();
        assert!(load(&path, "key").is_none());
        std::fs::remove_dir_all(&dir).ok();
    }
}
