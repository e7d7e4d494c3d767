//! `wbs match --device cuda`: the matcher with its network stages and its nearest-neighbour
//! search on the device.
//!
//! Per image: the scale space and the detector run on the CPU (as on `--device cpu`), then the
//! whole scale space is uploaded once ([`GpuPyramid`]). Each network stage uploads only its
//! frames (6 floats each) and samples all patches in one launch ([`ops::extract_patches`]); the
//! patches never leave the device. AffNet and OriNet download their 3 or 2 outputs per patch,
//! because the frame bookkeeping after them (upright shapes, the 6:1 elongation and border
//! filters, rotations) is the CPU pipeline's own code; HardNet's descriptors stay on the device
//! for matching. Matching downloads the nearest index and the ratio of each query, and the
//! duplicate filter and LO-RANSAC run on the CPU. SIFT and RootSIFT (and Baumberg's shape and the
//! orientation histogram) stay on the CPU; their descriptors are uploaded for matching.

use std::path::Path;
use std::time::Instant;

use cudarc::driver::CudaSlice;

use super::net::GpuNet;
use super::ops::{self, Buf};
use super::Gpu;
use crate::describe::{Described, DescriptorKind};
use crate::detect::detect;
use crate::feature::Feature;
use crate::image::{load_gray, GrayImage};
use crate::laf::Laf;
use crate::matching::Tentative;
use crate::models::Models;
use crate::nn::{self, affine_shape, orientation_angle, ModelKind, Weights, HARDNET_DIM};
use crate::orient::orinet::apply_orinet_angle;
use crate::orient::OrientationMethod;
use crate::patch::{PatchSpec, NET_PATCH};
use crate::pipeline::{
    describe_stage, match_features_by, orient_stage, shape_stage, Config, ImageFeatures,
    MatchReport, StageTimes,
};
use crate::pyramid::ScaleSpace;
use crate::shape::{average_turned_shapes, keep_if_valid, shaped_laf, turned_circles, ShapeMethod};
use crate::{Error, Result};

/// A scale space on the device: the input image and every octave level, back to back, with a
/// table of `[offset, width, height]` per image. Image 0 is the input, image
/// `1 + octave·levels + level` the octave levels.
pub struct GpuPyramid {
    data: Buf,
    images: CudaSlice<i64>,
    count: usize,
}

/// The images of `space` in the order of the pyramid buffer.
fn images_of(space: &ScaleSpace) -> Vec<&GrayImage> {
    std::iter::once(&space.input)
        .chain(space.octaves.iter().flat_map(|o| o.levels.iter()))
        .collect()
}

impl GpuPyramid {
    /// Uploads `space` (one copy of every image).
    pub fn upload(gpu: &Gpu, space: &ScaleSpace) -> Result<GpuPyramid> {
        let images = images_of(space);
        let total: usize = images.iter().map(|i| i.data().len()).sum();
        let mut data = Vec::with_capacity(total);
        let mut table = Vec::with_capacity(3 * images.len());
        for image in &images {
            if image.width() == 0 || image.height() == 0 {
                return Err(Error::invalid("gpu pyramid: an empty image"));
            }
            table.extend([
                data.len() as i64,
                image.width() as i64,
                image.height() as i64,
            ]);
            data.extend_from_slice(image.data());
        }
        Ok(GpuPyramid {
            data: gpu.upload(&data)?,
            images: gpu.upload(&table)?,
            count: images.len(),
        })
    }

    /// The per-frame image indices and frames in image pixels for [`ops::extract_patches`]:
    /// the image `patch::sample_from_space` would choose, and the frame mapped into it.
    pub fn frames(space: &ScaleSpace, lafs: &[Laf], spec: &PatchSpec) -> (Vec<i32>, Vec<f32>) {
        let images = images_of(space);
        let mut index = Vec::with_capacity(lafs.len());
        let mut frames = Vec::with_capacity(6 * lafs.len());
        for laf in lafs {
            let step = 2.0 * laf.scale() / spec.size as f32;
            let level = space.sampling_level(spec.blur_per_step * step);
            let i = images
                .iter()
                .position(|im| std::ptr::eq(*im, level.image))
                .unwrap_or(0);
            let l = laf.in_level(level.pixel_distance);
            index.push(i as i32);
            frames.extend([l.a[0][0], l.a[0][1], l.a[1][0], l.a[1][1], l.c[0], l.c[1]]);
        }
        (index, frames)
    }

