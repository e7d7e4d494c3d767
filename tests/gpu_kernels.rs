//! Every kernel in kernels/ compiles with NVRTC, which needs no GPU. CI installs NVRTC 13.0 and
//! sets WBS_REQUIRE_NVRTC=1, so that a missing NVRTC fails instead of skipping.

use wbs::gpu::{kernels, nvrtc};

#[test]
fn every_kernel_compiles_with_nvrtc() {
    if let Err(reason) = nvrtc::available() {
        if std::env::var_os("WBS_REQUIRE_NVRTC").is_some() {
            panic!("WBS_REQUIRE_NVRTC is set but NVRTC is unavailable: {reason}");
        }
        eprintln!("SKIP: {reason}");
        return;
    }
    // Every .cu file in kernels/ must be registered (and so embedded in the binary).
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".cu").map(str::to_string)
        })
        .collect();
    on_disk.sort();
    let mut registered: Vec<String> = kernels::SOURCES
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    registered.sort();
    assert_eq!(
        on_disk, registered,
        "kernels/*.cu and gpu::kernels::SOURCES differ"
    );

    for (name, source) in kernels::SOURCES {
        for arch in ["compute_80", "compute_90"] {
            let ptx = nvrtc::compile(name, source, arch).unwrap_or_else(|e| panic!("{e}"));
            assert!(ptx.contains(".entry"), "{name}: no kernel entry in the PTX");
            nvrtc::check_ptx_version(&ptx).unwrap();
        }
    }
}

#[test]
fn a_broken_kernel_is_reported_with_its_line() {
    if nvrtc::available().is_err() {
        eprintln!("SKIP: no NVRTC");
        return;
    }
    let error = nvrtc::compile(
        "broken",
        "extern \"C\" __global__ void f(float* x) {\n  x[0] = undefined_name;\n}\n",
        "compute_90",
    )
    .unwrap_err();
    assert!(
        error.contains("undefined_name") && error.contains("broken"),
        "{error}"
    );
}

#[test]
fn probing_without_a_gpu_does_not_panic() {
    // On CI (no driver) this is an error message; on a GPU machine, the GPU's description.
    match wbs::gpu::probe() {
        Ok(info) => assert!(!info.name.is_empty()),
        Err(reason) => assert!(!reason.is_empty()),
    }
}
