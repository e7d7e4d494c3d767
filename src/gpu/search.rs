//! Nearest neighbours and the ratio test on the device.

use super::ops::{self, Buf};
use super::Gpu;
use crate::matching::Tentative;
use crate::Result;

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
