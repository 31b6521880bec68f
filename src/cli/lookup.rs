//! `layerscope path` (inode → paths, like `debugfs ncheck`) and `owner`
//! (block → file or structure, like `debugfs icheck`, which also names
//! the filesystem's own metadata blocks icheck leaves "not found").
//! Both walk the tree through the [`crate::fs::Filesystem`] seam, so they
//! work for ext, XFS and FAT alike.
use crate::fs::ext::superblock::sb;
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::ops::ControlFlow;

use clap::Args;
use serde_json::json;

use super::walk::walk;
use super::FsArgs;
use crate::fs::{Filesystem, NodeId, RunKind};

// Arguments of `path`.
#[derive(Debug, Args)]
pub struct PathLookupArgs {
    #[command(flatten)]
    pub fs: FsArgs,
    /// Inode numbers (`12` or debugfs's `<12>`).
    #[arg(required = true, value_parser = parse_node)]
    pub inodes: Vec<NodeId>,
}

// Arguments of `owner`.
#[derive(Debug, Args)]
pub struct OwnerArgs {
    #[command(flatten)]
    pub fs: FsArgs,
    /// Filesystem block numbers.
    #[arg(long = "block", value_name = "N", required_unless_present = "offsets")]
    pub blocks: Vec<u64>,
    /// Byte offsets on the volume (`4096`, `0x1000`, `64K`).
    #[arg(long = "offset", value_name = "BYTES", value_parser = crate::units::parse_size)]
    pub offsets: Vec<u64>,
}

fn parse_node(text: &str) -> Result<NodeId, String> {
    let t = text
        .strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or(text);
    t.parse()
        .map_err(|_| format!("{text:?}: not an inode number (12 or <12>)"))
}

fn warn_line(w: String) {
    eprintln!("layerscope: warning: {}", crate::escape::printable(&w));
}

/// `path`.
///
/// # Errors
/// Opening the image or the filesystem.
pub fn path(args: &PathLookupArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let opened = super::fs::open_full(&args.fs)?;
    let fs: &dyn Filesystem = fs_of(&opened);
    let wanted: HashSet<NodeId> = args.inodes.iter().copied().collect();
    let mut found: BTreeMap<NodeId, Vec<Vec<u8>>> = BTreeMap::new();
    if wanted.contains(&fs.root()) {
        found.entry(fs.root()).or_default().push(b"/".to_vec());
    }
    walk(
        fs,
        fs.root(),
        b"/",
        &mut |v| {
            if wanted.contains(&v.entry.node) {
                found.entry(v.entry.node).or_default().push(v.path.to_vec());
            }
            ControlFlow::Continue(())
        },
        &mut warn_line,
    );
    if args.fs.json {
        let list: Vec<_> = args
            .inodes
            .iter()
            .map(|n| {
                let paths: Vec<String> = found
                    .get(n)
                    .into_iter()
                    .flatten()
                    .map(|p| crate::escape::printable_bytes(p))
                    .collect();
                json!({"inode": n, "paths": paths})
            })
            .collect();
        crate::escape::json::to_writer_pretty(&mut *out, &list)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "Inode\tPathname")?;
    for n in &args.inodes {
        match found.get(n) {
            Some(paths) => {
                for p in paths {
                    writeln!(out, "{n}\t{}", crate::escape::printable_bytes(p))?;
                }
            }
            None => writeln!(out, "{n}\t<no path found>")?,
        }
    }
    Ok(())
}

/// What holds one block.
#[derive(Clone, Debug, Default)]
struct Holder {
    /// A structure of the filesystem (`group 0 inode table: inodes 1-16`).
    structure: Option<String>,
    node: Option<NodeId>,
    /// What part of the node: `data`, `unwritten`, `map level 1`, `xattr`.
    kind: &'static str,
    /// The byte offset in the file (data).
    logical: Option<u64>,
    paths: Vec<Vec<u8>>,
}

