//! `.pth` import (legacy and zip), its refusals, fuzzing of the real AffNet.pth, safetensors
//! loading errors, `inspect` and `locate`.

mod nn_support;

use std::path::{Path, PathBuf};

use nn_support::{
    legacy_pth, legacy_pth_with_object, zip_pth, zip_pth_with_object, zip_stored, Layout, Pickle,
    TestCheckpoint,
};
use wbs::nn::{self, AffNet, NetworkKind, Weights};
use wbs::Error;

/// The AffNet tensors: the authors' file when `../shared` is there, random ones otherwise.
fn affnet_weights() -> Weights {
    match nn_support::shared_dir() {
        Some(s) => Weights::load(&s.join("weights/AffNet.pth")).expect("AffNet.pth"),
        None => {
            println!("note: ../shared absent, using random AffNet weights");
            nn::random_weights(NetworkKind::AffNet, 3)
        }
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// An import error: a single line that names the file.
fn import_err(input: &Path, kind: Option<NetworkKind>) -> String {
    let out = input.with_extension("safetensors");
    let e = nn::import_pth(input, &out, kind).expect_err("import must fail");
    assert!(matches!(e, Error::Weights(_)), "{e:?}");
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "multi-line error: {msg}");
    assert!(
        msg.contains(&input.display().to_string()),
        "error does not name the file: {msg}"
    );
    assert!(!out.exists(), "nothing may be written on failure");
    msg
}

/// Exercises strided and shared storages as well as the plain layout.
fn with_layouts(mut c: TestCheckpoint) -> TestCheckpoint {
    c.tensor_mut("features.19.weight").layout = Layout::FirstAxisInnermost;
    c.tensor_mut("features.3.weight").layout = Layout::FirstAxisInnermost;
    c.tensor_mut("features.1.running_mean").layout = Layout::Shared {
        key: "bn1".into(),
        offset: 16,
    };
    c.tensor_mut("features.1.running_var").layout = Layout::Shared {
        key: "bn1".into(),
        offset: 0,
    };
    c
}

#[test]
fn legacy_and_zip_files_import_to_the_same_weights() {
    let w = affnet_weights();
    let dir = nn_support::temp_dir("formats");
    let patch = nn_support::patch_from(|r, c| ((r * 3 + c * 5) % 11) as f32);
    let expected = AffNet::from_weights(&w).unwrap().forward_raw(&patch);
    for (name, bytes, format) in [
        (
            "zip.pth",
            zip_pth(&with_layouts(TestCheckpoint::from_weights(&w))),
            "zip torch (>= 1.6)",
        ),
        (
            "legacy.pth",
            legacy_pth(&with_layouts(TestCheckpoint::from_weights(&w))),
            "legacy torch (< 1.6)",
        ),
    ] {
        let input = write(&dir, name, &bytes);
        let out = dir.join(format!("{name}.safetensors"));
        let report = nn::import_pth(&input, &out, None).expect(name);
        assert_eq!(report.kind, NetworkKind::AffNet);
        assert_eq!(report.source_format, format);
        assert_eq!(report.epoch, Some(20));
        assert_eq!((report.tensors, report.values), (20, 84_307));
        assert!(report.to_string().contains("AffNet"));
        let back = Weights::load(&out).unwrap();
        assert_eq!(
            back.tensors, w.tensors,
            "{name}: tensors differ after import"
        );
        let model = AffNet::load(&out).unwrap();
        assert_eq!(model.forward_raw(&patch), expected, "{name}");
    }
}

#[test]
fn state_dict_variants_are_found() {
    let w = nn::random_weights(NetworkKind::OriNet, 5);
    let dir = nn_support::temp_dir("variants");
    // A bare state dict with DataParallel's `module.` prefix, and one under 'model'.
    let mut bare = TestCheckpoint::from_weights(&w);
    bare.container = None;
    bare.prefix = "module.";
    let mut model = TestCheckpoint::from_weights(&w);
    model.container = Some("model");
    model.epoch = None;
    // A BatchNorm counter (int64) as newer PyTorch writes it.
    let mut counted = TestCheckpoint::from_weights(&w);
    let mut nbt = nn_support::TestTensor::new("features.1.num_batches_tracked", vec![], vec![7.0]);
    nbt.class = "LongStorage";
    counted.tensors.push(nbt);
    for (i, c) in [bare, model, counted].iter().enumerate() {
        for bytes in [zip_pth(c), legacy_pth(c)] {
            let input = write(&dir, &format!("v{i}.pth"), &bytes);
            let out = dir.join(format!("v{i}.safetensors"));
            let report = nn::import_pth(&input, &out, Some(NetworkKind::OriNet)).expect("import");
            assert_eq!(Weights::load(&out).unwrap().tensors, w.tensors);
            assert_eq!(report.skipped.len(), usize::from(i == 2));
        }
    }
}

#[test]
fn truncated_files_are_rejected() {
    let w = nn::random_weights(NetworkKind::AffNet, 1);
    let dir = nn_support::temp_dir("truncated");
    let c = TestCheckpoint::from_weights(&w);
    for (name, bytes) in [("legacy.pth", legacy_pth(&c)), ("zip.pth", zip_pth(&c))] {
        for cut in [1, 100, bytes.len() / 2, bytes.len() - 100, bytes.len() - 1] {
            let p = write(&dir, name, &bytes[..cut]);
            import_err(&p, None);
        }
    }
    // Trailing garbage after the last storage of a legacy file is corruption too.
    let mut long = legacy_pth(&c);
    long.extend_from_slice(b"xx");
    let msg = import_err(&write(&dir, "long.pth", &long), None);
    assert!(msg.contains("unexpected bytes"), "{msg}");
}

#[test]
fn wrong_shapes_and_missing_tensors_are_rejected() {
    let w = nn::random_weights(NetworkKind::AffNet, 2);
    let dir = nn_support::temp_dir("shapes");
    let mut reshaped = TestCheckpoint::from_weights(&w);
    reshaped.tensor_mut("features.15.weight").shape = vec![64, 64, 9];
    let mut missing = TestCheckpoint::from_weights(&w);
    missing.tensors.retain(|t| t.name != "features.19.bias");
    let mut extra = TestCheckpoint::from_weights(&w);
    extra.tensors.push(nn_support::TestTensor::new(
        "classifier.weight",
        vec![2],
        vec![1.0, 2.0],
    ));
    for writer in [zip_pth as fn(&TestCheckpoint) -> Vec<u8>, legacy_pth] {
        let p = write(&dir, "reshaped.pth", &writer(&reshaped));
        let msg = import_err(&p, Some(NetworkKind::AffNet));
        assert!(
            msg.contains("'features.15.weight' has shape [64, 64, 9]"),
            "{msg}"
        );
        let msg = import_err(&p, None);
        assert!(
            msg.contains("closest is AffNet") && msg.contains("features.15.weight"),
            "{msg}"
        );

        let p = write(&dir, "missing.pth", &writer(&missing));
        let msg = import_err(&p, Some(NetworkKind::AffNet));
        assert!(msg.contains("missing tensor 'features.19.bias'"), "{msg}");

        let p = write(&dir, "extra.pth", &writer(&extra));
        let msg = import_err(&p, Some(NetworkKind::AffNet));
        assert!(
            msg.contains("unexpected tensor 'classifier.weight'"),
            "{msg}"
        );

        // AffNet weights are not OriNet weights.
        let p = write(
            &dir,
            "affnet.pth",
            &writer(&TestCheckpoint::from_weights(&w)),
        );
        let msg = import_err(&p, Some(NetworkKind::OriNet));
        assert!(msg.contains("features.19.weight"), "{msg}");
    }
}

#[test]
fn non_float_weights_are_rejected() {
    let w = nn::random_weights(NetworkKind::AffNet, 4);
    let dir = nn_support::temp_dir("dtypes");
    let mut half = TestCheckpoint::from_weights(&w);
    half.tensor_mut("features.0.weight").class = "HalfStorage";
    for writer in [zip_pth as fn(&TestCheckpoint) -> Vec<u8>, legacy_pth] {
        let msg = import_err(&write(&dir, "half.pth", &writer(&half)), None);
        assert!(msg.contains("'features.0.weight' is float16"), "{msg}");
    }
}

#[test]
fn pickles_asking_for_code_are_refused() {
    let dir = nn_support::temp_dir("malicious");
    let os_system = {
        let mut p = Pickle::new();
        p.global("os", "system")
            .op(b'(')
            .str("echo pwned")
            .op(b't')
            .op(b'R');
        p.finish()
    };
    let eval = {
        // Protocol 4 style: STACK_GLOBAL with strings on the stack.
        let mut p = Pickle::new();
        p.str("builtins")
            .str("eval")
            .op(0x93)
            .op(b'(')
            .str("1+1")
            .op(b't')
            .op(b'R');
        p.finish()
    };
    let call_storage = {
        let mut p = Pickle::new();
        p.global("torch", "FloatStorage").op(b')').op(b'R');
        p.finish()
    };
    let lookalike = {
        let mut p = Pickle::new();
        p.global("torch._utils", "_rebuild_device_tensor_from_numpy")
            .op(b')')
            .op(b'R');
        p.finish()
    };
    let cases = [
        (os_system, "refusing to load 'os.system'"),
        (eval, "refusing to load 'builtins.eval'"),
        (call_storage, "refusing to call a storage class"),
        (
            lookalike,
            "refusing to load 'torch._utils._rebuild_device_tensor_from_numpy'",
        ),
    ];
    for (object, expected) in cases {
        for (name, bytes) in [
            (
                "evil-legacy.pth",
                legacy_pth_with_object(&vec![], object.clone()),
            ),
            ("evil-zip.pth", zip_pth_with_object(&vec![], object.clone())),
        ] {
            let msg = import_err(&write(&dir, name, &bytes), None);
            assert!(msg.contains(expected), "{msg}");
            // Loading (not importing) goes through the same gate.
            let e = Weights::load(&dir.join(name)).unwrap_err().to_string();
            assert!(e.contains(expected), "{e}");
        }
    }
}

#[test]
fn unusual_zip_archives_get_clear_errors() {
    let w = nn::random_weights(NetworkKind::AffNet, 6);
    let dir = nn_support::temp_dir("zips");
    let compressed = zip_stored(&[("archive/data.pkl".into(), b"\x80\x02N.".to_vec())], 8);
    let msg = import_err(&write(&dir, "deflated.pth", &compressed), None);
    assert!(msg.contains("compressed"), "{msg}");
    let script = zip_stored(&[("m/constants.pkl".into(), b"\x80\x02N.".to_vec())], 0);
    let msg = import_err(&write(&dir, "script.pt", &script), None);
    assert!(msg.contains("TorchScript"), "{msg}");
    // A flipped byte inside stored data fails the CRC check.
    let mut bytes = zip_pth(&TestCheckpoint::from_weights(&w));
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let msg = import_err(&write(&dir, "flipped.pth", &bytes), None);
    assert!(msg.contains("CRC") || msg.contains("corrupt"), "{msg}");
    let msg = import_err(&write(&dir, "text.pth", b"hello world"), None);
    assert!(msg.contains("not a PyTorch checkpoint"), "{msg}");
}

/// A tiny xorshift for reproducible fuzzing.
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed | 1;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

/// Parses and checks in memory; a panic anywhere fails the test.
fn parse_and_check(bytes: &[u8]) -> Result<(), Error> {
    let w = Weights::from_pth(bytes, "fuzz.pth")?;
    NetworkKind::detect(&w).map(|_| ())
}

#[test]
fn fuzzed_affnet_pth_gives_errors_not_panics() {
    let shared = shared_or_skip!();
    let original = std::fs::read(shared.join("weights/AffNet.pth")).unwrap();
    parse_and_check(&original).expect("the original parses");
    let mut next = rng(0x5eed);
    // Truncations are always errors.
    for _ in 0..300 {
        let cut = (next() as usize) % original.len();
        assert!(
            parse_and_check(&original[..cut]).is_err(),
            "truncated at {cut} was accepted"
        );
    }
    // Byte flips: the pickle region (the first ~2.2 kB) mostly, the data region sometimes.
    // Flips in float data may load (different numbers), but nothing may panic.
    let mut accepted = 0;
    for i in 0..1500 {
        let mut bytes = original.clone();
        let region = if i % 3 == 0 { bytes.len() } else { 2300 };
        for _ in 0..1 + next() % 3 {
            let at = (next() as usize) % region;
            bytes[at] ^= 1 << (next() % 8);
        }
        accepted += usize::from(parse_and_check(&bytes).is_ok());
    }
    println!("byte flips accepted (harmless data changes): {accepted} / 1500");
    // Random garbage with a plausible header.
    for i in 0..200 {
        let mut bytes = original[..(next() as usize % 3000)].to_vec();
        bytes.extend((0..(i * 7)).map(|_| next() as u8));
        let _ = parse_and_check(&bytes);
    }
}

#[test]
fn fuzzed_zip_checkpoint_gives_errors_not_panics() {
    let w = nn::random_weights(NetworkKind::AffNet, 8);
    let original = zip_pth(&with_layouts(TestCheckpoint::from_weights(&w)));
    parse_and_check(&original).expect("the original parses");
    let mut next = rng(0xfeed);
    for _ in 0..300 {
        let cut = (next() as usize) % original.len();
        assert!(
            parse_and_check(&original[..cut]).is_err(),
            "truncated at {cut} was accepted"
        );
    }
    for _ in 0..1500 {
        let mut bytes = original.clone();
        for _ in 0..1 + next() % 3 {
            let at = (next() as usize) % bytes.len();
            bytes[at] ^= 1 << (next() % 8);
        }
        let _ = parse_and_check(&bytes);
    }
}

#[test]
fn safetensors_load_errors_name_the_file_and_problem() {
    let dir = nn_support::temp_dir("safetensors");
    let w = nn::random_weights(NetworkKind::AffNet, 9);
    let good = dir.join("affnet.safetensors");
    w.save(&good).unwrap();
    AffNet::load(&good).expect("valid file loads");

    let mut missing = w.clone();
    missing.tensors.remove("features.16.running_var");
    let p = dir.join("missing.safetensors");
    missing.save(&p).unwrap();
    let msg = AffNet::load(&p).unwrap_err().to_string();
    assert!(msg.starts_with(&p.display().to_string()), "{msg}");
    assert!(
        msg.contains("missing tensor 'features.16.running_var'"),
        "{msg}"
    );

    let mut nan = w.clone();
    nan.tensors.get_mut("features.3.weight").unwrap().data[5] = f32::NAN;
    let p = dir.join("nan.safetensors");
    nan.save(&p).unwrap();
    let msg = AffNet::load(&p).unwrap_err().to_string();
    assert!(
        msg.contains("'features.3.weight' contains the value NaN"),
        "{msg}"
    );

    // A float16 tensor, written with the safetensors crate directly.
    let half =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![2], &[0, 60, 0, 60])
            .unwrap();
    let p = dir.join("half.safetensors");
    safetensors::serialize_to_file([("features.0.weight", half)], None, &p).unwrap();
    let msg = AffNet::load(&p).unwrap_err().to_string();
    assert!(msg.contains("'features.0.weight' is F16"), "{msg}");

    let p = write(&dir, "garbage.safetensors", b"0123456789abcdef");
    let msg = AffNet::load(&p).unwrap_err().to_string();
    assert!(
        msg.contains("not a readable safetensors file") && !msg.contains('\n'),
        "{msg}"
    );

    let e = AffNet::load(&dir.join("absent.safetensors")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
}

#[test]
fn inspect_lists_both_formats() {
    let dir = nn_support::temp_dir("inspect");
    let w = nn::random_weights(NetworkKind::OriNet, 10);
    let pth = write(
        &dir,
        "orinet.pth",
        &legacy_pth(&with_layouts(TestCheckpoint::from_weights(&w))),
    );
    let st = dir.join("orinet.safetensors");
    nn::import_pth(&pth, &st, None).unwrap();
    for path in [&pth, &st] {
        let info = nn::inspect_file(path).unwrap();
        assert_eq!(info.model, Some(NetworkKind::OriNet), "{}", path.display());
        let names: Vec<&str> = info.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names[..4],
            [
                "features.0.weight",
                "features.1.running_mean",
                "features.1.running_var",
                "features.3.weight"
            ]
        );
        assert_eq!(names.last(), Some(&"features.19.weight"));
        let bias = info
            .tensors
            .iter()
            .find(|t| t.name == "features.19.bias")
            .unwrap();
        let data = &w.get("features.19.bias").unwrap().data;
        assert_eq!(
            (bias.shape.clone(), bias.dtype.as_str(), bias.count),
            (vec![2], "float32", 2)
        );
        let stats = bias.stats.unwrap();
        assert_eq!(
            (stats.min, stats.max),
            (data[0].min(data[1]), data[0].max(data[1]))
        );
        assert!((stats.mean - (data[0] + data[1]) / 2.0).abs() < 1e-7);
        assert_eq!(nn::inspect(path).unwrap(), info.tensors);
    }
    assert_eq!(
        nn::inspect_file(&pth).unwrap().format,
        "legacy torch (< 1.6)"
    );
    let st_info = nn::inspect_file(&st).unwrap();
    assert_eq!(st_info.format, "safetensors");
    assert_eq!(
        st_info.metadata.get(nn::META_MODEL).map(String::as_str),
        Some("OriNet")
    );
    assert_eq!(
        st_info.metadata.get(nn::META_SOURCE).map(String::as_str),
        Some("orinet.pth")
    );
}

