//! `check`: a whole-image consistency report, read-only.
//!
//! Two sides, as a person would otherwise run two tools:
//!
//! - the image side ([`qcow2`]), like `qemu-img check`: each layer's own
//!   metadata (refcounts against what really references each cluster,
//!   L1/L2 entries, refcount blocks), per layer file;
//! - the filesystem side, like `e2fsck -fn` or `fsck.fat -n`: every
//!   checksum the filesystem has, counts against bitmaps, blocks claimed
//!   twice or by nobody.
//!
//! Every [`Problem`] names the structure, the offset and the chain layer
//! whose file holds the bad bytes, so "which overlay broke it?" has an
//! answer. Nothing is repaired and nothing is written.
//!
//! What this module does not own: decoding (that is [`crate::block`] and
//! [`crate::fs`]); printing (that is the CLI).
// Disk and server data must never panic or wrap (issue 11): these lints
// are denied here as in src/fs; an `allow` names the bound that makes it
// safe. Tests may index their fixtures.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use serde::Serialize;

pub mod bits;
pub mod ext;
pub mod fat;
pub mod progress;
pub mod qcow2;
pub mod xfs;

pub use progress::{NoProgress, Progress};

/// How bad a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Wasted space and nothing else (qemu's leaked clusters, a free
    /// count that is too low): data is safe.
    Leak,
    /// The structure is wrong: data may be lost or misread.
    Error,
}

/// Where a problem's offset lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Space {
    /// In one layer's own file (image metadata).
    File,
    /// On the filesystem's volume (a partition, an LV or the whole disk).
    Volume,
}

/// One thing found wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub severity: Severity,
    /// A stable name for the kind of problem, for scripts and tests:
    /// `leaked-cluster`, `refcount-too-low`, `inode-checksum`, …
    pub kind: &'static str,
    /// The structure, in the words of the tool a person would otherwise
    /// run: `cluster 5`, `refcount block 0`, `inode 12`, `group 3`.
    pub structure: String,
    /// Where its bad bytes are, in [`Problem::space`].
    pub offset: Option<u64>,
    pub space: Space,
    /// The chain layer whose file holds the bad bytes (0 is the base);
    /// `None` when no layer holds them (they read as zeros) or it could
    /// not be told.
    pub layer: Option<usize>,
    /// What is wrong, with the expected value where there is one.
    pub detail: String,
}

impl Problem {
    /// A problem in a layer's own file.
    pub fn in_file(
        layer: usize,
        severity: Severity,
        kind: &'static str,
        structure: impl Into<String>,
        offset: Option<u64>,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            severity,
            kind,
            structure: structure.into(),
            offset,
            space: Space::File,
            layer: Some(layer),
            detail: detail.into(),
        }
    }

    /// A problem in the filesystem's volume; `layer_of` names the chain
    /// layer that holds the bad bytes (the filesystem checks share it).
    pub fn in_volume(
        layer_of: &dyn Fn(u64) -> Option<usize>,
        severity: Severity,
        kind: &'static str,
        structure: String,
        offset: Option<u64>,
        detail: String,
    ) -> Problem {
        Problem {
            severity,
            kind,
            structure,
            offset,
            space: Space::Volume,
            layer: offset.and_then(layer_of),
            detail,
        }
    }
}

/// Problems kept per check at most: a badly damaged image cannot grow the
/// report without end (the rest are counted).
pub const MAX_PROBLEMS: usize = 100_000;

/// A bounded list of problems, with a count of those not kept.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Problems {
    pub list: Vec<Problem>,
    /// Problems found but not kept (past [`MAX_PROBLEMS`]).
    pub dropped: u64,
}

impl Problems {
    pub fn push(&mut self, p: Problem) {
        if self.list.len() < MAX_PROBLEMS {
            self.list.push(p);
        } else {
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    /// Problems found, kept or not.
    pub fn total(&self) -> u64 {
        u64::try_from(self.list.len())
            .unwrap_or(u64::MAX)
            .saturating_add(self.dropped)
    }

    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    pub fn extend(&mut self, other: Problems) {
        for p in other.list {
            self.push(p);
        }
        self.dropped = self.dropped.saturating_add(other.dropped);
    }
}
