//! Whether one file differs between two views of the filesystem, and how:
//! its content (bytes, symlink target) or its metadata (the fields named).
//! Both diffs and blame use this one comparison, so the quick diff and the
//! full reference cannot disagree on what "modified" means.
use crate::fs::ext::blockmap::Run;
use crate::fs::ext::inode::{Inode, EXTENTS_FL, INDEX_FL, INLINE_DATA_FL};
use crate::fs::ext::{Ext4, FsError};

use super::blocks::BlockSet;
use crate::bytes::us;

/// How a file differs.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Delta {
    /// The bytes (regular files), the target (symlinks).
    pub content: bool,
    /// Metadata fields that differ. Access times are not changes (reading
    /// a file changes them); a write's `mtime` and `ctime` are part of the
    /// content change; a directory's times, size and link count follow
    /// its entries, which are reported as entries.
    pub metadata: Vec<&'static str>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        !self.content && self.metadata.is_empty()
    }
}

/// Whether an inode holds a file: mode set and linked (or an orphan being
/// deleted: not a file any more).
pub fn in_use(i: &Inode) -> bool {
    i.mode != 0 && i.links > 0 && i.dtime == 0
}

/// The same file in both views: used in both, same generation and type.
pub fn same_file(o: &Inode, n: &Inode) -> bool {
    in_use(o) && in_use(n) && o.generation == n.generation && o.mode & 0xf000 == n.mode & 0xf000
}

/// Flags that follow the content's layout, not the user's intent.
const LAYOUT_FLAGS: u32 = INDEX_FL | EXTENTS_FL | INLINE_DATA_FL | 0x4_0000 /* HUGE_FILE */;

/// Compares file `o` (in `old`) with `n` (in `new`). With `changed`, the
/// set of blocks whose bytes differ between the views, only what can have
/// changed is read: logical ranges mapped to the same unchanged blocks in
/// both are equal without reading them.
///
/// # Errors
/// Read errors; damaged maps.
pub fn compare(
    old: &Ext4,
    o: &Inode,
    new: &Ext4,
    n: &Inode,
    changed: Option<&BlockSet>,
) -> Result<Delta, FsError> {
    let mut d = Delta::default();
    let dir = n.is_dir();
    if n.is_reg() {
        d.content = o.size != n.size || content_differs(old, o, new, n, changed)?;
    } else if n.is_symlink() {
        d.content = old.symlink_target(o)? != new.symlink_target(n)?;
    }
    let mut field = |name: &'static str, differs: bool| {
        if differs {
            d.metadata.push(name);
        }
    };
    field("mode", o.mode != n.mode);
    field("uid", o.uid != n.uid);
    field("gid", o.gid != n.gid);
    field("flags", o.flags & !LAYOUT_FLAGS != n.flags & !LAYOUT_FLAGS);
    if !dir {
        field("links", o.links != n.links);
    }
    field("projid", o.projid != n.projid);
    field(
        "crtime",
        o.crtime.map(|t| (t.secs, t.nsec)) != n.crtime.map(|t| (t.secs, t.nsec)),
    );
    if n.is_device() {
        field("rdev", o.block != n.block);
    }
    field("xattrs", xattrs(old, o)? != xattrs(new, n)?);
    // Times that a content change explains are part of it.
    if !dir && !d.content {
        field(
            "mtime",
            (o.mtime.secs, o.mtime.nsec) != (n.mtime.secs, n.mtime.nsec),
        );
        field(
            "ctime",
            (o.ctime.secs, o.ctime.nsec) != (n.ctime.secs, n.ctime.nsec),
        );
    }
    Ok(d)
}

/// An attribute: name index, name, value.
type Attr = (u8, Vec<u8>, Vec<u8>);

/// The user-visible attributes: (index, name, value), sorted; the inline
/// data's `system.data` is content, not an attribute.
fn xattrs(fs: &Ext4, i: &Inode) -> Result<Vec<Attr>, FsError> {
    if i.file_acl == 0 && i.extra_isize == 0 {
        return Ok(Vec::new());
    }
    let mut v: Vec<_> = fs
        .xattrs(i)?
        .attrs
        .into_iter()
        .filter(|x| !(x.name_index == 7 && x.name == b"data"))
        .map(|x| (x.name_index, x.name, x.value))
        .collect();
    v.sort();
    Ok(v)
}

/// The mapping of logical block `l` in `runs` (sorted by logical): the
/// physical block, whether it reads as zeros, and how many blocks the
/// answer holds for; `None` for a hole, with the hole's length.
fn mapping(runs: &[Run], l: u64) -> (Option<(u64, bool)>, u64) {
    let i = runs.partition_point(|r| r.logical.saturating_add(r.len) <= l);
    match runs.get(i) {
        Some(r) if r.logical <= l => (
            Some((
                r.physical.saturating_add(l.saturating_sub(r.logical)),
                r.uninit,
            )),
            r.logical.saturating_add(r.len).saturating_sub(l),
        ),
        Some(r) => (None, r.logical.saturating_sub(l)),
        None => (None, u64::MAX),
    }
}

/// Bytes compared at a time.
const CHUNK: u64 = 1 << 20;

/// Whether two regular files of the same size have different bytes.
fn content_differs(
    old: &Ext4,
    o: &Inode,
    new: &Ext4,
    n: &Inode,
    changed: Option<&BlockSet>,
) -> Result<bool, FsError> {
    let size = n.size;
    if size == 0 {
        return Ok(false);
    }
    if o.has_inline_data() || n.has_inline_data() {
        return Ok(old.read_all(o, size)? != new.read_all(n, size)?);
    }
    let data = |fs: &Ext4, i: &Inode| -> Result<Vec<Run>, FsError> {
        let mut r: Vec<Run> = fs.runs(i)?.into_iter().filter(|r| !r.meta).collect();
        r.sort_by_key(|r| r.logical);
        Ok(r)
    };
    let (ro, rn) = (data(old, o)?, data(new, n)?);
    let bs = new.superblock().block_size;
    let blocks = size.div_ceil(bs);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut l = 0u64;
    while l < blocks {
        let (mo, lo) = mapping(&ro, l);
        let (mn, ln) = mapping(&rn, l);
        // The run both mappings keep from `l`: what is equal without
        // reading is stepped over whole (a hole of 2^63 bytes is one
        // step), what must be read is read a chunk at a time.
        let run = lo.min(ln).min(blocks.saturating_sub(l)).max(1);
        let zeros = |m: Option<(u64, bool)>| m.is_none_or(|(_, uninit)| uninit);
        let equal_without_reading = match (mo, mn, changed) {
            _ if zeros(mo) && zeros(mn) => true,
            (Some(x), Some(y), Some(c)) => x == y && !c.overlaps(x.0, run),
            _ => false,
        };
        let span = if equal_without_reading {
            run
        } else {
            run.min(CHUNK.checked_div(bs).unwrap_or(1)).max(1)
        };
        if !equal_without_reading {
            // l < size / bs rounded up, span * bs <= 1 MiB: neither saturates.
            let at = l.saturating_mul(bs);
            let len = us(span.saturating_mul(bs).min(size.saturating_sub(at)));
            a.resize(len, 0);
            b.resize(len, 0);
            old.read_file(o, &ro, at, &mut a)?;
            new.read_file(n, &rn, at, &mut b)?;
            if a != b {
                return Ok(true);
            }
        }
        l = l.saturating_add(span);
    }
    Ok(false)
}
