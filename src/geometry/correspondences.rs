//! The correspondences one RANSAC run works on, in pixels and Hartley-normalised.
//!
//! Normalising once per run (rather than per sample) lets the minimal solvers work on O(1)
//! coordinates without any per-hypothesis set-up; errors are still measured in pixels, on the
//! original coordinates, after denormalising each hypothesis (two 3×3 products).

use super::normalise::{hartley, Similarity};

pub(crate) struct Correspondences {
    /// Pixel coordinates in image 1 and image 2.
    pub p1: Vec<[f64; 2]>,
    pub p2: Vec<[f64; 2]>,
    /// The same points after the normalisations `t1`, `t2`.
    pub n1: Vec<[f64; 2]>,
    pub n2: Vec<[f64; 2]>,
    pub t1: Similarity,
    pub t2: Similarity,
}

impl Correspondences {
    /// `None` when the points of either image have no spread (all identical) or are not finite.
    pub fn new(p1: Vec<[f64; 2]>, p2: Vec<[f64; 2]>) -> Option<Self> {
        if p1.len() != p2.len() {
            return None;
        }
        let t1 = hartley(p1.iter().copied())?;
        let t2 = hartley(p2.iter().copied())?;
        let n1 = p1.iter().map(|&p| t1.apply(p)).collect();
        let n2 = p2.iter().map(|&p| t2.apply(p)).collect();
        Some(Self {
            p1,
            p2,
            n1,
            n2,
            t1,
            t2,
        })
    }

    pub fn len(&self) -> usize {
        self.p1.len()
    }
}
