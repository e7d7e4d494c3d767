//! A small CPU neural-network core and the three networks of the AffNet paper: AffNet (affine
//! shape), OriNet (orientation) and HardNet (descriptor), with exact inference, plus weight I/O
//! (safetensors as the project format, and a safe importer of the authors' PyTorch `.pth` files).
//!
//! # Common use
//! ```no_run
//! use std::path::Path;
//! use wbs::nn::{self, AffNet, HardNet, NetworkKind, OriNet};
//!
//! # fn main() -> wbs::Result<()> {
//! // Once: convert the authors' checkpoint (legacy or zip .pth) to safetensors.
//! let report = nn::import_pth(Path::new("AffNet.pth"), Path::new("affnet.safetensors"), None)?;
//! println!("{report}");
//!
//! // Find and load weights: --weights FILE, else $WBS_WEIGHTS, else the shipped data/.
//! let affnet = AffNet::load(&nn::locate(NetworkKind::AffNet, None)?)?;
//! let patches: Vec<f32> = vec![0.0; 2 * 1024]; // N 32×32 patches, row-major, back to back
//! let shapes = affnet.shapes(&patches); // upright det-1 2×2 matrices [[a11, 0], [a21, a22]]
//! # let (orinet, hardnet) = (OriNet::load(Path::new("o"))?, HardNet::load(Path::new("h"))?);
//! let angles = orinet.angles(&patches); // radians; apply as A ← A·R(θ)
//! let descriptors = hardnet.describe(&patches); // N × 128, unit length
//! # Ok(()) }
//! ```
//!
//! # For the CLI
//! - `wbs weights import IN.pth --out OUT.safetensors [--kind affnet]` → [`import_pth`], print
//!   the [`ImportReport`] (it implements `Display`).
//! - `wbs weights inspect FILE` → [`inspect`] (tensors) or [`inspect_file`] (plus format,
//!   metadata, detected network); works on `.safetensors` and `.pth`.
//! - `--shape affnet`, `--orient orinet`, `--desc hardnet` → [`locate`] then `AffNet::load` etc.
//!   [`Weights::load`] accepts a `.pth` directly too, via the same allow-listed importer.
//! - `wbs bench` → [`bench_report`] (or [`bench()`] per network). Besides wall-clock patches/s
//!   it reports patches per CPU-second, which stays meaningful when other processes share the
//!   cores.
//!
//! # Performance
//! Batches are split into chunks of 8 patches that run in parallel on the rayon pool; each thread
//! keeps about 4 MiB of work buffers between calls. Pass many patches per call (hundreds to
//! thousands): a single patch works but cannot use more than one core. Outputs do not depend on
//! the batch composition beyond float rounding (about 1e-6).
//!
//! The convolutions run at the speed of `gemm`'s kernels (AVX2, or AVX-512 chosen at run time);
//! `wbs bench` measures the networks' throughput, and `docs/affnet.md` ("Speed") records it.
//!
//! # Conventions (see `reference/affnet.md`)
//! - Input: each patch is standardised as `(x − mean) / (std + eps)` with the unbiased std;
//!   `eps` is [`DEFAULT_INPUT_EPS`] (1e-7, the authors' code and MODS) unless set with
//!   `with_input_eps` ([`KORNIA_INPUT_EPS`] = 1e-6 reproduces kornia).
//! - AffNet: `A = [[1 + y0, 0], [y1, 1 + y2]] / sqrt((1 + y0)(1 + y2))` ([`affine_shape`]).
//! - OriNet: final conv k8 with padding 1, tanh, mean of the 3×3 map,
//!   `θ = atan2(y0 + 1e-8, y1 + 1e-8)` ([`orientation_angle`]).
//! - HardNet: final conv k8 without bias, BatchNorm, `x / sqrt(Σx² + 1e-10)`.
//! - BatchNorm: running statistics only, eps 1e-5. Dropout is the identity.
//!
//! # Structure
//! - [`tensor`], [`layers`]: NCHW tensors and reference layers (`Conv2d`, `BatchNorm2d`, ReLU,
//!   tanh, dropout, global pooling) in a PyTorch-indexed [`Sequential`]; a training backward pass
//!   will sit next to each `forward`.
//! - `arch`: the architectures as data ([`NetworkKind`]), giving both the expected state_dict and
//!   the layers.
//! - `engine`: the fast path: BN folded into convs, activations fused, padded NHWC buffers,
//!   stride-1 convs as shifted GEMMs without im2col, patch chunks in parallel with rayon.
//! - `models`: the three networks; `weights`, `pth`, `pickle`, `zip`: file formats; `locate`:
//!   where weights come from; `bench`: throughput.
//!
//! # Safety of `.pth` import
//! `torch.load` executes pickled code. The importer here runs a minimal pickle VM whose globals
//! resolve only to `collections.OrderedDict`, `torch._utils._rebuild_tensor{,_v2}`,
//! `torch._utils._rebuild_parameter` and `torch.*Storage`; anything else is refused. Malformed
//! or truncated files give one-line errors, never a panic.

pub(crate) mod arch;
pub mod backend;
mod bench;
mod engine;
pub mod fold;
pub mod gradcheck;
pub mod layers;
mod locate;
pub(crate) mod matmul;
mod models;
pub mod net_pass;
pub mod network;
pub mod ops;
pub(crate) mod parallel;
pub mod parity;
mod pickle;
mod pth;
pub mod rng;
pub mod tensor;
mod weights;
mod zip;

pub use arch::{NetworkKind, PATCH_LEN, PATCH_SIZE};
pub(crate) use bench::process_cpu_seconds;
pub use bench::{
    bench, bench_report, flops_per_patch, random_patches, random_weights, BenchResult,
};
pub use layers::{BatchNorm2d, Conv2d, Layer, Sequential};
pub use locate::{locate, locate_with_origin, WeightsOrigin, WEIGHTS_ENV};
pub use models::{
    affine_shape, l2_norm, l2_norm_eps, l2_normalise, l2_normalise_backward, l2_normalise_eps,
    normalise_patch, orientation_angle, AffNet, HardNet, OriNet, DEFAULT_INPUT_EPS, HARDNET_DIM,
    KORNIA_INPUT_EPS, L2_NORM_EPS,
};
pub use tensor::Tensor;
pub(crate) use weights::with_sorted_header;
pub use weights::{
    import_pth, inspect, inspect_file, ImportReport, Inspection, Param, TensorInfo, TensorStats,
    Weights, META_EPOCH, META_MODEL, META_SOURCE,
};
