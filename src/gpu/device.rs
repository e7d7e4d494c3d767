//! The CUDA device: context, stream, and the lazily compiled kernel modules.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr, ValidAsZeroBits,
};
use cudarc::nvrtc::Ptx;

use super::{kernels, nvrtc, GpuInfo};
use crate::{Error, Result};

pub(super) fn probe() -> std::result::Result<GpuInfo, String> {
    // SAFETY: only probes whether the driver library can be opened; without this check the
    // first driver call panics when there is no driver.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("no NVIDIA driver (libcuda not found)".into());
    }
    let count = CudaContext::device_count().map_err(|e| format!("CUDA driver: {e}"))?;
    if count < 1 {
        return Err("the NVIDIA driver reports no GPU".into());
    }
    let ctx = CudaContext::new(0).map_err(|e| format!("cannot open GPU 0: {e}"))?;
    Ok(GpuInfo {
        name: ctx.name().map_err(|e| e.to_string())?,
        compute_capability: ctx.compute_capability().map_err(|e| e.to_string())?,
        memory_bytes: ctx.total_mem().map_err(|e| e.to_string())?,
    })
}

/// An opened GPU: one context, one stream, kernels compiled on first use and cached.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    info: GpuInfo,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
}

impl Gpu {
    /// Opens GPU 0; a clear one-line [`Error::Device`] when there is none (see
    /// [`super::no_device_error`]) or NVRTC is missing. `context` starts the message (e.g.
    /// "--device cuda").
    pub fn open(context: &str) -> Result<Gpu> {
        let info = probe().map_err(|e| super::no_device_error(context, &e))?;
        // Kernels come from NVRTC, or from precompiled PTX (WBS_PTX_DIR) when every module is
        // there for this GPU's architecture.
        let precompiled = match (
            std::env::var_os(nvrtc::PTX_DIR_ENV),
            nvrtc::arch_for(info.compute_capability),
        ) {
            (Some(dir), Ok(arch)) => nvrtc::ptx_complete(std::path::Path::new(&dir), &arch),
            _ => false,
        };
        if !precompiled {
            nvrtc::available().map_err(|e| {
                Error::Device(format!(
                    "{context}: GPU {} found, but NVRTC is not available ({e}); or set {} to \
                     a folder written by `wbs gpu-ptx`",
                    info.name,
                    nvrtc::PTX_DIR_ENV
                ))
            })?;
        }
        let ctx =
            CudaContext::new(0).map_err(|e| Error::Device(format!("cannot open GPU 0: {e}")))?;
        let stream = ctx.default_stream();
        Ok(Gpu {
            ctx,
            stream,
            info,
            modules: Mutex::new(HashMap::new()),
        })
    }

    /// What the GPU offers (name, compute capability, memory).
    pub fn info(&self) -> &GpuInfo {
        &self.info
    }

    /// The stream every op is queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The CUDA context the stream and buffers belong to.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The kernel `function` of module `module` (a file `kernels/<module>.cu`), compiling the
    /// module for this GPU the first time.
    pub fn function(&self, module: &'static str, function: &str) -> Result<CudaFunction> {
        let module = {
            let mut cache = self
                .modules
                .lock()
                .expect("the module cache is not poisoned");
            match cache.get(module) {
                Some(m) => m.clone(),
                None => {
                    let source = kernels::source(module)
                        .ok_or_else(|| Error::Device(format!("no kernel module '{module}'")))?;
                    let arch =
                        nvrtc::arch_for(self.info.compute_capability).map_err(Error::Device)?;
                    let precompiled = std::env::var_os(nvrtc::PTX_DIR_ENV).and_then(|dir| {
                        nvrtc::load_ptx(std::path::Path::new(&dir), module, source, &arch)
                    });
                    let ptx = match precompiled {
                        Some(ptx) => ptx.map_err(Error::Device)?,
                        None => nvrtc::compile(module, source, &arch).map_err(Error::Device)?,
                    };
                    let loaded = self
                        .ctx
                        .load_module(Ptx::from_src(ptx))
                        .map_err(|e| Error::Device(format!("kernels/{module}.cu: {e}")))?;
                    cache.insert(module, loaded.clone());
                    loaded
                }
            }
        };
        module
            .load_function(function)
            .map_err(|e| Error::Device(format!("kernels: no function {function}: {e}")))
    }

    /// Copies `host` to a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        self.stream.clone_htod(host).map_err(driver_error)
    }

    /// Copies a device buffer back (waits for the work queued before).
    pub fn download<T: DeviceRepr + Default + Clone>(&self, dev: &CudaSlice<T>) -> Result<Vec<T>> {
        self.stream.clone_dtoh(dev).map_err(driver_error)
    }

    /// A zeroed device buffer of `len` values (at least 1, so that empty shapes still have a
    /// valid pointer).
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> Result<CudaSlice<T>> {
        self.stream
            .alloc_zeros::<T>(len.max(1))
            .map_err(driver_error)
    }

    /// Waits for all queued work (for timing).
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(driver_error)
    }
}

/// A CUDA driver error as a wbs error.
pub(crate) fn driver_error(e: cudarc::driver::DriverError) -> Error {
    Error::Device(format!("CUDA: {e}"))
}
