//! The dataset loaders of `wbs eval`: each layout of protocol.md on a fixture made here, the real
//! folders in ../shared/datasets (pair counts, and names, images and ground truth identical to
//! the shared scorer's), and one-line errors for a wrong root.

mod eval_support;

use std::path::Path;
use std::process::Command;

use eval_support::*;
use nalgebra::Matrix3;
use wbs::eval::datasets::{load_dataset, load_pair_list, Layout, TruthSource};
use wbs::protocol::GroundTruth;

fn h_example() -> Matrix3<f64> {
    Matrix3::new(
        0.88339, 0.0969, 46.79, -0.1698, 1.2723, -9.87, 1.0753e-4, 1.1568e-5, 1.0,
    )
}

fn names(d: &wbs::eval::Dataset) -> Vec<&str> {
    d.pairs.iter().map(|p| p.name.as_str()).collect()
}

fn homography(source: &TruthSource) -> Matrix3<f64> {
    match source.load().unwrap() {
        GroundTruth::Homography(h) => h,
        other => panic!("expected a homography, got {other:?}"),
    }
}

#[test]
fn engineering_notation_is_what_ef_writes() {
    for v in [0.88339, 467.97, 1.0753e-4, -98.71, 1.0] {
        let e = engineering(v);
        let (mantissa, exponent) = e.split_once('e').unwrap();
        let m: f64 = mantissa.parse().unwrap();
        let x: i32 = exponent.parse().unwrap();
        assert!((1.0..1000.0).contains(&m.abs()) && x % 3 == 0, "{e}");
        assert!(
            exponent.len() == 4 && (e.parse::<f64>().unwrap() - v).abs() < 1e-12 * v.abs(),
            "{e}"
        );
    }
    assert!(
        engineering(0.88339).starts_with("883.38999") || engineering(0.88339).starts_with("883.39")
    );
}

#[test]
fn oxaff_sequences_any_extension_and_engineering_notation() {
    let dir = scratch("oxaff");
    let h = h_example();
    // As distributed: PPM, boat as PGM; H in engineering notation, not normalised.
    for (seq, ext) in [("graf", "ppm"), ("boat", "pgm")] {
        for i in 1..=3 {
            dummy_image(&dir.join(format!("{seq}/img{i}.{ext}")));
        }
        write_h(&dir.join(format!("{seq}/H1to2p")), &h, 1.0);
        write_h(&dir.join(format!("{seq}/H1to3p")), &h, 2.0);
    }
    dummy_image(&dir.join("notes/img1.png")); // no H files: not a sequence
    std::fs::write(dir.join("README"), "x").unwrap();
    let d = load_dataset(Layout::OxAff, &dir).unwrap();
    assert_eq!(
        names(&d),
        [
            "OxAff/boat/1-2",
            "OxAff/boat/1-3",
            "OxAff/graf/1-2",
            "OxAff/graf/1-3"
        ]
    );
    assert!(d.pairs[0].image1.ends_with("boat/img1.pgm"));
    assert!(d.pairs[3].image2.ends_with("graf/img3.ppm"));
    for p in &d.pairs {
        assert!(max_abs_diff(&homography(&p.truth), &h) < 1e-9, "{}", p.name);
    }
}

#[test]
fn ef_counts_only_img1_to_n_pairs() {
    let dir = scratch("ef");
    let h = h_example();
    for i in 1..=4 {
        dummy_image(&dir.join(format!("obama/img{i}.png")));
        write_h(&dir.join(format!("obama/H1to{i}p")), &h, 1.0); // H1to1p is not a pair
    }
    // Derived files: not pairs.
    for name in ["H2to3p", "H3to1p", "H4to2p", "H2to2p"] {
        write_h(&dir.join(format!("obama/{name}")), &h, 1.0);
    }
    let d = load_dataset(Layout::Ef, &dir).unwrap();
    assert_eq!(names(&d), ["EF/obama/1-2", "EF/obama/1-3", "EF/obama/1-4"]);
    assert!(d.pairs[2].image2.ends_with("obama/img4.png"));
}

#[test]
fn evd_normalises_and_allows_a_pair_without_ground_truth() {
    let dir = scratch("evd");
    let h = h_example();
    for name in ["adam", "zoom"] {
        dummy_image(&dir.join(format!("1/{name}.png")));
        dummy_image(&dir.join(format!("2/{name}.png")));
    }
    std::fs::create_dir_all(dir.join("h")).unwrap();
    write_h(&dir.join("h/adam.txt"), &h, 7.5); // not normalised
    let d = load_dataset(Layout::Evd, &dir).unwrap();
    assert_eq!(names(&d), ["EVD/adam", "EVD/zoom"]);
    assert!(max_abs_diff(&homography(&d.pairs[0].truth), &h) < 1e-9);
    assert_eq!(d.pairs[1].truth, TruthSource::None);
    assert_eq!(d.pairs[1].truth.load().unwrap(), GroundTruth::None);
}

