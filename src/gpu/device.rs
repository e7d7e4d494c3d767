//! The CUDA device: context, stream, and the lazily compiled kernel modules.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
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
    /// Opens GPU 0; a clear [`Error::Device`] when there is none or NVRTC is missing.
    pub fn open() -> Result<Gpu> {
        let info = probe().map_err(|e| Error::Device(format!("--device cuda: {e}")))?;
        nvrtc::available().map_err(|e| Error::Device(format!("--device cuda: {e}")))?;
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

    pub fn info(&self) -> &GpuInfo {
        &self.info
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

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
                    let (major, minor) = self.info.compute_capability;
                    let ptx = nvrtc::compile(module, source, &format!("compute_{major}{minor}"))
                        .map_err(Error::Device)?;
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
}
