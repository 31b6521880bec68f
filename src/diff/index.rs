//! Going backwards on a filesystem that only points forwards: from a
//! block to the inode that owns it, and from an inode to its names.
//!
//! ext2/3/4 keeps no reverse maps, so both are searches; they read inode
//! tables (never file contents) and list only directories, and they stop
//! as soon as they have found what they were asked for. Names are searched
//! first in the inode's own group and flex group, where the allocator puts
//! a file next to its directory.
use crate::fs::ext::superblock::{sb, Incompat, RoCompat};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::ControlFlow;

use crate::block::BlockSource;
use crate::fs::ext::inode::Inode;
use crate::fs::ext::tree::MAX_ENTRIES;
use crate::fs::ext::{Ext4, FsError};

use super::blocks::BlockSet;
use super::compare::in_use;
use super::DiffError;
use crate::bytes::{u64_of, us};

/// Bytes of inode table read at a time.
const TABLE_CHUNK: u64 = 1 << 20;
/// Most `..` steps from a directory to the root.
const MAX_DEPTH: usize = 4096;

/// Calls `f` with every in-use inode of `group` (unused tails of the table,
/// `bg_itable_unused`, and uninitialized tables are skipped, as the kernel
/// does).
///
/// # Errors
/// Read errors; a table outside the disk.
pub fn for_each_inode(
    fs: &Ext4,
    group: u64,
    f: &mut dyn FnMut(Inode) -> Result<(), DiffError>,
) -> Result<(), DiffError> {
    let sb = fs.superblock();
    let d = fs.group(group)?;
    let csum = sb.has_ro_compat(RoCompat::UNINIT_BG) || sb.has_ro_compat(RoCompat::METADATA_CSUM);
    let ipg = u64::from(sb.inodes_per_group);
    let rows = if csum {
        if d.flags
            .contains(crate::fs::ext::group_desc::BgFlags::INODE_UNINIT)
        {
            return Ok(());
        }
        ipg.saturating_sub(d.itable_unused)
    } else {
        ipg
    };
    let first = group.saturating_mul(ipg).saturating_add(1);
    let rows = rows.min(
        u64::from(sb.inodes_count)
            .saturating_add(1)
            .saturating_sub(first),
    );
    if rows == 0 {
        return Ok(());
    }
    let isz = u64::from(sb.inode_size).max(128);
    let table = fs.block_offset(d.inode_table)?;
    if table.saturating_add(rows.saturating_mul(isz)) > fs.disk().len() {
        return Err(FsError::corrupt(
            "group descriptor",
            "bg_inode_table",
            d.base.saturating_add(u64_of(
                crate::fs::ext::group_desc::gd!("bg_inode_table_lo").offset,
            )),
            format!(
                "inode table of group {group} (block {}, {rows} inodes) runs past the disk",
                d.inode_table
            ),
        )
        .into());
    }
    // The table lies within the disk (checked above): the products below
    // are below the disk's size.
    let per_chunk = TABLE_CHUNK.checked_div(isz).unwrap_or(1).max(1);
    // Page-aligned: the kernel copies into an unaligned buffer ~3x
    // slower (and a large Vec starts 16 bytes past a page).
    let mut whole = crate::block::buffer::AlignedBuf::default();
    let mut row = 0u64;
    while row < rows {
        let n = per_chunk.min(rows.saturating_sub(row));
        let len = us(n.saturating_mul(isz));
        if whole.len() < len {
            whole = crate::block::buffer::AlignedBuf::new(len);
        }
        let Some(buf) = whole.get_mut(..len) else {
            break;
        };
        let at = table.saturating_add(row.saturating_mul(isz));
        fs.disk().read_at(at, buf)?;
        for (i, raw) in (0u64..).zip(buf.chunks_exact(us(isz))) {
            let inode = Inode::decode(
                first.saturating_add(row).saturating_add(i),
                raw,
                at.saturating_add(i.saturating_mul(isz)),
            )?;
            if in_use(&inode) {
                f(inode)?;
            }
        }
        row = row.saturating_add(n);
    }
    Ok(())
}

/// A directory's names and their inodes.
pub type Entries = BTreeMap<Vec<u8>, u64>;

/// The entries of directory `dir` (names to inodes, without `.`, `..`
/// and empty slots), and the problems listing met.
///
/// # Errors
/// The inode cannot be read or its map not walked at all.
pub fn entries(fs: &Ext4, dir: u64) -> Result<(Entries, Vec<FsError>), FsError> {
    let listing = fs.list_dir(&fs.inode(dir)?)?;
    let entries = listing
        .entries
        .into_iter()
        .filter(|e| !e.is_dot_or_dotdot() && e.inode != 0)
        .map(|e| (e.name, u64::from(e.inode)))
        .collect();
    Ok((entries, listing.problems))
}