#[test]
fn symb_pairs_with_h1to2() {
    let dir = scratch("symb");
    for pair in ["arch", "bank"] {
        dummy_image(&dir.join(format!("{pair}/01.png")));
        dummy_image(&dir.join(format!("{pair}/02.jpg")));
        write_h(
            &dir.join(format!("{pair}/H1to2")),
            &Matrix3::identity(),
            1.0,
        );
    }
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    let d = load_dataset(Layout::SymB, &dir).unwrap();
    assert_eq!(names(&d), ["SymB/arch", "SymB/bank"]);
    assert!(d.pairs[1].image2.ends_with("bank/02.jpg"));
    assert!(max_abs_diff(&homography(&d.pairs[0].truth), &Matrix3::identity()) < 1e-12);
}

#[test]
fn wxbs_pairs_with_correspondences() {
    let dir = scratch("wxbs");
    dummy_image(&dir.join("bridge/01.png"));
    dummy_image(&dir.join("bridge/02.png"));
    std::fs::write(
        dir.join("bridge/pts.txt"),
        "   2.5e+02   3.3e+02   9.6e+01   5.0e+02\n 1 2 3 4\n",
    )
    .unwrap();
    let d = load_dataset(Layout::WxBS, &dir).unwrap();
    assert_eq!(names(&d), ["WxBS/bridge"]);
    assert_eq!(
        d.pairs[0].truth.load().unwrap(),
        GroundTruth::Correspondences(vec![[250.0, 330.0, 96.0, 500.0], [1.0, 2.0, 3.0, 4.0]])
    );
}

#[test]
fn homogr_model_maps_b_to_a_and_is_inverted() {
    let dir = scratch("homogr");
    let h = h_example(); // the truth A → B
    for name in ["Boston", "BostonLib"] {
        dummy_image(&dir.join(format!("{name}A.jpg")));
        dummy_image(&dir.join(format!("{name}B.png")));
        write_h(
            &dir.join(format!("{name}_model.txt")),
            &h.try_inverse().unwrap(),
            3.0,
        );
    }
    let d = load_dataset(Layout::Homogr, &dir).unwrap();
    // Byte order, as score.py's sorted glob: "BostonLib_" < "Boston_".
    assert_eq!(names(&d), ["homogr/BostonLib", "homogr/Boston"]);
    assert!(d.pairs[1].image1.ends_with("BostonA.jpg"));
    assert!(d.pairs[1].image2.ends_with("BostonB.png"));
    let loaded = homography(&d.pairs[1].truth);
    assert!(max_abs_diff(&loaded, &h) < 1e-9, "{loaded} vs {h}");
    // It maps a point of A to its place in B.
    let p = wbs::synth::transfer(&loaded, [100.0, 50.0]).unwrap();
    let q = wbs::synth::transfer(&h, [100.0, 50.0]).unwrap();
    assert!((p[0] - q[0]).abs() < 1e-6 && (p[1] - q[1]).abs() < 1e-6);
}

