//! A scale space on the device and patch extraction from it: the whole pyramid is uploaded once
//! per image, each network stage uploads only its frames (6 floats each) and samples all patches in
//! one launch ([`ops::extract_patches`]); the patches never leave the device.

use cudarc::driver::CudaSlice;

use super::ops::{self, Buf};
use super::Gpu;
use crate::image::GrayImage;
use crate::laf::Laf;
use crate::patch::PatchSpec;
use crate::pyramid::ScaleSpace;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::{NET_PATCH, SIFT_PATCH};

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
