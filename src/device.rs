//! Which device runs the networks and the nearest-neighbour search: the setting
//! ([`Device`], part of [`crate::pipeline::Config`]) and its resolution on this machine
//! ([`resolve`] → [`ResolvedDevice`]).
//!
//! `auto` never fails: it uses the CPU where no GPU answers and says why. `cuda` without a usable
//! GPU is a one-line error before any work starts. No CUDA library is needed to build or to run on
//! the CPU: the driver and NVRTC are opened at run time (see [`crate::gpu`]).

use crate::{Error, Result};

choices! {
    /// The device a configuration asks for.
    pub enum Device {
        /// The CPU until the CUDA path is validated on a GPU (docs/gpu-validation.md), then CUDA
        /// where a GPU answers.
        Auto = "auto",
        /// The CPU (the reference implementation).
        Cpu = "cpu",
        /// A CUDA GPU; an error where none answers.
        Cuda = "cuda",
    }
}

#[allow(clippy::derivable_impls)] // `choices!` writes the derives; the default is the one addition
impl Default for Device {
    fn default() -> Device {
        Device::Auto
    }
}

choices! {
    /// The device that does the work.
    pub enum DeviceKind {
        /// The CPU.
        Cpu = "cpu",
        /// A CUDA GPU.
        Cuda = "cuda",
    }
}

/// The device that runs a job, and why when it is not the one asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedDevice {
    /// The device that does the work.
    pub kind: DeviceKind,
    /// Why `auto` stayed on the CPU, or which GPU is used.
    pub note: Option<String>,
}

impl ResolvedDevice {
    /// The CPU, with no note.
    pub fn cpu() -> ResolvedDevice {
        ResolvedDevice {
            kind: DeviceKind::Cpu,
            note: None,
        }
    }
}

/// Whether `auto` uses a GPU that it finds. Off until a GPU run of the parity checks is recorded
/// in docs/gpu-validation.md: until then the CUDA path is used only when asked for.
pub const AUTO_USES_CUDA: bool = false;

/// Resolves `requested` on this machine. `has_cuda_path` says whether the job has a CUDA
/// implementation: jobs without one refuse `cuda` on a GPU machine rather than silently running
/// on the CPU, and `auto` stays on the CPU for them.
pub fn resolve(requested: Device, has_cuda_path: bool) -> Result<ResolvedDevice> {
    let cpu = |note: Option<String>| ResolvedDevice {
        kind: DeviceKind::Cpu,
        note,
    };
    match requested {
        Device::Cpu => Ok(cpu(None)),
        Device::Auto => Ok(match crate::gpu::probe() {
            Ok(info) if AUTO_USES_CUDA && has_cuda_path => ResolvedDevice {
                kind: DeviceKind::Cuda,
                note: Some(format!("GPU {}", info.name)),
            },
            Ok(info) => cpu(Some(format!(
                "GPU {} found; `auto` stays on the CPU until the CUDA path is validated \
                 (docs/gpu-validation.md): pass --device cuda to use it",
                info.name
            ))),
            Err(reason) => cpu(Some(format!("no CUDA: {reason}"))),
        }),
        Device::Cuda => match crate::gpu::probe() {
            Ok(info) if has_cuda_path => Ok(ResolvedDevice {
                kind: DeviceKind::Cuda,
                note: Some(format!("GPU {}", info.name)),
            }),
            Ok(info) => Err(Error::Device(format!(
                "--device cuda: GPU {} found, but this command has no CUDA path (wbs match, \
                 wbs eval, wbs bench and wbs train affnet do); use --device cpu",
                info.name
            ))),
            Err(reason) => Err(crate::gpu::no_device_error("--device cuda", &reason)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_serialised_strings() {
        for d in [Device::Auto, Device::Cpu, Device::Cuda] {
            assert_eq!(
                serde_json::to_string(&d).unwrap(),
                format!("\"{}\"", d.name())
            );
        }
        for d in [DeviceKind::Cpu, DeviceKind::Cuda] {
            assert_eq!(
                serde_json::to_string(&d).unwrap(),
                format!("\"{}\"", d.name())
            );
        }
    }

    #[test]
    fn cpu_always_resolves_to_the_cpu_and_auto_never_fails() {
        assert_eq!(resolve(Device::Cpu, true).unwrap(), ResolvedDevice::cpu());
        let auto = resolve(Device::Auto, true).unwrap();
        if !AUTO_USES_CUDA {
            assert_eq!(auto.kind, DeviceKind::Cpu);
            assert!(
                auto.note.is_some(),
                "auto must say why it stayed on the CPU"
            );
        }
    }

    #[test]
    fn cuda_without_a_gpu_is_an_error_that_names_the_flag() {
        if crate::gpu::probe().is_ok() {
            eprintln!("a GPU answers here: the no-GPU error is not reachable");
            return;
        }
        let e = resolve(Device::Cuda, true).unwrap_err().to_string();
        assert!(e.contains("--device cuda"), "{e}");
    }
}
