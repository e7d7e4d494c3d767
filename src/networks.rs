//! The networks a configuration uses, loaded once and placed on the device that runs them.
//!
//! Loading a network means reading its weights, checking them against the architecture and
//! compiling its inference plan, which costs more than shaping one image's features.
//! [`Models::load`] therefore loads exactly the networks a configuration asks for
//! (`Config::networks`: AffNet for `--shape affnet`, OriNet for `--orientation orinet`, HardNet
//! for `--descriptor hardnet`), and [`Networks`] puts them on a device: the feature stages then ask it for a network's outputs on
//! the patches of a set of frames ([`Networks::run`]) and for the ratio-test matches of two
//! descriptor sets ([`Networks::ratio_matches`]), whatever the device. A
//! [`crate::matcher::Matcher`] does all of this once, in `Matcher::new`.
//!
//! On the CPU the patches are sampled in chunks of `patch::STAGE_BATCH` frames and run through the
//! CPU networks. On CUDA the image's scale space is uploaded once ([`Networks::prepare`]), each
//! stage uploads only its frames and samples all patches on the device, and only the outputs
//! come back (3 or 2 floats per frame, 128 for HardNet).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::describe::Described;
use crate::device::{DeviceKind, ResolvedDevice};
use crate::laf::Laf;
use crate::matching::{k_nearest, ratio_test, two_nearest, KNearest, Tentative};
use crate::nn::{self, AffNet, HardNet, NetworkKind, OriNet, WeightsOrigin};
use crate::patch::on_patches;
use crate::pyramid::ScaleSpace;
use crate::{Error, Result};

/// Patches per network call on CUDA: bounds the activations of one call (about 2.2 GB for
/// HardNet's largest pair of buffers).
pub const DEVICE_BATCH: usize = 16_384;

/// The networks a pipeline may use, in host memory; `None` where the configuration does not
/// need one.
#[derive(Clone, Debug, Default)]
pub struct Models {
    /// The affine shape network (`--shape affnet`).
    pub affnet: Option<AffNet>,
    /// The orientation network (`--orientation orinet`).
    pub orinet: Option<OriNet>,
    /// The descriptor network (`--descriptor hardnet`).
    pub hardnet: Option<HardNet>,
}

impl Models {
    /// No networks: enough for the classical stages.
    pub fn none() -> Models {
        Models::default()
    }

    /// Loads the networks in `wanted` (as `Config::networks` lists them), each from its file or
    /// the usual lookup ([`nn::locate`]: the explicit file, then `WBS_WEIGHTS`, then the shipped
    /// `data/`).
    pub fn load(wanted: &[(NetworkKind, Option<&Path>)]) -> Result<Models> {
        Models::load_with_files(wanted).map(|(models, _)| models)
    }

    /// [`Models::load`], and which file each network came from (for the report).
    pub fn load_with_files(
        wanted: &[(NetworkKind, Option<&Path>)],
    ) -> Result<(Models, Vec<WeightsFile>)> {
        let mut models = Models::none();
        let mut files = Vec::new();
        for &(kind, explicit) in wanted {
            let file = WeightsFile::find(kind, explicit)?;
            let path = Path::new(&file.path);
            match kind {
                NetworkKind::AffNet => models.affnet = Some(AffNet::load(path)?),
                NetworkKind::OriNet => models.orinet = Some(OriNet::load(path)?),
                NetworkKind::HardNet => models.hardnet = Some(HardNet::load(path)?),
            }
            files.push(file);
        }
        Ok((models, files))
    }

    /// AffNet, or an error saying it was not loaded.
    pub fn affnet(&self) -> Result<&AffNet> {
        self.affnet
            .as_ref()
            .ok_or_else(|| not_loaded(NetworkKind::AffNet))
    }

    /// OriNet, or an error saying it was not loaded.
    pub fn orinet(&self) -> Result<&OriNet> {
        self.orinet
            .as_ref()
            .ok_or_else(|| not_loaded(NetworkKind::OriNet))
    }

