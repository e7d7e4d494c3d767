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
