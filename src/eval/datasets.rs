//! Dataset layouts → the list of pairs to evaluate.
//!
//! Every layout of `protocol.md` is read as its authors distribute it (OxAff, EF, EVD, SymB, WxBS,
//! homogr), plus the generic pair list that covers every other data set. Pair names and pair order
//! follow the shared scorer (`score.py`: `OxAff/graf/1-2`, `SymB/arch`, `homogr/Boston`, ...), so
//! that two reports can be compared pair by pair.
//!
//! Loading a dataset only lists files: images and ground-truth files are read when their pair runs.
//! A missing or corrupt file then fails that pair alone, while a folder that does not have the
//! layout at all is a one-line error before anything runs.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::protocol::{load_ground_truth, parse_correspondences, GroundTruth};
use crate::synth::read_homography;
use crate::{Error, Result};

/// A directory layout that `wbs eval` knows how to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// Oxford affine: `<seq>/img1..6.<ext>`, `<seq>/H1to{N}p`.
    OxAff,
    /// Edge Foci: `<seq>/img1..K.<ext>`, `<seq>/H1to{N}p` (other `H{i}to{j}p` are derived, ignored).
    Ef,
    /// Extreme View: `1/<name>.<ext>`, `2/<name>.<ext>`, `h/<name>.txt` (optional).
    Evd,
    /// SymBench: `<pair>/01.<ext>`, `<pair>/02.<ext>`, `<pair>/H1to2`.
    SymB,
    /// WxBS: `<pair>/01.<ext>`, `<pair>/02.<ext>`, `<pair>/pts.txt` (rows `x1 y1 x2 y2`).
    WxBS,
    /// CMP homogr: `<name>A.<ext>`, `<name>B.<ext>`, `<name>_model.txt` (maps B → A).
    Homogr,
    /// The generic pair list: `image1 image2 [H-file | pts-file | -]` per line.
    List,
}

impl Layout {
    /// The layouts that have a folder structure (everything but the pair list).
    pub const FOLDERS: [Layout; 6] = [
        Layout::OxAff,
        Layout::Ef,
        Layout::Evd,
        Layout::SymB,
        Layout::WxBS,
        Layout::Homogr,
    ];

    /// The dataset's name as the protocol (and score.py) spells it; also the pair-name prefix.
    pub fn name(self) -> &'static str {
        match self {
            Layout::OxAff => "OxAff",
            Layout::Ef => "EF",
            Layout::Evd => "EVD",
            Layout::SymB => "SymB",
            Layout::WxBS => "WxBS",
            Layout::Homogr => "homogr",
            Layout::List => "list",
        }
    }

    /// A folder layout by its name, in any case.
    pub fn from_name(name: &str) -> Option<Layout> {
        Layout::FOLDERS
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(name))
    }

    /// What the layout looks like, for error messages.
    pub fn expectation(self) -> &'static str {
        match self {
            Layout::OxAff => {
                "the Oxford affine layout: <seq>/img1..img6.<ext> with <seq>/H1to2p..H1to6p"
            }
            Layout::Ef => "the Edge Foci layout: <seq>/img1..imgK.<ext> with <seq>/H1to<N>p",
            Layout::Evd => "the EVD layout: 1/<name>.png, 2/<name>.png and (optional) h/<name>.txt",
            Layout::SymB => "the SymBench layout: <pair>/01.<ext>, <pair>/02.<ext>, <pair>/H1to2",
            Layout::WxBS => "the WxBS layout: <pair>/01.<ext>, <pair>/02.<ext>, <pair>/pts.txt",
            Layout::Homogr => "the homogr layout: <name>A.<ext>, <name>B.<ext>, <name>_model.txt",
            Layout::List => "a pair list: one pair a line, `image1 image2 [H-file | pts-file | -]`",
        }
    }
}

