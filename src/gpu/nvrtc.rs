//! Compiling CUDA C++ to PTX with NVRTC at run time.

/// The PTX ISA a CUDA 13.0 driver (driver 580) accepts; a newer NVRTC would write PTX that such a
/// driver refuses, so compilation checks the header.
pub const MAX_PTX_VERSION: (u32, u32) = (9, 0);

/// The virtual architectures NVRTC 13.0 compiles for (`nvrtcGetSupportedArchs`).
pub const SUPPORTED_ARCHS: [u32; 12] = [75, 80, 86, 87, 88, 89, 90, 100, 103, 110, 120, 121];

/// The `--gpu-architecture` for a device of compute capability `(major, minor)`: the newest
/// virtual architecture NVRTC supports that the device can run (`compute_90` on an H100/H200).
/// PTX for an older architecture runs on newer GPUs, so an unknown future GPU gets the newest.
pub fn arch_for((major, minor): (i32, i32)) -> Result<String, String> {
    let cc = (major.max(0) * 10 + minor.max(0)) as u32;
    SUPPORTED_ARCHS
        .iter()
        .rev()
        .find(|&&a| a <= cc)
        .map(|a| format!("compute_{a}"))
        .ok_or_else(|| {
            format!(
                "GPU compute capability {major}.{minor} is older than 7.5, the oldest NVRTC 13 supports"
            )
        })
}

/// Opens NVRTC from `WBS_NVRTC_DIR` when set (builtins first, as NVRTC needs them), so that a
/// NVRTC outside the library path works without `LD_LIBRARY_PATH`. Idempotent.
#[cfg(feature = "cuda")]
fn preload() -> Result<(), String> {
    use std::sync::OnceLock;
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let Some(dir) = std::env::var_os("WBS_NVRTC_DIR") else {
                return Ok(());
            };
            let dir = std::path::PathBuf::from(dir);
            for name in ["libnvrtc-builtins.so.13.0", "libnvrtc.so.13"] {
                let path = dir.join(name);
                // SAFETY: loading a shared library runs its initialisers; these are NVIDIA's
                // NVRTC libraries, which have none with side effects on this process.
                let library = unsafe { libloading::Library::new(&path) }
                    .map_err(|e| format!("WBS_NVRTC_DIR: cannot load {}: {e}", path.display()))?;
                // Keep it loaded for the life of the process, so that cudarc's later dlopen of
                // the same soname finds it.
                std::mem::forget(library);
            }
            Ok(())
        })
        .clone()
}

/// Whether NVRTC can be used on this machine (no GPU needed).
pub fn available() -> Result<(), String> {
    #[cfg(feature = "cuda")]
    {
        preload()?;
        // SAFETY: only probes whether the library can be opened.
        if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            Ok(())
        } else {
            Err(
                "libnvrtc not found (install the CUDA toolkit, or the pip wheel \
                 nvidia-cuda-nvrtc==13.0.88 and set WBS_NVRTC_DIR to its nvidia/cu13/lib)"
                    .into(),
            )
        }
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err("this wbs was built without the `cuda` feature".into())
    }
}

/// Compiles one kernel source for `arch` (e.g. "compute_90") and returns the PTX text. Errors
/// carry NVRTC's log, with line numbers.
pub fn compile(name: &str, source: &str, arch: &str) -> Result<String, String> {
    #[cfg(feature = "cuda")]
    {
        available()?;
        let options = cudarc::nvrtc::CompileOptions {
            options: vec![
                format!("--gpu-architecture={arch}"),
                "--std=c++17".into(),
                "-lineinfo".into(),
            ],
            use_fast_math: Some(false),
            name: Some(format!("{name}.cu")),
            ..Default::default()
        };
        let ptx = cudarc::nvrtc::compile_ptx_with_opts(source, options)
            .map_err(|e| format!("kernels/{name}.cu: {e}"))?
            .to_src();
        check_ptx_version(&ptx).map_err(|e| format!("kernels/{name}.cu: {e}"))?;
        Ok(ptx)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (name, source, arch);
        Err("this wbs was built without the `cuda` feature".into())
    }
}

