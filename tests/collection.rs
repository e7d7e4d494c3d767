//! `wbs collection` on a small collection made from the sample pair: the COLMAP database's
//! contents and conventions, a resumed run and shards + merge equal to one uninterrupted run,
//! unreadable images skipped and counted, databases that must not be changed refused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use wbs::collection::colmap::{self, Database, TABLES};
use wbs::collection::{self, cache, Options, PairSelection, Summary};
use wbs::eval::{Quiet, Shard};
use wbs::{Config, Matcher, Method};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wbs-collection-{}-{name}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Five images (the sample pair, three synthetic views of image 1, one in a subfolder) and a
/// file that only looks like an image.
fn images() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch("images");
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample");
        std::fs::copy(sample.join("img1.png"), dir.join("a.png")).unwrap();
        std::fs::copy(sample.join("img2.png"), dir.join("b.png")).unwrap();
        let rgb = image::open(sample.join("img1.png")).unwrap().to_rgb8();
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        for (seed, name) in [(1, "c.png"), (2, "d.png"), (3, "sub/e.png")] {
            let params = wbs::synth::SynthParams::random(seed, 1.5);
            let (view, _) = wbs::synth::synthesize(&rgb, &params).unwrap();
            view.save(dir.join(name)).unwrap();
        }
        std::fs::write(dir.join("broken.jpg"), b"not a JPEG").unwrap();
        std::fs::write(dir.join("notes.txt"), b"not an image, not listed").unwrap();
        dir
    })
}

fn matcher() -> &'static Matcher {
    static M: OnceLock<Matcher> = OnceLock::new();
    M.get_or_init(|| Matcher::new(Config::preset(Method::Hesaff)).unwrap())
}

fn options(out: &Path) -> Options {
    Options::new(
        images().to_path_buf(),
        out.to_path_buf(),
        PairSelection::Exhaustive,
    )
}

fn run(options: &Options) -> wbs::Result<Summary> {
    collection::run(matcher(), options, &Quiet)
}

/// Every table wbs writes, rows sorted: two databases with equal dumps hold the same data.
fn dump(path: &Path) -> Vec<Vec<String>> {
    let db = Database::open(path).unwrap();
    let mut tables: Vec<Vec<String>> = TABLES.iter().map(|t| db.dump(t).unwrap()).collect();
    tables.push(db.dump("wbs_settings").unwrap());
    tables
}

/// One uninterrupted run, shared by the tests.
fn reference() -> &'static (PathBuf, Summary) {
    static R: OnceLock<(PathBuf, Summary)> = OnceLock::new();
    R.get_or_init(|| {
        let out = scratch("reference");
        let summary = run(&options(&out)).unwrap();
        (out, summary)
    })
}