/// Where a pair's ground truth comes from. It is read when the pair runs, so that an unreadable
/// file fails that pair only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TruthSource {
    /// None: the pair is judged on its inlier count alone.
    None,
    /// A homography file. `maps_2_to_1`: the file maps image 2 to image 1 (homogr's `_model.txt`)
    /// and is inverted, so that the ground truth maps image 1 to image 2 as everywhere else.
    Homography {
        /// The file: nine numbers in any notation.
        path: PathBuf,
        /// Whether the file maps image 2 to image 1 (and is inverted when read).
        maps_2_to_1: bool,
    },
    /// Annotated correspondences, rows `x1 y1 x2 y2` (verified with a fundamental matrix).
    Correspondences {
        /// The file of rows `x1 y1 x2 y2`.
        path: PathBuf,
    },
    /// A file from a pair list, told apart by its content: 9 numbers are a homography
    /// (image 1 → image 2), rows of 4 numbers are correspondences.
    File {
        /// The file named on the pair list's line.
        path: PathBuf,
    },
}

impl TruthSource {
    /// Reads the ground truth (homographies normalised so that `H[2,2] = 1`). An unreadable file
    /// is an [`Error::Io`], a malformed or singular one an [`Error::Dataset`].
    pub fn load(&self) -> Result<GroundTruth> {
        match self {
            TruthSource::None => Ok(GroundTruth::None),
            TruthSource::Homography { path, maps_2_to_1 } => {
                let h = read_homography(path)?;
                if !maps_2_to_1 {
                    return Ok(GroundTruth::Homography(h));
                }
                let inverse = h.try_inverse().ok_or_else(|| {
                    Error::Dataset(format!("{}: the homography is singular", path.display()))
                })?;
                Ok(GroundTruth::Homography(inverse / inverse[(2, 2)]))
            }
            TruthSource::Correspondences { path } => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
                parse_correspondences(&text)
                    .map(GroundTruth::Correspondences)
                    .map_err(|m| Error::Dataset(format!("{}: {m}", path.display())))
            }
            TruthSource::File { path } => load_ground_truth(path),
        }
    }

    /// The ground truth's kind before it is read: "homography", "correspondences", "none", or
    /// "file" (a pair-list file, whose kind its content decides).
    pub fn kind(&self) -> &'static str {
        match self {
            TruthSource::None => "none",
            TruthSource::Homography { .. } => "homography",
            TruthSource::Correspondences { .. } => "correspondences",
            TruthSource::File { .. } => "file",
        }
    }
}

/// The kind of a loaded ground truth, as written in reports.
pub fn truth_kind(truth: &GroundTruth) -> &'static str {
    match truth {
        GroundTruth::Homography(_) => "homography",
        GroundTruth::Correspondences(_) => "correspondences",
        GroundTruth::None => "none",
    }
}

/// One image pair to match and judge.
#[derive(Clone, Debug, PartialEq)]
pub struct Pair {
    /// Unique in a run: `<dataset>/<pair>` as score.py names it.
    pub name: String,
    /// The name of the dataset it belongs to ([`Dataset::name`]).
    pub dataset: String,
    /// Image 1: the homography ground truth maps it to image 2.
    pub image1: PathBuf,
    /// Image 2.
    pub image2: PathBuf,
    /// Its ground truth, read when the pair runs.
    pub truth: TruthSource,
}

/// A dataset: its pairs in the scorer's order.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// The name in reports: the layout's (`OxAff`), or the list's name.
    pub name: String,
    /// The layout it was read in.
    pub layout: Layout,
    /// The folder (or the list file) it was read from.
    pub root: PathBuf,
    /// The pairs, never empty, in the scorer's order.
    pub pairs: Vec<Pair>,
}

