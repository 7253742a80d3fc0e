//! The crate's error type: one line each, naming the file and the key, entry or byte offset
//! concerned.

use std::fmt::Display;

/// Everything that can go wrong reading a checkpoint or a pickle. No variant is a panic in
/// disguise: hostile input ends in one of these.
///
/// Errors about a whole file come wrapped in [`Error::File`] (its name first); the rest name
/// what they concern inside it: a pickle byte offset, an archive entry, a tensor or storage key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file (or the bytes given a name) the inner error concerns.
    #[error("{file}: {err}")]
    File { file: String, err: Box<Error> },
    /// An I/O error, with what was being read.
    #[error("cannot read {what}: {err}")]
    Io { what: String, err: std::io::Error },
    /// The zip archive (or one of its entries) is unreadable.
    #[error("zip archive {what}: {err}")]
    Zip { what: String, err: zip::result::ZipError },
    /// Not a format this crate reads.
    #[error("{0}")]
    Format(String),
    /// A malformed or unsupported pickle, at a byte offset of the pickle stream.
    #[error("pickle byte {offset}: {msg}")]
    Pickle { offset: usize, msg: String },
    /// Nesting (containers, tuples, call arguments, nested joblib pickles) beyond the limit.
    #[error("pickle byte {offset}: nests deeper than {limit} levels")]
    TooDeep { offset: usize, limit: usize },
    /// Shared references that would expand to more than the limit when materialised.
    #[error("pickle byte {offset}: expands to more than {limit} {what} (shared references reused too often)")]
    TooLarge { offset: usize, what: &'static str, limit: usize },
    /// A size declared by the file beyond what this reader accepts.
    #[error("{what} is {size} bytes, more than the limit of {limit}")]
    OverLimit { what: String, size: u64, limit: u64 },
    /// A tensor (by its name in the checkpoint, or its storage key) that cannot be read.
    #[error("tensor '{name}': {msg}")]
    Tensor { name: String, msg: String },
    /// A storage entry of a torch archive that disagrees with what the pickle says of it.
    #[error("storage '{key}': {msg}")]
    Storage { key: String, msg: String },
    /// Data inside a pickle (a numpy array, a pandas frame, a fitted transformer) that does
    /// not have the shape this reader expects.
    #[error("{0}")]
    Data(String),
    /// An error with what was being read when it happened.
    #[error("{context}: {err}")]
    Context { context: String, err: Box<Error> },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn data(msg: impl Display) -> Error {
        Error::Data(msg.to_string())
    }

    pub(crate) fn in_file(self, file: &str) -> Error {
        Error::File { file: file.to_string(), err: Box::new(self) }
    }

    pub(crate) fn context(self, context: impl Display) -> Error {
        Error::Context { context: context.to_string(), err: Box::new(self) }
    }
}

/// `bail!`-like shorthand for [`Error::Data`].
macro_rules! data_err {
    ($($arg:tt)*) => {
        return Err($crate::error::Error::data(format!($($arg)*)))
    };
}
pub(crate) use data_err;

/// `anyhow!`-like shorthand for an [`Error::Data`] value.
macro_rules! data_error {
    ($($arg:tt)*) => {
        $crate::error::Error::data(format!($($arg)*))
    };
}
pub(crate) use data_error;

/// Adds context to errors, as anyhow's `Context` does, for this crate's [`Error`].
pub(crate) trait ResultExt<T> {
    fn context(self, context: impl Display) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn context(self, context: impl Display) -> Result<T> {
        self.map_err(|e| e.context(context))
    }
}
