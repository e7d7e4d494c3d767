//! Every kernel in kernels/ is embedded behind the prelude (kernels/prelude.cuh) and compiles with
//! NVRTC, which needs no GPU. CI installs NVRTC 13.0 and sets WBS_REQUIRE_NVRTC=1, so that a
//! missing NVRTC fails instead of skipping.

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
    check_registration();

    // The portable minimum and what an H100/H200 gets.
    for arch in ["compute_75", nvrtc::arch_for((9, 0)).unwrap().as_str()] {
        let ptx = compile_all(arch);
        for (name, text) in &ptx {
            assert!(
                text.contains(".entry"),
                "{name}: no kernel entry in the PTX"
            );
            nvrtc::check_ptx_version(text).unwrap();
        }
    }
}

fn kernel_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels")
}

/// The .cu files of kernels/, by module name, with their text.
fn kernel_files() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(kernel_dir())
        .unwrap()
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?.strip_suffix(".cu")?.to_string();
            Some((name, std::fs::read_to_string(&path).unwrap()))
        })
        .collect();
    files.sort();
    files
}

/// Every .cu file in kernels/ is registered (and so embedded in the binary), as itself behind the
/// prelude; the prelude is the only other file there, and is no module of its own.
fn check_registration() {
    let on_disk = kernel_files();
    let names: Vec<&str> = on_disk.iter().map(|(n, _)| n.as_str()).collect();
    let mut registered: Vec<&str> = kernels::SOURCES.iter().map(|(n, _)| *n).collect();
    registered.sort();
    assert_eq!(
        names, registered,
        "kernels/*.cu and gpu::kernels::SOURCES differ"
    );
    for (name, text) in &on_disk {
        let source = kernels::source(name).unwrap();
        assert!(
            source.starts_with(&format!("#line 1 \"prelude.cuh\"\n{}", kernels::PRELUDE))
                && source.ends_with(&format!("\n#line 1 \"{name}.cu\"\n{text}")),
            "{name}: the embedded source is not the prelude followed by kernels/{name}.cu"
        );
    }
    let mut others: Vec<String> = std::fs::read_dir(kernel_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.ends_with(".cu"))
        .collect();
    others.sort();
    assert_eq!(
        others,
        ["prelude.cuh"],
        "kernels/ holds files that are neither a kernel module nor the prelude (not embedded)"
    );
    let prelude = std::fs::read_to_string(kernel_dir().join("prelude.cuh")).unwrap();
    assert_eq!(prelude, kernels::PRELUDE);
}

/// The registration holds without NVRTC too.
#[test]
fn every_kernel_file_is_registered_behind_the_prelude() {
    check_registration();
}

/// `text` without white space and line continuations, so that a copy is found however it is
/// laid out.
fn squeezed(text: &str) -> String {
    text.replace("\\\n", "")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}

/// The 4×4 register-tiled GEMM step is written once, in kernels/prelude.cuh: the kernels that
/// tile a GEMM call GEMM_TILE_4X4, and no kernel file holds the step's accumulation again.
#[test]
fn the_gemm_tile_is_written_once_in_the_prelude() {
    let step = squeezed("acc[i][j] = fmaf(a[i], b[j], acc[i][j]);");
    assert!(
        kernels::PRELUDE.contains("#define GEMM_TILE_4X4(")
            && squeezed(kernels::PRELUDE).contains(&step),
        "kernels/prelude.cuh no longer defines GEMM_TILE_4X4 with its accumulation step"
    );
    let files = kernel_files();
    for (name, text) in &files {
        assert!(
            !squeezed(text).contains(&step),
            "kernels/{name}.cu writes out the tile loop of GEMM_TILE_4X4 (kernels/prelude.cuh) again"
        );
    }
    for user in [
        "conv2d_backward_input",
        "conv2d_backward_weight",
        "conv2d_forward",
        "nearest_neighbours",
    ] {
        let (_, text) = files.iter().find(|(n, _)| n == user).unwrap();
        assert!(
            text.contains("GEMM_TILE_4X4("),
            "kernels/{user}.cu no longer uses GEMM_TILE_4X4"
        );
    }
}