    /// The `spec` patches of `lafs` (input-image pixels), sampled on the device in one launch:
    /// `lafs.len() · size²` values, as `patch::extract_patches` returns on the CPU.
    pub fn extract(
        &self,
        gpu: &Gpu,
        space: &ScaleSpace,
        lafs: &[Laf],
        spec: &PatchSpec,
    ) -> Result<Buf> {
        let (index, frames) = GpuPyramid::frames(space, lafs, spec);
        if images_of(space).len() != self.count {
            return Err(Error::invalid(
                "gpu pyramid: the scale space is not the one that was uploaded",
            ));
        }
        let mut out = gpu.zeros::<f32>(lafs.len() * spec.pixels())?;
        if lafs.is_empty() {
            return Ok(out);
        }
        let index = gpu.upload(&index)?;
        let frames = gpu.upload(&frames)?;
        ops::extract_patches(
            gpu,
            &self.data,
            &self.images,
            &index,
            &frames,
            spec.size,
            &mut out,
        )?;
        Ok(out)
    }
}

/// The networks a configuration uses, on the device.
#[derive(Default)]
pub struct GpuModels {
    pub affnet: Option<GpuNet>,
    pub orinet: Option<GpuNet>,
    pub hardnet: Option<GpuNet>,
}

impl GpuModels {
    /// Loads and uploads the networks `config` uses (the same lookup as `Models::for_config`).
    pub fn for_config(gpu: &Gpu, config: &Config) -> Result<GpuModels> {
        let w = &config.weights;
        let load = |kind: ModelKind, explicit: Option<&Path>| -> Result<GpuNet> {
            let path = nn::locate(kind, explicit)?;
            GpuNet::new(gpu, kind, &Weights::load(&path)?)
        };
        Ok(GpuModels {
            affnet: (config.shape == ShapeMethod::Affnet)
                .then(|| load(ModelKind::AffNet, w.affnet.as_deref()))
                .transpose()?,
            orinet: (config.orientation == OrientationMethod::Orinet)
                .then(|| load(ModelKind::OriNet, w.orinet.as_deref()))
                .transpose()?,
            hardnet: (config.descriptor == DescriptorKind::Hardnet)
                .then(|| load(ModelKind::HardNet, w.hardnet.as_deref()))
                .transpose()?,
        })
    }
}

