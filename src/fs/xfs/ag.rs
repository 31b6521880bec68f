//! One allocation group summed up: its three headers (AGF, AGI, AGFL)
//! with their CRCs, and what walking its B+trees finds (free extents and
//! blocks, inode chunks, inodes and free inodes), checked against what the
//! headers claim. This is a row of the groups listing and the report the
//! Groups pane opens.
use std::ops::ControlFlow;

use super::agf::{Agf, AGF};
use super::agfl::Agfl;
use super::agi::{Agi, AGI};
use super::be::{u32_at, u8_at};
use super::btree::{self, Walk};
use super::Xfs;
use crate::fs::FsError;

/// An allocation group: headers and tree walks.
#[derive(Clone, Debug)]
pub struct AgSummary {
    pub agno: u32,
    pub agf: Agf,
    pub agi: Agi,
    /// `None` when the free list could not be read (the error is in
    /// `problems`).
    pub agfl: Option<Agfl>,
    /// Records of the by-block free-space tree, their blocks, the longest.
    pub free_extents: u64,
    pub free_blocks: u64,
    pub longest: u64,
    /// Inode chunks (inode tree records), inodes in them, free inodes.
    pub chunks: u64,
    pub inodes: u64,
    pub free_inodes: u64,
    /// Records of the optional trees (0 when the feature is off).
    pub finobt_records: u64,
    pub refcount_records: u64,
    pub rmap_records: u64,
    /// Every problem of the headers and the walks.
    pub problems: Vec<String>,
}

impl AgSummary {
    /// All CRCs of the headers match (None on v4, which has none).
    pub fn crcs_ok(&self) -> Option<bool> {
        let checks = [
            self.agf.crc,
            self.agi.crc,
            self.agfl.as_ref().and_then(|l| l.crc),
        ];
        if checks.iter().all(Option::is_none) {
            return None;
        }
        Some(checks.iter().flatten().all(|c| c.ok()))
    }
}

/// Inodes in an inode chunk record and how many are free: sparse records
/// (`ir_holemask` != 0 or the sparse feature) keep a count byte.
fn inobt_counts(rec: &[u8], sparse: bool) -> (u64, u64) {
    if sparse {
        let count = u8_at(rec, 6).unwrap_or(0);
        let free = u8_at(rec, 7).unwrap_or(0);
        (count.into(), free.into())
    } else {
        (64, u32_at(rec, 4).unwrap_or(0).into())
    }
}

impl Xfs {
    /// Reads AG `agno`'s headers and walks its trees.
    ///
    /// # Errors
    /// The AGF or AGI cannot be read or has a wrong magic (nothing of the
    /// AG can be trusted then); damage below them goes to `problems`.
    pub fn ag_summary(&self, agno: u32) -> Result<AgSummary, FsError> {
        let sb = self.superblock();
        let agf = self.agf(agno)?;
        let agi = self.agi(agno)?;
        let mut problems = agf.problems.clone();
        problems.extend(agi.problems.iter().cloned());
        let agfl = match self.agfl(&agf) {
            Ok(l) => {
                problems.extend(l.problems.iter().cloned());
                Some(l)
            }
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        };
        let mut s = AgSummary {
            agno,
            agf,
            agi,
            agfl,
            free_extents: 0,
            free_blocks: 0,
            longest: 0,
            chunks: 0,
            inodes: 0,
            free_inodes: 0,
            finobt_records: 0,
            refcount_records: 0,
            rmap_records: 0,
            problems,
        };
        let keep = |w: Result<Walk, FsError>, problems: &mut Vec<String>| -> u64 {
            match w {
                Ok(w) => {
                    problems.extend(w.problems);
                    w.records
                }
                Err(e) => {
                    problems.push(e.to_string());
                    0
                }
            }
        };
        let (mut free, mut longest) = (0u64, 0u64);
        let w = self.walk_ag_tree(
            agno,
            &btree::BNOBT,
            s.agf.bnoroot,
            s.agf.bnolevel,
            &mut |r| {
                let len = u64::from(u32_at(r, 4).unwrap_or(0));
                free = free.saturating_add(len);
                longest = longest.max(len);
                ControlFlow::Continue(())
            },
        );
        s.free_extents = keep(w, &mut s.problems);
        s.free_blocks = free;
        s.longest = longest;
        let w = self.walk_ag_tree(
            agno,
            &btree::CNTBT,
            s.agf.cntroot,
            s.agf.cntlevel,
            &mut |_| ControlFlow::Continue(()),
        );
        let cnt = keep(w, &mut s.problems);
        if cnt != s.free_extents {
            s.problems.push(format!(
                "AG {agno}: the by-length free-space tree has {cnt} records, the by-block tree {}",
                s.free_extents
            ));
        }
        if s.free_blocks != u64::from(s.agf.freeblks) {
            s.problems.push(format!(
                "AG {agno}: agf_freeblks says {} free blocks, the free-space tree holds {}",
                s.agf.freeblks, s.free_blocks
            ));
        }
        let sparse = sb.has_sparse_inodes();
        let (mut inodes, mut free_inodes) = (0u64, 0u64);
        let w = self.walk_ag_tree(agno, &btree::INOBT, s.agi.root, s.agi.level, &mut |r| {
            let (n, f) = inobt_counts(r, sparse);
            inodes = inodes.saturating_add(n);
            free_inodes = free_inodes.saturating_add(f);
            ControlFlow::Continue(())
        });
        s.chunks = keep(w, &mut s.problems);
        s.inodes = inodes;
        s.free_inodes = free_inodes;
        if s.inodes != u64::from(s.agi.count) || s.free_inodes != u64::from(s.agi.freecount) {
            s.problems.push(format!(
                "AG {agno}: agi_count/agi_freecount say {}/{}, the inode tree holds {}/{}",
                s.agi.count, s.agi.freecount, s.inodes, s.free_inodes
            ));
        }
        if sb.has_finobt() {
            let w = self.walk_ag_tree(
                agno,
                &btree::FINOBT,
                s.agi.free_root,
                s.agi.free_level,
                &mut |_| ControlFlow::Continue(()),
            );
            s.finobt_records = keep(w, &mut s.problems);
        }
        if sb.has_reflink() {
            let w = self.walk_ag_tree(
                agno,
                &btree::REFCOUNTBT,
                s.agf.refcntroot,
                s.agf.refcntlevel,
                &mut |_| ControlFlow::Continue(()),
            );
            s.refcount_records = keep(w, &mut s.problems);
        }
        if sb.has_rmapbt() {
            let w = self.walk_ag_tree(
                agno,
                &btree::RMAPBT,
                s.agf.rmaproot,
                s.agf.rmaplevel,
                &mut |_| ControlFlow::Continue(()),
            );
            s.rmap_records = keep(w, &mut s.problems);
        }
        Ok(s)
    }
}

/// The fields of the three headers, in disk order (the AGF, AGI and AGFL
/// tables are what a report of the AG lists).
pub fn header_tables() -> [&'static [crate::layout::Field]; 3] {
    [AGF, AGI, super::agfl::AGFL]
}
