//! Golden values from `../shared/weights/golden.json`, reproduced from the authors' AffNet.pth and
//! OriNet.pth through the importer (import to a temporary safetensors file, load it, run).

mod nn_support;

use std::path::Path;

use serde_json::Value;
use wbs::nn::{self, AffNet, NetworkKind, OriNet, DEFAULT_INPUT_EPS, KORNIA_INPUT_EPS};

const TOL: f32 = 1e-5;

fn golden(shared: &Path) -> Value {
    let text = std::fs::read_to_string(shared.join("weights/golden.json")).expect("golden.json");
    serde_json::from_str(&text).expect("golden.json parses")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

/// Builds a network case's patch from its formula description.
fn case_patch(case: &Value) -> Vec<f32> {
    let patch = &case["patch"];
    let params = &patch["params"];
    match patch["formula"].as_str().expect("formula") {
        "rect_fill" => {
            let rows = floats(&params["rows"]);
            let cols = floats(&params["cols"]);
            let (bg, val) = (
                params["background"].as_f64().unwrap() as f32,
                params["value"].as_f64().unwrap() as f32,
            );
            nn_support::patch_from(|r, c| {
                let inside = (rows[0] as usize..=rows[1] as usize).contains(&r)
                    && (cols[0] as usize..=cols[1] as usize).contains(&c);
                if inside {
                    val
                } else {
                    bg
                }
            })
        }
        "modular_ramp" => {
            let (a, b) = (
                params["a"].as_u64().unwrap() as usize,
                params["b"].as_u64().unwrap() as usize,
            );
            let (m, d) = (
                params["modulus"].as_u64().unwrap() as usize,
                params["divisor"].as_f64().unwrap() as f32,
            );
            nn_support::patch_from(|y, x| ((a * x + b * y) % m) as f32 / d)
        }
        other => panic!("unknown formula {other}"),
    }
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= tol,
            "{what}: got {got:?}, want {want:?} (tolerance {tol})"
        );
    }
}

/// Imports `<shared>/weights/<file>` to a temporary safetensors file; returns its path.
fn import(
    shared: &Path,
    file: &str,
    kind: NetworkKind,
    test: &str,
) -> (std::path::PathBuf, nn::ImportReport) {
    let out = nn_support::temp_dir(test).join(kind.file_name());
    let report = nn::import_pth(&shared.join("weights").join(file), &out, None).expect("import");
    assert_eq!(report.kind, kind, "detected model");
    (out, report)
}