/// Every block an inode owns: data, map blocks, its attribute block.
pub fn owned_blocks(fs: &Ext4, i: &Inode) -> Vec<(u64, u64)> {
    let mut v = Vec::new();
    if !(i.is_reg() || i.is_dir() || i.is_symlink()) || i.has_inline_data() {
        // Devices, fifos, sockets and inline files own no blocks (but an
        // attribute block).
    } else if !(i.is_symlink() && fs.fast_symlink(i)) {
        if let Ok(map) = fs.block_map(i) {
            v.extend(map.runs.iter().map(|r| (r.physical, r.len)));
        }
    }
    if i.file_acl != 0 {
        v.push((i.file_acl, 1));
    }
    v
}

/// Inodes the owner search passes over: the resize inode (7), whose map
/// holds the reserved descriptor blocks of every backup group (about a
/// thousand indirect blocks to read on a large disk), and the journal
/// (8). Their blocks are filesystem metadata, not file data; the quick
/// diff accounts for them before it searches.
const SKIPPED_OWNERS: [u64; 2] = [7, 8];

/// Finds the in-use inodes that own any of `blocks`, scanning every
/// group's inode table, and removes the blocks they own from `blocks`
/// (the resize inode and the journal are not searched).
///
/// # Errors
/// Read errors.
pub fn owners(fs: &Ext4, blocks: &mut BlockSet) -> Result<Vec<u64>, DiffError> {
    owners_in(fs, blocks, 0..fs.superblock().group_count())
}

/// [`owners`] searching only the inode tables of `groups`, in that order,
/// until no block is left.
///
/// # Errors
/// Read errors.
pub fn owners_in(
    fs: &Ext4,
    blocks: &mut BlockSet,
    groups: impl IntoIterator<Item = u64>,
) -> Result<Vec<u64>, DiffError> {
    let mut found = Vec::new();
    for g in groups {
        if blocks.is_empty() {
            break;
        }
        for_each_inode(fs, g, &mut |i| {
            if SKIPPED_OWNERS.contains(&i.ino) {
                return Ok(());
            }
            let owned = owned_blocks(fs, &i);
            if owned.iter().any(|&(s, l)| blocks.overlaps(s, l)) {
                for (s, l) in owned {
                    blocks.remove(s, l);
                }
                found.push(i.ino);
            }
            Ok(())
        })?;
    }
    Ok(found)
}

/// Paths of one view, found backwards and remembered.
pub struct Paths<'a> {
    fs: &'a Ext4,
    /// Directory inode -> its path (`/` for the root).
    dirs: HashMap<u64, Option<Vec<u8>>>,
    /// Directories listed while searching names: how many.
    pub listed: u64,
    /// Directories [`Paths::names`] listed: one searched again (a diff
    /// asks for names a batch at a time) counts once.
    named: HashSet<u64>,
    /// The groups [`Paths::names`] walked, kept for its next search (a
    /// diff asks for names a batch at a time, and every search starts
    /// with the same groups): their tables and directories are not read
    /// and decoded again. At most [`KEPT_ENTRIES`] entries in all.
    walked: HashMap<u64, Walked>,
    kept: usize,
    /// The last directory [`Paths::dir_path`] searched for a child's name,
    /// and its listing: siblings ask the same parent (the root, mostly).
    parent: Option<(u64, Vec<crate::fs::ext::dir::Entry>)>,
}

/// A group's directories as [`Paths::names`] met them, in inode order:
/// each one's inode, whether it was listed without error, and the
/// entries the listing gave (inode and name; `.` and `..` left out).
type Walked = Vec<(u64, bool, Vec<(u64, Vec<u8>)>)>;

/// Most directory entries [`Paths`] keeps of the groups it walked (a
/// few MiB): a group past what is left is walked again when asked.
const KEPT_ENTRIES: usize = 1 << 15;

