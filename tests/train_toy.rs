//! The paper's toy comparison of the three descriptor losses (AffNet, Fig. 1): five pairs of
//! 2-D points optimised with Adam under PosDist, HardNeg and HardNegC.
//!
//! The points are descriptors, and in AffNet every descriptor comes out of the same model: the
//! network can only change all of them together. The toy keeps that: the ten points are
//! `W·x` for fixed 2-D inputs and one shared, trained 2×2 map `W` (starting at the identity).
//! The anchors are spread along x, 1.6 apart; each positive differs from its anchor mostly
//! along y (the nuisance the model should remove) and a little along x. The losses are the
//! library's (`train::descriptor_loss`), their gradients chained through `W`.
//!
//! What the paper shows, and what is asserted:
//! - PosDist has nothing that keeps non-matching points apart: it shrinks the whole map and
//!   every point collapses onto every other (the hardest negative distance goes to ~0);
//! - HardNeg (hardest negative with its gradient) pushes the negatives apart as hard as it
//!   pulls the positives together: it is satisfied by keeping the spread, and the positive
//!   distance stays large;
//! - HardNegC (hardest negative held constant) pulls the positives together while the
//!   negatives stay apart (beyond the margin of 1).

use wbs::nn::ops::loss::LossWorkspace;
use wbs::train::{descriptor_loss, LossGrads, LossKind};

const N: usize = 5;

fn inputs() -> (Vec<[f64; 2]>, Vec<[f64; 2]>) {
    let noise = [
        [0.08, 0.7],
        [-0.1, -0.8],
        [0.05, 0.9],
        [-0.07, -0.6],
        [0.1, 0.75],
    ];
    let anchors: Vec<[f64; 2]> = (0..N)
        .map(|i| [i as f64 * 1.6 - 3.2, if i % 2 == 0 { 0.1 } else { -0.1 }])
        .collect();
    let positives = anchors
        .iter()
        .zip(noise)
        .map(|(a, n)| [a[0] + n[0], a[1] + n[1]])
        .collect();
    (anchors, positives)
}

fn apply(w: &[f64; 4], x: &[[f64; 2]]) -> Vec<f32> {
    x.iter()
        .flat_map(|p| {
            [
                (w[0] * p[0] + w[1] * p[1]) as f32,
                (w[2] * p[0] + w[3] * p[1]) as f32,
            ]
        })
        .collect()
}

fn dist(a: &[f32], b: &[f32], i: usize, j: usize) -> f64 {
    let (dx, dy) = (
        a[2 * i] as f64 - b[2 * j] as f64,
        a[2 * i + 1] as f64 - b[2 * j + 1] as f64,
    );
    dx.hypot(dy)
}

/// Mean positive distance and the hardest negative distance of the points.
fn summary(a: &[f32], p: &[f32]) -> (f64, f64) {
    let pos = (0..N).map(|i| dist(a, p, i, i)).sum::<f64>() / N as f64;
    let neg = (0..N)
        .flat_map(|i| (0..N).filter(move |&j| j != i).map(move |j| (i, j)))
        .map(|(i, j)| dist(a, p, i, j))
        .fold(f64::INFINITY, f64::min);
    (pos, neg)
}

struct Outcome {
    positive: f64,
    hardest_negative: f64,
    losses: Vec<f64>,
}

/// Adam (lr 0.01, β 0.9/0.999) on `W` for `iterations` steps.
fn optimise(kind: LossKind, iterations: usize) -> Outcome {
    let (xa, xp) = inputs();
    let mut w = [1.0, 0.0, 0.0, 1.0];
    let (mut m, mut v) = ([0.0f64; 4], [0.0f64; 4]);
    let (lr, b1, b2) = (0.01, 0.9, 0.999);
    let mut ws = LossWorkspace::default();
    let mut losses = Vec::new();
    for t in 1..=iterations {
        let (a, p) = (apply(&w, &xa), apply(&w, &xp));
        let (mut ga, mut gp) = (vec![0.0f32; 2 * N], vec![0.0f32; 2 * N]);
        let stats = descriptor_loss(
            kind,
            &a,
            &p,
            2,
            LossGrads {
                anchor: Some(&mut ga),
                positive: Some(&mut gp),
            },
            &mut ws,
        );
        losses.push(stats.loss);
        // dL/dW = Σ g·xᵀ over both sides.
        let mut g = [0.0f64; 4];
        for (grads, x) in [(&ga, &xa), (&gp, &xp)] {
            for (k, x) in x.iter().enumerate() {
                for r in 0..2 {
                    g[2 * r] += grads[2 * k + r] as f64 * x[0];
                    g[2 * r + 1] += grads[2 * k + r] as f64 * x[1];
                }
            }
        }
        for k in 0..4 {
            m[k] = b1 * m[k] + (1.0 - b1) * g[k];
            v[k] = b2 * v[k] + (1.0 - b2) * g[k] * g[k];
            let (mh, vh) = (
                m[k] / (1.0 - b1.powi(t as i32)),
                v[k] / (1.0 - b2.powi(t as i32)),
            );
            w[k] -= lr * mh / (vh.sqrt() + 1e-8);
        }
    }
    let (positive, hardest_negative) = summary(&apply(&w, &xa), &apply(&w, &xp));
    Outcome {
        positive,
        hardest_negative,
        losses,
    }
}

#[test]
fn the_three_losses_behave_as_in_the_paper() {
    let (xa, xp) = inputs();
    let (pos0, neg0) = summary(
        &apply(&[1.0, 0.0, 0.0, 1.0], &xa),
        &apply(&[1.0, 0.0, 0.0, 1.0], &xp),
    );
    let posdist = optimise(LossKind::PosDist, 3000);
    let hardneg = optimise(LossKind::HardNeg, 3000);
    let hardnegc = optimise(LossKind::HardNegC, 3000);
    let line = |name: &str, o: &Outcome| {
        format!(
            "{name}: positive {:.3}, hardest negative {:.3}, loss {:.3} → {:.3}",
            o.positive,
            o.hardest_negative,
            o.losses[0],
            o.losses.last().unwrap()
        )
    };
    let report = format!(
        "start: positive {pos0:.3}, hardest negative {neg0:.3}\n{}\n{}\n{}",
        line("posdist", &posdist),
        line("hardneg", &hardneg),
        line("hardnegc", &hardnegc)
    );
    eprintln!("{report}");

    // PosDist: everything collapses, matching and non-matching points alike.
    assert!(posdist.positive < 0.02 * pos0, "{report}");
    assert!(posdist.hardest_negative < 0.02 * neg0, "{report}");
    // HardNegC: the positives come together while the negatives stay beyond the margin.
    assert!(hardnegc.positive < 0.35 * pos0, "{report}");
    assert!(hardnegc.hardest_negative > 1.0, "{report}");
    // HardNeg: the negatives are kept apart too, but the positives stay far apart.
    assert!(hardneg.hardest_negative > 1.0, "{report}");
    assert!(hardneg.positive > 2.0 * hardnegc.positive, "{report}");
    assert!(hardneg.positive > 0.6 * pos0, "{report}");
}