    /// HardNet, or an error saying it was not loaded.
    pub fn hardnet(&self) -> Result<&HardNet> {
        self.hardnet
            .as_ref()
            .ok_or_else(|| not_loaded(NetworkKind::HardNet))
    }
}

/// The weights file a network was loaded from: which file, its checksum, and how it was found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightsFile {
    /// The network ("AffNet", "OriNet", "HardNet").
    pub network: String,
    /// The file, as found.
    pub path: String,
    /// SHA-256 of the file's content (hex).
    pub sha256: String,
    /// How it was found: a flag (or `Config::weights`), `WBS_WEIGHTS`, or the shipped file.
    pub found_by: WeightsOrigin,
}

impl WeightsFile {
    /// Locates `kind`'s weights ([`nn::locate_with_origin`]) and checksums the file. The
    /// lookup's hint names the generic `--weights FILE`; the matcher's flag for this network is
    /// `--<name>-weights`, so the hint says that instead.
    pub fn find(kind: NetworkKind, explicit: Option<&Path>) -> Result<WeightsFile> {
        let (path, found_by) = nn::locate_with_origin(kind, explicit).map_err(|e| match e {
            Error::Weights(message) => Error::Weights(message.replace(
                "--weights FILE",
                &format!("--{}-weights FILE", kind.name().to_lowercase()),
            )),
            other => other,
        })?;
        Ok(WeightsFile {
            network: kind.name().to_string(),
            sha256: crate::provenance::file_sha256(&path)?,
            path: path.display().to_string(),
            found_by,
        })
    }

    /// One line for people: `AffNet data/affnet.safetensors (shipped, sha256 1a2b3c4d5e6f)`.
    pub fn describe(&self) -> String {
        format!(
            "{} {} ({}, sha256 {})",
            self.network,
            self.path,
            self.found_by.describe(),
            &self.sha256[..self.sha256.len().min(12)]
        )
    }
}

fn not_loaded(kind: NetworkKind) -> Error {
    Error::invalid(format!(
        "these settings use {kind}, but it was not loaded (pass it to Matcher::with_models, or use Matcher::new)"
    ))
}

/// The networks of a configuration on the device that runs them, and the nearest-neighbour
/// search of that device.
pub struct Networks {
    device: ResolvedDevice,
    host: Models,
    #[cfg(feature = "cuda")]
    cuda: Option<cuda::OnCuda>,
}

/// One image as the network stages see it: its scale space and, on CUDA, the scale space's copy
/// on the device.
pub struct PreparedImage<'a> {
    /// The image's scale space (patches are sampled from it).
    pub space: &'a ScaleSpace,
    #[cfg(feature = "cuda")]
    pyramid: Option<crate::gpu::pyramid::GpuPyramid>,
}

impl Networks {
    /// Places networks already in memory (e.g. a network being trained) on `device`.
    pub fn place(host: Models, device: &ResolvedDevice) -> Result<Networks> {
        match device.kind {
            DeviceKind::Cpu => Ok(Networks {
                device: device.clone(),
                host,
                #[cfg(feature = "cuda")]
                cuda: None,
            }),
            #[cfg(feature = "cuda")]
            DeviceKind::Cuda => Ok(Networks {
                device: device.clone(),
                cuda: Some(cuda::OnCuda::place(&host)?),
                host,
            }),
            #[cfg(not(feature = "cuda"))]
            DeviceKind::Cuda => Err(Error::Device(
                "--device cuda: this wbs was built without the `cuda` feature".into(),
            )),
        }
    }

    /// The device that runs the networks and the search.
    pub fn device(&self) -> &ResolvedDevice {
        &self.device
    }

    /// The networks in host memory.
    pub fn models(&self) -> &Models {
        &self.host
    }

    /// Whether the pipeline runs two images' stages at the same time (on the CPU it does, on
    /// rayon's pool; on CUDA one image after the other, so that each stage's time is its own).
    /// Calls from threads that do run at the same time (MODS views) are safe on every device: on
    /// CUDA they take turns.
    pub fn runs_images_in_parallel(&self) -> bool {
        self.device.kind == DeviceKind::Cpu
    }

