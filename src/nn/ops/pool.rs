//! Global average pooling (`AdaptiveAvgPool2d(1)`) on NHWC batches: the mean of each channel over
//! an item's pixels, and its backward (the gradient spread evenly over the pixels).

/// `x`: `n` items of `hw × c`; `y`: `n × c`.
pub fn global_avg_pool_forward(x: &[f32], n: usize, c: usize, y: &mut [f32]) {
    assert!(
        n > 0 && c > 0 && x.len().is_multiple_of(n * c),
        "pool input length"
    );
    assert_eq!(y.len(), n * c, "pool output length");
    let hw = x.len() / (n * c);
    for (item, out) in x.chunks_exact(hw * c).zip(y.chunks_exact_mut(c)) {
        let mut acc = vec![0.0f64; c];
        for px in item.chunks_exact(c) {
            acc.iter_mut().zip(px).for_each(|(a, v)| *a += *v as f64);
        }
        out.iter_mut()
            .zip(&acc)
            .for_each(|(o, a)| *o = (a / hw as f64) as f32);
    }
}

/// `dx[item][p][ch] = dy[item][ch] / hw` (overwrites `dx`).
pub fn global_avg_pool_backward(dy: &[f32], n: usize, c: usize, dx: &mut [f32]) {
    assert_eq!(dy.len(), n * c, "pool output gradient length");
    assert!(dx.len().is_multiple_of(n * c), "pool input gradient length");
    let hw = dx.len() / (n * c);
    for (item, d) in dx.chunks_exact_mut(hw * c).zip(dy.chunks_exact(c)) {
        for px in item.chunks_exact_mut(c) {
            px.iter_mut().zip(d).for_each(|(p, d)| *p = d / hw as f32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{check_gradient, random_vec};

    #[test]
    fn pool_matches_finite_differences() {
        let (n, hw, c) = (3, 15, 5);
        let x = random_vec(n * hw * c, 1, 1.0);
        let r = random_vec(n * c, 2, 1.0);
        let loss = |v: &[f32]| -> f64 {
            let mut y = vec![0.0; n * c];
            global_avg_pool_forward(v, n, c, &mut y);
            y.iter().zip(&r).map(|(y, r)| (*y as f64) * *r as f64).sum()
        };
        let mut dx = vec![0.0; x.len()];
        global_avg_pool_backward(&r, n, c, &mut dx);
        check_gradient(loss, &x, &dx, 1e-3, 1e-3).assert_ok("global average pool");
    }
}
