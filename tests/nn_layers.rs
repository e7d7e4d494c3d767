//! Reference layers against naive definitions, and the three models' fast path against the
//! reference layers, batch against single patches, HardNet's output and weight checks.

mod nn_support;

use nn_support::values;
use wbs::nn::{
    self, AffNet, BatchNorm2d, Conv2d, HardNet, Layer, NetworkKind, OriNet, Sequential, Tensor,
};

/// Direct convolution in f64, straight from the definition.
fn naive_conv(x: &Tensor, conv: &Conv2d) -> Tensor {
    let (oh, ow) = conv.out_size(x.h(), x.w());
    let mut out = Tensor::zeros([x.n(), conv.cout, oh, ow]);
    let p = conv.padding as isize;
    for n in 0..x.n() {
        for co in 0..conv.cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = conv.bias.as_ref().map_or(0.0, |b| b[co] as f64);
                    for ci in 0..conv.cin {
                        for ky in 0..conv.k {
                            for kx in 0..conv.k {
                                let iy = (oy * conv.stride + ky) as isize - p;
                                let ix = (ox * conv.stride + kx) as isize - p;
                                if iy < 0 || ix < 0 || iy >= x.h() as isize || ix >= x.w() as isize
                                {
                                    continue;
                                }
                                let wv =
                                    conv.weight[((co * conv.cin + ci) * conv.k + ky) * conv.k + kx];
                                acc += wv as f64 * x.at(n, ci, iy as usize, ix as usize) as f64;
                            }
                        }
                    }
                    let i = out.index(n, co, oy, ox);
                    out.data[i] = acc as f32;
                }
            }
        }
    }
    out
}

