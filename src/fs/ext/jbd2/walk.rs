//! The log as it lies in the journal: from `s_start`, block after block,
//! each descriptor followed by the blocks its tags describe, each commit
//! ending a transaction and moving to the next sequence number, until a
//! block without the magic, with another sequence, of an unknown type, or
//! unreadable. This is what `debugfs logdump` lists and what every pass of
//! the kernel's recovery reads (they visit the same blocks in the same
//! order); [`super::recovery`] decides from it what the kernel replays.
//!
//! Bounded: a walk never reads more log blocks than the journal has. A
//! log longer than its journal has come round onto itself (a sequence
//! that keeps matching, on crafted or stale blocks), and stops there.
use crate::fs::ext::checksum::Check;

use super::commit::Commit;
use super::descriptor::{self, Tag};
use super::header::Header;
use super::log::Log;
use super::revoke::{self, Revokes};
use super::{blocktype, checksum, Geometry};

/// One block of the log the walk decoded.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Record {
    Descriptor {
        /// Journal block of the descriptor.
        at: u64,
        sequence: u32,
        tags: Vec<Tag>,
        /// The journal block holding each tag's copy.
        data: Vec<u64>,
        /// The checksum tail (v2/v3).
        tail: Option<Check>,
    },
    Commit {
        at: u64,
        sequence: u32,
        commit: Commit,
        /// The commit block's checksum (v2/v3).
        check: Option<Check>,
    },
    Revoke {
        at: u64,
        sequence: u32,
        revokes: Revokes,
        tail: Option<Check>,
    },
}

impl Record {
    pub fn sequence(&self) -> u32 {
        match self {
            Record::Descriptor { sequence, .. }
            | Record::Commit { sequence, .. }
            | Record::Revoke { sequence, .. } => *sequence,
        }
    }

    pub fn at(&self) -> u64 {
        match self {
            Record::Descriptor { at, .. }
            | Record::Commit { at, .. }
            | Record::Revoke { at, .. } => *at,
        }
    }
}

/// Why the walk stopped.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum End {
    /// The journal is clean (`s_start` is 0): no log to walk.
    Clean,
    /// A block without the journal magic: the normal end of a log.
    NoMagic { at: u64 },
    /// A block of another transaction (an older one, left over).
    Sequence { at: u64, found: u32, expected: u32 },
    /// A block type the log does not know.
    UnknownType { at: u64, blocktype: u32 },
    /// A journal block that cannot be read (a hole in the journal inode,
    /// past the journal's end, an I/O error).
    ReadError { at: u64, error: String },
    /// The log went round the whole journal without ending.
    Loop { at: u64 },
}

impl End {
    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            End::Clean => "the journal is clean".into(),
            End::NoMagic { at } => format!("no magic number at journal block {at}: end of the log"),
            End::Sequence { at, found, expected } => format!(
                "journal block {at} belongs to transaction {found}, not {expected}: end of the log"
            ),
            End::UnknownType { at, blocktype } => {
                format!("journal block {at} has unknown block type {blocktype}: end of the log")
            }
            End::ReadError { at, error } => {
                format!("journal block {at} cannot be read: {error}")
            }
            End::Loop { at } => format!(
                "the log came round the whole journal at block {at} without ending (a loop): stopped there"
            ),
        }
    }
}

/// The walk of a log.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Walk {
    pub records: Vec<Record>,
    pub end: End,
    /// The transaction the walk expected next when it stopped.
    pub next_sequence: u32,
}

/// Walks the log of `log` from `geo.start`.
pub fn walk(geo: &Geometry, log: &Log) -> Walk {
    let mut w = Walk {
        records: Vec::new(),
        end: End::Clean,
        next_sequence: geo.sequence,
    };
    if geo.start == 0 {
        return w;
    }
    // Log blocks there are; visiting more means going round.
    let budget = geo.wrap_at().saturating_sub(geo.first).max(1);
    let mut visited = 0u64;
    let mut n = geo.start;
    let mut expected = geo.sequence;
    loop {
        if visited >= budget {
            w.end = End::Loop { at: n };
            break;
        }
        let at = n;
        let block = match log.read(at) {
            Ok(b) => b,
            Err(e) => {
                w.end = End::ReadError {
                    at,
                    error: e.to_string(),
                };
                break;
            }
        };
        visited = visited.saturating_add(1);
        n = geo.next(n);
        let Some(h) = Header::decode(&block) else {
            w.end = End::NoMagic { at };
            break;
        };
        if h.sequence != expected {
            w.end = End::Sequence {
                at,
                found: h.sequence,
                expected,
            };
            break;
        }
        match h.blocktype {
            blocktype::DESCRIPTOR => {
                let tags = descriptor::tags(geo, &block);
                let mut data = Vec::with_capacity(tags.len());
                for _ in &tags {
                    data.push(n);
                    n = geo.next(n);
                    visited = visited.saturating_add(1);
                }
                w.records.push(Record::Descriptor {
                    at,
                    sequence: h.sequence,
                    tags,
                    data,
                    tail: checksum::tail(geo, &block),
                });
            }
            blocktype::COMMIT => {
                let Some(commit) = Commit::decode(&block) else {
                    w.end = End::UnknownType {
                        at,
                        blocktype: h.blocktype,
                    };
                    break;
                };
                w.records.push(Record::Commit {
                    at,
                    sequence: h.sequence,
                    commit,
                    check: checksum::commit(geo, &block),
                });
                expected = expected.wrapping_add(1);
            }
            blocktype::REVOKE => {
                w.records.push(Record::Revoke {
                    at,
                    sequence: h.sequence,
                    revokes: revoke::decode(geo, &block),
                    tail: checksum::tail(geo, &block),
                });
            }
            other => {
                w.end = End::UnknownType {
                    at,
                    blocktype: other,
                };
                break;
            }
        }
    }
    w.next_sequence = expected;
    w
}
