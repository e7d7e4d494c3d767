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

/// Checks, before any work, that a file can be written at `path`: its extension is one of
/// `extensions` (lowercase, without the dot; empty: any), its folder exists, and a file can be
/// created there. Nothing is left behind. The error is an [`Error::CannotWrite`]: one line that
/// starts "cannot write PATH" and says why.
pub fn check_writable(path: &Path, extensions: &[&str]) -> Result<()> {
    if !extensions.is_empty() {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        if !extensions.contains(&ext.as_str()) {
            let known = extensions
                .iter()
                .map(|e| format!(".{e}"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::cannot_write(
                path,
                format!("unknown format; the file name should end in {known}"),
            ));
        }
    }
    if path.is_dir() {
        return Err(Error::cannot_write(path, "it is a folder"));
    }
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        return Err(Error::cannot_write(
            path,
            format!("no folder {}", folder.display()),
        ));
    }
    let probe = temporary_name(path)?;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            std::fs::remove_file(&probe).ok();
            Ok(())
        }
        Err(e) => Err(Error::cannot_write(path, e)),
    }
}

/// Checks, before any work, that `dir` is a folder that files can be written in, or can be
/// created (its nearest existing ancestor is a writable folder). Creates nothing.
pub fn check_writable_dir(dir: &Path) -> Result<()> {
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p,
            _ => {
                existing = Path::new(".");
                break;
            }
        }
    }
    if !existing.is_dir() {
        return Err(Error::cannot_write(
            dir,
            format!("{} is not a folder", existing.display()),
        ));
    }
    check_writable(&existing.join("wbs-write-check"), &[]).map_err(|e| match e {
        Error::CannotWrite { reason, .. } => Error::cannot_write(dir, reason),
        other => other,
    })
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

    #[test]
    fn writable_paths_are_checked_before_the_work() {
        let dir = scratch("check");
        let ok = dir.join("m.png");
        check_writable(&ok, &["png", "jpg"]).unwrap();
        check_writable(&dir.join("M.JPG"), &["png", "jpg"]).unwrap();
        assert_eq!(
            names(&dir),
            Vec::<String>::new(),
            "the check leaves nothing"
        );
        let e = check_writable(&dir.join("m.txt"), &["png", "jpg"])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cannot write ") && e.contains(".png, .jpg"),
            "{e}"
        );
        let missing = dir.join("missing").join("r.json");
        let e = check_writable(&missing, &[]).unwrap_err().to_string();
        assert!(
            e.starts_with("cannot write ") && e.contains("no folder"),
            "{e}"
        );
        let e = check_writable(&dir, &[]).unwrap_err().to_string();
        assert!(e.contains("it is a folder"), "{e}");
        check_writable_dir(&dir.join("new").join("deeper")).unwrap();
        assert_eq!(names(&dir), Vec::<String>::new(), "nothing created");
        std::fs::write(dir.join("file"), b"").unwrap();
        let e = check_writable_dir(&dir.join("file").join("sub"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a folder"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
