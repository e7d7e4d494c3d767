//! The two model families as the RANSAC engine sees them: how a minimal sample becomes
//! hypotheses, how a hypothesis is scored, how inliers are refitted.

use nalgebra::Matrix3;

use super::correspondences::Correspondences;
use super::degeneracy;
use super::fundamental::{self, fit_fundamental, seven_point};
use super::homography::{
    self, fit_homography, forward_error2, is_near_singular, minimal_homography,
    symmetric_max_error2,
};
use super::ransac::{Family, Models, Rng, Scored};
use super::HomographyError;

/// Homographies from 4-point samples, scored by the configured [`HomographyError`].
pub(crate) struct HomographyFamily<'a> {
    pub data: &'a Correspondences,
    pub error: HomographyError,
}

/// A homography with its inverse (only computed for the symmetric error).
pub(crate) struct PreparedHomography {
    h: Matrix3<f64>,
    h_inv: Matrix3<f64>,
}

impl HomographyFamily<'_> {
    /// Where to apply the near-singularity test: the centroid of the points of image 1.
    fn centre(&self) -> [f64; 2] {
        self.data.t1.centre
    }
}

impl Family for HomographyFamily<'_> {
    const SAMPLE_SIZE: usize = 4;
    const FIT_MIN: usize = 4;
    const LO_SAMPLE_CAP: usize = 12;
    const LO_INNER_MIN: usize = 8;
    const FIT_IS_SET_FUNCTION: bool = true;
    type Prepared = PreparedHomography;

    fn data(&self) -> &Correspondences {
        self.data
    }

    fn minimal(&self, sample: &[usize], out: &mut Models) {
        let d = self.data;
        let p: [[f64; 2]; 4] = std::array::from_fn(|k| d.n1[sample[k]]);
        let q: [[f64; 2]; 4] = std::array::from_fn(|k| d.n2[sample[k]]);
        if let Some(hn) = minimal_homography(&p, &q) {
            let h = homography::denormalise(&hn, &d.t1, &d.t2);
            if !is_near_singular(&h, self.centre()) {
                out.push(h);
            }
        }
    }

    fn prepare(&self, model: &Matrix3<f64>) -> Option<PreparedHomography> {
        let h_inv = match self.error {
            HomographyError::SymmetricMax => model.try_inverse()?,
            HomographyError::Forward | HomographyError::Sampson => Matrix3::zeros(),
        };
        Some(PreparedHomography { h: *model, h_inv })
    }

    #[inline(always)]
    fn error(&self, prepared: &PreparedHomography, p1: [f64; 2], p2: [f64; 2]) -> f64 {
        match self.error {
            HomographyError::Forward => forward_error2(&prepared.h, p1, p2),
            HomographyError::SymmetricMax => {
                symmetric_max_error2(&prepared.h, &prepared.h_inv, p1, p2)
            }
            HomographyError::Sampson => homography::sampson_error2(&prepared.h, p1, p2),
        }
    }

    fn fit(&self, indices: &[usize], _current: Option<&Matrix3<f64>>) -> Option<Matrix3<f64>> {
        fit_homography(&self.data.p1, &self.data.p2, indices)
            .filter(|h| !is_near_singular(h, self.centre()))
    }
}

/// Fundamental matrices from 7-point samples, scored by the Sampson error, with DEGENSAC.
pub(crate) struct FundamentalFamily<'a> {
    pub data: &'a Correspondences,
    /// Run the DEGENSAC degeneracy test on every new best sample.
    pub degensac: bool,
}

impl Family for FundamentalFamily<'_> {
    const SAMPLE_SIZE: usize = 7;
    const FIT_MIN: usize = 8;
    const LO_SAMPLE_CAP: usize = 14;
    const LO_INNER_MIN: usize = 16;
    // The weighted fit depends on the current model, so equal sets do not give equal fits.
    const FIT_IS_SET_FUNCTION: bool = false;
    type Prepared = Matrix3<f64>;

    fn data(&self) -> &Correspondences {
        self.data
    }

    fn minimal(&self, sample: &[usize], out: &mut Models) {
        let d = self.data;
        let p: [[f64; 2]; 7] = std::array::from_fn(|k| d.n1[sample[k]]);
        let q: [[f64; 2]; 7] = std::array::from_fn(|k| d.n2[sample[k]]);
        let (models, n) = seven_point(&p, &q);
        for fn_ in &models[..n] {
            let f = fundamental::denormalise(fn_, &d.t1, &d.t2);
            if f.iter().all(|v| v.is_finite()) {
                out.push(f);
            }
        }
    }

    fn prepare(&self, model: &Matrix3<f64>) -> Option<Matrix3<f64>> {
        Some(*model)
    }

    #[inline(always)]
    fn error(&self, f: &Matrix3<f64>, p1: [f64; 2], p2: [f64; 2]) -> f64 {
        fundamental::sampson_error2(f, p1, p2)
    }

    fn fit(&self, indices: &[usize], current: Option<&Matrix3<f64>>) -> Option<Matrix3<f64>> {
        fit_fundamental(&self.data.p1, &self.data.p2, indices, current)
    }

    fn degenerate_alternative(
        &self,
        sample: &[usize],
        candidate: &Scored,
        threshold2: f64,
        rng: &mut Rng,
    ) -> Option<Scored> {
        if !self.degensac {
            return None;
        }
        degeneracy::plane_and_parallax(self, sample, &candidate.model, threshold2, rng)
    }
}