    /// Makes one image ready for the network stages (on CUDA: uploads its scale space once).
    pub fn prepare<'a>(&self, space: &'a ScaleSpace) -> Result<PreparedImage<'a>> {
        Ok(PreparedImage {
            space,
            #[cfg(feature = "cuda")]
            pyramid: match &self.cuda {
                Some(c) => Some(c.upload(space)?),
                None => None,
            },
        })
    }

    /// Network `kind`'s outputs on the network patches
    /// ([`NET_PATCH`](crate::patch::NET_PATCH)) of `lafs` in `image`, frame after frame: 3 raw
    /// AffNet values, 2 OriNet values or a unit-length 128-D HardNet descriptor per frame. The
    /// same numbers on every device, up to f32 rounding.
    pub fn run(&self, kind: NetworkKind, image: &PreparedImage, lafs: &[Laf]) -> Result<Vec<f32>> {
        if lafs.is_empty() {
            // Loaded or not, as on the device path: an error for a network that is missing.
            self.require(kind)?;
            return Ok(Vec::new());
        }
        #[cfg(feature = "cuda")]
        if let (Some(c), Some(p)) = (&self.cuda, &image.pyramid) {
            return c.run(kind, p, image.space, lafs);
        }
        let space = image.space;
        Ok(match kind {
            NetworkKind::AffNet => {
                let net = self.host.affnet()?;
                on_patches(space, lafs, |p| net.forward_raw(p).concat())
            }
            NetworkKind::OriNet => {
                let net = self.host.orinet()?;
                on_patches(space, lafs, |p| net.forward_raw(p).concat())
            }
            NetworkKind::HardNet => {
                let net = self.host.hardnet()?;
                on_patches(space, lafs, |p| net.describe(p))
            }
        })
    }

    fn require(&self, kind: NetworkKind) -> Result<()> {
        match kind {
            NetworkKind::AffNet => self.host.affnet().map(|_| ()),
            NetworkKind::OriNet => self.host.orinet().map(|_| ()),
            NetworkKind::HardNet => self.host.hardnet().map(|_| ()),
        }
    }

    /// Whether the nearest-neighbour searches run on a device (a GPU). MODS then asks for each
    /// step's [`Networks::k_nearest`] afresh instead of extending its search on the host step by
    /// step.
    pub fn searches_on_device(&self) -> bool {
        #[cfg(feature = "cuda")]
        if self.cuda.is_some() {
            return true;
        }
        false
    }

    /// The `k` nearest rows of `d2`'s descriptors for every row of `d1`'s, exact and nearest
    /// first (`matching::k_nearest`; FGINN walks them), on the networks' device.
    pub fn k_nearest(&self, d1: &Described, d2: &Described, k: usize) -> Result<KNearest> {
        #[cfg(feature = "cuda")]
        if let Some(c) = &self.cuda {
            return c.k_nearest(d1, d2, k);
        }
        Ok(k_nearest(&d1.descriptors, &d2.descriptors, d1.dimension, k))
    }

    /// The matches of `d1`'s descriptors in `d2` that pass the second-nearest-neighbour ratio test
    /// (`ratio_test(&two_nearest(..))`), on the networks' device. Both sets must be non-empty.
    pub fn ratio_matches(
        &self,
        d1: &Described,
        d2: &Described,
        ratio: f32,
    ) -> Result<Vec<Tentative>> {
        #[cfg(feature = "cuda")]
        if let Some(c) = &self.cuda {
            return c.ratio_matches(d1, d2, ratio);
        }
        let nn = two_nearest(&d1.descriptors, &d2.descriptors, d1.dimension);
        Ok(ratio_test(&nn, ratio))
    }
}