/// `owner`.
///
/// # Errors
/// Opening the image or the filesystem.
pub fn owner(args: &OwnerArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let opened = super::fs::open_full(&args.fs)?;
    let fs: &dyn Filesystem = fs_of(&opened);
    let bs = fs.block_size().max(1);
    let mut targets: Vec<u64> = args.blocks.clone();
    targets.extend(args.offsets.iter().map(|o| o.checked_div(bs).unwrap_or(0)));
    let mut holders: BTreeMap<u64, Holder> =
        targets.iter().map(|&b| (b, Holder::default())).collect();
    if let Some(ext) = fs.as_any().downcast_ref::<crate::fs::ext::Ext4>() {
        ext_structures(ext, &mut holders);
    }
    // The files: each node's runs once (hard links add paths).
    let mut runs_seen: HashSet<NodeId> = HashSet::new();
    let mut holding: HashSet<NodeId> = HashSet::new();
    let root = fs.root();
    let mut visit_node = |node: NodeId, path: &[u8], holders: &mut BTreeMap<u64, Holder>| {
        if holding.contains(&node) {
            for h in holders.values_mut().filter(|h| h.node == Some(node)) {
                h.paths.push(path.to_vec());
            }
            return;
        }
        if !runs_seen.insert(node) {
            return;
        }
        let mut problems = Vec::new();
        let _ = fs.runs(node, &mut problems, &mut |r| {
            let (start, end) = (
                r.physical.checked_div(bs).unwrap_or(0),
                (r.physical.saturating_add(r.len)).div_ceil(bs),
            );
            for (&b, h) in holders.range_mut(start..end) {
                if h.node.is_some() || h.structure.is_some() {
                    continue;
                }
                h.node = Some(node);
                h.paths.push(path.to_vec());
                h.kind = match r.kind {
                    RunKind::Data => "data",
                    RunKind::Unwritten => "unwritten",
                    RunKind::Meta { .. } => "map",
                    #[allow(unreachable_patterns)]
                    _ => "attributes",
                };
                if matches!(r.kind, RunKind::Data | RunKind::Unwritten) {
                    h.logical = Some(
                        r.logical
                            .saturating_add(b.saturating_mul(bs).saturating_sub(r.physical)),
                    );
                }
                holding.insert(node);
            }
            ControlFlow::Continue(())
        });
    };
    if holders.values().all(|h| h.structure.is_some()) {
        // Filesystem structures all: no file holds them, and a walk of
        // the tree would only confirm it.
        return print_owners(args, fs, &targets, &holders, out);
    }
    visit_node(root, b"/", &mut holders);
    // ext's reserved inodes (the journal, the resize inode, …) hold
    // blocks no path reaches; icheck finds them, so does this.
    if let Some(ext) = fs.as_any().downcast_ref::<crate::fs::ext::Ext4>() {
        let first = ext.superblock().get(sb!("s_first_ino")).clamp(1, 1024);
        for ino in 1..first {
            if ino != root {
                visit_node(ino, format!("<{ino}>").as_bytes(), &mut holders);
            }
        }
    }
    walk(
        fs,
        root,
        b"/",
        &mut |v| {
            visit_node(v.entry.node, v.path, &mut holders);
            ControlFlow::Continue(())
        },
        &mut warn_line,
    );
    print_owners(args, fs, &targets, &holders, out)
}

