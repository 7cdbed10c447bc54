use std::path::PathBuf;

/// Everything the reference can refuse or fail at. `Input` variants are the caller's to fix
/// (a bad file, an unknown preset, mismatched shapes); the CLI maps them to exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Shape(String),
    #[error("{0}")]
    Device(String),
    #[error("the corpus: {0}")]
    Corpus(String),
    #[error("libtorch: {0}")]
    Torch(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// True when the error is about what the caller asked for or handed in, not about us.
    pub fn is_input_error(&self) -> bool {
        !matches!(self, Error::Torch(_))
    }

    pub fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::File {
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        Error::Torch(trim_torch_message(&e.to_string()))
    }
}

/// libtorch appends a C++ backtrace ("Exception raised from …") to every message; users need
/// the first line of the reason, not the frames.
pub fn trim_torch_message(message: &str) -> String {
    let cut = message
        .find("\nException raised from")
        .or_else(|| message.find("Exception raised from"))
        .unwrap_or(message.len());
    message[..cut].trim().to_string()
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