fn need(net: &Option<GpuNet>, kind: ModelKind) -> Result<&GpuNet> {
    net.as_ref().ok_or_else(|| {
        Error::invalid(format!(
            "these settings use {kind}, but it was not loaded (GpuModels::for_config)"
        ))
    })
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// Runs `net` on the network patches of `lafs` and downloads its outputs.
fn net_outputs(
    gpu: &Gpu,
    pyramid: &GpuPyramid,
    space: &ScaleSpace,
    lafs: &[Laf],
    net: &GpuNet,
) -> Result<Vec<f32>> {
    if lafs.is_empty() {
        return Ok(Vec::new());
    }
    let patches = pyramid.extract(gpu, space, lafs, &NET_PATCH)?;
    gpu.download(&net.run(gpu, &patches)?)
}

/// One image's features, with the HardNet descriptors still on the device (`None` for the CPU
/// descriptors, which are in `described.descriptors`).
pub struct GpuImageFeatures {
    pub features: ImageFeatures,
    pub device_descriptors: Option<Buf>,
}

/// The feature stages of one image with the networks on the device.
pub fn extract_features(
    gpu: &Gpu,
    image: &GrayImage,
    config: &Config,
    models: &GpuModels,
) -> Result<GpuImageFeatures> {
    let mut times = StageTimes::default();
    let none = Models::none();
    let t = Instant::now();
    let space = ScaleSpace::build(image);
    let pyramid = GpuPyramid::upload(gpu, &space)?;
    times.pyramid = ms(t);

    let t = Instant::now();
    let detections = detect(&space, &config.threshold);
    times.detect = ms(t);

    let t = Instant::now();
    let (w, h) = (image.width(), image.height());
    let shaped = if config.shape == ShapeMethod::Affnet {
        let circles = turned_circles(&detections, config.affnet_turns);
        let raw = net_outputs(
            gpu,
            &pyramid,
            &space,
            &circles,
            need(&models.affnet, ModelKind::AffNet)?,
        )?;
        let shapes: Vec<[[f32; 2]; 2]> = raw
            .chunks_exact(3)
            .map(|r| affine_shape([r[0], r[1], r[2]]))
            .collect();
        let shapes = average_turned_shapes(shapes, config.affnet_turns);
        detections
            .iter()
            .zip(shapes)
            .filter_map(|(d, shape)| {
                keep_if_valid(
                    Feature::from_detection(d).with_laf(shaped_laf(d, shape)),
                    w,
                    h,
                )
            })
            .collect()
    } else {
        shape_stage(&space, &detections, config, &none)?
    };
    times.shape = ms(t);
    let shaped_count = shaped.len();

    let t = Instant::now();
    let oriented: Vec<Feature> = if config.orientation == OrientationMethod::Orinet {
        let lafs: Vec<Laf> = shaped.iter().map(|f| f.laf).collect();
        let raw = net_outputs(
            gpu,
            &pyramid,
            &space,
            &lafs,
            need(&models.orinet, ModelKind::OriNet)?,
        )?;
        shaped
            .iter()
            .zip(raw.chunks_exact(2))
            .map(|(f, r)| f.with_laf(apply_orinet_angle(&f.laf, orientation_angle([r[0], r[1]]))))
            .collect()
    } else {
        orient_stage(&space, shaped, config, &none)?
    };
    times.orient = ms(t);

    let t = Instant::now();
    let (described, device_descriptors) = if config.descriptor == DescriptorKind::Hardnet {
        let net = need(&models.hardnet, ModelKind::HardNet)?;
        let lafs: Vec<Laf> = oriented.iter().map(|f| f.laf).collect();
        let descriptors = if lafs.is_empty() {
            None
        } else {
            let patches = pyramid.extract(gpu, &space, &lafs, &NET_PATCH)?;
            Some(net.run(gpu, &patches)?)
        };
        (
            Described {
                features: oriented,
                descriptors: Vec::new(),
                dimension: HARDNET_DIM,
            },
            descriptors,
        )
    } else {
        (describe_stage(&space, &oriented, config, &none)?, None)
    };
    times.describe = ms(t);
    Ok(GpuImageFeatures {
        features: ImageFeatures {
            width: w,
            height: h,
            detections: detections.len(),
            shaped: shaped_count,
            described,
            times,
        },
        device_descriptors,
    })
}

/// Nearest neighbours and the ratio test on the device; returns the tentatives that pass.
pub fn device_tentatives(
    gpu: &Gpu,
    queries: &Buf,
    database: &Buf,
    dim: usize,
    max_ratio: f32,
) -> Result<Vec<Tentative>> {
    let nn = ops::two_nearest(gpu, queries, database, dim)?;
    let ratio = ops::ratio_test(gpu, &nn, max_ratio)?;
    let nearest = gpu.download(&nn.nearest)?;
    let ratio = gpu.download(&ratio)?;
    // Device buffers hold at least one value (`Gpu::zeros`): keep the real rows.
    let n = queries.len() / dim.max(1);
    Ok(nearest
        .iter()
        .zip(&ratio)
        .take(n)
        .enumerate()
        .filter(|(_, (_, r))| **r <= max_ratio)
        .map(|(i, (&j, &r))| Tentative {
            query: i,
            train: j as usize,
            ratio: r,
        })
        .collect())
}

/// Matches two images with the device pipeline; the report is that of `pipeline::match_images`
/// with `device` "cuda".
pub fn match_images(
    gpu: &Gpu,
    image1: &GrayImage,
    image2: &GrayImage,
    config: &Config,
    models: &GpuModels,
) -> Result<MatchReport> {
    config.validate()?;
    let start = Instant::now();
    let f1 = extract_features(gpu, image1, config, models)?;
    let f2 = extract_features(gpu, image2, config, models)?;
    let device = |f: &GpuImageFeatures| -> Result<Option<Buf>> {
        match &f.device_descriptors {
            Some(_) => Ok(None),
            None if f.features.described.descriptors.is_empty() => Ok(None),
            None => gpu.upload(&f.features.described.descriptors).map(Some),
        }
    };
    let (up1, up2) = (device(&f1)?, device(&f2)?);
    let q = f1.device_descriptors.as_ref().or(up1.as_ref());
    let d = f2.device_descriptors.as_ref().or(up2.as_ref());
    let mut report = match_features_by(&f1.features, &f2.features, config, |d1, _| match (q, d) {
        (Some(q), Some(d)) => device_tentatives(gpu, q, d, d1.dimension, config.ratio),
        _ => Ok(Vec::new()),
    })?;
    let mut timings = std::mem::take(&mut report.timings_ms);
    let (t1, t2) = (&f1.features.times, &f2.features.times);
    for (name, a, b) in [
        ("pyramid", t1.pyramid, t2.pyramid),
        ("detect", t1.detect, t2.detect),
        ("shape", t1.shape, t2.shape),
        ("orient", t1.orient, t2.orient),
        ("describe", t1.describe, t2.describe),
    ] {
        // The images run one after the other on the device: the stage took both.
        timings.insert(name.into(), a + b);
    }
    timings.insert("total".into(), ms(start));
    report.timings_ms = timings;
    report.device = "cuda".into();
    report.device_note = Some(format!("GPU {}", gpu.info().name));
    Ok(report)
}

/// [`match_images`] on two image files (loading timed as in `pipeline::match_files_with`).
pub fn match_files(
    gpu: &Gpu,
    path1: &Path,
    path2: &Path,
    config: &Config,
    models: &GpuModels,
) -> Result<MatchReport> {
    config.validate()?;
    let start = Instant::now();
    let options = config.load_options();
    let t = Instant::now();
    let (a, b) = rayon::join(|| load_gray(path1, &options), || load_gray(path2, &options));
    let load = ms(t);
    let mut report = match_images(gpu, &a?, &b?, config, models)?;
    report.timings_ms.insert("load".into(), load);
    report.timings_ms.insert("total".into(), ms(start));
    report.images = [path1.display().to_string(), path2.display().to_string()];
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::SIFT_PATCH;

    /// kernels/patch_extract.cu, transcribed line by line (no FMAs, as the kernel's __fmul_rn /
    /// __fadd_rn), so that the host-side frames and the kernel's convention are checked against
    /// the CPU sampler without a GPU.
    fn emulate(space: &ScaleSpace, index: &[i32], frames: &[f32], size: usize) -> Vec<f32> {
        let images = images_of(space);
        let mut out = Vec::new();
        for (f, &level) in frames.chunks(6).zip(index) {
            let img = images[level as usize];
            let (w, h) = (img.width(), img.height());
            let fx = w as f32 / (w.max(2) - 1) as f32;
            let fy = h as f32 / (h.max(2) - 1) as f32;
            let inv = 1.0 / size as f32;
            let (u0, du) = (inv - 1.0, 2.0 * inv);
            let ox = (f[0] * u0 + f[1] * u0 + f[4]) * fx - 0.5;
            let oy = (f[2] * u0 + f[3] * u0 + f[5]) * fy - 0.5;
            let (dxx, dxy) = (f[0] * du * fx, f[2] * du * fy);
            let (dyx, dyy) = (f[1] * du * fx, f[3] * du * fy);
            for i in 0..size {
                for j in 0..size {
                    let x = ox + i as f32 * dyx + j as f32 * dxx;
                    let y = oy + i as f32 * dyy + j as f32 * dxy;
                    out.push(img.sample_clamped(x, y));
                }
            }
        }
        out
    }

    #[test]
    fn device_frames_reproduce_the_cpu_sampler() {
        let image = GrayImage::from_fn(201, 157, |x, y| {
            let (x, y) = (x as f32, y as f32);
            100.0 + 60.0 * (0.17 * x).sin() * (0.11 * y).cos() + 0.3 * x
        });
        let space = ScaleSpace::build(&image);
        let mut lafs = Vec::new();
        for k in 0..60 {
            let t = k as f32;
            let s = 1.5 + (t * 0.7) % 40.0;
            let laf = Laf {
                a: [[s * 1.3, 0.0], [s * 0.4, s / 1.3]],
                // Some near and over the border.
                c: [(t * 37.0) % 230.0 - 10.0, (t * 23.0) % 180.0 - 10.0],
            };
            lafs.push(laf.rotated(t * 0.5));
        }
        for spec in [NET_PATCH, SIFT_PATCH] {
            let (index, frames) = GpuPyramid::frames(&space, &lafs, &spec);
            assert!(
                index.iter().any(|&i| i > 0),
                "some frames use octave levels"
            );
            let got = emulate(&space, &index, &frames, spec.size);
            let want = crate::patch::extract_patches(&space, &lafs, &spec);
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = got
                .iter()
                .zip(&want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            // The CPU's fast path steps its positions incrementally (x += dx), the kernel
            // computes each directly: ~1e-5 apart after 41 steps, inside the 1e-4 policy.
            assert!(diff / scale <= 1e-4, "{} / {scale}", diff);
        }
    }
}
