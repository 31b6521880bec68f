//! `layerscope info` and `groups`: the ext2/3/4 superblock and group
//! descriptors, in dumpe2fs's words where dumpe2fs has a word for it.
use std::io::Write;
use std::sync::Arc;

use serde_json::{json, Value};

use super::superblock::info_lines;
use super::{FsArgs, InfoArgs};
use crate::block::chain::Chain;
use crate::block::layered::LayeredReader;
use crate::block::layered::Owner;
use crate::block::BlockSource;
use crate::fs::ext::checksum::Check;
use crate::fs::ext::group_desc::placement;
use crate::fs::ext::superblock::feature_names;
use crate::fs::ext::Ext4;
use crate::volume::{ChooseError, Geometry, Role, Table, VolumeTree};

/// Opens the filesystem of the image's chain, cut at `--layer`.
pub(super) fn open(args: &FsArgs) -> anyhow::Result<Ext4> {
    Ok(open_full(args)?.fs)
}

/// An opened filesystem and where it sits.
pub(super) struct Opened {
    pub fs: Ext4,
    /// The layered reader of the whole disk (to say which layer holds what).
    pub reader: Arc<LayeredReader>,
    /// Byte offset of the filesystem on the disk when its volume is one
    /// window (a partition, the disk); see `geometry` for the general case.
    pub base: u64,
    /// The disk's volumes.
    pub tree: VolumeTree,
    /// The name of the volume in use (`disk`, `p1`, `vg0/root`).
    pub volume: String,
    /// Where the volume's bytes are on the disk.
    pub geometry: Arc<Geometry>,
}

impl Opened {
    /// Who serves the volume's bytes `[offset, offset + len)`: the answer
    /// for a prefix that is contiguous on the disk (`len` of the answer).
    pub fn owner(&self, offset: u64, len: u64) -> anyhow::Result<Owner> {
        let (disk, run) = self.geometry.to_disk(offset).ok_or_else(|| {
            anyhow::anyhow!("volume {}: offset {offset:#x} is past its end", self.volume)
        })?;
        Ok(self.reader.owner(disk, run.min(len))?)
    }

    /// The partition table, if any.
    fn table(&self) -> Option<&Table> {
        self.tree.table.as_ref()
    }

    /// The partition number in use, if the volume is a partition.
    fn partition(&self) -> Option<u32> {
        self.tree.find(&self.volume).and_then(|v| match &v.role {
            Role::Partition(p) => Some(p.number),
            _ => None,
        })
    }
}

/// Opens the chain (cut at `--layer`), picks the volume (`--volume`, or
/// the one holding a filesystem), and opens the filesystem.
pub(super) fn open_full(args: &FsArgs) -> anyhow::Result<Opened> {
    let chain = args.image.open()?;
    let chain = match args.layer {
        Some(n) if n >= chain.layers.len() => {
            anyhow::bail!(
                "--layer {n}: the chain has layers 0 to {}",
                chain.layers.len() - 1
            )
        }
        Some(n) => chain.cut(n),
        None => chain,
    };
    open_in(&chain, args.volume.as_deref())
}

/// Picks the volume (`volume`, or the one holding a filesystem) of an
/// opened chain and opens its filesystem.
pub(super) fn open_in(chain: &Chain, volume: Option<&str>) -> anyhow::Result<Opened> {
    let reader = Arc::new(LayeredReader::new(chain)?);
    let disk: Arc<dyn BlockSource> = reader.clone();
    let tree = crate::volume::scan(disk.clone())?;
    let (v, fs) = match tree.choose(&disk, volume, Ext4::open) {
        Ok(found) => found,
        Err(ChooseError::Volume(e)) => return Err(e.into()),
        Err(ChooseError::Open(name, e)) => {
            let e = anyhow::Error::new(e);
            return Err(if tree.volumes.len() == 1 {
                e.context(tree.disk_name.clone())
            } else {
                e.context(format!("{} volume {name}", tree.disk_name))
            });
        }
    };
    let geometry = v
        .geometry()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("volume {}: no geometry", v.name))?;
    let (volume, base) = (v.name.clone(), geometry.window_start().unwrap_or(0));
    Ok(Opened {
        fs,
        reader,
        base,
        tree,
        volume,
        geometry,
    })
}

