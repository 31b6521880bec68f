//! Passes 2 to 4 of the ext check: directories and link counts.
//!
//! Pass 2 reads every directory found in pass 1 (block checksums, damaged
//! entries, entries naming inodes not in use, `.` naming another inode)
//! and counts the entries naming each inode; pass 3 follows each
//! directory's parent up to the root (a directory no path reaches is
//! unconnected; a `..` naming another directory than the one holding it
//! is wrong); pass 4 compares each inode's link count with its entries.
use super::{Checker, Progress, Severity};
use crate::fs::ext::superblock::sb;

pub(super) fn run(c: &mut Checker<'_>, progress: &dyn Progress) {
    let dirs = std::mem::take(&mut c.dirs);
    progress.stage("directories", u64::try_from(dirs.len()).unwrap_or(u64::MAX));
    for &d in &dirs {
        pass2(c, d);
        progress.advance(1);
    }
    pass3(c, &dirs);
    pass4(c);
}

fn pass2(c: &mut Checker<'_>, d: u32) {
    let fs = c.fs;
    let sb = fs.superblock();
    let inode = match fs.inode(u64::from(d)) {
        Ok(i) => i,
        Err(_) => return, // reported in pass 1
    };
    let listing = match fs.list_dir(&inode) {
        Ok(l) => l,
        Err(e) => {
            c.decoder("directory-checksum", "directory", format!("inode {d}"), &e);
            return;
        }
    };
    let indexed = inode.flags & crate::fs::ext::inode::INDEX_FL != 0;
    for e in &listing.problems {
        // An index block's checksum is the htree check's (e2fsck names
        // it apart: "root node fails checksum").
        if indexed
            && matches!(
                e,
                crate::fs::ext::FsError::Corrupt {
                    structure: "htree root" | "htree node",
                    ..
                }
            )
        {
            continue;
        }
        c.decoder("directory-checksum", "directory", format!("inode {d}"), e);
    }
    if indexed {
        super::htree::check(c, &inode);
    }
    for e in &listing.entries {
        if e.inode == 0 {
            continue;
        }
        let name = crate::escape::printable_bytes(&e.name);
        if u64::from(e.inode) > u64::from(sb.inodes_count) {
            c.problem(
                Severity::Error,
                "entry-bad-inode",
                format!("inode {d}"),
                Some(e.offset),
                format!(
                    "entry '{name}' in directory inode {d} has bad inode #{}",
                    e.inode
                ),
            );
            continue;
        }
        let Some(target) = c.inodes.get_mut(&e.inode) else {
            c.problem(
                Severity::Error,
                "entry-unused-inode",
                format!("inode {d}"),
                Some(e.offset),
                format!(
                    "entry '{name}' in directory inode {d} has deleted/unused inode {}",
                    e.inode
                ),
            );
            continue;
        };
        target.refs = target.refs.saturating_add(1);
        let target_is_dir = target.is_dir;
        let want = target.ftype;
        // The Hurd stores no types (e2fsck does not ask for them).
        let hurd = sb.get(sb!("s_creator_os")) == 1;
        if sb.has_filetype() && !hurd && e.file_type != want && !e.is_dot_or_dotdot() {
            c.problem(
                Severity::Error,
                "entry-filetype",
                format!("inode {d}"),
                Some(e.offset),
                format!(
                    "entry '{name}' in directory inode {d} ({}) has an incorrect filetype (was {}, should be {want})",
                    e.inode, e.file_type
                ),
            );
        }
        if e.name == b"." {
            if e.inode != d {
                c.problem(
                    Severity::Error,
                    "dot-entry",
                    format!("inode {d}"),
                    Some(e.offset),
                    format!(
                        "'.' in directory inode {d} is inode {}, should be {d}",
                        e.inode
                    ),
                );
            }
        } else if e.name == b".." {
            if let Some(me) = c.inodes.get_mut(&d) {
                me.dotdot = e.inode;
            }
        } else if target_is_dir {
            let parent = c.inodes.get(&e.inode).map_or(0, |t| t.parent);
            if parent != 0 && e.inode != 2 {
                c.problem(
                    Severity::Error,
                    "directory-hard-link",
                    format!("inode {d}"),
                    Some(e.offset),
                    format!(
                        "entry '{name}' in directory inode {d} is a link to directory inode {}, already in directory inode {parent}",
                        e.inode
                    ),
                );
            } else if let Some(t) = c.inodes.get_mut(&e.inode) {
                t.parent = d;
            }
        }
    }
}

/// Directories no path from the root reaches, and wrong `..` entries.
fn pass3(c: &mut Checker<'_>, dirs: &[u32]) {
    let limit = dirs.len().saturating_add(1);
    for &d in dirs {
        if d == 2 {
            continue;
        }
        let Some(me) = c.inodes.get(&d).copied() else {
            continue;
        };
        // Up the parents to the root, at most one step per directory (a
        // loop of parents never reaches it).
        let mut at = d;
        let mut reached = false;
        for _ in 0..limit {
            let p = c.inodes.get(&at).map_or(0, |i| i.parent);
            if p == 0 {
                break;
            }
            if p == 2 {
                reached = true;
                break;
            }
            at = p;
        }
        if !reached {
            c.problem(
                Severity::Error,
                "unconnected-directory",
                format!("inode {d}"),
                Some(me.base),
                format!("unconnected directory inode {d} (parent {})", me.parent),
            );
        } else if me.dotdot != me.parent {
            c.problem(
                Severity::Error,
                "dotdot-entry",
                format!("inode {d}"),
                Some(me.base),
                format!(
                    "'..' in directory inode {d} is inode {}, should be {}",
                    me.dotdot, me.parent
                ),
            );
        }
    }
}

/// Link counts against the entries counted in pass 2.
fn pass4(c: &mut Checker<'_>) {
    let sb = c.fs.superblock();
    let first_ino = u32::try_from(sb.get(sb!("s_first_ino")).max(11)).unwrap_or(u32::MAX);
    let dir_nlink = sb.has_ro_compat(crate::fs::ext::superblock::RoCompat::DIR_NLINK);
    let mut list: Vec<(u32, super::InUse)> = c
        .inodes
        .iter()
        .filter(|(&i, _)| i == 2 || i >= first_ino)
        .map(|(&i, u)| (i, *u))
        .collect();
    list.sort_unstable_by_key(|(i, _)| *i);
    // The orphan file has no name (the superblock names it).
    let orphan_file = sb
        .has_compat(crate::fs::ext::superblock::Compat::ORPHAN_FILE)
        .then(|| sb.get(sb!("s_orphan_file_inum")));
    for (ino, u) in list {
        if u.ea_inode || orphan_file == Some(u64::from(ino)) {
            continue;
        }
        if u.refs == 0 {
            let zero = if u.size == 0 { "zero-length " } else { "" };
            c.problem(
                Severity::Error,
                "unattached-inode",
                format!("inode {ino}"),
                Some(u.base),
                format!("unattached {zero}inode {ino}"),
            );
            continue;
        }
        // Past 65000 subdirectories the count stays at 1 (dir_nlink).
        let many = dir_nlink && u.is_dir && u.links == 1 && u.refs >= 65000;
        if u32::from(u.links) != u.refs && !many {
            c.problem(
                Severity::Error,
                "link-count",
                format!("inode {ino}"),
                Some(u.base.saturating_add(0x1a)),
                format!("inode {ino} ref count is {}, should be {}", u.links, u.refs),
            );
        }
    }
}
