//! The allocation map of an NBD export, merged like `qemu-img map`, from
//! the server's metadata contexts: `base:allocation` (data, zero, hole)
//! and, where offered, `qemu:allocation-depth` (which layer of the
//! server's chain holds each range).
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::collections::VecDeque;

use super::client::NbdClient;
use super::proto::{STATE_HOLE, STATE_ZERO};
use crate::block::map::MapEntry;
use crate::block::{check_range, BlockError};

/// Block status rounds (each up to `max_in_flight` requests) one map may
/// make: at the largest windows that is a petabyte of disk. A server
/// claiming 2^63 bytes, or answering in tiny pieces, ends the map here
/// instead of keeping it going for days.
pub const MAX_MAP_ROUNDS: u64 = 1 << 14;
/// Merged entries one map keeps at most (56 bytes each).
pub const MAX_MAP_ENTRIES: usize = 1 << 20;

/// A map that may have stopped early.
#[derive(Debug, Default)]
pub struct RemoteMap {
    pub entries: Vec<MapEntry>,
    /// Where and why the map stopped before the end of the range.
    pub stopped: Option<Stopped>,
}

/// Why [`NbdClient::map_entries`] stopped early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stopped {
    /// The first offset not mapped.
    pub offset: u64,
    pub rounds: u64,
    pub entries: usize,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "map truncated at offset {:#x}: {} block status rounds and {} entries, the most one map makes",
            self.offset, self.rounds, self.entries
        )
    }
}

impl NbdClient {
    /// The allocation map of the export, merged like `qemu-img map`, for
    /// `[offset, offset + len)`: from `base:allocation` (data, zero, hole)
    /// and, where the server offers it, `qemu:allocation-depth` (which
    /// layer of the server's chain holds each range: 1 is the top).
    ///
    /// Without a depth context every range is depth 0. With one, an
    /// unallocated range gets the deepest depth seen so far (the server
    /// does not say how deep its chain is; this equals qemu's bottom depth
    /// whenever the base layer holds anything).
    ///
    /// The work is bounded ([`MAX_MAP_ROUNDS`], [`MAX_MAP_ENTRIES`]): what
    /// was mapped is returned with where it stopped.
    ///
    /// # Errors
    /// Connection and protocol errors.
    pub fn map_entries(&self, offset: u64, len: u64) -> Result<RemoteMap, BlockError> {
        check_range(
            crate::block::BlockSource::name(self),
            self.info().size,
            offset,
            len,
        )?;
        // check_range: offset + len is within the export's size.
        let end = offset.saturating_add(len);
        let has_depth = self.info().context("qemu:allocation-depth").is_some();
        let has_alloc = self.info().context("base:allocation").is_some();
        let mut out = RemoteMap::default();
        let mut deepest = 0u64;
        let mut pos = offset;
        let mut rounds = 0u64;
        let mut alloc: VecDeque<(u64, u32)> = Default::default();
        let mut depth: VecDeque<(u64, u32)> = Default::default();
        // Unallocated ranges get their depth at the end: merged meanwhile
        // under a placeholder (they all get the same one).
        const UNKNOWN: u64 = u64::MAX;
        while pos < end {
            if (has_alloc && alloc.is_empty()) || (has_depth && depth.is_empty()) {
                if rounds >= MAX_MAP_ROUNDS || out.entries.len() >= MAX_MAP_ENTRIES {
                    out.stopped = Some(Stopped {
                        offset: pos,
                        rounds,
                        entries: out.entries.len(),
                    });
                    break;
                }
                rounds = rounds.saturating_add(1);
                // Both contexts come back from the same requests.
                let mut all = self.status_ahead(pos, end.saturating_sub(pos))?;
                if has_alloc && alloc.is_empty() {
                    alloc = all.remove("base:allocation").unwrap_or_default().into();
                }
                if has_depth && depth.is_empty() {
                    depth = all
                        .remove("qemu:allocation-depth")
                        .unwrap_or_default()
                        .into();
                }
            }
            if !has_alloc {
                alloc = vec![(end.saturating_sub(pos), 0)].into();
            }
            if !has_depth {
                depth = vec![(end.saturating_sub(pos), 1)].into();
            }
            let (Some(&(a_len, a_flags)), Some(&(d_len, d_value))) = (alloc.front(), depth.front())
            else {
                // The server answered without describing `pos`: a map that
                // stopped here would look complete.
                return Err(BlockError::io(
                    crate::block::BlockSource::name(self),
                    "block status",
                    pos,
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "the server's block status reply does not describe this offset",
                    ),
                ));
            };
            let n = a_len.min(d_len).min(end.saturating_sub(pos));
            for q in [&mut alloc, &mut depth] {
                if let Some(front) = q.front_mut() {
                    front.0 = front.0.saturating_sub(n);
                    if front.0 == 0 {
                        q.pop_front();
                    }
                }
            }
            let hole = a_flags & STATE_HOLE != 0;
            let present = if has_depth { d_value > 0 } else { !hole };
            let entry = MapEntry {
                start: pos,
                length: n,
                depth: if present {
                    u64::from(d_value.saturating_sub(1))
                } else {
                    UNKNOWN
                },
                present,
                zero: a_flags & STATE_ZERO != 0 || hole,
                data: !hole,
                compressed: false,
                offset: None,
            };
            pos = pos.saturating_add(n);
            if present {
                deepest = deepest.max(entry.depth);
            }
            match out.entries.last_mut() {
                Some(last) if last.mergeable(&entry) => {
                    last.length = last.length.saturating_add(entry.length);
                }
                _ => out.entries.push(entry),
            }
        }
        // Unallocated ranges sit at the bottom of the chain, as in qemu.
        for e in out.entries.iter_mut().filter(|e| !e.present) {
            e.depth = deepest;
        }
        // Neighbours that only now look alike (an unallocated range next
        // to one at the bottom depth never does: `present` differs).
        let mut merged: Vec<MapEntry> = Vec::with_capacity(out.entries.len());
        for e in out.entries.drain(..) {
            match merged.last_mut() {
                Some(last) if last.mergeable(&e) => {
                    last.length = last.length.saturating_add(e.length);
                }
                _ => merged.push(e),
            }
        }
        out.entries = merged;
        Ok(out)
    }
}

