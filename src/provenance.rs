//! What a result was made with, so that it can be reproduced: the wbs version, the git commit it
//! was built from, and checksums (SHA-256) of the files it read.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The wbs version (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit wbs was built from, or "unknown" when it was built outside a git checkout
/// (embedded by `build.rs`).
pub const COMMIT: &str = env!("WBS_GIT_COMMIT");

/// The SHA-256 digest of `bytes` (FIPS 180-4, by the `sha2` crate).
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The SHA-256 digest of `bytes` as 64 lowercase hex digits (as `sha256sum` prints it).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&sha256(bytes))
}

/// The SHA-256 digest of a file's content, in hex; the file is read in pieces.
pub fn file_sha256(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| Error::io(path, e))?;
    Ok(hex(&hasher.finalize()))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_known_answers() {
        // FIPS 180-4 examples, and lengths around the padding boundary.
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha256_hex(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(
            sha256_hex(&[b'a'; 64]),
            "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"
        );
        assert_eq!(
            sha256_hex(&vec![b'a'; 1_000_000]),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }

    #[test]
    fn a_files_digest_is_its_contents() {
        let path = std::env::temp_dir().join(format!("wbs-sha-{}", std::process::id()));
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(file_sha256(&path).unwrap(), sha256_hex(&bytes));
        std::fs::remove_file(&path).ok();
        let e = file_sha256(&path).unwrap_err().to_string();
        assert!(e.contains("wbs-sha-"), "{e}");
    }

    #[test]
    fn commit_is_embedded() {
        assert!(
            COMMIT == "unknown"
                || (COMMIT.len() == 40 && COMMIT.chars().all(|c| c.is_ascii_hexdigit()))
        );
    }
}