/// `<N>` (debugfs's inode syntax) or a path.
pub(super) fn resolve(fs: &Ext4, target: &str) -> anyhow::Result<u64> {
    if let Some(n) = target.strip_prefix('<').and_then(|t| t.strip_suffix('>')) {
        return n
            .parse()
            .map_err(|_| anyhow::anyhow!("{target:?}: not an inode number"));
    }
    Ok(fs.lookup(target)?)
}

/// `info`.
///
/// # Errors
/// Opening the image or the filesystem.
pub fn info(info: &InfoArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let args = &info.fs;
    let opened = open_full(args)?;
    let fs = &opened.fs;
    let sb = fs.superblock();
    // A journal device has no inodes, so no bad block inode either.
    let bad_blocks = if sb.has_incompat(0x8) {
        Ok(Vec::new())
    } else {
        fs.bad_blocks()
    };
    if args.json {
        let j = json!({
            "partition_table": opened.table(),
            "partition": opened.partition(),
            "volume": opened.volume,
            "offset": opened.base,
            "summary": info_lines(sb).into_iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
            "features": feature_names(sb.feature_compat, sb.feature_incompat, sb.feature_ro_compat),
            "journal": fs.journal().map(|j| j.fields),
            "checksum_ok": sb.checksum_ok,
            "csum_seed": sb.csum_seed,
            "bad_blocks": bad_blocks.as_ref().ok(),
            "bad_blocks_error": bad_blocks.as_ref().err().map(|e| e.to_string()),
            "fields": sb.fields,
        });
        let mut j = j;
        if info.groups {
            j["groups"] = Value::Array(group_table(fs, true, out)?);
        }
        crate::escape::json::to_writer_pretty(&mut *out, &j)?;
        writeln!(out)?;
        return Ok(());
    }
    if let Some(t) = opened.table() {
        // The table first (in words dumpe2fs does not use, so lines cannot
        // be mistaken for its fields).
        writeln!(
            out,
            "{} partition table, filesystem in volume {}:",
            t.label,
            crate::escape::printable(&opened.volume)
        )?;
        for p in &t.partitions {
            let mark = if Some(p.number) == opened.partition() {
                " <- this filesystem"
            } else {
                ""
            };
            writeln!(
                out,
                "  #{} type {} start {:#x} length {} {}{mark}",
                p.number,
                p.kind,
                p.start,
                crate::units::human(p.len),
                p.name
            )?;
        }
        for problem in &t.problems {
            writeln!(
                out,
                "  problem: {}",
                crate::escape::printable(&problem.to_string())
            )?;
        }
        writeln!(out)?;
    }
    let mut lines = info_lines(sb);
    if let Some(j) = fs.journal() {
        lines.extend(j.lines(sb.block_size, sb.feature_compat & 0x400 != 0));
    }
    match bad_blocks {
        Ok(bad) if !bad.is_empty() => {
            let list: Vec<String> = bad.iter().map(u64::to_string).collect();
            lines.push(("Bad blocks".into(), list.join(", ")));
        }
        Ok(_) => {}
        Err(e) => eprintln!(
            "layerscope: warning: the bad block inode: {}",
            crate::escape::printable(&e.to_string())
        ),
    }
    for (k, v) in lines {
        if k.is_empty() {
            writeln!(out, "{:<26}{v}", "")?;
        } else {
            writeln!(out, "{:<26}{v}", format!("{k}:"))?;
        }
    }
    if info.groups {
        writeln!(out)?;
        group_table(fs, false, out)?;
    }
    Ok(())
}

/// `groups`.
///
/// # Errors
/// Opening the image or the filesystem.
pub fn groups(args: &FsArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let fs = open(args)?;
    let list = group_table(&fs, args.json, out)?;
    if args.json {
        crate::escape::json::to_writer_pretty(&mut *out, &list)?;
        writeln!(out)?;
    }
    Ok(())
}

