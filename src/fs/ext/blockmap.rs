//! Where a file's bytes are: extent trees (any depth, uninitialized
//! extents) and the old indirect maps (single, double, triple), both
//! turned into one list of runs. Every block number is checked against the
//! filesystem; depth, fan-out and the number of blocks visited are bounded,
//! and a tree block seen twice is a cycle.
use std::collections::HashSet;

use super::error::FsError;

/// A run of a file: logical block, physical block, length; uninitialized
/// extents read as zeros. `meta` runs are the map's own blocks (indirect
/// blocks, extent tree nodes), listed where the walk meets them, as
/// `debugfs blocks` does; they hold no file data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Run {
    pub logical: u64,
    pub physical: u64,
    pub len: u64,
    pub uninit: bool,
    pub meta: bool,
}

/// Extent tree magic.
const EXT_MAGIC: u16 = 0xf30a;
/// The kernel's limit on extent tree depth.
const MAX_DEPTH: u16 = 5;

/// Reads a filesystem block (the caller's I/O).
pub type ReadBlock<'a> = dyn FnMut(u64) -> Result<Vec<u8>, FsError> + 'a;

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The runs of an extent tree rooted in `root` (the inode's i_block).
///
/// # Errors
/// `Corrupt` for a bad header, a depth over 5, a block outside the
/// filesystem, or a cycle.
pub fn extents(
    ino: u64,
    root: &[u8],
    blocks_count: u64,
    read: &mut ReadBlock,
) -> Result<Vec<Run>, FsError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    walk(ino, root, None, blocks_count, read, &mut out, &mut seen, 0)?;
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn walk(
    ino: u64,
    node: &[u8],
    expect_depth: Option<u16>,
    blocks_count: u64,
    read: &mut ReadBlock,
    out: &mut Vec<Run>,
    seen: &mut HashSet<u64>,
    level: u16,
) -> Result<(), FsError> {
    let bad = |detail: String| {
        FsError::corrupt("extent tree", "header", 0, format!("inode {ino}: {detail}"))
    };
    if node.len() < 12 || le16(node, 0) != EXT_MAGIC {
        return Err(bad("bad extent header magic".into()));
    }
    let entries = usize::from(le16(node, 2));
    let depth = le16(node, 6);
    if depth > MAX_DEPTH || level > MAX_DEPTH || expect_depth.is_some_and(|d| d != depth) {
        return Err(bad(format!("depth {depth} at level {level}")));
    }
    if 12 + entries * 12 > node.len() {
        return Err(bad(format!(
            "{entries} entries do not fit in {} bytes",
            node.len()
        )));
    }
    for i in 0..entries {
        let e = &node[12 + i * 12..24 + i * 12];
        if depth == 0 {
            let logical = u64::from(le32(e, 0));
            let raw_len = le16(e, 4);
            let (len, uninit) = if raw_len > 32768 {
                (raw_len - 32768, true)
            } else {
                (raw_len, false)
            };
            let physical = u64::from(le16(e, 6)) << 32 | u64::from(le32(e, 8));
            if len == 0 {
                continue;
            }
            if physical
                .checked_add(u64::from(len))
                .is_none_or(|end| end > blocks_count)
            {
                return Err(bad(format!("extent at logical {logical} points to blocks {physical}+{len}, outside the filesystem")));
            }
            out.push(Run {
                logical,
                physical,
                len: u64::from(len),
                uninit,
                meta: false,
            });
        } else {
            let child = u64::from(le16(e, 8)) << 32 | u64::from(le32(e, 4));
            if child >= blocks_count {
                return Err(bad(format!(
                    "index points to block {child}, outside the filesystem"
                )));
            }
            if !seen.insert(child) {
                return Err(bad(format!(
                    "block {child} appears twice in the tree (a cycle)"
                )));
            }
            out.push(Run {
                logical: u64::from(le32(e, 0)),
                physical: child,
                len: 1,
                uninit: false,
                meta: true,
            });
            let block = read(child)?;
            walk(
                ino,
                &block,
                Some(depth - 1),
                blocks_count,
                read,
                out,
                seen,
                level + 1,
            )?;
        }
    }
    Ok(())
}

/// The runs of an indirect block map (ext2/ext3): 12 direct pointers, then
/// single, double and triple indirect blocks, up to `file_blocks` logical
/// blocks.
///
/// # Errors
/// `Corrupt` for a block outside the filesystem or a pointer cycle.
pub fn indirect(
    ino: u64,
    root: &[u8],
    block_size: u64,
    file_blocks: u64,
    blocks_count: u64,
    read: &mut ReadBlock,
) -> Result<Vec<Run>, FsError> {
    let per = block_size / 4;
    let mut runs: Vec<Run> = Vec::new();
    let mut seen = HashSet::new();
    let push = |logical: u64,
                physical: u64,
                meta: bool,
                runs: &mut Vec<Run>|
     -> Result<(), FsError> {
        if physical == 0 {
            return Ok(());
        }
        if physical >= blocks_count {
            return Err(FsError::corrupt("block map", "pointer", 0, format!("inode {ino}: logical block {logical} points to block {physical}, outside the filesystem")));
        }
        match runs.last_mut() {
            Some(r)
                if !meta
                    && !r.meta
                    && r.logical + r.len == logical
                    && r.physical + r.len == physical =>
            {
                r.len += 1
            }
            _ => runs.push(Run {
                logical,
                physical,
                len: 1,
                uninit: false,
                meta,
            }),
        }
        Ok(())
    };
    for i in 0..12u64.min(file_blocks) {
        push(i, u64::from(le32(root, i as usize * 4)), false, &mut runs)?;
    }
    // (level, root pointer, first logical block it covers)
    let mut start = 12u64;
    for (level, slot) in [(1u32, 12usize), (2, 13), (3, 14)] {
        let span = per.pow(level);
        let ptr = u64::from(le32(root, slot * 4));
        if start < file_blocks && ptr != 0 {
            descend(
                ino,
                ptr,
                level,
                start,
                per,
                file_blocks,
                blocks_count,
                read,
                &mut seen,
                &mut |l, p, m| push(l, p, m, &mut runs),
            )?;
        }
        start += span;
    }
    Ok(runs)
}

#[allow(clippy::too_many_arguments)]
fn descend(
    ino: u64,
    block: u64,
    level: u32,
    first: u64,
    per: u64,
    file_blocks: u64,
    blocks_count: u64,
    read: &mut ReadBlock,
    seen: &mut HashSet<u64>,
    emit: &mut dyn FnMut(u64, u64, bool) -> Result<(), FsError>,
) -> Result<(), FsError> {
    if block >= blocks_count {
        return Err(FsError::corrupt(
            "block map",
            "indirect pointer",
            0,
            format!("inode {ino}: indirect block {block} is outside the filesystem"),
        ));
    }
    if !seen.insert(block) {
        return Err(FsError::corrupt(
            "block map",
            "indirect pointer",
            0,
            format!("inode {ino}: indirect block {block} is used twice (a cycle)"),
        ));
    }
    emit(first, block, true)?;
    let data = read(block)?;
    let child_span = per.pow(level - 1);
    for i in 0..per {
        let logical = first + i * child_span;
        if logical >= file_blocks {
            break;
        }
        let ptr = u64::from(le32(&data, i as usize * 4));
        if ptr == 0 {
            continue;
        }
        if level == 1 {
            emit(logical, ptr, false)?;
        } else {
            descend(
                ino,
                ptr,
                level - 1,
                logical,
                per,
                file_blocks,
                blocks_count,
                read,
                seen,
                emit,
            )?;
        }
    }
    Ok(())
}
