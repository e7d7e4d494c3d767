//! The UBC Phototour layout (Brown, Hua, Winder; the recipe's "6Brown" data): a folder with
//! - `patches0000.bmp`, `patches0001.bmp`, …: 1024×1024 grayscale sheets, each 16 × 16 patches
//!   of 64×64, row-major (patch `k` is sheet `k / 256`, row `(k % 256) / 16`, column `k % 16`);
//! - `info.txt`: one line per patch, in order, `pointID unused`: the 3D point it shows.
//!
//! The last sheet may be partly empty; `info.txt` says how many patches there are. Pairs are two
//! patches of the same point: consecutive patches of each point (a point seen `k` times gives
//! `k − 1` pairs).

use std::collections::BTreeMap;
use std::path::Path;

use crate::train::data::{PairSet, SOURCE_LEN, SOURCE_SIZE};
use crate::{Error, Result};

/// Patches per sheet side.
pub const SHEET_SIDE: usize = 16;
/// Patches per sheet.
pub const PER_SHEET: usize = SHEET_SIDE * SHEET_SIDE;
const SHEET_PIXELS: usize = SHEET_SIDE * SOURCE_SIZE;

fn err(dir: &Path, message: impl std::fmt::Display) -> Error {
    Error::Dataset(format!("{}: {message}", dir.display()))
}

/// The point id of every patch, from `info.txt`.
fn read_info(dir: &Path) -> Result<Vec<u64>> {
    let path = dir.join("info.txt");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        err(
            dir,
            format!(
                "no readable info.txt ({e}); a Phototour folder has info.txt and patchesNNNN.bmp"
            ),
        )
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, line)| {
            line.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    err(
                        dir,
                        format!(
                            "info.txt line {}: expected 'pointID unused', got '{}'",
                            n + 1,
                            line.trim()
                        ),
                    )
                })
        })
        .collect()
}

/// Loads every patch and makes the pairs.
pub fn load_phototour(dir: &Path) -> Result<PairSet> {
    let ids = read_info(dir)?;
    if ids.is_empty() {
        return Err(err(dir, "info.txt lists no patches"));
    }
    let sheets = ids.len().div_ceil(PER_SHEET);
    let mut patches = vec![0u8; ids.len() * SOURCE_LEN];
    for s in 0..sheets {
        let path = dir.join(format!("patches{s:04}.bmp"));
        let sheet = image::open(&path)
            .map_err(|e| {
                err(
                    dir,
                    format!(
                        "patches{s:04}.bmp: {e} (info.txt lists {} patches, {sheets} sheets)",
                        ids.len()
                    ),
                )
            })?
            .to_luma8();
        if sheet.width() as usize != SHEET_PIXELS || sheet.height() as usize != SHEET_PIXELS {
            return Err(err(
                dir,
                format!(
                    "patches{s:04}.bmp is {}×{}, expected {SHEET_PIXELS}×{SHEET_PIXELS}",
                    sheet.width(),
                    sheet.height()
                ),
            ));
        }
        let raw = sheet.as_raw();
        let first = s * PER_SHEET;
        for k in first..(first + PER_SHEET).min(ids.len()) {
            let (row, col) = ((k - first) / SHEET_SIDE, (k - first) % SHEET_SIDE);
            let out = &mut patches[k * SOURCE_LEN..(k + 1) * SOURCE_LEN];
            for y in 0..SOURCE_SIZE {
                let src = (row * SOURCE_SIZE + y) * SHEET_PIXELS + col * SOURCE_SIZE;
                out[y * SOURCE_SIZE..(y + 1) * SOURCE_SIZE]
                    .copy_from_slice(&raw[src..src + SOURCE_SIZE]);
            }
        }
    }
    // Patches of each point, in file order.
    let mut by_point: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    for (k, &id) in ids.iter().enumerate() {
        by_point.entry(id).or_default().push(k as u32);
    }
    let mut set = PairSet {
        patches,
        ..Default::default()
    };
    for (&id, list) in &by_point {
        for w in list.windows(2) {
            set.pairs.push([w[0], w[1]]);
            set.ids.push(id);
        }
    }
    if set.is_empty() {
        return Err(err(
            dir,
            "no 3D point has two patches, so there are no pairs",
        ));
    }
    set.metadata
        .insert("wbs.sources".into(), format!("phototour:{}", dir.display()));
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixture in the Phototour layout: 300 patches (two sheets, the second partly used),
    /// patch `k` filled with a value derived from `k` and a marker pixel, point `k / 3`.
    #[test]
    fn loads_a_fixture_in_the_phototour_layout() {
        let dir = std::env::temp_dir().join(format!("wbs-phototour-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let n = 300;
        let value = |k: usize| (k * 7 % 251) as u8;
        for s in 0..2 {
            let sheet = image::GrayImage::from_fn(1024, 1024, |x, y| {
                let (row, col) = (y as usize / 64, x as usize / 64);
                let k = s * 256 + row * 16 + col;
                if k >= n {
                    return image::Luma([0]);
                }
                // A marker at the patch's top-left pixel proves the orientation.
                let (px, py) = (x as usize % 64, y as usize % 64);
                image::Luma([if px == 0 && py == 0 { 255 } else { value(k) }])
            });
            sheet.save(dir.join(format!("patches{s:04}.bmp"))).unwrap();
        }
        let info: String = (0..n).map(|k| format!("{} 0\n", k / 3)).collect();
        std::fs::write(dir.join("info.txt"), info).unwrap();

        let set = load_phototour(&dir).unwrap();
        assert_eq!(set.patch_count(), n);
        // 100 points of 3 patches: 2 pairs each.
        assert_eq!(set.len(), 200);
        assert_eq!(set.distinct_points(), 100);
        for (p, &id) in set.pairs.iter().zip(&set.ids) {
            for &k in p {
                assert_eq!(k as u64 / 3, id);
                let patch = set.patch(k as usize);
                assert_eq!(patch[0], 255);
                assert_eq!(patch[1], value(k as usize));
                assert_eq!(patch[4095], value(k as usize));
            }
        }
        // Broken layouts are one-line errors.
        std::fs::write(dir.join("info.txt"), "0 0\nzero 0\n").unwrap();
        let e = load_phototour(&dir).unwrap_err().to_string();
        assert!(e.contains("line 2") && !e.contains('\n'), "{e}");
        let many: String = (0..600).map(|k| format!("{} 0\n", k / 2)).collect();
        std::fs::write(dir.join("info.txt"), many).unwrap();
        let e = load_phototour(&dir).unwrap_err().to_string();
        assert!(e.contains("patches0002.bmp"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
        let e = load_phototour(&dir).unwrap_err().to_string();
        assert!(e.contains("info.txt"), "{e}");
    }
}