/// The group list: written to `out` as text, or returned as JSON rows.
fn group_table(fs: &Ext4, json: bool, out: &mut dyn Write) -> anyhow::Result<Vec<Value>> {
    let count = fs.superblock().group_count();
    let mut list = Vec::new();
    let mut problems = Vec::new();
    if !json {
        writeln!(
            out,
            "{:>6} {:>21} {:>12} {:>12} {:>21} {:>8} {:>8} {:>6}  flags, checksum; placement",
            "group",
            "blocks",
            "block bmp",
            "inode bmp",
            "inode table",
            "free blk",
            "free ino",
            "dirs"
        )?;
    }
    let itable_blocks = (u64::from(fs.superblock().inodes_per_group)
        * u64::from(fs.superblock().inode_size))
    .div_ceil(fs.superblock().block_size);
    for g in 0..count {
        let d = match fs.group(g) {
            Ok(d) => d,
            Err(e) => {
                // Keep going: later groups may still be readable.
                if json {
                    list.push(
                        json!({"group": g, "error": crate::escape::printable(&format!("{e:#}"))}),
                    );
                } else {
                    writeln!(
                        out,
                        "{g:>6} error: {}",
                        crate::escape::printable(&format!("{e:#}"))
                    )?;
                }
                continue;
            }
        };
        let (first, last) = fs.group_blocks(g);
        let csum = match d.checksum_ok {
            Some(true) => format!("csum {:#06x} ok", d.checksum),
            Some(false) => format!("csum {:#06x} BAD", d.checksum),
            None => String::new(),
        };
        let place = placement(fs.superblock(), g);
        // A bitmap that cannot be read is an error of its own; the rest
        // of the group is still shown.
        let mut bitmap_error = None;
        let (bb, ib) = fs.bitmap_checksums(&d).unwrap_or_else(|e| {
            bitmap_error = Some(format!("group {g}: bitmaps: {e}"));
            (None, None)
        });
        let bitmap_csum = |c: Option<Check>| c.map(|c| c.ok());
        if json {
            list.push(json!({
                "group": g, "first_block": first, "last_block": last,
                "superblock": place.superblock,
                "descriptors": place.descriptors.map(|(a, b)| [a, b]),
                "reserved_gdt": place.reserved_gdt.map(|(a, b)| [a, b]),
                "meta_descriptor": place.meta_descriptor,
                "block_bitmap": d.block_bitmap, "inode_bitmap": d.inode_bitmap,
                "inode_table": d.inode_table, "inode_table_last": d.inode_table + itable_blocks.saturating_sub(1),
                "free_blocks": d.free_blocks, "free_inodes": d.free_inodes, "directories": d.used_dirs,
                "unused_inodes": d.itable_unused, "flags": d.flag_names(), "checksum": d.checksum,
                "checksum_ok": d.checksum_ok,
                "block_bitmap_csum": fs.superblock().has_metadata_csum().then_some(d.block_bitmap_csum),
                "block_bitmap_csum_ok": bitmap_csum(bb),
                "inode_bitmap_csum": fs.superblock().has_metadata_csum().then_some(d.inode_bitmap_csum),
                "inode_bitmap_csum_ok": bitmap_csum(ib),
                "bitmap_error": bitmap_error,
                "fields": d.fields,
            }));
        } else {
            problems.extend(bitmap_error);
            let mut notes = Vec::new();
            if let Some(s) = place.superblock {
                notes.push(format!(
                    "{} sb {s}",
                    if g == 0 { "primary" } else { "backup" }
                ));
            }
            if let Some((a, b)) = place.descriptors {
                notes.push(format!("gdt {a}-{b}"));
            }
            if let Some((a, b)) = place.reserved_gdt {
                notes.push(format!("reserved gdt {a}-{b}"));
            }
            if let Some(m) = place.meta_descriptor {
                notes.push(format!("meta_bg gdt {m}"));
            }
            if d.flags != 0 && !d.flags_apply {
                notes.push(format!(
                    "bg_flags {:#x} ignored (no descriptor checksums)",
                    d.flags
                ));
            }
            for (name, c) in [("block bitmap", bb), ("inode bitmap", ib)] {
                match c {
                    Some(c) if c.ok() => notes.push(format!("{name} csum ok")),
                    Some(c) => notes.push(format!(
                        "{name} csum {:#010x} BAD (computed {:#010x})",
                        c.stored, c.computed
                    )),
                    None => {}
                }
            }
            writeln!(
                out,
                "{g:>6} {:>21} {:>12} {:>12} {:>21} {:>8} {:>8} {:>6}  {} {csum}{}{}",
                format!("{first}-{last}"),
                d.block_bitmap,
                d.inode_bitmap,
                format!(
                    "{}-{}",
                    d.inode_table,
                    d.inode_table + itable_blocks.saturating_sub(1)
                ),
                d.free_blocks,
                d.free_inodes,
                d.used_dirs,
                d.flag_names().join(","),
                if notes.is_empty() { "" } else { "; " },
                notes.join(", ")
            )?;
        }
    }
    for p in problems {
        writeln!(out, "error: {}", crate::escape::printable(&p))?;
    }
    Ok(list)
}
