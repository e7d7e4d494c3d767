//! The three architectures as data: layer lists in PyTorch `features` order, from which both the
//! expected state_dict (names and shapes) and the reference `Sequential` are derived, so the two
//! can never disagree.

use std::fmt;
use std::str::FromStr;

use super::layers::{BatchNorm2d, Conv2d, Layer, Sequential};
use super::weights::weights_error;
use super::weights::Weights;
use crate::{Error, Result};

/// Side of the square input patches of all three networks.
pub const PATCH_SIZE: usize = 32;
/// Values per input patch (`32 × 32`).
pub const PATCH_LEN: usize = PATCH_SIZE * PATCH_SIZE;

/// Which network a weights file belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NetworkKind {
    /// Affine shape (ducha-aiki/affnet `AffNetFast`): 3 outputs.
    AffNet,
    /// Orientation (ducha-aiki/affnet `OriNetFast(PS=32)`): 2 outputs.
    OriNet,
    /// Descriptor (DagnyT/hardnet `HardNet`): 128-D.
    HardNet,
}

/// One entry of a `features` list, before weights are attached.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum LayerSpec {
    Conv {
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
        bias: bool,
    },
    BatchNorm(usize),
    Relu,
    Tanh,
    Dropout(f32),
    GlobalAvgPool,
}

impl NetworkKind {
    /// The three networks, in the order of the paper's pipeline (shape, orientation, descriptor).
    pub const ALL: [NetworkKind; 3] = [
        NetworkKind::AffNet,
        NetworkKind::OriNet,
        NetworkKind::HardNet,
    ];

