//! The VHDX metadata log (MS-VHDX 2.3): a circular buffer of 4 KiB
//! sectors holding metadata writes not yet applied to the file. A reader
//! must replay a log that holds a valid entry before trusting the BAT and
//! metadata; layerscope never writes, so it refuses such an image (as qemu
//! does read-only) unless asked to read it as it is on disk.
//!
//! The search follows qemu's `vhdx_log_search` closely enough to give the
//! same verdict: an entry is valid when its header, descriptors and CRC-32C
//! (over the whole entry) are right and it carries the header's log GUID.
//! Bounded: entries are never longer than the log, the log must lie inside
//! the file, and the whole search reads at most [`SEARCH_BUDGET`] bytes.
use crate::block::image::{le32, le64, read_exact};
use crate::block::storage::Storage;
use crate::block::BlockError;

use super::header::Header;

/// Log sectors.
const SECTOR: u64 = 4096;
/// Logs start and grow in whole MiB.
const LOG_UNIT: u64 = 1 << 20;
/// Most bytes one log search reads.
pub const SEARCH_BUDGET: u64 = 256 << 20;

/// What a log search found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dirty {
    /// Valid entries found.
    pub entries: u64,
    /// The newest entry's sequence number and file offset.
    pub sequence: u64,
    pub at: u64,
    /// A descriptor that writes past the end of the file, if any: its
    /// target offset.
    pub past_eof: Option<u64>,
}

/// Checks the header's log fields and searches the log.
///
/// # Errors
/// `Corrupt` for a log outside the file or misaligned, or a search over
/// budget.
pub fn scan(
    storage: &dyn Storage,
    path: &str,
    h: &Header,
    header_at: u64,
) -> Result<Option<Dirty>, BlockError> {
    let bad = |field: u64, detail: String| {
        BlockError::corrupt(path, "VHDX header", header_at.saturating_add(field), detail)
    };
    if h.log_offset < LOG_UNIT || h.log_offset % LOG_UNIT != 0 {
        return Err(bad(
            72,
            format!(
                "log offset {:#x} is not a whole MiB past the header section",
                h.log_offset
            ),
        ));
    }
    if h.log_version != 0 {
        return Err(bad(64, format!("log version {}", h.log_version)));
    }
    if h.log_guid == [0; 16] || h.log_length == 0 {
        return Ok(None);
    }
    let length = u64::from(h.log_length);
    if length % LOG_UNIT != 0 {
        return Err(bad(
            68,
            format!("log length {length} is not a multiple of 1 MiB"),
        ));
    }
    let file_len = storage.len();
    if h.log_offset
        .checked_add(length)
        .is_none_or(|e| e > file_len)
    {
        return Err(BlockError::corrupt(
            path,
            "VHDX log",
            h.log_offset,
            format!("the log claims {length} bytes at {:#x}, past the end of the file ({file_len} bytes)", h.log_offset),
        ));
    }
    let mut search = Search {
        storage,
        path,
        offset: h.log_offset,
        length,
        guid: h.log_guid,
        file_len,
        spent: 0,
    };
    let mut found: Option<Dirty> = None;
    let mut pos = 0u64;
    while pos < length {
        if let Some(e) = search.entry(pos)? {
            let d = found.get_or_insert(Dirty {
                entries: 0,
                sequence: 0,
                at: 0,
                past_eof: None,
            });
            d.entries = d.entries.saturating_add(1);
            if e.sequence >= d.sequence {
                d.sequence = e.sequence;
                d.at = h.log_offset.saturating_add(pos);
            }
            d.past_eof = d.past_eof.or(e.past_eof);
        }
        pos = pos.saturating_add(SECTOR);
    }
    Ok(found)
}

struct Search<'a> {
    storage: &'a dyn Storage,
    path: &'a str,
    offset: u64,
    length: u64,
    guid: [u8; 16],
    file_len: u64,
    spent: u64,
}

struct Entry {
    sequence: u64,
    past_eof: Option<u64>,
}

impl Search<'_> {
    /// Reads log sector `index` sectors after `pos` (wrapping around).
    fn sector(&mut self, pos: u64, index: u64) -> Result<Vec<u8>, BlockError> {
        self.spent = self.spent.saturating_add(SECTOR);
        if self.spent > SEARCH_BUDGET {
            return Err(BlockError::corrupt(
                self.path,
                "VHDX log",
                self.offset,
                format!(
                    "searching the log would read more than {} MiB",
                    SEARCH_BUDGET >> 20
                ),
            ));
        }
        let rel = pos
            .saturating_add(index.saturating_mul(SECTOR))
            .checked_rem(self.length)
            .unwrap_or(0);
        let mut buf = vec![0u8; 4096];
        read_exact(
            self.storage,
            self.path,
            "VHDX log",
            self.offset.saturating_add(rel),
            &mut buf,
        )?;
        Ok(buf)
    }

    /// The valid entry starting at `pos`, if any.
    fn entry(&mut self, pos: u64) -> Result<Option<Entry>, BlockError> {
        let first = self.sector(pos, 0)?;
        if first.get(..4) != Some(b"loge") {
            return Ok(None);
        }
        let (Some(checksum), Some(entry_length), Some(count), Some(sequence)) = (
            le32(&first, 4),
            le32(&first, 8),
            le32(&first, 24),
            le64(&first, 16),
        ) else {
            return Ok(None);
        };
        let entry_length = u64::from(entry_length);
        let count = u64::from(count);
        if entry_length > self.length
            || entry_length % SECTOR != 0
            || sequence == 0
            || first.get(32..48) != Some(&self.guid[..])
            || count.saturating_mul(32) > entry_length
        {
            return Ok(None);
        }
        let desc_sectors = count.saturating_add(2).div_ceil(128);
        let mut desc = first;
        for i in 1..desc_sectors {
            desc.extend(self.sector(pos, i)?);
        }
        let mut past_eof = None;
        for i in 0..count {
            let at = usize::try_from(i.saturating_mul(32).saturating_add(64)).unwrap_or(usize::MAX);
            let sig = desc.get(at..at.saturating_add(4));
            let (Some(len), Some(file_offset), Some(seq)) = (
                le64(&desc, at.saturating_add(8)),
                le64(&desc, at.saturating_add(16)),
                le64(&desc, at.saturating_add(24)),
            ) else {
                return Ok(None);
            };
            let span = match sig {
                Some(b"zero") if len % SECTOR == 0 => len,
                Some(b"desc") => SECTOR,
                _ => return Ok(None),
            };
            if seq != sequence || file_offset % SECTOR != 0 {
                return Ok(None);
            }
            if file_offset
                .checked_add(span)
                .is_none_or(|e| e > self.file_len)
            {
                past_eof.get_or_insert(file_offset);
            }
        }
        let mut crc = {
            let before = desc.get(..4).unwrap_or_default();
            let after = desc.get(8..).unwrap_or_default();
            let c = crc32c::crc32c_append(0, before);
            let c = crc32c::crc32c_append(c, &[0u8; 4]);
            crc32c::crc32c_append(c, after)
        };
        let total = entry_length / SECTOR;
        for i in desc_sectors..total {
            let s = self.sector(pos, i)?;
            crc = crc32c::crc32c_append(crc, &s);
        }
        Ok((crc == checksum).then_some(Entry { sequence, past_eof }))
    }
}
