//! Progress of a long check, reported to whoever shows it (the CLI's
//! progress bar on a terminal; nothing in tests and scripts).

/// Receives progress: a stage with its total units, then units done.
pub trait Progress: Sync {
    /// A new stage begins: `what` (`layer 2: refcounts`, `inodes`) with
    /// `total` units to do.
    fn stage(&self, what: &str, total: u64);
    /// `n` more units of the current stage are done.
    fn advance(&self, n: u64);
}

/// Progress nobody watches.
pub struct NoProgress;

impl Progress for NoProgress {
    fn stage(&self, _what: &str, _total: u64) {}
    fn advance(&self, _n: u64) {}
}
