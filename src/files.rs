//! Writing files safely: a reader, or a run cut short, finds the old file or the new one, never
//! half of one.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

/// Writes `bytes` to `path` through a temporary file in the same folder, flushed to disk
/// (fsync) and then renamed over `path`, so that `path` always holds a whole file. The temporary
/// file is removed when anything fails; the error is one line naming `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temporary_name(path)?;
    let written = write_synced(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    written.map_err(|e| {
        std::fs::remove_file(&tmp).ok();
        Error::io(path, e)
    })
}

/// `.NAME.PID.N.tmp` next to `path`: hidden, and unique to this process and call, so that two
/// writers of one file never share a temporary file.
fn temporary_name(path: &Path) -> Result<PathBuf> {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .ok_or_else(|| Error::invalid(format!("{}: not a file name", path.display())))?;
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".{}.{n}.tmp", std::process::id()));
    Ok(path.with_file_name(tmp))
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wbs-files-{}-{name}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary_file() {
        let dir = scratch("replace");
        let path = dir.join("report.json");
        write_atomically(&path, b"first").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        write_atomically(&path, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        write_atomically(&path, b"").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        assert_eq!(names(&dir), ["report.json"]);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_failed_rename_leaves_no_temporary_file() {
        let dir = scratch("taken");
        // A folder in the way: the temporary file is written, the rename fails, it is removed.
        std::fs::create_dir(dir.join("taken")).unwrap();
        std::fs::write(dir.join("taken").join("inside"), b"").unwrap();
        let taken = dir.join("taken");
        assert_names(write_atomically(&taken, b"x"), &taken);
        assert_eq!(names(&dir), ["taken"]);
        let e = write_atomically(Path::new("/"), b"x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a file name"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// One line that starts with the path the caller asked for (not the temporary file's).
    fn assert_names(result: Result<()>, path: &Path) {
        let e = result.unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}: ", path.display())), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn an_unwritable_folder_is_an_error_naming_the_path() {
        let dir = scratch("unwritable");
        let path = dir.join("missing").join("eval.json");
        assert_names(write_atomically(&path, b"x"), &path);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let locked = dir.join("locked");
            std::fs::create_dir(&locked).unwrap();
            std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
            let path = locked.join("eval.json");
            let result = write_atomically(&path, b"x");
            std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
            // Root writes anywhere; for anyone else the write fails.
            if result.is_err() {
                assert_names(result, &path);
            }
            assert_eq!(names(&locked).len(), usize::from(path.exists()));
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