impl<'a> Paths<'a> {
    pub fn new(fs: &'a Ext4) -> Paths<'a> {
        Paths {
            fs,
            dirs: HashMap::new(),
            listed: 0,
            named: HashSet::new(),
            walked: HashMap::new(),
            kept: 0,
            parent: None,
        }
    }

    /// The path of directory `ino`, by its `..` entries up to the root and
    /// its name in each parent; `None` when the chain is broken (an
    /// unlinked or damaged directory) or loops.
    pub fn dir_path(&mut self, ino: u64) -> Option<Vec<u8>> {
        let mut chain = Vec::new();
        let mut seen = HashSet::new();
        let mut cur = ino;
        let mut prefix = None;
        for _ in 0..MAX_DEPTH {
            if cur == 2 {
                prefix = Some(b"/".to_vec());
                break;
            }
            if let Some(known) = self.dirs.get(&cur) {
                prefix = known.clone();
                break;
            }
            if !seen.insert(cur) {
                break;
            }
            match self.step_up(cur) {
                Some((parent, name)) => {
                    chain.push((cur, name));
                    cur = parent;
                }
                None => break,
            }
        }
        let ok = prefix.is_some();
        let mut path = prefix.unwrap_or_default();
        for (dir, name) in chain.into_iter().rev() {
            if ok {
                if path.last() != Some(&b'/') {
                    path.push(b'/');
                }
                path.extend_from_slice(&name);
                self.dirs.insert(dir, Some(path.clone()));
            } else {
                self.dirs.insert(dir, None);
            }
        }
        if ok {
            Some(if ino == 2 { b"/".to_vec() } else { path })
        } else {
            self.dirs.insert(ino, None);
            None
        }
    }

    /// The parent of directory `ino` and the name it has there.
    fn step_up(&mut self, ino: u64) -> Option<(u64, Vec<u8>)> {
        let fs = self.fs;
        let node = fs.inode(ino).ok().filter(|i| i.is_dir() && in_use(i))?;
        self.listed = self.listed.saturating_add(1);
        let parent = fs
            .list_dir(&node)
            .ok()?
            .entries
            .iter()
            .find(|e| e.name == b"..")
            .map(|e| u64::from(e.inode))?;
        let pnode = fs.inode(parent).ok().filter(|i| i.is_dir())?;
        self.listed = self.listed.saturating_add(1);
        // The parent listed last time is not read again (counted all the
        // same: the count says how many listings the search needed).
        let entries = match self.parent.take() {
            Some((p, entries)) if p == parent => entries,
            _ => fs.list_dir(&pnode).ok()?.entries,
        };
        let name = entries
            .iter()
            .find(|e| u64::from(e.inode) == ino && !e.is_dot_or_dotdot())
            .map(|e| e.name.clone());
        self.parent = Some((parent, entries));
        Some((parent, name?))
    }

    /// The names (full paths) of the non-directory inodes `targets` (ino
    /// -> link count): directories are searched group by group, the
    /// targets' own groups and flex groups first, until every target has as
    /// many names as links, or every group was searched.
    ///
    /// # Errors
    /// Read errors.
    pub fn names(
        &mut self,
        targets: &HashMap<u64, u16>,
    ) -> Result<HashMap<u64, Vec<Vec<u8>>>, DiffError> {
        let mut found: HashMap<u64, Vec<(u64, Vec<u8>)>> = HashMap::new();
        let sb = self.fs.superblock();
        let groups = sb.group_count();
        let ipg = u64::from(sb.inodes_per_group).max(1);
        let flex = if sb.has_incompat(Incompat::FLEX_BG) {
            1u64 << sb.get(sb!("s_log_groups_per_flex")).min(31)
        } else {
            1
        };
        let mut order: Vec<u64> = Vec::new();
        let mut own: Vec<u64> = targets
            .keys()
            .map(|&i| i.saturating_sub(1).checked_div(ipg).unwrap_or(0))
            .collect();
        own.sort_unstable();
        own.dedup();
        order.extend(&own);
        for &g in &own {
            let start = g.checked_div(flex).unwrap_or(g).saturating_mul(flex);
            order.extend((start..start.saturating_add(flex).min(groups)).filter(|x| *x != g));
        }
        let done = |found: &HashMap<u64, Vec<(u64, Vec<u8>)>>| {
            targets
                .iter()
                .all(|(i, &links)| found.get(i).map_or(0, Vec::len) >= usize::from(links))
        };
        let mut searched = HashSet::new();
        // Then every group, one at a time (nothing the size of the group
        // count is made up front).
        for g in order.into_iter().chain(0..groups) {
            if done(&found) {
                break;
            }
            if !searched.insert(g) {
                continue;
            }
            if let Some(walk) = self.walked.get(&g) {
                // What the walk below gave the last time, for these targets.
                for (dir, ok, entries) in walk {
                    if self.named.insert(*dir) {
                        self.listed = self.listed.saturating_add(1);
                    }
                    if !ok {
                        continue;
                    }
                    for (ino, name) in entries.iter().filter(|(i, _)| targets.contains_key(i)) {
                        let v = found.entry(*ino).or_default();
                        if !v.iter().any(|(p, n)| p == dir && n == name) {
                            v.push((*dir, name.clone()));
                        }
                    }
                }
                continue;
            }
            let fs = self.fs;
            let (named, listed) = (&mut self.named, &mut self.listed);
            // This walk, kept for the next search while within the bound.
            let room = KEPT_ENTRIES.saturating_sub(self.kept);
            let mut keep: Option<Walked> = (room > 0).then(Vec::new);
            let mut kept = 0usize;
            // Each directory is listed as the table walk meets it, its
            // entries streamed (no list of the group's directories, each
            // a whole inode, nor of each one's entries): what `list_dir`
            // gives, and a directory that cannot be read to its end
            // names nothing, as when it was listed whole.
            let mut problems = Vec::new();
            let mut mine = Vec::new();
            for_each_inode(fs, g, &mut |d| {
                if !d.is_dir() {
                    return Ok(());
                }
                if named.insert(d.ino) {
                    *listed = listed.saturating_add(1);
                }
                mine.clear();
                let mut all = Vec::new();
                let mut entries = 0usize;
                let listing = fs.for_each_entry(&d, &mut problems, &mut |e| {
                    let ino = u64::from(e.inode);
                    if !e.is_dot_or_dotdot() {
                        if targets.contains_key(&ino) {
                            mine.push((ino, e.name.clone()));
                        }
                        if keep.is_some() {
                            kept = kept.saturating_add(1);
                            if kept > room {
                                keep = None;
                            } else {
                                all.push((ino, e.name));
                            }
                        }
                    }
                    entries = entries.saturating_add(1);
                    if entries > MAX_ENTRIES {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                });
                problems.clear();
                if let Some(k) = keep.as_mut() {
                    k.push((d.ino, listing.is_ok(), all));
                }
                if listing.is_ok() {
                    for (ino, name) in mine.drain(..) {
                        let v = found.entry(ino).or_default();
                        if !v.iter().any(|(p, n)| *p == d.ino && *n == name) {
                            v.push((d.ino, name));
                        }
                    }
                }
                Ok(())
            })?;
            if let Some(k) = keep {
                self.kept = self.kept.saturating_add(kept);
                self.walked.insert(g, k);
            }
        }
        let mut out = HashMap::new();
        for (ino, names) in found {
            let mut paths = Vec::new();
            for (dir, name) in names {
                if let Some(mut p) = self.dir_path(dir) {
                    if p.last() != Some(&b'/') {
                        p.push(b'/');
                    }
                    p.extend_from_slice(&name);
                    paths.push(p);
                }
            }
            paths.sort();
            out.insert(ino, paths);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::layered::LayeredReader;
    use std::sync::Arc;

    /// A search for names after another one (which keeps the groups it
    /// walked) finds what a first search finds, and counts the same
    /// directories; so does one after the kept entries ran out.
    #[test]
    fn names_searched_again_equal_a_first_search() {
        let chain = crate::demo::open().unwrap();
        let disk: Arc<dyn BlockSource> = Arc::new(LayeredReader::new(&chain).unwrap());
        let fs = Ext4::open(disk).unwrap();
        let ino = |p: &str| fs.lookup(p).unwrap();
        let first: HashMap<u64, u16> = [(ino("/etc/hostname"), 1)].into();
        let second: HashMap<u64, u16> =
            [(ino("/etc/hostname"), 1), (ino("/srv/www/index.html"), 1)].into();
        let mut fresh = Paths::new(&fs);
        let want = fresh.names(&second).unwrap();
        assert_eq!(
            want[&ino("/srv/www/index.html")],
            vec![b"/srv/www/index.html".to_vec()]
        );
        let mut counts = Vec::new();
        for room in [KEPT_ENTRIES, 1] {
            let mut again = Paths::new(&fs);
            again.kept = KEPT_ENTRIES - room;
            again.names(&first).unwrap();
            // Kept when there was room; walked again when not.
            assert_eq!(again.walked.is_empty(), room == 1);
            assert_eq!(again.names(&second).unwrap(), want);
            counts.push(again.listed);
        }
        assert_eq!(counts[0], counts[1]);
        assert!(counts[0] >= fresh.listed);
    }

    /// Directories' paths found by their `..` entries, siblings and
    /// cousins one after the other (the parent listed last is reused), are
    /// the paths they are looked up by; each step counts two listings.
    #[test]
    fn directory_paths_by_their_parents() {
        let chain = crate::demo::open().unwrap();
        let disk: Arc<dyn BlockSource> = Arc::new(LayeredReader::new(&chain).unwrap());
        let fs = Ext4::open(disk).unwrap();
        let mut paths = Paths::new(&fs);
        let dirs = [
            "/etc",
            "/srv",
            "/srv/www",
            "/var/log/app",
            "/var",
            "/tmp",
            "/home/user",
            "/bin",
        ];
        for d in dirs {
            let ino = fs.lookup(d).unwrap();
            assert_eq!(paths.dir_path(ino), Some(d.as_bytes().to_vec()), "{d}");
        }
        assert_eq!(paths.dir_path(2), Some(b"/".to_vec()));
        // Ten steps up: /etc, /srv, /srv/www, /var/log/app, /var/log,
        // /var, /tmp, /home/user, /home, /bin (then /var was known).
        assert_eq!(paths.listed, 20);
    }
}