/// Reads the folder `root` in `layout`; [`Layout::List`] reads `root` as a pair list instead
/// ([`load_pair_list`] without a name). Fails with a one-line [`Error::Dataset`] when the folder
/// does not have the layout or holds no pair.
pub fn load_dataset(layout: Layout, root: &Path) -> Result<Dataset> {
    if layout == Layout::List {
        return load_pair_list(None, root);
    }
    if !root.is_dir() {
        return Err(layout_error(
            layout,
            root,
            if root.exists() {
                "not a folder"
            } else {
                "no such folder"
            },
        ));
    }
    let pairs = match layout {
        Layout::OxAff | Layout::Ef => sequences(layout, root)?,
        Layout::Evd => evd(root)?,
        Layout::SymB => pair_folders(layout, root, "H1to2")?,
        Layout::WxBS => pair_folders(layout, root, "pts.txt")?,
        Layout::Homogr => homogr(root)?,
        Layout::List => unreachable!(),
    };
    if pairs.is_empty() {
        let missing = match layout {
            Layout::OxAff | Layout::Ef => "no <seq>/img1.* with H1to2p found",
            Layout::Evd => "no 1/<name>.<ext> image found",
            Layout::SymB => "no <pair>/01.* with H1to2 found",
            Layout::WxBS => "no <pair>/01.* with pts.txt found",
            Layout::Homogr => "no <name>_model.txt found",
            Layout::List => unreachable!(),
        };
        return Err(layout_error(layout, root, missing));
    }
    Ok(Dataset {
        name: layout.name().to_string(),
        layout,
        root: root.to_path_buf(),
        pairs,
    })
}

fn layout_error(layout: Layout, root: &Path, what: &str) -> Error {
    Error::Dataset(format!(
        "{}: {what}; expected {} (see protocol.md)",
        root.display(),
        layout.expectation()
    ))
}

