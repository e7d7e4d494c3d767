//! The images of a collection and the pairs to match.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::image::has_image_extension;
use crate::{Error, Result};

/// Which pairs of a collection are matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PairSelection {
    /// Every pair (n·(n−1)/2).
    Exhaustive,
    /// Each image with the next `N` in name order (video frames, strips of photos).
    Sequential(usize),
    /// The pairs a file lists, one a line: two image names relative to the image folder,
    /// separated by white space (COLMAP's and hloc's pair lists); `#` starts a comment.
    File(PathBuf),
}

impl FromStr for PairSelection {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<PairSelection, String> {
        if s == "exhaustive" {
            return Ok(PairSelection::Exhaustive);
        }
        if let Some(n) = s.strip_prefix("sequential:") {
            return match n.parse::<usize>() {
                Ok(n) if n > 0 => Ok(PairSelection::Sequential(n)),
                _ => Err(format!(
                    "'{s}': sequential:N needs N ≥ 1, e.g. sequential:10"
                )),
            };
        }
        Err(format!(
            "'{s}' is not a pair selection: exhaustive or sequential:N (or --pairs FILE)"
        ))
    }
}

/// The images under `root` (recursively; every file with an image extension), as names relative
/// to `root` with `/` separators, sorted. Hidden files and folders, and linked folders, are
/// skipped.
pub fn list_images(root: &Path) -> Result<Vec<String>> {
    if !root.is_dir() {
        return Err(Error::invalid(format!(
            "{}: not a folder of images",
            root.display()
        )));
    }
    let mut names = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let entries = std::fs::read_dir(&folder).map_err(|e| Error::io(&folder, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&folder, e))?;
            let path = entry.path();
            // Linked folders are not followed (a link to a parent would never end).
            let linked = entry.file_type().is_ok_and(|t| t.is_symlink());
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_none_or(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            if path.is_dir() {
                if !linked {
                    folders.push(path);
                }
            } else if has_image_extension(&path) {
                let relative = path.strip_prefix(root).expect("found under the root");
                let parts: Vec<String> = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                names.push(parts.join("/"));
            }
        }
    }
    names.sort();
    if names.is_empty() {
        return Err(Error::invalid(format!(
            "{}: no images (png, jpg, pnm, bmp, tif, webp) in the folder or below",
            root.display()
        )));
    }
    Ok(names)
}

/// The pairs to match, as indices into `names` (sorted, as [`list_images`] gives them), in a
/// fixed order; each unordered pair once, never an image with itself.
pub fn select_pairs(selection: &PairSelection, names: &[String]) -> Result<Vec<(usize, usize)>> {
    let n = names.len();
    match selection {
        PairSelection::Exhaustive => Ok((0..n)
            .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
            .collect()),
        PairSelection::Sequential(k) => Ok((0..n)
            .flat_map(|i| (i + 1..n.min(i + 1 + k)).map(move |j| (i, j)))
            .collect()),
        PairSelection::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            pairs_from_list(&text, names)
                .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))
        }
    }
}

/// The pairs of a pair list (see [`PairSelection::File`]); an error names the line.
fn pairs_from_list(
    text: &str,
    names: &[String],
) -> std::result::Result<Vec<(usize, usize)>, String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut pairs = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [a, b] = fields[..] else {
            return Err(format!(
                "line {}: expected two image names, found {}",
                number + 1,
                fields.len()
            ));
        };
        let index = |name: &str| {
            let name = name.trim_start_matches("./");
            names
                .binary_search_by(|n| n.as_str().cmp(name))
                .map_err(|_| format!("line {}: {name} is not an image of the folder", number + 1))
        };
        let (i, j) = (index(a)?, index(b)?);
        if i == j {
            return Err(format!("line {}: {a} paired with itself", number + 1));
        }
        if seen.insert((i.min(j), i.max(j))) {
            pairs.push((i, j));
        }
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{i:02}.jpg")).collect()
    }

    #[test]
    fn exhaustive_and_sequential() {
        let n = names(5);
        assert_eq!(
            select_pairs(&PairSelection::Exhaustive, &n).unwrap().len(),
            10
        );
        let seq = select_pairs(&"sequential:2".parse().unwrap(), &n).unwrap();
        assert_eq!(
            seq,
            [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3), (2, 4), (3, 4)]
        );
        assert!("sequential:0".parse::<PairSelection>().is_err());
        assert!("all".parse::<PairSelection>().is_err());
    }

    #[test]
    fn pair_lists_keep_their_order_and_drop_repeats() {
        let n = names(4);
        let text = "# hloc pairs\n03.jpg 01.jpg\n\n./00.jpg 02.jpg  # comment\n01.jpg 03.jpg\n";
        assert_eq!(pairs_from_list(text, &n).unwrap(), [(3, 1), (0, 2)]);
        let e = pairs_from_list("00.jpg 09.jpg\n", &n).unwrap_err();
        assert_eq!(e, "line 1: 09.jpg is not an image of the folder");
        assert!(pairs_from_list("00.jpg\n", &n)
            .unwrap_err()
            .starts_with("line 1: expected two"));
        assert!(pairs_from_list("00.jpg 00.jpg\n", &n).is_err());
    }
}