#[test]
fn locate_follows_flag_then_env_then_data() {
    // The only test in this binary that touches WBS_WEIGHTS.
    let dir = nn_support::temp_dir("locate");
    let file = dir.join("mine.safetensors");
    std::fs::write(&file, b"x").unwrap();
    let weights_dir = dir.join("weights");
    std::fs::create_dir_all(&weights_dir).unwrap();
    std::fs::write(weights_dir.join("affnet.safetensors"), b"x").unwrap();

    assert_eq!(nn::locate(NetworkKind::HardNet, Some(&file)).unwrap(), file);
    let msg = nn::locate(NetworkKind::HardNet, Some(&dir.join("nope")))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no such HardNet weights file"), "{msg}");

    std::env::set_var(nn::WEIGHTS_ENV, &file);
    assert_eq!(nn::locate(NetworkKind::OriNet, None).unwrap(), file);
    std::env::set_var(nn::WEIGHTS_ENV, &weights_dir);
    assert_eq!(
        nn::locate(NetworkKind::AffNet, None).unwrap(),
        weights_dir.join("affnet.safetensors")
    );
    // Not in the directory: the shipped data/ if it has one, else an error that says what to do.
    match nn::locate(NetworkKind::HardNet, None) {
        Ok(p) => assert!(p.ends_with("data/hardnet.safetensors"), "{}", p.display()),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("no HardNet weights found"), "{msg}");
            assert!(
                msg.contains("pass --weights FILE, set WBS_WEIGHTS"),
                "{msg}"
            );
            assert!(
                msg.contains("wbs weights import HardNet.pth --out hardnet.safetensors"),
                "{msg}"
            );
            assert!(!msg.contains('\n'));
        }
    }
    // How each was found.
    use nn::WeightsOrigin::{Env, Flag};
    let found = |explicit: Option<&Path>| nn::locate_with_origin(NetworkKind::AffNet, explicit);
    assert_eq!(found(Some(&file)).unwrap(), (file.clone(), Flag));
    assert_eq!(
        found(None).unwrap(),
        (weights_dir.join("affnet.safetensors"), Env)
    );
    // A WBS_WEIGHTS that names nothing is an error, not a fallback to the shipped file.
    std::env::set_var(nn::WEIGHTS_ENV, dir.join("typo"));
    let msg = found(None).unwrap_err().to_string();
    assert!(
        msg.contains("WBS_WEIGHTS=") && msg.contains("typo: no such file or folder"),
        "{msg}"
    );
    // An empty WBS_WEIGHTS counts as unset.
    std::env::set_var(nn::WEIGHTS_ENV, "");
    if let Ok((p, origin)) = found(None) {
        assert_eq!(origin, nn::WeightsOrigin::Shipped, "{}", p.display());
    }
    std::env::remove_var(nn::WEIGHTS_ENV);
}