/// The entries of a folder sorted by name (byte order, as Python's `sorted`).
fn entries(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if let Some(name) = entry.file_name().to_str() {
            out.push((name.to_string(), entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn is_image_name(name: &str) -> bool {
    crate::image::has_image_extension(Path::new(name))
}

/// The file `<stem>.<any extension>` among `entries`: an image extension first (in name order),
/// else any other. None when there is none.
fn by_stem(entries: &[(String, PathBuf)], stem: &str) -> Option<PathBuf> {
    let matching: Vec<&(String, PathBuf)> = entries
        .iter()
        .filter(|(name, path)| {
            Path::new(name).file_stem().and_then(|s| s.to_str()) == Some(stem)
                && Path::new(name).extension().is_some()
                && !path.is_dir()
        })
        .collect();
    matching
        .iter()
        .find(|(name, _)| is_image_name(name))
        .or(matching.first())
        .map(|(_, path)| path.clone())
}

/// An image by stem, or a placeholder `<dir>/<stem>.*` that fails when the pair runs.
fn image_or_placeholder(entries: &[(String, PathBuf)], dir: &Path, stem: &str) -> PathBuf {
    by_stem(entries, stem).unwrap_or_else(|| dir.join(format!("{stem}.*")))
}

/// OxAff and EF: every sequence folder with `H1to{N}p` files gives the pairs img1 → imgN,
/// N ascending. Derived `H{i}to{j}p` (i ≠ 1) and `H1to1p` are not pairs.
fn sequences(layout: Layout, root: &Path) -> Result<Vec<Pair>> {
    let mut pairs = Vec::new();
    for (seq, dir) in entries(root)? {
        if !dir.is_dir() {
            continue;
        }
        let files = entries(&dir)?;
        let mut targets: Vec<u32> = files
            .iter()
            .filter_map(|(name, _)| name.strip_prefix("H1to")?.strip_suffix('p')?.parse().ok())
            .filter(|&n| n >= 2)
            .collect();
        targets.sort_unstable();
        targets.dedup();
        if targets.is_empty() {
            continue;
        }
        let image1 = image_or_placeholder(&files, &dir, "img1");
        for n in targets {
            pairs.push(Pair {
                name: format!("{}/{seq}/1-{n}", layout.name()),
                dataset: layout.name().into(),
                image1: image1.clone(),
                image2: image_or_placeholder(&files, &dir, &format!("img{n}")),
                truth: TruthSource::Homography {
                    path: dir.join(format!("H1to{n}p")),
                    maps_2_to_1: false,
                },
            });
        }
    }
    Ok(pairs)
}

/// EVD: every image in `1/`; its partner in `2/` by stem; `h/<name>.txt` when present.
fn evd(root: &Path) -> Result<Vec<Pair>> {
    let (one, two, h) = (root.join("1"), root.join("2"), root.join("h"));
    if !one.is_dir() {
        return Ok(Vec::new());
    }
    let second = if two.is_dir() {
        entries(&two)?
    } else {
        Vec::new()
    };
    let mut pairs = Vec::new();
    for (file, path) in entries(&one)? {
        if !is_image_name(&file) || path.is_dir() {
            continue;
        }
        let name = Path::new(&file)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or(&file)
            .to_string();
        let gt = h.join(format!("{name}.txt"));
        pairs.push(Pair {
            name: format!("EVD/{name}"),
            dataset: "EVD".into(),
            image1: path,
            image2: image_or_placeholder(&second, &two, &name),
            truth: if gt.exists() {
                TruthSource::Homography {
                    path: gt,
                    maps_2_to_1: false,
                }
            } else {
                TruthSource::None
            },
        });
    }
    Ok(pairs)
}

/// SymB and WxBS: one folder per pair with `01.*`, `02.*` and a ground-truth file (`H1to2` or
/// `pts.txt`). A folder with any of the three is a pair; what is missing fails that pair.
fn pair_folders(layout: Layout, root: &Path, truth_file: &str) -> Result<Vec<Pair>> {
    let mut pairs = Vec::new();
    for (name, dir) in entries(root)? {
        if !dir.is_dir() {
            continue;
        }
        let files = entries(&dir)?;
        let has = |stem: &str| by_stem(&files, stem).is_some();
        if !(has("01") || has("02") || dir.join(truth_file).exists()) {
            continue;
        }
        let path = dir.join(truth_file);
        pairs.push(Pair {
            name: format!("{}/{name}", layout.name()),
            dataset: layout.name().into(),
            image1: image_or_placeholder(&files, &dir, "01"),
            image2: image_or_placeholder(&files, &dir, "02"),
            truth: if layout == Layout::WxBS {
                TruthSource::Correspondences { path }
            } else {
                TruthSource::Homography {
                    path,
                    maps_2_to_1: false,
                }
            },
        });
    }
    Ok(pairs)
}

/// homogr: `<name>_model.txt` (B → A, inverted when read) with `<name>A.*` and `<name>B.*`.
fn homogr(root: &Path) -> Result<Vec<Pair>> {
    let files = entries(root)?;
    let mut pairs = Vec::new();
    for (file, path) in &files {
        let Some(name) = file.strip_suffix("_model.txt") else {
            continue;
        };
        pairs.push(Pair {
            name: format!("homogr/{name}"),
            dataset: "homogr".into(),
            image1: image_or_placeholder(&files, root, &format!("{name}A")),
            image2: image_or_placeholder(&files, root, &format!("{name}B")),
            truth: TruthSource::Homography {
                path: path.clone(),
                maps_2_to_1: true,
            },
        });
    }
    Ok(pairs)
}

/// Reads a pair list: one pair a line, `image1 image2 [H-file | pts-file | -]`, paths relative
/// to the list file, `#` starts a comment. Paths cannot contain whitespace or `#`. The dataset is
/// called `name`, or the list file's stem.
///
/// A pair is named `<dataset>/<image1 without extension>-<image2 stem>` when both images share a
/// folder, else `<dataset>/<image1>-<image2>` (both without extensions); a repeated name gets
/// `@<line>`.
pub fn load_pair_list(name: Option<&str>, file: &Path) -> Result<Dataset> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Dataset(format!(
                "{}: no such pair list; expected {}",
                file.display(),
                Layout::List.expectation()
            ))
        } else {
            Error::io(file, e)
        }
    })?;
    let dataset = name
        .map(str::to_string)
        .or_else(|| {
            file.file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "list".into());
    let base = file.parent().unwrap_or(Path::new("."));
    let mut pairs = Vec::new();
    let mut names = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let tokens: Vec<&str> = line.split_whitespace().collect();
        if !(2..=3).contains(&tokens.len()) {
            return Err(Error::Dataset(format!(
                "{}:{}: expected `image1 image2 [H-file | pts-file | -]`, found {} fields",
                file.display(),
                n + 1,
                tokens.len()
            )));
        }
        let truth = match tokens.get(2) {
            None | Some(&"-") => TruthSource::None,
            Some(t) => TruthSource::File { path: base.join(t) },
        };
        let (rel1, rel2) = (Path::new(tokens[0]), Path::new(tokens[1]));
        let strip = |p: &Path| {
            p.with_extension("")
                .to_string_lossy()
                .trim_start_matches('/')
                .to_string()
        };
        let second = if rel1.parent() == rel2.parent() {
            rel2.file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default()
        } else {
            strip(rel2)
        };
        let mut pair_name = format!("{dataset}/{}-{second}", strip(rel1));
        if !names.insert(pair_name.clone()) {
            pair_name = format!("{pair_name}@{}", n + 1);
            names.insert(pair_name.clone());
        }
        pairs.push(Pair {
            name: pair_name,
            dataset: dataset.clone(),
            image1: base.join(rel1),
            image2: base.join(rel2),
            truth,
        });
    }
    if pairs.is_empty() {
        return Err(Error::Dataset(format!(
            "{}: no pairs in the list; expected {}",
            file.display(),
            Layout::List.expectation()
        )));
    }
    Ok(Dataset {
        name: dataset,
        layout: Layout::List,
        root: file.to_path_buf(),
        pairs,
    })
}

