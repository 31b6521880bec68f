//! The allocation map of a chain, merged exactly like `qemu-img map`, so
//! `layerscope map --json` and `qemu-img map --output=json` can be compared
//! entry by entry.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use serde::Serialize;

use crate::block::layered::{LayeredReader, StatusCache};
use crate::block::{BlockError, BlockSource};

/// One range of the map, with qemu's fields and meanings: `depth` 0 is the
/// top layer; `present` means some layer holds the range; `offset` is where
/// it lives in that layer's file, when it lives at one contiguous place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MapEntry {
    pub start: u64,
    pub length: u64,
    pub depth: u64,
    pub present: bool,
    pub zero: bool,
    pub data: bool,
    pub compressed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

impl MapEntry {
    /// qemu's `entry_mergeable`: same kind, same layer, and (where there is
    /// a host offset) the next range continues where this one ends.
    pub fn mergeable(&self, next: &MapEntry) -> bool {
        self.length > 0
            && self.start.checked_add(self.length) == Some(next.start)
            && self.zero == next.zero
            && self.data == next.data
            && self.compressed == next.compressed
            && self.depth == next.depth
            && self.present == next.present
            && match (self.offset, next.offset) {
                (Some(a), Some(b)) => a.checked_add(self.length) == Some(b),
                (None, None) => true,
                _ => false,
            }
    }

    /// The entry as qemu prints it in `--output=json` (one line).
    pub fn qemu_json(&self) -> String {
        let mut s = format!(
            "{{ \"start\": {}, \"length\": {}, \"depth\": {}, \"present\": {}, \"zero\": {}, \"data\": {}, \"compressed\": {}",
            self.start, self.length, self.depth, self.present, self.zero, self.data, self.compressed
        );
        if let Some(o) = self.offset {
            s.push_str(&format!(", \"offset\": {o}"));
        }
        s.push('}');
        s
    }
}

/// Merged map entries over `[start, end)`, computed lazily: memory stays
/// constant however large the disk.
pub struct MapIter<'a> {
    reader: &'a LayeredReader,
    pos: u64,
    end: u64,
    pending: Option<MapEntry>,
    cache: StatusCache,
    failed: bool,
    /// Steps (block status answers) left, when bounded.
    budget: Option<u64>,
    /// Where a bounded walk stopped.
    stopped: Option<u64>,
}

impl<'a> MapIter<'a> {
    /// Iterates over the whole disk.
    pub fn new(reader: &'a LayeredReader) -> Self {
        Self::range(reader, 0, reader.len())
    }

    /// Iterates over the whole disk with qemu's view of each layer, for
    /// output compared with `qemu-img map`.
    pub fn qemu(reader: &'a LayeredReader) -> Self {
        let mut it = Self::new(reader);
        it.cache.qemu = true;
        it
    }

    /// Iterates over `[start, end)`.
    pub fn range(reader: &'a LayeredReader, start: u64, end: u64) -> Self {
        MapIter {
            reader,
            pos: start,
            end: end.min(reader.len()),
            pending: None,
            cache: StatusCache::default(),
            failed: false,
            budget: None,
            stopped: None,
        }
    }

    /// Stops after `steps` block status answers (each one asks every
    /// layer at most once): for views that must not wait for a map whose
    /// cost follows what a source claims (an NBD export of 2^63 bytes
    /// answered 4 GiB at a time). [`MapIter::stopped_at`] says where.
    pub fn with_budget(mut self, steps: u64) -> Self {
        self.budget = Some(steps);
        self
    }

    /// The steps (block status answers) left, when bounded.
    pub fn steps_left(&self) -> Option<u64> {
        self.budget
    }

    /// The first offset not mapped, when the budget ended the walk.
    pub fn stopped_at(&self) -> Option<u64> {
        self.stopped
    }
}

impl Iterator for MapIter<'_> {
    type Item = Result<MapEntry, BlockError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        while self.pos < self.end {
            if let Some(left) = &mut self.budget {
                if *left == 0 {
                    self.stopped = Some(self.pos);
                    break;
                }
                *left = left.saturating_sub(1);
            }
            let next = match self.reader.map_entry_cached(
                self.pos,
                self.end.saturating_sub(self.pos),
                &mut self.cache,
            ) {
                Ok(e) => e,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            };
            // The layered reader never answers 0 bytes (it errs instead),
            // and answers stay inside the disk: the walk moves and ends.
            self.pos = self.pos.saturating_add(next.length.max(1));
            match &mut self.pending {
                Some(cur) if cur.mergeable(&next) => {
                    cur.length = cur.length.saturating_add(next.length);
                }
                Some(cur) => {
                    let done = *cur;
                    self.pending = Some(next);
                    return Some(Ok(done));
                }
                None => self.pending = Some(next),
            }
        }
        self.pending.take().map(Ok)
    }
}
