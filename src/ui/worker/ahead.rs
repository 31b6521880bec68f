//! Fetching ahead in the worker: after a listing, the subdirectories
//! first on screen (what the next key is likely to open) are fetched while
//! the worker is idle, so over a remote disk opening one costs no round
//! trip (issue 18).
use super::Worker;

/// Most subdirectories of a listing fetched ahead: more than a screen
/// shows.
pub(super) const AHEAD_DIRS: usize = 128;

impl Worker {
    /// Whether subdirectories wait to be fetched ahead.
    pub(super) fn has_ahead(&self) -> bool {
        self.ahead.as_ref().is_some_and(|(_, d)| !d.is_empty())
    }

    /// Fetches ahead the subdirectories of the directory listed last
    /// (their inodes, maps and blocks, see
    /// [`crate::fs::Filesystem::prefetch_dirs`]): over a remote disk,
    /// opening one then costs no round trip. Runs on the worker's thread
    /// between requests; the filesystem's page store bounds the memory.
    /// Nothing for a local disk.
    pub(super) fn fetch_ahead(&mut self) {
        let Some((as_of, dirs)) = self.ahead.take() else {
            return;
        };
        if let Ok(Ok(fs)) = self.fsys(as_of) {
            fs.prefetch_dirs(&dirs);
        }
    }
}