#[test]
fn one_run_writes_colmaps_tables_and_skips_the_unreadable_image() {
    let (out, s) = reference();
    assert_eq!(s.images, 6);
    assert_eq!(s.images_used, 5);
    assert_eq!(s.skipped.len(), 1, "{:?}", s.skipped);
    assert_eq!(s.skipped[0].0, "broken.jpg");
    assert!(s.skipped[0].1.contains("broken.jpg"), "{}", s.skipped[0].1);
    assert_eq!((s.pairs, s.pairs_skipped, s.matched), (15, 5, 10));
    assert!(
        s.registered >= 6,
        "only {} of 10 pairs registered",
        s.registered
    );

    let path = out.join("database.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let names: Vec<(u32, String, u32)> = conn
        .prepare("SELECT image_id, name, camera_id FROM images ORDER BY image_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    // Ids by place in the sorted list of names: broken.jpg (id 3) leaves a gap.
    let expected = [
        (1, "a.png"),
        (2, "b.png"),
        (4, "c.png"),
        (5, "d.png"),
        (6, "sub/e.png"),
    ];
    assert_eq!(
        names,
        expected.map(|(i, n)| (i, n.to_string(), i)).to_vec(),
        "image ids, names and one camera each"
    );

    // Cameras: SIMPLE_RADIAL, 1.2·max(w, h), the principal point at the centre.
    let (model, w, h, params): (i64, i64, i64, Vec<u8>) = conn
        .query_row(
            "SELECT model, width, height, params FROM cameras WHERE camera_id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    let params: Vec<f64> = params
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!((model, w, h), (2, 512, 512));
    assert_eq!(params, [614.4, 256.0, 256.0, 0.0]);
    let frames: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM frame_data JOIN frames USING (frame_id) \
             JOIN rigs USING (rig_id) WHERE data_id = sensor_id AND ref_sensor_id = sensor_id",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(frames, 5, "one rig and one frame per image");

    // Keypoints: the cached features shifted by half a pixel, A / mrSize; descriptors 128 bytes.
    let config = Config::preset(Method::Hesaff);
    let cached = cache::load(
        &out.join("features/b.png.safetensors"),
        &cache::features_key(&config),
    )
    .expect("b.png's features are cached");
    let (rows, cols, data): (i64, i64, Vec<u8>) = conn
        .query_row(
            "SELECT rows, cols, data FROM keypoints WHERE image_id = 2",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((rows, cols), (cached.described.len() as i64, 6));
    let kp: Vec<f32> = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let f = &cached.described.features[7];
    assert_eq!(&kp[42..44], &[f.laf.c[0] + 0.5, f.laf.c[1] + 0.5]);
    assert_eq!(kp[44], f.laf.a[0][0] / wbs::laf::MR_SIZE);
    let (drows, dcols, dlen, dtype): (i64, i64, i64, i64) = conn
        .query_row(
            "SELECT rows, cols, length(data), type FROM descriptors WHERE image_id = 2",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!((drows, dcols, dlen, dtype), (rows, 128, rows * 128, 0));

    // Pairs: COLMAP's pair ids (smaller id first), verified pairs with their inliers among the
    // tentatives and H in COLMAP's convention; no pair with the unreadable image.
    let mut stmt = conn
        .prepare(
            "SELECT m.pair_id, m.rows, m.data, g.rows, g.data, g.config, g.H, g.F \
             FROM matches m JOIN two_view_geometries g USING (pair_id)",
        )
        .unwrap();
    type Row = (
        i64,
        i64,
        Vec<u8>,
        i64,
        Vec<u8>,
        i64,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
    );
    let pairs: Vec<Row> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(pairs.len(), 10);
    let indices = |b: &[u8]| -> Vec<[u32; 2]> {
        b.chunks_exact(8)
            .map(|c| {
                [
                    u32::from_le_bytes(c[..4].try_into().unwrap()),
                    u32::from_le_bytes(c[4..].try_into().unwrap()),
                ]
            })
            .collect()
    };
    let mut registered = 0;
    for (id, mrows, mdata, grows, gdata, config, h, f) in pairs {
        let (i, j) = colmap::pair_images(id as u64);
        assert!(i < j && i != 3 && j != 3, "pair {i}-{j}");
        let (tentatives, inliers) = (indices(&mdata), indices(&gdata));
        assert_eq!(
            (tentatives.len() as i64, inliers.len() as i64),
            (mrows, grows)
        );
        assert!(inliers.iter().all(|m| tentatives.contains(m)));
        assert!(f.is_none());
        if config == colmap::config::PLANAR_OR_PANORAMIC {
            registered += 1;
            assert!(grows >= 15);
            assert_eq!(h.map(|h| h.len()), Some(72));
        } else {
            assert_eq!((config, grows, h), (colmap::config::DEGENERATE, 0, None));
        }
    }
    assert_eq!(registered, s.registered);

    // The run again without --resume is refused; with it, nothing is left to do and the
    // features come from the cache.
    let e = run(&options(out)).unwrap_err().to_string();
    assert!(e.contains("exists") && e.contains("--resume"), "{e}");
    let before = dump(&path);
    let mut again = options(out);
    again.resume = true;
    let s2 = run(&again).unwrap();
    assert_eq!((s2.already_done, s2.matched, s2.cached), (10, 0, 5));
    assert_eq!(dump(&path), before);
}

#[test]
fn an_interrupted_and_resumed_run_writes_the_same_database() {
    let (reference, _) = reference();
    let out = scratch("resumed");
    let mut first = options(&out);
    first.max_pairs = Some(4);
    let s = run(&first).unwrap();
    // The first four pairs; one of them has the unreadable image.
    assert_eq!((s.matched, s.pairs_skipped, s.left), (3, 1, 11));
    let mut rest = options(&out);
    rest.resume = true;
    let s = run(&rest).unwrap();
    assert_eq!((s.already_done, s.matched, s.cached), (3, 7, 5));
    assert_eq!(
        dump(&out.join("database.db")),
        dump(&reference.join("database.db"))
    );
    // Other settings do not continue this database.
    let mut config = Config::preset(Method::Hesaff);
    config.ratio = 0.7;
    let other = Matcher::new(config).unwrap();
    let e = collection::run(&other, &rest, &Quiet)
        .unwrap_err()
        .to_string();
    assert!(e.contains("other settings"), "{e}");
}

#[test]
fn shards_merged_equal_one_run() {
    let (reference, _) = reference();
    let mut shards = Vec::new();
    for index in 1..=3 {
        // Each shard in its own folder: features are extracted again, not shared.
        let out = scratch(&format!("shard{index}"));
        let mut o = options(&out);
        o.shard = Some(Shard { index, count: 3 });
        let s = run(&o).unwrap();
        assert_eq!(s.pairs, 5);
        shards.push(o.database_path());
    }
    assert!(shards[0].ends_with("database.shard-1-of-3.db"));
    let merged = scratch("merged").join("merged.db");
    collection::merge(&shards, &merged).unwrap();
    assert_eq!(dump(&merged), dump(&reference.join("database.db")));
    let e = collection::merge(&shards, &merged).unwrap_err().to_string();
    assert!(e.contains("exists"), "{e}");
}

#[test]
fn features_read_again_from_the_cache_write_the_same_database() {
    // Two images in memory at a time: every batch reads most of its features from the cache.
    let (reference, _) = reference();
    let out = scratch("bounded");
    let mut o = options(&out);
    o.images_in_memory = Some(2);
    let s = run(&o).unwrap();
    assert!(s.reloaded >= 5, "{} reads from the cache", s.reloaded);
    assert_eq!(
        dump(&out.join("database.db")),
        dump(&reference.join("database.db"))
    );
}

#[test]
fn a_database_with_other_images_needs_add() {
    let out = scratch("add");
    let path = out.join("database.db");
    {
        // A database that lists another collection's image (id 1) without wbs's settings.
        let mut db = Database::open(&path).unwrap();
        let camera = colmap::CameraEntry {
            id: 1,
            identity: "elsewhere".into(),
            size: [640, 480],
            focal: 768.0,
            prior: false,
        };
        db.add_camera(&camera).unwrap();
        let entry = colmap::ImageEntry {
            id: 1,
            name: "elsewhere.jpg".into(),
            camera: 1,
        };
        db.add_image(&entry).unwrap();
    }
    let mut o = options(&out);
    o.selection = PairSelection::Sequential(1);
    o.resume = true;
    let e = run(&o).unwrap_err().to_string();
    assert!(e.contains("elsewhere.jpg") && e.contains("--add"), "{e}");
    o.add = true;
    let s = run(&o).unwrap();
    assert_eq!(
        (s.matched, s.pairs_skipped),
        (3, 2),
        "broken.jpg is in two pairs"
    );
    let images = Database::open(&path).unwrap().images().unwrap();
    assert_eq!(images["elsewhere.jpg"], 1);
    assert_eq!(images["a.png"], 7, "id 1 was taken: the next free one");
    assert_eq!(images["b.png"], 2);
}

#[test]
fn the_command_line_reports_and_merges() {
    let out = scratch("cli");
    let wbs = env!("CARGO_BIN_EXE_wbs");
    let pairs = out.join("pairs.txt");
    std::fs::write(&pairs, "a.png b.png\nsub/e.png a.png\n").unwrap();
    let mut shards = Vec::new();
    for shard in ["1/2", "2/2"] {
        let o = Command::new(wbs)
            .args(["collection", "--images"])
            .arg(images())
            .arg("--out")
            .arg(&out)
            .arg("--pairs")
            .arg(&pairs)
            .args(["--geometry", "homography", "--shard", shard])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(stdout.contains("1 selected"), "{stdout}");
        assert!(
            stdout.contains("0 skipped"),
            "only the pairs' images are read: {stdout}"
        );
    }
    for i in 1..=2 {
        shards.push(out.join(format!("database.shard-{i}-of-2.db")));
    }
    let merged = out.join("merged.db");
    let o = Command::new(wbs)
        .args(["collection", "merge"])
        .args(&shards)
        .arg("--out")
        .arg(&merged)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let db = Database::open(&merged).unwrap();
    assert_eq!(db.verified_pairs().unwrap().len(), 2);

    let bad = out.join("bad-pairs.txt");
    std::fs::write(&bad, "a.png missing.png\n").unwrap();
    let o = Command::new(wbs)
        .args(["collection", "--images"])
        .arg(images())
        .arg("--out")
        .arg(out.join("bad"))
        .arg("--pairs")
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr.starts_with("error: ") && stderr.contains("line 1: missing.png is not an image"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // MODS makes regions per pair: no database of per-image keypoints, refused before any work.
    let o = Command::new(wbs)
        .args(["collection", "--images"])
        .arg(images())
        .arg("--out")
        .arg(out.join("mods"))
        .args(["--method", "mods"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.starts_with("error: ")
            && stderr.contains("wbs collection: method mods has no per-image features"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!out.join("mods").join("database.db").exists());
}

/// A value of a TIFF (EXIF) field.
enum V {
    Ascii(&'static str),
    Short(u16),
    Long(u32),
    Rational(u32, u32),
}

/// A little-endian TIFF block: IFD0 with `main` and, when `exif` is not empty, a pointer to an
/// EXIF IFD with `exif` (tags in increasing order in each).
fn tiff(main: &[(u16, V)], exif: &[(u16, V)]) -> Vec<u8> {
    let n0 = main.len() + usize::from(!exif.is_empty());
    let ifd0 = 8;
    let ifd1 = ifd0 + 2 + 12 * n0 + 4;
    let data_start = ifd1
        + if exif.is_empty() {
            0
        } else {
            2 + 12 * exif.len() + 4
        };
    let mut data = Vec::new();
    let mut ifd = |entries: &[(u16, V)], extra: Option<(u16, u32)>| -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(
            &((entries.len() + usize::from(extra.is_some())) as u16).to_le_bytes(),
        );
        let mut write = |tag: u16, kind: u16, count: u32, bytes: Vec<u8>, out: &mut Vec<u8>| {
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&kind.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
            if bytes.len() <= 4 {
                let mut inline = bytes;
                inline.resize(4, 0);
                out.extend_from_slice(&inline);
            } else {
                let offset = (data_start + data.len()) as u32;
                out.extend_from_slice(&offset.to_le_bytes());
                data.extend_from_slice(&bytes);
                if data.len() % 2 == 1 {
                    data.push(0);
                }
            }
        };
        for (tag, v) in entries {
            let (kind, count, bytes) = match v {
                V::Ascii(s) => {
                    let mut b = s.as_bytes().to_vec();
                    b.push(0);
                    (2, b.len() as u32, b)
                }
                V::Short(x) => (3, 1, x.to_le_bytes().to_vec()),
                V::Long(x) => (4, 1, x.to_le_bytes().to_vec()),
                V::Rational(n, d) => (5, 1, [n.to_le_bytes(), d.to_le_bytes()].concat()),
            };
            write(*tag, kind, count, bytes, &mut out);
        }
        if let Some((tag, offset)) = extra {
            write(tag, 4, 1, offset.to_le_bytes().to_vec(), &mut out);
        }
        out.extend_from_slice(&[0; 4]);
        out
    };
    let pointer = (!exif.is_empty()).then_some((0x8769, ifd1 as u32));
    let mut out = vec![b'I', b'I', 42, 0, 8, 0, 0, 0];
    out.extend(ifd(main, pointer));
    if !exif.is_empty() {
        out.extend(ifd(exif, None));
    }
    out.extend(data);
    out
}

/// A 320×240 JPEG cut from the sample image at `x` with `app1` (an EXIF block) after SOI.
fn jpeg(x: u32, app1: Option<Vec<u8>>) -> Vec<u8> {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample/img1.png");
    let gray = image::open(sample).unwrap().to_luma8();
    let crop = image::imageops::crop_imm(&gray, x, 100, 320, 240).to_image();
    let mut encoded = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut encoded, 95)
        .encode_image(&crop)
        .unwrap();
    let Some(app1) = app1 else { return encoded };
    let len = (app1.len() + 2) as u16;
    let mut file = vec![0xFF, 0xD8, 0xFF, 0xE1];
    file.extend_from_slice(&len.to_be_bytes());
    file.extend_from_slice(&app1);
    file.extend_from_slice(&encoded[2..]);
    file
}

fn exif_block(tiff: Vec<u8>) -> Vec<u8> {
    [b"Exif\0\0".to_vec(), tiff].concat()
}

/// Make "Acme", model `model`, the 35 mm equivalent focal length 28 mm.
fn acme(model: &'static str) -> Vec<u8> {
    exif_block(tiff(
        &[(0x010f, V::Ascii("Acme")), (0x0110, V::Ascii(model))],
        &[(0x920a, V::Rational(56, 10)), (0xa405, V::Short(28))],
    ))
}

/// Photos with EXIF: two of one camera, one of another (focal length from the focal-plane
/// resolution, held sideways), one with corrupt EXIF, one without.
fn exif_images() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch("exif-images");
        std::fs::write(dir.join("cam1_a.jpg"), jpeg(0, Some(acme("X100")))).unwrap();
        std::fs::write(dir.join("cam1_b.jpg"), jpeg(40, Some(acme("X100")))).unwrap();
        // 20 mm on a sensor 320 px / 400 px per cm = 8 mm wide: f = 20 / 8 · 320 = 800 px.
        let other = exif_block(tiff(
            &[
                (0x010f, V::Ascii("Acme")),
                (0x0110, V::Ascii("Z9")),
                (0x0112, V::Short(6)), // rotate 90°: COLMAP (and wbs here) ignore it
            ],
            &[
                (0x920a, V::Rational(20, 1)),
                (0xa002, V::Long(320)),
                (0xa20e, V::Rational(400, 1)),
                (0xa210, V::Short(3)),
            ],
        ));
        std::fs::write(dir.join("cam2.jpg"), jpeg(80, Some(other))).unwrap();
        let corrupt = exif_block(b"II\x2a\0\xf0\xff\xff\x7f garbage".to_vec());
        std::fs::write(dir.join("corrupt.jpg"), jpeg(120, Some(corrupt))).unwrap();
        std::fs::write(dir.join("plain.jpg"), jpeg(160, None)).unwrap();
        dir
    })
}

type CameraRow = (u32, i64, i64, i64, Vec<f64>, i64);

fn cameras(path: &Path) -> (Vec<CameraRow>, Vec<(String, u32)>) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let cameras = conn
        .prepare(
            "SELECT camera_id, model, width, height, params, prior_focal_length FROM cameras \
             ORDER BY camera_id",
        )
        .unwrap()
        .query_map([], |r| {
            let params: Vec<u8> = r.get(4)?;
            let params = params
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                params,
                r.get(5)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let images = conn
        .prepare("SELECT name, camera_id FROM images ORDER BY image_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    (cameras, images)
}

#[test]
fn cameras_come_from_exif_and_are_shared() {
    let out = scratch("exif-auto");
    let mut o = Options::new(
        exif_images().to_path_buf(),
        out.clone(),
        PairSelection::Sequential(1),
    );
    let s = run(&o).unwrap();
    assert_eq!((s.images_used, s.cameras, s.exif_priors), (5, 4, 3));
    assert_eq!(s.exif_unreadable.len(), 1, "{:?}", s.exif_unreadable);
    assert_eq!(s.exif_unreadable[0].0, "corrupt.jpg");
    let (rows, images) = cameras(&o.database_path());
    let default = 1.2 * 320.0;
    assert_eq!(
        rows,
        vec![
            (
                1,
                2,
                320,
                240,
                vec![28.0 / 35.0 * 320.0, 160.0, 120.0, 0.0],
                1
            ),
            (3, 2, 320, 240, vec![800.0, 160.0, 120.0, 0.0], 1),
            (4, 2, 320, 240, vec![default, 160.0, 120.0, 0.0], 0),
            (5, 2, 320, 240, vec![default, 160.0, 120.0, 0.0], 0),
        ]
    );
    let names = |v: &[(&str, u32)]| -> Vec<(String, u32)> {
        v.iter().map(|(n, c)| (n.to_string(), *c)).collect()
    };
    assert_eq!(
        images,
        names(&[
            ("cam1_a.jpg", 1),
            ("cam1_b.jpg", 1),
            ("cam2.jpg", 3),
            ("corrupt.jpg", 4),
            ("plain.jpg", 5)
        ])
    );
    // One rig per camera; every frame in its camera's rig.
    let conn = rusqlite::Connection::open(o.database_path()).unwrap();
    let bad: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM images i JOIN frame_data d ON d.data_id = i.image_id \
             JOIN frames f USING (frame_id) JOIN rigs r USING (rig_id) \
             WHERE r.ref_sensor_id != i.camera_id OR d.sensor_id != i.camera_id",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(bad, 0);
    // Pixels as stored (the EXIF orientation of cam2.jpg is not applied): keypoints span 320
    // columns and 240 rows.
    let data: Vec<u8> = conn
        .query_row("SELECT data FROM keypoints WHERE image_id = 3", [], |r| {
            r.get(0)
        })
        .unwrap();
    let kp: Vec<f32> = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let max_x = kp.chunks_exact(6).map(|k| k[0]).fold(0.0, f32::max);
    let max_y = kp.chunks_exact(6).map(|k| k[1]).fold(0.0, f32::max);
    assert!(
        max_x > 240.0 && max_x <= 320.0 && max_y <= 240.0,
        "{max_x} {max_y}"
    );
    drop(conn);

    // A resumed run with another mode is refused.
    o.resume = true;
    o.camera_mode = collection::CameraMode::Single;
    let e = run(&o).unwrap_err().to_string();
    assert!(e.contains("--camera-mode auto"), "{e}");

    // The other modes.
    for (mode, expected) in [
        (collection::CameraMode::PerImage, vec![1, 2, 3, 4, 5]),
        (collection::CameraMode::Single, vec![1; 5]),
        (collection::CameraMode::PerFolder, vec![1; 5]),
    ] {
        let out = scratch(&format!("exif-{mode}"));
        let mut o = Options::new(
            exif_images().to_path_buf(),
            out,
            PairSelection::Sequential(1),
        );
        o.camera_mode = mode;
        run(&o).unwrap();
        let (rows, images) = cameras(&o.database_path());
        assert_eq!(
            images.iter().map(|i| i.1).collect::<Vec<_>>(),
            expected,
            "{mode}"
        );
        assert_eq!(
            rows.len(),
            expected
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        );
        if mode == collection::CameraMode::Single {
            // The first image's prior.
            assert_eq!((rows[0].4[0], rows[0].5), (28.0 / 35.0 * 320.0, 1));
        }
    }
}

#[test]
fn added_images_reuse_their_camera_and_shards_agree() {
    // Two photos of the X100 and one plain photo first; then a third X100 photo and another
    // plain one are added: the X100 camera is reused, the plain photo gets a new camera.
    let first = scratch("exif-first");
    for name in ["cam1_a.jpg", "cam1_b.jpg", "plain.jpg"] {
        std::fs::copy(exif_images().join(name), first.join(name)).unwrap();
    }
    let second = scratch("exif-second");
    std::fs::write(second.join("more_x100.jpg"), jpeg(180, Some(acme("X100")))).unwrap();
    std::fs::write(second.join("more_plain.jpg"), jpeg(190, None)).unwrap();
    let out = scratch("exif-add");
    let o = Options::new(first, out.clone(), PairSelection::Sequential(1));
    run(&o).unwrap();
    let mut add = Options::new(second, out.clone(), PairSelection::Sequential(1));
    add.add = true;
    run(&add).unwrap();
    let (rows, images) = cameras(&o.database_path());
    let camera = |name: &str| images.iter().find(|i| i.0 == name).unwrap().1;
    assert_eq!(camera("more_x100.jpg"), camera("cam1_a.jpg"));
    assert_ne!(camera("more_plain.jpg"), camera("plain.jpg"));
    assert_eq!(rows.len(), 3);

    // Shards of the EXIF collection merged equal one run, cameras included.
    let whole = scratch("exif-whole");
    let o = Options::new(
        exif_images().to_path_buf(),
        whole,
        PairSelection::Exhaustive,
    );
    run(&o).unwrap();
    let mut shards = Vec::new();
    for index in 1..=3 {
        let out = scratch(&format!("exif-shard{index}"));
        let mut s = Options::new(exif_images().to_path_buf(), out, PairSelection::Exhaustive);
        s.shard = Some(Shard { index, count: 3 });
        run(&s).unwrap();
        shards.push(s.database_path());
    }
    let merged = scratch("exif-merged").join("merged.db");
    collection::merge(&shards, &merged).unwrap();
    assert_eq!(dump(&merged), dump(&o.database_path()));
}
