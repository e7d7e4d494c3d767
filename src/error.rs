//! The one error type of the library. Every message is a single line that tells the user what went
//! wrong and, where there is one, what to do about it; the CLI prints it as `error: <message>`.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in wbs, grouped by what the user has to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An image file that is missing, unreadable, corrupt, or unusable (too small, too large).
    #[error("{path}: {message}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A weights file that is missing, malformed or does not fit the model.
    #[error("{0}")]
    Weights(String),
    /// A dataset folder, pair list or ground-truth file that does not have the expected layout.
    #[error("{0}")]
    Dataset(String),
    /// A device (GPU) that was asked for but cannot be used.
    #[error("{0}")]
    Device(String),
    /// Settings or arguments that do not make sense together.
    #[error("{0}")]
    Invalid(String),
    /// A setting out of its range, named as in [`crate::Config`] (`ratio`,
    /// `ransac.confidence`, ...); the CLI names the flag instead.
    #[error("{setting} must be {rule}, got {value}")]
    Setting {
        /// The setting's name in [`crate::Config`].
        setting: &'static str,
        /// Its range in words, e.g. "in (0, 1)".
        rule: String,
        /// The value given.
        value: String,
    },
    /// Flags that do not go together (the CLI exits with code 2, as for any usage error).
    #[error("{0}")]
    Usage(String),
    /// A file that cannot be written (checked before the work starts where possible).
    #[error("cannot write {}: {reason}", path.display())]
    CannotWrite {
        /// The file.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
    /// `wbs eval` ran every pair and wrote its reports, but some pairs failed (an unreadable
    /// file, a match that erred); the CLI exits with code 3.
    #[error("{failed} of {total} record(s) failed (listed in report.md)")]
    PairsFailed {
        /// Records with an error.
        failed: usize,
        /// All records.
        total: usize,
    },
    /// An I/O failure on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// An [`Error::Setting`]: `setting` must be `rule`, and `value` is not.
    pub fn setting(setting: &'static str, rule: impl Into<String>, value: impl ToString) -> Self {
        Error::Setting {
            setting,
            rule: rule.into(),
            value: value.to_string(),
        }
    }

    /// An [`Error::CannotWrite`] for the file at `path`.
    pub fn cannot_write(path: impl AsRef<Path>, reason: impl ToString) -> Self {
        Error::CannotWrite {
            path: path.as_ref().to_path_buf(),
            reason: reason.to_string(),
        }
    }

    /// An [`Error::Image`] for the file at `path`.
    pub fn image(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::Image {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }

    /// An [`Error::Io`] for the file at `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// An [`Error::Invalid`] with this message.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid(message.into())
    }
}

/// The library's result type: [`Error`] unless another error type is named.
pub type Result<T, E = Error> = std::result::Result<T, E>;