fn compile_all(arch: &str) -> Vec<(&'static str, String)> {
    kernels::SOURCES
        .iter()
        .map(|(name, source)| {
            let ptx = nvrtc::compile(name, source, arch).unwrap_or_else(|e| panic!("{e}"));
            (*name, ptx)
        })
        .collect()
}

/// The parameters of kernel `func` in a PTX text, or `None` when it has no such entry.
fn ptx_params(ptx: &str, func: &str) -> Option<usize> {
    let start = ptx.find(&format!(".entry {func}("))?;
    let rest = &ptx[start..];
    let end = rest.find(')')?;
    Some(rest[..end].matches(".param").count())
}

/// Splits `text` at commas that are not inside brackets.
fn split_top_level(text: &str) -> Vec<String> {
    let (mut depth, mut parts, mut cur) = (0i32, Vec::new(), String::new());
    for ch in text.chars() {
        match ch {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    parts.push(cur);
    parts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Every launch in src/gpu/ops.rs names a kernel that exists, and pushes as many arguments as
/// the kernel has parameters: a missing or extra argument would be garbage on the device, which
/// no compiler sees (the launch API is untyped).
#[test]
fn every_launch_matches_its_kernel_signature() {
    if let Err(reason) = nvrtc::available() {
        if std::env::var_os("WBS_REQUIRE_NVRTC").is_some() {
            panic!("WBS_REQUIRE_NVRTC is set but NVRTC is unavailable: {reason}");
        }
        eprintln!("SKIP: {reason}");
        return;
    }
    let ptx = compile_all("compute_75");
    let ops = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/gpu/ops.rs"),
    )
    .unwrap();
    let mut checked = 0;
    for marker in ["launch!(gpu,", "launch_opt!(gpu,"] {
        for (at, _) in ops.match_indices(marker) {
            // The macro call's text up to its closing parenthesis.
            let body = &ops[at + marker.len()..];
            let mut depth = 1;
            let end = body
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map(|(i, _)| i)
                .unwrap();
            let call = &body[..end];
            let (head, args) = call.split_once(';').expect("launch!(gpu, m, f, l; args)");
            let head = split_top_level(head);
            let module = head[0].trim_matches('"');
            let func = head[1].trim_matches('"');
            let (_, text) = ptx
                .iter()
                .find(|(n, _)| *n == module)
                .unwrap_or_else(|| panic!("no kernel module {module}"));
            let params = ptx_params(text, func)
                .unwrap_or_else(|| panic!("kernels/{module}.cu has no kernel {func}"));
            let pushed = split_top_level(args).len();
            assert_eq!(
                pushed, params,
                "{module}::{func}: the wrapper pushes {pushed} arguments, the kernel takes {params}"
            );
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} launches found");
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

/// Precompiled PTX (`wbs gpu-ptx`, `WBS_PTX_DIR`) for GPU machines without NVRTC: written for
/// every module, loaded back, and refused when the source changed.
#[test]
fn precompiled_ptx_round_trip_and_stale_detection() {
    if nvrtc::available().is_err() {
        eprintln!("SKIP: no NVRTC");
        return;
    }
    let dir = std::env::temp_dir().join(format!("wbs-ptx-{}", std::process::id()));
    let written = nvrtc::write_ptx(&dir, "compute_90").unwrap();
    assert_eq!(written.len(), kernels::SOURCES.len());
    assert!(nvrtc::ptx_complete(&dir, "compute_90"));
    assert!(!nvrtc::ptx_complete(&dir, "compute_80"));
    let (module, source) = kernels::SOURCES[0];
    let ptx = nvrtc::load_ptx(&dir, module, source, "compute_90")
        .unwrap()
        .unwrap();
    assert!(ptx.contains(".entry"));
    let changed = format!("{source}\n// changed\n");
    let stale = nvrtc::load_ptx(&dir, module, &changed, "compute_90")
        .unwrap()
        .unwrap_err();
    assert!(stale.contains("another version"), "{stale}");
    assert!(nvrtc::load_ptx(&dir, "none", source, "compute_90").is_none());
    std::fs::remove_dir_all(&dir).ok();
}