#[test]
fn pair_list_relative_paths_comments_and_every_truth_kind() {
    let dir = scratch("list");
    let h = h_example();
    for f in ["a/1.png", "a/2.png", "b/x.jpg", "c/y.jpg", "a/3.png"] {
        dummy_image(&dir.join("data").join(f));
    }
    write_h(&dir.join("data/a/H"), &h, 2.0);
    std::fs::write(dir.join("data/pts.txt"), "1 2 3 4\n5 6 7 8\n").unwrap();
    std::fs::write(
        dir.join("data/gdb.txt"),
        "# GDB-style list\n\
         a/1.png a/2.png a/H   # homography\n\
         \n\
         b/x.jpg c/y.jpg pts.txt\n\
         a/1.png a/3.png -\n\
         a/2.png a/3.png\n\
         a/1.png a/2.png -\n",
    )
    .unwrap();
    let d = load_pair_list(None, &dir.join("data/gdb.txt")).unwrap();
    assert_eq!(d.name, "gdb");
    assert_eq!(
        names(&d),
        [
            "gdb/a/1-2",
            "gdb/b/x-c/y",
            "gdb/a/1-3",
            "gdb/a/2-3",
            "gdb/a/1-2@7"
        ]
    );
    assert_eq!(d.pairs[1].image2, dir.join("data/c/y.jpg"));
    assert!(max_abs_diff(&homography(&d.pairs[0].truth), &h) < 1e-9);
    assert!(matches!(
        d.pairs[1].truth.load().unwrap(),
        GroundTruth::Correspondences(ref p) if p.len() == 2
    ));
    assert_eq!(d.pairs[2].truth, TruthSource::None);
    assert_eq!(d.pairs[3].truth, TruthSource::None);
    let named = load_pair_list(Some("mine"), &dir.join("data/gdb.txt")).unwrap();
    assert_eq!(named.pairs[0].name, "mine/a/1-2");

    std::fs::write(dir.join("bad.txt"), "a.png\n").unwrap();
    let e = load_pair_list(None, &dir.join("bad.txt"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bad.txt:1:") && e.contains("image1 image2"),
        "{e}"
    );
    std::fs::write(dir.join("empty.txt"), "# nothing\n").unwrap();
    let e = load_pair_list(None, &dir.join("empty.txt"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no pairs"), "{e}");
}

#[test]
fn missing_files_fail_the_pair_not_the_load() {
    let dir = scratch("missing");
    dummy_image(&dir.join("graf/img1.png"));
    write_h(&dir.join("graf/H1to2p"), &h_example(), 1.0); // img2 missing
    std::fs::write(dir.join("graf/H1to3p"), "1 2 3\n").unwrap(); // img3 and a bad H
    let d = load_dataset(Layout::OxAff, &dir).unwrap();
    assert_eq!(d.pairs.len(), 2);
    assert!(!d.pairs[0].image2.exists());
    let e = d.pairs[1].truth.load().unwrap_err().to_string();
    assert!(e.contains("H1to3p") && e.contains("9 numbers"), "{e}");
}

#[test]
fn wrong_root_is_a_one_line_error_naming_the_layout() {
    let empty = scratch("wrong-root");
    for layout in Layout::FOLDERS {
        let e = load_dataset(layout, &empty).unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(e.starts_with(&empty.display().to_string()), "{e}");
        assert!(e.contains(layout.expectation()), "{layout:?}: {e}");
    }
    let e = load_dataset(Layout::OxAff, &empty).unwrap_err().to_string();
    assert!(
        e.contains("no <seq>/img1.* with H1to2p found") && e.contains("Oxford affine"),
        "{e}"
    );
    let e = load_dataset(Layout::SymB, &empty.join("nope"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no such folder"), "{e}");
    // The real OxAff folder read as SymB: no <pair>/01.*.
    if let Some(shared) = shared() {
        let e = load_dataset(Layout::SymB, &shared.join("OxAff"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("SymBench layout"), "{e}");
    }
}

/// The shared scorer's pairs (name, image 1, image 2, ground truth) as JSON lines, or None
/// when python3 with numpy is not available.
fn scorer_pairs(shared: &Path, dataset: &str, folder: &Path) -> Option<Vec<serde_json::Value>> {
    let tools = shared.join("../tools");
    let script = format!(
        "import sys, json; sys.path.insert(0, {tools:?}); import score\n\
         for n, a, b, gt in score.pairs({folder:?}, {dataset:?}):\n\
         \x20   g = None if gt is None else [gt[0], gt[1].reshape(-1).tolist()]\n\
         \x20   print(json.dumps([n, a, b, g]))",
        tools = tools.display().to_string(),
        folder = folder.display().to_string(),
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "SKIP scorer comparison: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
    )
}

#[test]
fn real_datasets_have_the_protocols_pairs_and_the_scorers_names_and_truth() {
    let Some(shared) = shared() else { return };
    for (layout, folder, count) in [
        (Layout::OxAff, shared.join("OxAff"), 40),
        (Layout::Ef, shared.join("EF"), 33),
        (Layout::SymB, shared.join("SymB"), 46),
        (Layout::Homogr, shared.join("homogr"), 16),
        (Layout::Evd, shared.join("samples/EVD"), 1),
        (Layout::WxBS, shared.join("samples/WxBS"), 1),
    ] {
        let d = load_dataset(layout, &folder).unwrap();
        assert_eq!(d.pairs.len(), count, "{}", layout.name());
        for p in &d.pairs {
            assert!(p.image1.exists() && p.image2.exists(), "{}", p.name);
            p.truth.load().unwrap_or_else(|e| panic!("{}: {e}", p.name));
        }
        let Some(reference) = scorer_pairs(&shared, layout.name(), &folder) else {
            continue;
        };
        assert_eq!(reference.len(), d.pairs.len(), "{}", layout.name());
        for (p, r) in d.pairs.iter().zip(&reference) {
            assert_eq!(p.name, r[0].as_str().unwrap());
            assert_eq!(p.image1, Path::new(r[1].as_str().unwrap()), "{}", p.name);
            assert_eq!(p.image2, Path::new(r[2].as_str().unwrap()), "{}", p.name);
            let values: Vec<f64> = r[3][1]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            match p.truth.load().unwrap() {
                GroundTruth::Homography(h) => {
                    let theirs = Matrix3::from_row_slice(&values);
                    let scale = h.abs().max();
                    assert!(
                        max_abs_diff(&h, &theirs) < 1e-9 * scale,
                        "{}: {h} vs {theirs}",
                        p.name
                    );
                }
                GroundTruth::Correspondences(points) => {
                    let mine: Vec<f64> = points.iter().flatten().copied().collect();
                    assert_eq!(mine, values, "{}", p.name);
                }
                GroundTruth::None => panic!("{}: the real datasets all have ground truth", p.name),
            }
        }
    }
}