    /// The network's name as printed ("AffNet", "OriNet", "HardNet").
    pub fn name(self) -> &'static str {
        match self {
            NetworkKind::AffNet => "AffNet",
            NetworkKind::OriNet => "OriNet",
            NetworkKind::HardNet => "HardNet",
        }
    }

    /// The file name wbs looks for in a weights directory (`affnet.safetensors`, ...).
    pub fn file_name(self) -> &'static str {
        match self {
            NetworkKind::AffNet => "affnet.safetensors",
            NetworkKind::OriNet => "orinet.safetensors",
            NetworkKind::HardNet => "hardnet.safetensors",
        }
    }

    /// Values per patch that the network returns (3, 2, 128).
    pub fn output_len(self) -> usize {
        match self {
            NetworkKind::AffNet => 3,
            NetworkKind::OriNet => 2,
            NetworkKind::HardNet => 128,
        }
    }

    /// The layer list (`features.0`, `features.1`, ...).
    pub(crate) fn spec(self) -> Vec<LayerSpec> {
        use LayerSpec::*;
        let widths = match self {
            NetworkKind::AffNet | NetworkKind::OriNet => [16, 32, 64],
            NetworkKind::HardNet => [32, 64, 128],
        };
        // Six conv-BN-ReLU blocks: two per width, the first of the 2nd and 3rd widths with stride 2.
        let mut layers = Vec::new();
        let mut cin = 1;
        for (i, &cout) in [
            widths[0], widths[0], widths[1], widths[1], widths[2], widths[2],
        ]
        .iter()
        .enumerate()
        {
            let stride = if i == 2 || i == 4 { 2 } else { 1 };
            layers.extend([
                Conv {
                    cin,
                    cout,
                    k: 3,
                    stride,
                    padding: 1,
                    bias: false,
                },
                BatchNorm(cout),
                Relu,
            ]);
            cin = cout;
        }
        let last = widths[2];
        match self {
            NetworkKind::AffNet => layers.extend([
                Dropout(0.25),
                Conv {
                    cin: last,
                    cout: 3,
                    k: 8,
                    stride: 1,
                    padding: 0,
                    bias: true,
                },
                Tanh,
                GlobalAvgPool,
            ]),
            // Padding 1 turns the 8×8 map into 3×3 outputs that the pool really averages.
            NetworkKind::OriNet => layers.extend([
                Dropout(0.25),
                Conv {
                    cin: last,
                    cout: 2,
                    k: 8,
                    stride: 1,
                    padding: 1,
                    bias: true,
                },
                Tanh,
                GlobalAvgPool,
            ]),
            NetworkKind::HardNet => layers.extend([
                Dropout(0.3),
                Conv {
                    cin: last,
                    cout: last,
                    k: 8,
                    stride: 1,
                    padding: 0,
                    bias: false,
                },
                BatchNorm(last),
            ]),
        }
        layers
    }

    /// The state_dict this network needs: `(name, shape)` in layer order.
    pub fn expected_tensors(self) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        for (i, layer) in self.spec().into_iter().enumerate() {
            match layer {
                LayerSpec::Conv {
                    cin, cout, k, bias, ..
                } => {
                    out.push((format!("features.{i}.weight"), vec![cout, cin, k, k]));
                    if bias {
                        out.push((format!("features.{i}.bias"), vec![cout]));
                    }
                }
                LayerSpec::BatchNorm(c) => {
                    out.push((format!("features.{i}.running_mean"), vec![c]));
                    out.push((format!("features.{i}.running_var"), vec![c]));
                }
                _ => {}
            }
        }
        out
    }

    /// Checks that `w` holds exactly this network's tensors with the right shapes and usable
    /// values; the error names the file and the first problem.
    pub fn check(self, w: &Weights) -> Result<()> {
        self.problem(w).map_or(Ok(()), |p| {
            Err(weights_error(format!("{}: {p}", w.source_name())))
        })
    }

    /// The first reason `w` is not this network, if any.
    fn problem(self, w: &Weights) -> Option<String> {
        let expected = self.expected_tensors();
        for (name, shape) in &expected {
            let Some(t) = w.get(name) else {
                return Some(format!(
                    "missing tensor '{name}' ({} weights need {} tensors)",
                    self.name(),
                    expected.len()
                ));
            };
            if &t.shape != shape {
                return Some(format!(
                    "tensor '{name}' has shape {:?}, {} expects {shape:?}",
                    t.shape,
                    self.name()
                ));
            }
            if let Some(bad) = t.data.iter().find(|v| !v.is_finite()) {
                return Some(format!("tensor '{name}' contains the value {bad}"));
            }
            if name.ends_with("running_var") && t.data.iter().any(|&v| v < 0.0) {
                return Some(format!("tensor '{name}' has negative variances"));
            }
        }
        if let Some(extra) = w.names().find(|n| !expected.iter().any(|(e, _)| e == n)) {
            return Some(format!(
                "unexpected tensor '{extra}' for {} (is this another network's file?)",
                self.name()
            ));
        }
        None
    }

    /// Which network `w` is for, from its names and shapes.
    pub fn detect(w: &Weights) -> Result<NetworkKind> {
        let mut best: Option<(usize, NetworkKind)> = None;
        for kind in NetworkKind::ALL {
            if kind.problem(w).is_none() {
                return Ok(kind);
            }
            let score = kind
                .expected_tensors()
                .iter()
                .filter(|(n, s)| w.get(n).is_some_and(|t| &t.shape == s))
                .count();
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, kind));
            }
        }
        let problem = match best {
            Some((score, kind)) if score > 0 => format!(
                "closest is {}, but {}",
                kind.name(),
                kind.problem(w).unwrap_or_default()
            ),
            _ => "no tensor has an expected name and shape".to_string(),
        };
        Err(weights_error(format!(
            "{}: not AffNet, OriNet or HardNet weights: {problem}",
            w.source_name()
        )))
    }

    /// The reference network with `w`'s values (checked first).
    pub(crate) fn build(self, w: &Weights) -> Result<Sequential> {
        self.check(w)?;
        let tensor = |name: String| -> Result<Vec<f32>> {
            w.get(&name).map(|t| t.data.clone()).ok_or_else(|| {
                weights_error(format!("{}: missing tensor '{name}'", w.source_name()))
            })
        };
        let mut layers = Vec::new();
        for (i, spec) in self.spec().into_iter().enumerate() {
            layers.push(match spec {
                LayerSpec::Conv {
                    cin,
                    cout,
                    k,
                    stride,
                    padding,
                    bias,
                } => Layer::Conv2d(Conv2d::new(
                    cin,
                    cout,
                    k,
                    stride,
                    padding,
                    tensor(format!("features.{i}.weight"))?,
                    if bias {
                        Some(tensor(format!("features.{i}.bias"))?)
                    } else {
                        None
                    },
                )),
                LayerSpec::BatchNorm(_) => Layer::BatchNorm2d(BatchNorm2d::new(
                    tensor(format!("features.{i}.running_mean"))?,
                    tensor(format!("features.{i}.running_var"))?,
                )),
                LayerSpec::Relu => Layer::Relu,
                LayerSpec::Tanh => Layer::Tanh,
                LayerSpec::Dropout(p) => Layer::Dropout(p),
                LayerSpec::GlobalAvgPool => Layer::GlobalAvgPool,
            });
        }
        Ok(Sequential { layers })
    }
}

impl fmt::Display for NetworkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NetworkKind {
    type Err = Error;

    /// Case-insensitive `affnet`, `orinet` or `hardnet`.
    fn from_str(s: &str) -> Result<Self> {
        NetworkKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown model '{s}': expected affnet, orinet or hardnet"
                ))
            })
    }
}
