//! The house rules of `src/`, checked on the source: dependencies point down.
//!
//! The top-level modules are listed in [`LAYERS`] from the bottom up (CLI → `Matcher` / pipeline
//! → stages → networks and `nn` → CPU or CUDA backend). A module may import (`crate::…`, outside
//! its `#[cfg(test)]` code) only modules listed before it. The few imports that still point up are
//! listed in [`KNOWN_DEBT`] with the reason; the test fails when a new one appears, and also when
//! a listed one is gone (so that the list only shrinks).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every top-level module of `src/`, lowest first.
#[rustfmt::skip]
const LAYERS: &[&str] = &[
    // Leaves: no wbs imports, or only each other's.
    "error", "files", "provenance", "choice", "math", "image", "simd", "laf", "geometry", "matching", "synth",
    "protocol", // Images and frames.
    "pyramid", "patch", "detect", "feature", "mser",
    // The neural-network core (ops, networks, weights) and its CUDA backend, then the device
    // choice over both.
    "nn", "gpu", "device",
    // The feature stages.
    "shape", "orient", "describe", "schedule",
    // The networks on a device, the pipeline, MODS's views on it, the library's entry point.
    "networks", "pipeline", "mods", "settings", "matcher",
    // Pictures and plots, then the jobs built on the matcher.
    "viz", "plot", "eval", "train", "collection",
    // The command line, and the binary.
    "cli", "main",
];

/// Imports that still point up: (file under src/, imported module, why). Each is work still to
/// do; the list is empty and should stay so.
const KNOWN_DEBT: &[(&str, &str, &str)] = &[];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments and without `#[cfg(test)]` items (a test module may use anything).
fn production_code(text: &str) -> String {
    let mut code = String::new();
    let mut skip_depth: Option<i32> = None;
    let mut depth = 0i32;
    let mut pending_test = false;
    for line in text.lines() {
        let line = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        let trimmed = line.trim();
        if skip_depth.is_none() && trimmed.starts_with("#[cfg(test)]") {
            pending_test = true;
            continue;
        }
        let opens = line.matches('{').count() as i32;
        let closes = line.matches('}').count() as i32;
        if pending_test && !trimmed.is_empty() && !trimmed.starts_with("#[") {
            pending_test = false;
            if opens > closes {
                skip_depth = Some(depth);
            }
            depth += opens - closes;
            continue; // a one-line item (`use …;`, `mod tests;`) is skipped too
        }
        depth += opens - closes;
        if let Some(d) = skip_depth {
            if depth <= d {
                skip_depth = None;
            }
            continue;
        }
        code.push_str(line);
        code.push('\n');
    }
    code
}

/// The top-level modules `code` names as `crate::m` (also inside `crate::{a, b::c}` groups).
fn imported_modules(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // Top-level items of the group: split at commas outside nested braces.
            let mut depth = 0;
            let mut start = 0;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.insert(ident(&group[start..j]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident(&group[start..j]));
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(after));
        }
        rest = after;
    }
    out.remove("");
    out
}

/// The top-level modules: every `src/*.rs` and `src/*/` but lib.rs.
fn modules() -> BTreeSet<String> {
    std::fs::read_dir(src())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() || p.extension().is_some_and(|e| e == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|m| m != "lib")
        .collect()
}

/// (file relative to src/, its top-level module, the top-level modules it imports; items
/// re-exported at the crate root, such as `crate::Result`, are not modules).
fn imports() -> Vec<(String, String, BTreeSet<String>)> {
    let root = src();
    let modules = modules();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files
        .iter()
        .filter(|p| !p.ends_with("lib.rs"))
        .map(|path| {
            let rel = path
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let module = rel
                .split('/')
                .next()
                .unwrap()
                .trim_end_matches(".rs")
                .to_string();
            let text = std::fs::read_to_string(path).unwrap();
            let mut used = imported_modules(&production_code(&text));
            used.retain(|m| modules.contains(m) && *m != module);
            (rel, module, used)
        })
        .collect()
}

#[test]
fn every_module_is_placed_in_a_layer() {
    let placed: BTreeSet<String> = LAYERS.iter().map(|m| m.to_string()).collect();
    let missing: BTreeSet<String> = modules().difference(&placed).cloned().collect();
    assert!(
        missing.is_empty(),
        "add these modules to LAYERS in tests/architecture.rs: {missing:?}"
    );
}

#[test]
fn imports_point_down() {
    let rank: BTreeMap<&str, usize> = LAYERS.iter().enumerate().map(|(i, m)| (*m, i)).collect();
    let mut upward = BTreeSet::new();
    for (file, module, used) in imports() {
        let Some(&own) = rank.get(module.as_str()) else {
            continue;
        };
        for m in &used {
            if rank.get(m.as_str()).is_some_and(|&r| r >= own) {
                upward.insert((file.clone(), m.clone()));
            }
        }
    }
    let known: BTreeSet<(String, String)> = KNOWN_DEBT
        .iter()
        .map(|(f, m, _)| (f.to_string(), m.to_string()))
        .collect();
    let new: Vec<_> = upward.difference(&known).collect();
    let gone: Vec<_> = known.difference(&upward).collect();
    assert!(
        new.is_empty(),
        "imports that point up (file, module): {new:?}\n\
         a module may import only modules listed before it in LAYERS"
    );
    assert!(
        gone.is_empty(),
        "fixed, so remove them from KNOWN_DEBT: {gone:?}"
    );
}

#[test]
fn the_library_knows_nothing_of_the_cli() {
    for (file, module, used) in imports() {
        if module != "cli" && module != "main" {
            assert!(!used.contains("cli"), "{file} imports the CLI");
            let text = std::fs::read_to_string(src().join(&file)).unwrap();
            let code = production_code(&text);
            for crate_name in ["clap::", "indicatif::"] {
                assert!(
                    !code.contains(crate_name),
                    "{file} uses {crate_name}: only the CLI may"
                );
            }
        }
    }
}

#[test]
fn the_import_scanner_sees_groups_and_skips_tests() {
    let code = production_code(
        "use crate::a::B;\nuse crate::{c, d::{e, f}, g as h};\nfn x() { crate::i::j(); }\n\
         #[cfg(test)]\nmod tests {\n    use crate::k;\n    fn y() {}\n}\n// crate::l\n",
    );
    let got: Vec<String> = imported_modules(&code).into_iter().collect();
    assert_eq!(got, ["a", "c", "d", "g", "i"]);
}
