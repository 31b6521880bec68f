//! `layerscope diff --bitmap NAME`: the files a persistent dirty bitmap
//! marks, i.e. what an incremental backup from it will carry.
use std::io::Write;

use serde_json::json;

use super::diff::{DiffArgs, Disk};
use crate::block::BlockError;
use crate::diff::dirty::{dirty_files, DirtyRanges};
use crate::escape::printable;
use crate::units::human;

/// Lists the files of the top layer's filesystem that bitmap `name`
/// marks.
///
/// # Errors
/// No such bitmap (or not a qcow2 file, nor an NBD server offering it);
/// a bitmap too fragmented to hold; the filesystem cannot be opened.
pub(super) fn run(
    args: &DiffArgs,
    disk: &Disk,
    name: &str,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let top = disk.chain.layers.len().saturating_sub(1);
    let (fs, _) = disk.view(top)?;
    let mut dirty = DirtyRanges::new(fs.block_size());
    let mut fragmented = None;
    let geometry = disk.geometry.clone();
    let mut add = |offset: u64, len: u64, is_dirty: bool| -> Result<(), BlockError> {
        if !is_dirty {
            return Ok(());
        }
        dirty.add_disk(&geometry, offset, len).map_err(|e| {
            let what = e.to_string();
            fragmented = Some(e);
            BlockError::Internal { what }
        })
    };
    let layer = disk
        .chain
        .top()
        .ok_or_else(|| anyhow::anyhow!("an empty chain"))?;
    let (source, granularity) = if let Some(q) = layer.qcow2.as_ref() {
        let g = q
            .bitmaps()?
            .iter()
            .find(|b| b.name == name)
            .map(|b| b.granularity());
        q.bitmap_runs(name, &mut add)?;
        (printable(&layer.path), g)
    } else if let Some(nbd) = layer.nbd.as_ref() {
        // The context was negotiated on the chain's own connection (the
        // command line asked for it: see `RemoteArgs::contexts`).
        let ctx = format!("qemu:dirty-bitmap:{name}");
        let mut each = |o: u64, l: u64, flags: u32| add(o, l, flags & 1 != 0);
        let len = crate::block::BlockSource::len(nbd.as_ref());
        if let Some(stop) = nbd.context_map(&ctx, 0, len, &mut each)? {
            anyhow::bail!("{}: {stop}", printable(&args.image.image));
        }
        (format!("{} ({ctx})", printable(&args.image.image)), None)
    } else {
        anyhow::bail!(
            "{}: persistent bitmaps are a qcow2 feature (or an NBD server's qemu:dirty-bitmap:NAME), and this is {}",
            printable(&layer.path),
            layer.format.name()
        );
    };
    if let Some(e) = fragmented {
        return Err(e.into());
    }
    dirty.finish();
    let bar = super::diff::Bar::new();
    let found = dirty_files(fs.as_ref(), &dirty, &bar)?;
    bar.0.finish_and_clear();
    let volume = disk.volume_name();
    if args.json {
        let v = json!({
            "bitmap": name,
            "source": source,
            "granularity": granularity,
            "volume": printable(volume),
            "filesystem": fs.kind().name(),
            "dirty_bytes": found.dirty_bytes,
            "file_bytes": found.file_bytes,
            "files_walked": found.walked,
            "files": found.files,
            "notes": found.notes,
        });
        crate::escape::json::to_writer_pretty(&mut *out, &v)?;
        writeln!(out)?;
        return Ok(());
    }
    for f in &found.files {
        let mut what = Vec::new();
        if f.dirty_bytes > 0 {
            what.push(format!(
                "blocks {} of {}",
                human(f.dirty_bytes),
                human(f.size)
            ));
        }
        if f.node_dirty {
            what.push("record".to_owned());
        }
        writeln!(
            out,
            "dirty  {:<9}  {}  ({})",
            f.file_type,
            f.path,
            what.join("; ")
        )?;
    }
    writeln!(
        out,
        "{} file(s) marked by bitmap {}{}: {} dirty in {} ({}), {} of it in files' blocks; {} name(s) walked",
        found.files.len(),
        printable(name),
        granularity.map(|g| format!(" (granularity {})", human(g))).unwrap_or_default(),
        human(found.dirty_bytes),
        printable(volume),
        fs.kind().name(),
        human(found.file_bytes),
        found.walked
    )?;
    for n in &found.notes {
        eprintln!("layerscope: note: {}", printable(n));
    }
    Ok(())
}