#[test]
fn conv2d_matches_direct_convolution() {
    let mut seed = 1;
    for (h, w) in [(7, 9), (5, 5), (11, 3)] {
        for k in [1, 3, 5] {
            for stride in [1, 2] {
                for padding in [0, 1, 2] {
                    if h + 2 * padding < k || w + 2 * padding < k {
                        continue;
                    }
                    for bias in [false, true] {
                        seed += 1;
                        let (n, cin, cout) = (2, 3, 5);
                        let conv = Conv2d::new(
                            cin,
                            cout,
                            k,
                            stride,
                            padding,
                            values(cout * cin * k * k, seed),
                            bias.then(|| values(cout, seed + 1000)),
                        );
                        let x =
                            Tensor::from_vec([n, cin, h, w], values(n * cin * h * w, seed + 2000));
                        let got = conv.forward(&x);
                        let want = naive_conv(&x, &conv);
                        assert_eq!(got.shape, want.shape);
                        let err = got.max_abs_diff(&want);
                        assert!(
                            err < 1e-5,
                            "{h}x{w} k{k} s{stride} p{padding} bias {bias}: error {err}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn batch_norm_activations_and_pooling() {
    let bn = BatchNorm2d::new(vec![1.0, -2.0], vec![4.0, 0.25]);
    let x = Tensor::from_vec([1, 2, 1, 2], vec![3.0, 5.0, -2.0, 0.0]);
    let y = bn.forward(&x);
    let expect = [
        2.0 / (4.0f32 + 1e-5).sqrt(),
        4.0 / (4.0f32 + 1e-5).sqrt(),
        0.0,
        2.0 / (0.25f32 + 1e-5).sqrt(),
    ];
    for (a, b) in y.data.iter().zip(expect) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    let (scale, shift) = bn.scale_shift();
    for (i, v) in x.data.iter().enumerate() {
        let c = i / 2;
        assert!((v * scale[c] + shift[c] - y.data[i]).abs() < 1e-6);
    }
    let t = Layer::Tanh.forward(&x);
    assert_eq!(t.data, x.data.iter().map(|v| v.tanh()).collect::<Vec<_>>());
    assert_eq!(Layer::Relu.forward(&x).data, [3.0, 5.0, 0.0, 0.0]);
    assert_eq!(Layer::Dropout(0.3).forward(&x), x);
    let pooled = Layer::GlobalAvgPool.forward(&x);
    assert_eq!((pooled.shape, pooled.data), ([1, 2, 1, 1], vec![4.0, -1.0]));
    let seq = Sequential {
        layers: vec![Layer::BatchNorm2d(bn), Layer::Relu, Layer::GlobalAvgPool],
    };
    let out = seq.forward(&x);
    assert!((out.data[0] - (expect[0] + expect[1]) / 2.0).abs() < 1e-6);
    assert!((out.data[1] - expect[3] / 2.0).abs() < 1e-6);
}

/// Patches with structure (ramps, bars, noise) so that every layer sees varied input.
fn test_patches(n: usize) -> Vec<f32> {
    let noise = values(n * 1024, 77);
    (0..n * 1024)
        .map(|i| {
            let (p, r, c) = (i / 1024, (i / 32) % 32, i % 32);
            ((r * (p + 1) + 3 * c) % 17) as f32 / 16.0
                + 0.3 * noise[i]
                + if (10..14).contains(&r) { 1.0 } else { 0.0 }
        })
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn fast_path_matches_reference_layers() {
    let n = 37; // not a multiple of the chunk size
    let patches = test_patches(n);
    let affnet = AffNet::from_weights(&nn::random_weights(NetworkKind::AffNet, 21)).unwrap();
    let fast: Vec<f32> = affnet.forward_raw(&patches).concat();
    let slow: Vec<f32> = affnet.forward_reference(&patches).concat();
    assert!(
        max_diff(&fast, &slow) < 1e-5,
        "AffNet {}",
        max_diff(&fast, &slow)
    );
    // Random weights must not saturate the tanh, or the comparison would prove little.
    assert!(fast.iter().any(|v| v.abs() > 0.05 && v.abs() < 0.95));

    let orinet = OriNet::from_weights(&nn::random_weights(NetworkKind::OriNet, 22)).unwrap();
    let fast: Vec<f32> = orinet.forward_raw(&patches).concat();
    let slow: Vec<f32> = orinet.forward_reference(&patches).concat();
    assert!(
        max_diff(&fast, &slow) < 1e-5,
        "OriNet {}",
        max_diff(&fast, &slow)
    );

    let hardnet = HardNet::from_weights(&nn::random_weights(NetworkKind::HardNet, 23)).unwrap();
    let fast = hardnet.describe(&patches);
    let slow = hardnet.describe_reference(&patches);
    assert!(
        max_diff(&fast, &slow) < 1e-5,
        "HardNet {}",
        max_diff(&fast, &slow)
    );
}

#[test]
fn batch_results_equal_single_patch_results() {
    let n = 21;
    let patches = test_patches(n);
    let affnet = AffNet::from_weights(&nn::random_weights(NetworkKind::AffNet, 31)).unwrap();
    let orinet = OriNet::from_weights(&nn::random_weights(NetworkKind::OriNet, 32)).unwrap();
    let hardnet = HardNet::from_weights(&nn::random_weights(NetworkKind::HardNet, 33)).unwrap();
    let (a, o, h) = (
        affnet.forward_raw(&patches),
        orinet.angles(&patches),
        hardnet.describe(&patches),
    );
    assert_eq!((a.len(), o.len(), h.len()), (n, n, n * 128));
    // GEMM summation order depends on the matrix sizes, so agreement is to float rounding
    // (about 1e-6 after 7 layers), not bit for bit.
    for (i, p) in patches.chunks(1024).enumerate() {
        let d = max_diff(&affnet.forward_raw(p)[0], &a[i]);
        assert!(d < 1e-5, "AffNet patch {i}: {d}");
        assert!(
            (orinet.angles(p)[0] - o[i]).abs() < 1e-4,
            "OriNet patch {i}"
        );
        let d = max_diff(&hardnet.describe(p), &h[i * 128..(i + 1) * 128]);
        assert!(d < 1e-5, "HardNet patch {i}: {d}");
    }
    // Shapes follow from the raw outputs.
    let shapes = affnet.shapes(&patches);
    for (s, r) in shapes.iter().zip(&a) {
        assert_eq!(*s, nn::affine_shape(*r));
        assert!((s[0][0] * s[1][1] - 1.0).abs() < 1e-5 && s[0][1] == 0.0);
    }
    assert!(affnet.forward_raw(&[]).is_empty());
}

#[test]
fn input_normalisation_makes_scale_irrelevant() {
    let patches = test_patches(3);
    let scaled: Vec<f32> = patches.iter().map(|v| 255.0 * v + 40.0).collect();
    let affnet = AffNet::from_weights(&nn::random_weights(NetworkKind::AffNet, 41)).unwrap();
    let a = affnet.forward_raw(&patches).concat();
    let b = affnet.forward_raw(&scaled).concat();
    assert!(max_diff(&a, &b) < 1e-4, "{}", max_diff(&a, &b));
    // eps matters only at the 1e-6 level on such patches, but it is applied.
    let kornia = affnet
        .clone()
        .with_input_eps(1e-1)
        .forward_raw(&patches)
        .concat();
    assert!(max_diff(&a, &kornia) > 1e-4);
    // A constant patch normalises to zeros: same output as an all-zero patch, all finite.
    let flat = affnet.forward_raw(&[5.0; 1024]);
    assert_eq!(flat, affnet.forward_raw(&[0.0; 1024]));
    assert!(flat[0].iter().all(|v| v.is_finite()));
}

#[test]
fn hardnet_descriptors_are_unit_length() {
    let hardnet = HardNet::from_weights(&nn::random_weights(NetworkKind::HardNet, 51)).unwrap();
    let d = hardnet.describe(&test_patches(9));
    for desc in d.chunks(nn::HARDNET_DIM) {
        let norm: f32 = desc.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        assert!(desc.iter().any(|v| v.abs() > 1e-3));
    }
    // Different patches give different descriptors.
    assert!(max_diff(&d[..128], &d[128..256]) > 1e-3);
}

#[test]
fn hardnet_weights_are_validated() {
    let expected = NetworkKind::HardNet.expected_tensors();
    let names: Vec<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    // DagnyT/hardnet naming: convs at 0, 3, ..., 19 (no bias), BNs at 1, 4, ..., 16 and 20.
    for i in [0, 3, 6, 9, 12, 15, 19] {
        assert!(
            names.contains(&format!("features.{i}.weight").as_str()),
            "conv {i}"
        );
        assert!(
            !names.contains(&format!("features.{i}.bias").as_str()),
            "bias {i}"
        );
    }
    for i in [1, 4, 7, 10, 13, 16, 20] {
        assert!(
            names.contains(&format!("features.{i}.running_mean").as_str()),
            "bn {i}"
        );
        assert!(
            names.contains(&format!("features.{i}.running_var").as_str()),
            "bn {i}"
        );
    }
    assert_eq!(names.len(), 21);
    let count: usize = expected
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    assert_eq!(count, 1_334_560 + 1_152);
    assert!(expected.contains(&("features.19.weight".into(), vec![128, 128, 8, 8])));

    let good = nn::random_weights(NetworkKind::HardNet, 52);
    assert_eq!(NetworkKind::detect(&good).unwrap(), NetworkKind::HardNet);
    let mut bad = good.clone();
    bad.insert(
        "features.12.weight",
        vec![128, 64, 3, 2],
        vec![0.0; 128 * 64 * 6],
    );
    let msg = HardNet::from_weights(&bad).unwrap_err().to_string();
    assert!(
        msg.contains("'features.12.weight' has shape [128, 64, 3, 2]"),
        "{msg}"
    );
    let mut neg = good.clone();
    neg.tensors.get_mut("features.20.running_var").unwrap().data[3] = -1.0;
    let msg = HardNet::from_weights(&neg).unwrap_err().to_string();
    assert!(msg.contains("negative variances"), "{msg}");
    let msg = HardNet::from_weights(&nn::random_weights(NetworkKind::AffNet, 1))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("HardNet"), "{msg}");
    let msg = AffNet::from_weights(&good).unwrap_err().to_string();
    assert!(msg.contains("AffNet"), "{msg}");
    assert_eq!(
        "hardnet".parse::<NetworkKind>().unwrap(),
        NetworkKind::HardNet
    );
    assert!("sift".parse::<NetworkKind>().is_err());
}
