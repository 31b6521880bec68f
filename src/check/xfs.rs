//! The filesystem side of `check` for XFS: what `xfs_repair -n` reports
//! about the allocation group headers and the summary counters, from the
//! headers and a walk of each AG's free-space and inode trees:
//!
//! - an AGF or AGI whose magic is wrong ("bad magic # … for agf N"; the
//!   AG is skipped then, as xfs_repair skips it);
//! - `agf_freeblks` against the blocks the by-block free-space tree
//!   holds, `agi_count` and `agi_freecount` against the inode tree's
//!   records ("agf_freeblks N, counted M in ag A");
//! - the superblock's `sb_icount`, `sb_ifree` and `sb_fdblocks` against
//!   the sums over the AGs counted (free blocks are the trees' and the
//!   free lists').
//!
//! Inodes, directories and block maps are not checked yet.
use super::{Problem, Problems, Progress, Severity};
use crate::fs::xfs::Xfs;

/// What an XFS check found besides its problems.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Summary {
    pub ags: u32,
    pub inodes: u64,
    pub free_inodes: u64,
    pub free_blocks: u64,
}

/// Checks the XFS filesystem, read-only. `layer_of` tells which chain
/// layer holds the volume's byte at an offset.
pub fn check(
    xfs: &Xfs,
    layer_of: &dyn Fn(u64) -> Option<usize>,
    progress: &dyn Progress,
) -> (Problems, Summary) {
    let mut out = Problems::default();
    let mut problem =
        |kind: &'static str, structure: String, offset: Option<u64>, detail: String| {
            out.push(Problem::in_volume(
                layer_of,
                Severity::Error,
                kind,
                structure,
                offset,
                detail,
            ));
        };
    let sb = xfs.superblock();
    let field = |name: &str| {
        sb.fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| (f.value, f.offset))
    };
    let mut s = Summary {
        ags: sb.agcount,
        ..Summary::default()
    };
    progress.stage("allocation groups", u64::from(sb.agcount));
    for agno in 0..sb.agcount {
        progress.advance(1);
        // A header with a wrong magic: xfs_repair skips the AG.
        let mut skip = false;
        for (what, r) in [
            ("agf", xfs.agf(agno).map(|h| h.offset)),
            ("agi", xfs.agi(agno).map(|h| h.offset)),
        ] {
            if let Err(e) = r {
                let at = match &e {
                    crate::fs::FsError::Corrupt { offset, .. } => Some(*offset),
                    _ => None,
                };
                problem(
                    if what == "agf" {
                        "xfs-agf-magic"
                    } else {
                        "xfs-agi-magic"
                    },
                    format!("ag {agno}"),
                    at,
                    format!("bad {what} for ag {agno}: {e}"),
                );
                skip = true;
            }
        }
        if skip {
            continue;
        }
        let Ok(a) = xfs.ag_summary(agno) else {
            continue;
        };
        let at = |h: u64, off: u64| Some(h.saturating_add(off));
        if a.free_blocks != u64::from(a.agf.freeblks) {
            problem(
                "xfs-agf-freeblks",
                format!("ag {agno}"),
                at(a.agf.offset, 0x34),
                format!(
                    "agf_freeblks {}, counted {} in ag {agno}",
                    a.agf.freeblks, a.free_blocks
                ),
            );
        }
        if a.inodes != u64::from(a.agi.count) {
            problem(
                "xfs-agi-count",
                format!("ag {agno}"),
                at(a.agi.offset, 0x10),
                format!(
                    "agi_count {}, counted {} in ag {agno}",
                    a.agi.count, a.inodes
                ),
            );
        }
        if a.free_inodes != u64::from(a.agi.freecount) {
            problem(
                "xfs-agi-freecount",
                format!("ag {agno}"),
                at(a.agi.offset, 0x1c),
                format!(
                    "agi_freecount {}, counted {} in ag {agno}",
                    a.agi.freecount, a.free_inodes
                ),
            );
        }
        s.inodes = s.inodes.saturating_add(a.inodes);
        s.free_inodes = s.free_inodes.saturating_add(a.free_inodes);
        s.free_blocks = s
            .free_blocks
            .saturating_add(a.free_blocks)
            .saturating_add(u64::from(a.agf.flcount));
    }
    for (name, kind, counted) in [
        ("sb_icount", "xfs-sb-icount", s.inodes),
        ("sb_ifree", "xfs-sb-ifree", s.free_inodes),
        ("sb_fdblocks", "xfs-sb-fdblocks", s.free_blocks),
    ] {
        if let Some((value, offset)) = field(name) {
            if value != counted {
                problem(
                    kind,
                    "superblock".into(),
                    Some(offset),
                    format!("{name} {value}, counted {counted}"),
                );
            }
        }
    }
    (out, s)
}