/// Parses `--dataset NAME[=DIR]`: the layout, and the folder (`<root>/<NAME>` when no `=DIR`).
pub fn parse_dataset_spec(spec: &str, root: Option<&Path>) -> Result<(Layout, PathBuf)> {
    let (name, dir) = match spec.split_once('=') {
        Some((name, dir)) => (name, Some(PathBuf::from(dir))),
        None => (spec, None),
    };
    let layout = Layout::from_name(name).ok_or_else(|| {
        let known: Vec<&str> = Layout::FOLDERS.iter().map(|l| l.name()).collect();
        Error::invalid(format!(
            "--dataset {spec}: unknown dataset '{name}'; known layouts: {} (use --list FILE for any other data)",
            known.join(", ")
        ))
    })?;
    let dir = dir.unwrap_or_else(|| root.unwrap_or(Path::new(".")).join(layout.name()));
    Ok((layout, dir))
}

/// Parses `--list [NAME=]FILE`: the dataset name, if given, and the list file. A `NAME` containing
/// `/` is taken as part of the path.
pub fn parse_list_spec(spec: &str) -> (Option<&str>, PathBuf) {
    match spec.split_once('=') {
        Some((name, file)) if !name.is_empty() && !name.contains('/') => {
            (Some(name), PathBuf::from(file))
        }
        _ => (None, PathBuf::from(spec)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_specs() {
        let (l, d) = parse_dataset_spec("oxaff", Some(Path::new("/data"))).unwrap();
        assert_eq!((l, d), (Layout::OxAff, PathBuf::from("/data/OxAff")));
        let (l, d) = parse_dataset_spec("EF=/x/ef", None).unwrap();
        assert_eq!((l, d), (Layout::Ef, PathBuf::from("/x/ef")));
        let e = parse_dataset_spec("GDB", None).unwrap_err().to_string();
        assert!(
            e.contains("unknown dataset 'GDB'") && e.contains("--list"),
            "{e}"
        );
        assert_eq!(
            parse_list_spec("gdb=lists/gdb.txt"),
            (Some("gdb"), PathBuf::from("lists/gdb.txt"))
        );
        assert_eq!(
            parse_list_spec("a/b=c.txt"),
            (None, PathBuf::from("a/b=c.txt"))
        );
    }
}
