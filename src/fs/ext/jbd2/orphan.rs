//! Orphan inodes: files unlinked (or being truncated) while still open
//! when the filesystem stopped. After journal recovery the kernel's
//! `ext4_orphan_cleanup` deletes each orphan with no links left and
//! truncates the others to their size. They are found in two places: the
//! orphan list (`s_last_orphan`, then each inode's `i_dtime` naming the
//! next) and the orphan file (`s_orphan_file_inum`: blocks of inode
//! numbers, ending in a tail with magic `0x0b10ca04`).
//!
//! Listed, never acted on: the replayed view shows them as they are, and
//! says what the kernel will do to them.
use std::collections::HashSet;

use crate::fs::ext::superblock::{sb, Compat};
use crate::fs::ext::Ext4;

/// Most orphans listed (a damaged chain cannot grow the list without end).
const MAX_ORPHANS: usize = 65536;
/// `EXT4_ORPHAN_BLOCK_MAGIC`.
pub const ORPHAN_BLOCK_MAGIC: u32 = 0x0b10_ca04;

/// What the kernel does to an orphan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// No links left: the inode and its blocks are freed.
    Delete,
    /// Still linked: blocks past `i_size` are freed.
    Truncate,
}

/// Where an orphan was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Place {
    OrphanList,
    OrphanFile,
}

/// One orphan inode.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Orphan {
    pub ino: u64,
    pub action: Action,
    pub place: Place,
    /// The inode's size (what a truncate keeps).
    pub size: u64,
}

/// The orphans of `fs`, and what was wrong finding them.
pub fn orphans(fs: &Ext4) -> (Vec<Orphan>, Vec<String>) {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    let mut seen = HashSet::new();
    let mut add =
        |ino: u64, place: Place, out: &mut Vec<Orphan>, notes: &mut Vec<String>| -> Option<u64> {
            if out.len() >= MAX_ORPHANS || !seen.insert(ino) {
                return None;
            }
            match fs.inode(ino) {
                Ok(i) => {
                    out.push(Orphan {
                        ino,
                        action: if i.links == 0 {
                            Action::Delete
                        } else {
                            Action::Truncate
                        },
                        place,
                        size: i.size,
                    });
                    Some(u64::from(i.dtime))
                }
                Err(e) => {
                    notes.push(format!("orphan inode {ino}: {e}"));
                    None
                }
            }
        };
    // The list: s_last_orphan, then i_dtime of each.
    let mut next = fs.superblock().get(sb!("s_last_orphan"));
    while next != 0 {
        if fs.check_inode_number(next).is_err() {
            notes.push(format!(
                "the orphan list names inode {next}, which does not exist: the list ends there"
            ));
            break;
        }
        match add(next, Place::OrphanList, &mut out, &mut notes) {
            Some(n) => next = n,
            None => break,
        }
    }
    // The orphan file.
    let sb = fs.superblock();
    let ino = sb.get(sb!("s_orphan_file_inum"));
    if sb.has_compat(Compat::ORPHAN_FILE) && ino != 0 {
        let bs = sb.block_size;
        let per_block = bs.saturating_sub(8) / 4;
        let map = fs.inode(ino).and_then(|i| fs.block_map(&i));
        match map {
            Ok(map) => {
                for r in map.runs.iter().filter(|r| !r.meta) {
                    for b in r.physical..r.physical.saturating_add(r.len) {
                        let Ok(block) = fs.block(b) else {
                            notes.push(format!("orphan file block {b} cannot be read"));
                            continue;
                        };
                        let tail = usize::try_from(bs.saturating_sub(8)).unwrap_or(0);
                        let magic = block
                            .get(tail..tail.saturating_add(4))
                            .and_then(|m| m.try_into().ok())
                            .map(u32::from_le_bytes);
                        if magic != Some(ORPHAN_BLOCK_MAGIC) {
                            notes.push(format!(
                                "orphan file block {b} lacks the orphan block magic"
                            ));
                            continue;
                        }
                        for k in 0..per_block {
                            let at = usize::try_from(k.saturating_mul(4)).unwrap_or(usize::MAX);
                            let n = block
                                .get(at..at.saturating_add(4))
                                .and_then(|m| m.try_into().ok())
                                .map_or(0, u32::from_le_bytes);
                            if n != 0 {
                                let n = u64::from(n);
                                if fs.check_inode_number(n).is_err() {
                                    notes.push(format!("orphan file block {b} names inode {n}, which does not exist"));
                                    continue;
                                }
                                add(n, Place::OrphanFile, &mut out, &mut notes);
                            }
                        }
                    }
                }
            }
            Err(e) => notes.push(format!("orphan file inode {ino}: {e}")),
        }
    }
    (out, notes)
}
