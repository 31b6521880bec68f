//! Logs through `tracing`, to a file and never to the screen (the UI owns
//! the terminal): `--log FILE` or `LAYERSCOPE_LOG=FILE`. Without either,
//! no subscriber is installed and log calls cost next to nothing.
//!
//! What is logged: the UI starting and stopping, each worker request with
//! its time, worker errors, and NBD connection state changes.
use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The environment variable naming the log file.
pub const ENV: &str = "LAYERSCOPE_LOG";

/// The log file: `flag` (`--log`), else `LAYERSCOPE_LOG` when set and not
/// empty.
pub fn path(flag: Option<&Path>) -> Option<PathBuf> {
    flag.map(Path::to_path_buf).or_else(|| {
        std::env::var_os(ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

/// Sends `tracing` events (debug and up) to `path`, appended, as plain
/// text lines.
///
/// # Errors
/// The file cannot be opened, or a subscriber is already installed.
pub fn init(path: &Path) -> io::Result<()> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let subscriber = tracing_subscriber::fmt()
        .with_writer(Mutex::new(file))
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    tracing::subscriber::set_global_default(subscriber).map_err(io::Error::other)
}