#[test]
fn affnet_network_cases_and_kornia_toy() {
    let shared = shared_or_skip!();
    let g = golden(&shared);
    let (path, _) = import(&shared, "AffNet.pth", NetworkKind::AffNet, "affnet-golden");
    let model = AffNet::load(&path).expect("load imported AffNet");
    assert_eq!(model.input_eps(), DEFAULT_INPUT_EPS);

    let cases = g["network_cases"].as_array().unwrap();
    let patches: Vec<f32> = cases.iter().flat_map(case_patch).collect();
    for (eps, key) in [
        (KORNIA_INPUT_EPS, "expected"),
        (DEFAULT_INPUT_EPS, "expected_with_eps_1e-7"),
    ] {
        let m = model.clone().with_input_eps(eps);
        let raw = m.forward_raw(&patches);
        let shapes = m.shapes(&patches);
        for (i, case) in cases.iter().enumerate() {
            let exp = &case[key];
            let file_eps = exp.get("eps").or(case.get("eps")).and_then(Value::as_f64);
            assert_eq!(file_eps.map(|e| e as f32), Some(eps), "eps of {key}");
            let id = case["id"].as_str().unwrap();
            assert_close(
                &raw[i],
                &floats(&exp["affnet_raw"]),
                TOL,
                &format!("AffNet raw, {id}, eps {eps}"),
            );
            if let Some(a) = exp.get("affnet_A_upright_det1") {
                let want: Vec<f32> = a.as_array().unwrap().iter().flat_map(floats).collect();
                let got = [
                    shapes[i][0][0],
                    shapes[i][0][1],
                    shapes[i][1][0],
                    shapes[i][1][1],
                ];
                assert_close(&got, &want, 2e-5, &format!("AffNet shape, {id}"));
            }
        }
    }

    // kornia's toy test: the resampled patch is given by its non-zero values.
    let toy = &g["kornia_affnet_toy"];
    let mut patch = vec![0.0f32; 1024];
    for entry in toy["patch_sampling"]["resampled_patch_nonzero"]
        .as_array()
        .unwrap()
    {
        let e = floats(entry);
        patch[e[0] as usize * 32 + e[1] as usize] = e[2];
    }
    let sum: f32 = patch.iter().sum();
    assert!(
        (sum - toy["patch_sampling"]["resampled_patch_sum"]
            .as_f64()
            .unwrap() as f32)
            .abs()
            < 1e-4
    );
    for (eps, key) in [
        (KORNIA_INPUT_EPS, "expected"),
        (DEFAULT_INPUT_EPS, "expected_with_eps_1e-7"),
    ] {
        let m = model.clone().with_input_eps(eps);
        let raw = m.forward_raw(&patch)[0];
        assert_close(
            &raw,
            &floats(&toy[key]["affnet_raw"]),
            TOL,
            &format!("kornia toy raw, eps {eps}"),
        );
        // Output LAF: the upright shape times the input scale (20), centre kept.
        let a = nn::affine_shape(raw);
        let laf: Vec<f32> = toy[key]["laf"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(floats)
            .collect();
        let got = [
            a[0][0] * 20.0,
            a[0][1] * 20.0,
            16.0,
            a[1][0] * 20.0,
            a[1][1] * 20.0,
            16.0,
        ];
        assert_close(&got, &laf, 1e-4, "kornia toy LAF");
    }
    // The reference layers agree with the fast path on the real weights too.
    let slow = model.forward_reference(&patches);
    let fast = model.forward_raw(&patches);
    for (s, f) in slow.iter().zip(&fast) {
        assert_close(s, f, 2e-6, "AffNet reference vs fast");
    }
}

#[test]
fn orinet_network_cases() {
    let shared = shared_or_skip!();
    let g = golden(&shared);
    let (path, _) = import(&shared, "OriNet.pth", NetworkKind::OriNet, "orinet-golden");
    let model = OriNet::load(&path).expect("load imported OriNet");
    let cases = g["network_cases"].as_array().unwrap();
    let patches: Vec<f32> = cases.iter().flat_map(case_patch).collect();
    for (eps, key) in [
        (KORNIA_INPUT_EPS, "expected"),
        (DEFAULT_INPUT_EPS, "expected_with_eps_1e-7"),
    ] {
        let m = model.clone().with_input_eps(eps);
        let raw = m.forward_raw(&patches);
        let angles = m.angles(&patches);
        for (i, case) in cases.iter().enumerate() {
            let exp = &case[key];
            let id = case["id"].as_str().unwrap();
            assert_close(
                &raw[i],
                &floats(&exp["orinet_raw"]),
                TOL,
                &format!("OriNet raw, {id}, eps {eps}"),
            );
            let want = exp["orinet_angle_deg"].as_f64().unwrap() as f32;
            // 1e-5 on outputs of size ~0.07 is ~0.01°; the file rounds to 1e-4°.
            assert_close(
                &[angles[i].to_degrees()],
                &[want],
                0.01,
                &format!("OriNet angle, {id}"),
            );
        }
    }
    // kornia's TestOriNet::test_toy on the top-half patch, with kornia's tolerance.
    let case = cases
        .iter()
        .find(|c| c.get("kornia_test").is_some())
        .expect("kornia OriNet case");
    let (want, atol) = (
        case["kornia_test"]["expected_angle_deg"].as_f64().unwrap() as f32,
        case["kornia_test"]["atol_deg"].as_f64().unwrap() as f32,
    );
    let angle = model
        .clone()
        .with_input_eps(KORNIA_INPUT_EPS)
        .angles(&case_patch(case))[0]
        .to_degrees();
    assert!((angle - want).abs() <= atol, "{angle} vs kornia's {want}");
    let slow = model.forward_reference(&patches);
    let fast = model.forward_raw(&patches);
    for (s, f) in slow.iter().zip(&fast) {
        assert_close(s, f, 2e-6, "OriNet reference vs fast");
    }
}

#[test]
fn parser_sanity_values() {
    let shared = shared_or_skip!();
    let g = golden(&shared);
    for (file, kind) in [
        ("AffNet.pth", NetworkKind::AffNet),
        ("OriNet.pth", NetworkKind::OriNet),
    ] {
        let sanity = &g["weights_sanity"][file];
        let (path, report) = import(&shared, file, kind, &format!("sanity-{file}"));
        assert_eq!(
            report.tensors as u64,
            sanity["tensors"].as_u64().unwrap(),
            "{file} tensors"
        );
        assert_eq!(
            report.values as u64,
            sanity["float32_values"].as_u64().unwrap(),
            "{file} values"
        );
        assert_eq!(report.epoch, sanity["epoch"].as_i64(), "{file} epoch");
        assert_eq!(report.source_format, "legacy torch (< 1.6)");

        let w = nn::Weights::load(&path).unwrap();
        assert_eq!(
            w.metadata.get(nn::META_MODEL).map(String::as_str),
            Some(kind.name())
        );
        assert_eq!(
            w.metadata.get(nn::META_SOURCE).map(String::as_str),
            Some(file)
        );
        assert_eq!(
            w.metadata.get(nn::META_EPOCH),
            Some(&sanity["epoch"].to_string())
        );
        let bias = &w.get("features.19.bias").unwrap().data;
        assert_close(
            bias,
            &floats(&sanity["features.19.bias"]),
            1e-6,
            "features.19.bias",
        );
        if let Some(v) = sanity.get("features.1.running_var[0]") {
            let got = w.get("features.1.running_var").unwrap().data[0];
            assert!(
                (got - v.as_f64().unwrap() as f32).abs() < 1e-6,
                "running_var[0] {got}"
            );
        }
        // The in-memory path (`.pth` given straight to load) gives the same tensors.
        let direct = nn::Weights::load(&shared.join("weights").join(file)).unwrap();
        assert_eq!(direct.tensors, w.tensors);
    }
}
