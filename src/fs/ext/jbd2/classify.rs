//! What a filesystem block is, from the group descriptors alone: a
//! superblock or descriptor copy, a bitmap, a slot range of an inode
//! table, or something a file owns (found elsewhere: ext keeps no reverse
//! map). The `journal` listing says this for each logged block.
use std::collections::BTreeMap;

use crate::fs::ext::group_desc::placement;
use crate::fs::ext::{Ext4, FsError};

/// Most groups whose descriptors are read (a listing needs only the
/// groups its blocks fall in, but flex_bg puts any group's tables
/// anywhere).
const MAX_GROUPS: u64 = 1 << 20;

/// What a block is.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum What {
    Superblock {
        group: u64,
    },
    GroupDescriptors {
        group: u64,
    },
    ReservedGdt {
        group: u64,
    },
    BlockBitmap {
        group: u64,
    },
    InodeBitmap {
        group: u64,
    },
    /// Inode table block holding inodes `first..=last`.
    InodeTable {
        group: u64,
        first: u64,
        last: u64,
    },
    /// Not filesystem metadata: a file's data, directory or map block.
    Other,
}

impl What {
    /// Words for a listing.
    pub fn describe(&self) -> String {
        match self {
            What::Superblock { group: 0 } => "superblock".into(),
            What::Superblock { group } => format!("superblock backup (group {group})"),
            What::GroupDescriptors { group: 0 } => "group descriptors".into(),
            What::GroupDescriptors { group } => {
                format!("group descriptors (copy in group {group})")
            }
            What::ReservedGdt { group } => format!("reserved descriptor blocks (group {group})"),
            What::BlockBitmap { group } => format!("block bitmap of group {group}"),
            What::InodeBitmap { group } => format!("inode bitmap of group {group}"),
            What::InodeTable { group, first, last } => {
                format!("inode table of group {group}, inodes {first}-{last}")
            }
            What::Other => "file block".into(),
        }
    }
}

/// The metadata layout of a filesystem.
pub struct Layout {
    /// Start block -> (blocks, what the first is).
    map: BTreeMap<u64, (u64, What)>,
    inode_size: u64,
    block_size: u64,
}

impl Layout {
    /// Reads every group descriptor (up to a bound).
    ///
    /// # Errors
    /// A descriptor that cannot be read.
    pub fn read(fs: &Ext4) -> Result<Layout, FsError> {
        let sb = fs.superblock();
        let bs = sb.block_size.max(1);
        let isz = u64::from(sb.inode_size).max(128);
        let ipg = u64::from(sb.inodes_per_group);
        let itb = ipg.saturating_mul(isz).div_ceil(bs);
        let mut map = BTreeMap::new();
        // A group count the inode count denies (e2fsprogs refuses such a
        // superblock) is a claim: only the groups the inodes confirm.
        let mut groups = sb.group_count();
        if groups.saturating_mul(ipg) != u64::from(sb.inodes_count) {
            groups = groups.min(u64::from(sb.inodes_count).checked_div(ipg).unwrap_or(0));
        }
        for g in 0..groups.min(MAX_GROUPS) {
            let d = fs.group(g)?;
            map.insert(d.block_bitmap, (1, What::BlockBitmap { group: g }));
            map.insert(d.inode_bitmap, (1, What::InodeBitmap { group: g }));
            let first = g.saturating_mul(ipg).saturating_add(1);
            map.insert(
                d.inode_table,
                (
                    itb,
                    What::InodeTable {
                        group: g,
                        first,
                        last: first.saturating_add(ipg).saturating_sub(1),
                    },
                ),
            );
            let p = placement(sb, g);
            if let Some(s) = p.superblock {
                map.insert(s, (1, What::Superblock { group: g }));
            }
            if let Some((a, b)) = p.descriptors {
                map.insert(
                    a,
                    (
                        b.saturating_sub(a).saturating_add(1),
                        What::GroupDescriptors { group: g },
                    ),
                );
            }
            if let Some((a, b)) = p.reserved_gdt {
                map.insert(
                    a,
                    (
                        b.saturating_sub(a).saturating_add(1),
                        What::ReservedGdt { group: g },
                    ),
                );
            }
            if let Some(m) = p.meta_descriptor {
                map.insert(m, (1, What::GroupDescriptors { group: g }));
            }
        }
        map.entry(0).or_insert((1, What::Superblock { group: 0 }));
        Ok(Layout {
            map,
            inode_size: isz,
            block_size: bs,
        })
    }

    /// What block `block` is; for an inode table block, the inodes in it.
    pub fn what(&self, block: u64) -> What {
        let Some((&start, (len, what))) = self.map.range(..=block).next_back() else {
            return What::Other;
        };
        if block >= start.saturating_add(*len) {
            return What::Other;
        }
        match what {
            What::InodeTable { group, first, last } => {
                let per = self
                    .block_size
                    .checked_div(self.inode_size)
                    .unwrap_or(1)
                    .max(1);
                let a = first.saturating_add(block.saturating_sub(start).saturating_mul(per));
                What::InodeTable {
                    group: *group,
                    first: a,
                    last: a.saturating_add(per).saturating_sub(1).min(*last),
                }
            }
            other => other.clone(),
        }
    }
}
