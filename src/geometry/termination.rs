//! How many samples RANSAC still needs: the hypergeometric stopping rule of pydegensac
//! (`nsamples`).

/// Samples needed so that, with probability `confidence`, at least one all-inlier minimal sample
/// of size `m` has been drawn, when `inliers` of the `n` correspondences are inliers; capped at
/// `cap`. Sampling is without replacement, so the all-inlier probability is the hypergeometric
/// `Π_{i<m} (inliers − i)/(n − i)`, which matters for small `n`. `success` (≤ 1) scales that
/// probability for a verification step that may reject a good model (SPRT).
pub(crate) fn required_samples(
    inliers: usize,
    n: usize,
    m: usize,
    confidence: f64,
    success: f64,
    cap: usize,
) -> usize {
    if inliers < m || n < m {
        return cap;
    }
    let mut p = success;
    for i in 0..m {
        p *= (inliers.min(n) - i) as f64 / (n - i) as f64;
    }
    if p.is_nan() || p <= 0.0 {
        return cap;
    }
    if p >= 1.0 {
        return 0;
    }
    let k = (1.0 - confidence).ln() / (1.0 - p).ln();
    if !(k.is_finite() && k >= 0.0) {
        return cap;
    }
    (k.ceil() as usize).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_values() {
        // classical.md §3.1: m=4 at w = 0.3 / 0.5 and p = 0.999 needs about 849 / 107 samples
        // (binomial); the hypergeometric count on a large n agrees to within rounding.
        let k = required_samples(3000, 10_000, 4, 0.999, 1.0, usize::MAX);
        assert!((845..=855).contains(&k), "{k}");
        let k = required_samples(5000, 10_000, 4, 0.999, 1.0, usize::MAX);
        assert!((105..=110).contains(&k), "{k}");
        // m = 7 at w = 0.5: 881.
        let k = required_samples(5000, 10_000, 7, 0.999, 1.0, usize::MAX);
        assert!((875..=890).contains(&k), "{k}");
        // The cap applies at low inlier ratios.
        assert_eq!(
            required_samples(1000, 10_000, 7, 0.999, 1.0, 10_000),
            10_000
        );
    }

    #[test]
    fn edge_cases_do_not_misbehave() {
        assert_eq!(required_samples(3, 100, 4, 0.999, 1.0, 500), 500);
        assert_eq!(required_samples(100, 100, 4, 0.999, 1.0, 500), 0);
        assert_eq!(required_samples(150, 100, 4, 0.999, 1.0, 500), 0);
        assert_eq!(required_samples(50, 100, 4, 0.999, 0.0, 500), 500);
        // Small n: without replacement is stricter than (w)^m.
        let exact = required_samples(10, 20, 4, 0.99, 1.0, usize::MAX);
        let binomial = ((0.01f64).ln() / (1.0 - 0.5f64.powi(4)).ln()).ceil() as usize;
        assert!(exact > binomial);
    }
}