/// `owner`'s answer: each block asked about and what holds it.
fn print_owners(
    args: &OwnerArgs,
    fs: &dyn Filesystem,
    targets: &[u64],
    holders: &BTreeMap<u64, Holder>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let bs = fs.block_size().max(1);
    let describe = |h: &Holder| -> String {
        if let Some(s) = &h.structure {
            return s.clone();
        }
        match h.node {
            Some(n) => {
                let paths: Vec<String> = h
                    .paths
                    .iter()
                    .map(|p| crate::escape::printable_bytes(p))
                    .collect();
                let at = h
                    .logical
                    .map(|l| format!(" at file offset {l}"))
                    .unwrap_or_default();
                format!("{} {} ({}{at})", fs.node_name(n), paths.join(" "), h.kind)
            }
            None => "<block not found>".into(),
        }
    };
    if args.fs.json {
        let list: Vec<_> = targets
            .iter()
            .map(|b| {
                let h = holders.get(b).cloned().unwrap_or_default();
                json!({
                    "block": b,
                    "offset": b.saturating_mul(bs),
                    "structure": h.structure,
                    "node": h.node,
                    "kind": (h.node.is_some()).then_some(h.kind),
                    "file_offset": h.logical,
                    "paths": h.paths.iter().map(|p| crate::escape::printable_bytes(p)).collect::<Vec<_>>(),
                    "found": h.node.is_some() || h.structure.is_some(),
                })
            })
            .collect();
        crate::escape::json::to_writer_pretty(&mut *out, &list)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "Block\tOwner")?;
    for b in targets {
        let h = holders.get(b).cloned().unwrap_or_default();
        writeln!(out, "{b}\t{}", crate::escape::printable(&describe(&h)))?;
    }
    Ok(())
}

/// The ext structures holding any of `holders`' blocks: superblock and
/// descriptor copies, reserved descriptor blocks, bitmaps, inode tables
/// (with the inodes in that block).
fn ext_structures(fs: &crate::fs::ext::Ext4, holders: &mut BTreeMap<u64, Holder>) {
    let sb = fs.superblock();
    let ipb = sb
        .block_size
        .checked_div(u64::from(sb.inode_size))
        .unwrap_or(1)
        .max(1);
    let ipg = u64::from(sb.inodes_per_group);
    let itable_blocks = ipg
        .saturating_mul(u64::from(sb.inode_size))
        .div_ceil(sb.block_size.max(1));
    for g in 0..sb.group_count() {
        // Every block asked about is named: the other groups' structures
        // cannot be them (a block has one owner).
        if holders.values().all(|h| h.structure.is_some()) {
            break;
        }
        let p = crate::fs::ext::group_desc::placement(sb, g);
        // The name is made only for a block asked about: a disk of
        // millions of groups costs a lookup per structure, not a string.
        let mut name = |range: (u64, u64), what: &dyn Fn() -> String| {
            for (_, h) in holders.range_mut(range.0..=range.1) {
                if h.structure.is_none() {
                    h.structure = Some(what());
                }
            }
        };
        if let Some(s) = p.superblock {
            name((s, s), &|| {
                format!(
                    "group {g} {} superblock",
                    if g == 0 { "primary" } else { "backup" }
                )
            });
        }
        if let Some(r) = p.descriptors {
            name(r, &|| format!("group {g} group descriptors"));
        }
        if let Some(r) = p.reserved_gdt {
            name(r, &|| format!("group {g} reserved GDT blocks"));
        }
        if let Some(m) = p.meta_descriptor {
            name((m, m), &|| format!("group {g} meta_bg group descriptors"));
        }
        let Ok(d) = fs.group(g) else { continue };
        name((d.block_bitmap, d.block_bitmap), &|| {
            format!("group {g} block bitmap")
        });
        name((d.inode_bitmap, d.inode_bitmap), &|| {
            format!("group {g} inode bitmap")
        });
        let last = d
            .inode_table
            .saturating_add(itable_blocks.saturating_sub(1));
        for (&b, h) in holders.range_mut(d.inode_table..=last) {
            if h.structure.is_none() {
                let first = g
                    .saturating_mul(ipg)
                    .saturating_add(b.saturating_sub(d.inode_table).saturating_mul(ipb))
                    .saturating_add(1);
                h.structure = Some(format!(
                    "group {g} inode table: inodes {first}-{}",
                    first.saturating_add(ipb).saturating_sub(1)
                ));
            }
        }
    }
}

/// The filesystem of an opened volume, through the seam.
fn fs_of(opened: &super::fs::Opened) -> &dyn Filesystem {
    opened.fs.as_ref()
}