/// The CUDA side of [`Networks`]: the networks uploaded, and the device calls the stages make.
#[cfg(feature = "cuda")]
mod cuda {
    use super::*;
    use crate::gpu::net::GpuNet;
    use crate::gpu::pyramid::GpuPyramid;
    use crate::gpu::search::{device_k_nearest, device_tentatives};
    use crate::gpu::Gpu;
    use std::sync::{Mutex, MutexGuard};

    pub(super) struct OnCuda {
        gpu: Gpu,
        /// Taken by each device call: threads that make views or images in parallel (their CPU
        /// stages overlap) use the device one at a time, so that at most one call's patches and
        /// activations are on it.
        turn: Mutex<()>,
        affnet: Option<GpuNet>,
        orinet: Option<GpuNet>,
        hardnet: Option<GpuNet>,
    }

    impl OnCuda {
        pub(super) fn place(host: &Models) -> Result<OnCuda> {
            let gpu = Gpu::open("--device cuda")?;
            let up = |kind: NetworkKind, layers: Option<(&nn::Sequential, f32)>| {
                layers
                    .map(|(l, eps)| Ok(GpuNet::from_layers(&gpu, kind, l)?.with_input_eps(eps)))
                    .transpose()
            };
            let affnet = up(
                NetworkKind::AffNet,
                host.affnet.as_ref().map(|n| (n.layers(), n.input_eps())),
            )?;
            let orinet = up(
                NetworkKind::OriNet,
                host.orinet.as_ref().map(|n| (n.layers(), n.input_eps())),
            )?;
            let hardnet = up(
                NetworkKind::HardNet,
                host.hardnet.as_ref().map(|n| (n.layers(), n.input_eps())),
            )?;
            Ok(OnCuda {
                gpu,
                turn: Mutex::new(()),
                affnet,
                orinet,
                hardnet,
            })
        }

        /// The device, for one call (a poisoned lock only means another thread's call failed).
        fn take_turn(&self) -> MutexGuard<'_, ()> {
            self.turn
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }

        pub(super) fn upload(&self, space: &ScaleSpace) -> Result<GpuPyramid> {
            let _turn = self.take_turn();
            GpuPyramid::upload(&self.gpu, space)
        }

        pub(super) fn run(
            &self,
            kind: NetworkKind,
            pyramid: &GpuPyramid,
            space: &ScaleSpace,
            lafs: &[Laf],
        ) -> Result<Vec<f32>> {
            let net = match kind {
                NetworkKind::AffNet => self.affnet.as_ref(),
                NetworkKind::OriNet => self.orinet.as_ref(),
                NetworkKind::HardNet => self.hardnet.as_ref(),
            }
            .ok_or_else(|| not_loaded(kind))?;
            let _turn = self.take_turn();
            let mut out = Vec::with_capacity(lafs.len() * kind.output_len());
            for chunk in lafs.chunks(DEVICE_BATCH) {
                let patches = pyramid.extract(&self.gpu, space, chunk, &crate::patch::NET_PATCH)?;
                let mut values = self.gpu.download(&net.run(&self.gpu, &patches)?)?;
                // Device buffers hold at least one value: keep the real ones.
                values.truncate(chunk.len() * kind.output_len());
                out.extend(values);
            }
            Ok(out)
        }

        pub(super) fn ratio_matches(
            &self,
            d1: &Described,
            d2: &Described,
            ratio: f32,
        ) -> Result<Vec<Tentative>> {
            let _turn = self.take_turn();
            let queries = self.gpu.upload(&d1.descriptors)?;
            let database = self.gpu.upload(&d2.descriptors)?;
            device_tentatives(&self.gpu, &queries, &database, d1.dimension, ratio)
        }

        pub(super) fn k_nearest(
            &self,
            d1: &Described,
            d2: &Described,
            k: usize,
        ) -> Result<KNearest> {
            let _turn = self.take_turn();
            let queries = self.gpu.upload(&d1.descriptors)?;
            let database = self.gpu.upload(&d2.descriptors)?;
            device_k_nearest(
                &self.gpu,
                &queries,
                &d1.descriptors,
                &database,
                d1.dimension,
                k,
            )
        }
    }
}