/// How `nbdinfo --map=CONTEXT` describes a context's flags: its words for
/// `base:allocation`, `qemu:allocation-depth` and `qemu:dirty-bitmap:*`,
/// else an empty description (nbdinfo prints none for contexts it does
/// not know).
pub fn describe(context: &str, flags: u32) -> String {
    if context == "base:allocation" {
        return match flags & (STATE_HOLE | STATE_ZERO) {
            0 => "data",
            STATE_HOLE => "hole",
            STATE_ZERO => "zero",
            _ => "hole,zero",
        }
        .to_owned();
    }
    if context == "qemu:allocation-depth" {
        return match flags {
            0 => "absent".to_owned(),
            1 => "local".to_owned(),
            d => format!("backing depth {d}"),
        };
    }
    if context.starts_with("qemu:dirty-bitmap:") {
        return if flags & 1 != 0 { "dirty" } else { "clean" }.to_owned();
    }
    String::new()
}

impl NbdClient {
    /// Calls `each(offset, length, flags)` with the runs of metadata
    /// context `context` (negotiated at connect: see
    /// [`super::MetaQuery`]) over `[offset, offset + len)`, neighbours with
    /// the same flags joined: what `nbdinfo --map=CONTEXT` prints.
    /// Bounded like [`NbdClient::map_entries`]: where it stopped is
    /// returned.
    ///
    /// # Errors
    /// The server did not agree to the context; connection and protocol
    /// errors; `each`'s errors.
    pub fn context_map(
        &self,
        context: &str,
        offset: u64,
        len: u64,
        each: &mut dyn FnMut(u64, u64, u32) -> Result<(), BlockError>,
    ) -> Result<Option<Stopped>, BlockError> {
        let name = crate::block::BlockSource::name(self).to_owned();
        check_range(&name, self.info().size, offset, len)?;
        if self.info().context(context).is_none() {
            return Err(BlockError::unsupported(
                &name,
                format!(
                    "the server does not offer the metadata context {context:?} (it agreed to: {})",
                    self.info()
                        .meta_contexts
                        .iter()
                        .map(|(_, n)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        // check_range: offset + len is within the export's size.
        let end = offset.saturating_add(len);
        let mut pos = offset;
        let mut rounds = 0u64;
        let mut runs = 0usize;
        // The run being joined: (start, length, flags).
        let mut open: Option<(u64, u64, u32)> = None;
        while pos < end {
            if rounds >= MAX_MAP_ROUNDS || runs >= MAX_MAP_ENTRIES {
                if let Some((s, l, f)) = open.take() {
                    each(s, l, f)?;
                }
                return Ok(Some(Stopped {
                    offset: pos,
                    rounds,
                    entries: runs,
                }));
            }
            rounds = rounds.saturating_add(1);
            let mut all = self.status_ahead(pos, end.saturating_sub(pos))?;
            let list = all.remove(context).unwrap_or_default();
            let before = pos;
            for (l, f) in list {
                let l = l.min(end.saturating_sub(pos));
                if l == 0 {
                    break;
                }
                match open.as_mut() {
                    Some(run) if run.2 == f => run.1 = run.1.saturating_add(l),
                    _ => {
                        if let Some((s, rl, rf)) = open.replace((pos, l, f)) {
                            each(s, rl, rf)?;
                            runs = runs.saturating_add(1);
                        }
                    }
                }
                pos = pos.saturating_add(l);
            }
            if pos == before {
                return Err(BlockError::io(
                    &name,
                    "block status",
                    pos,
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "the server's block status reply does not describe this offset",
                    ),
                ));
            }
        }
        if let Some((s, l, f)) = open {
            each(s, l, f)?;
        }
        Ok(None)
    }
}