/// The environment variable naming a folder of precompiled PTX ([`write_ptx`]), for GPU machines
/// without NVRTC: modules found there are loaded instead of compiled.
pub const PTX_DIR_ENV: &str = "WBS_PTX_DIR";

/// FNV-1a of a kernel source, prelude included: precompiled PTX records it, so that PTX from
/// another version of the source is refused instead of silently run.
pub fn source_hash(source: &str) -> u64 {
    source.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `<module>.<arch>.ptx`.
pub fn ptx_file_name(module: &str, arch: &str) -> String {
    format!("{module}.{arch}.ptx")
}

fn hash_line(source: &str) -> String {
    format!("// wbs-source-hash: {:016x}", source_hash(source))
}

/// Compiles every embedded kernel for `arch` and writes the PTX into `dir` (no GPU needed), for
/// `WBS_PTX_DIR` on a GPU machine that has a driver but no NVRTC. Returns the files written.
pub fn write_ptx(dir: &std::path::Path, arch: &str) -> Result<Vec<std::path::PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut written = Vec::new();
    for (module, source) in super::kernels::SOURCES {
        let ptx = compile(module, source, arch)?;
        let path = dir.join(ptx_file_name(module, arch));
        std::fs::write(&path, format!("{}\n{ptx}", hash_line(source)))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// The precompiled PTX of `module` for `arch` in `dir`, if there is a file: an error when it was
/// made from another version of the source or is newer than the driver accepts.
pub fn load_ptx(
    dir: &std::path::Path,
    module: &str,
    source: &str,
    arch: &str,
) -> Option<Result<String, String>> {
    let path = dir.join(ptx_file_name(module, arch));
    let text = std::fs::read_to_string(&path).ok()?;
    let (first, ptx) = text.split_once('\n').unwrap_or((&text, ""));
    if first.trim() != hash_line(source) {
        return Some(Err(format!(
            "{}: made from another version of kernels/{module}.cu (or of kernels/prelude.cuh); \
             rewrite it with `wbs gpu-ptx`",
            path.display()
        )));
    }
    Some(
        check_ptx_version(ptx)
            .map(|_| ptx.to_string())
            .map_err(|e| format!("{}: {e}", path.display())),
    )
}

/// Whether `dir` holds PTX for every module for `arch`.
pub fn ptx_complete(dir: &std::path::Path, arch: &str) -> bool {
    super::kernels::SOURCES
        .iter()
        .all(|(m, _)| dir.join(ptx_file_name(m, arch)).is_file())
}

/// Rejects PTX newer than [`MAX_PTX_VERSION`].
pub fn check_ptx_version(ptx: &str) -> Result<(u32, u32), String> {
    let line = ptx
        .lines()
        .find(|l| l.trim_start().starts_with(".version"))
        .ok_or("the PTX has no .version line")?;
    let version = line.trim_start().trim_start_matches(".version").trim();
    let (major, minor) = version
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .ok_or_else(|| format!("unreadable PTX version '{version}'"))?;
    if (major, minor) > MAX_PTX_VERSION {
        return Err(format!(
            "NVRTC wrote PTX {major}.{minor}, newer than the {}.{} a CUDA 13.0 driver accepts; \
             use NVRTC 13.0 (pip nvidia-cuda-nvrtc==13.0.88)",
            MAX_PTX_VERSION.0, MAX_PTX_VERSION.1
        ));
    }
    Ok((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architecture_choice() {
        assert_eq!(arch_for((9, 0)).unwrap(), "compute_90");
        assert_eq!(arch_for((8, 9)).unwrap(), "compute_89");
        assert_eq!(arch_for((8, 5)).unwrap(), "compute_80");
        assert_eq!(arch_for((13, 0)).unwrap(), "compute_121");
        assert!(arch_for((7, 0)).unwrap_err().contains("older than 7.5"));
    }

    #[test]
    fn ptx_version_gate() {
        assert_eq!(
            check_ptx_version("//\n.version 9.0\n.target sm_90"),
            Ok((9, 0))
        );
        assert_eq!(check_ptx_version(".version 8.8\n"), Ok((8, 8)));
        assert!(check_ptx_version(".version 9.5\n")
            .unwrap_err()
            .contains("newer"));
        assert!(check_ptx_version(".target sm_90\n").is_err());
    }
}
