//! `layerscope map`: which layer holds each range of the disk.
use std::io::Write;

use crate::block::chain::Chain;
use crate::block::layered::LayeredReader;
use crate::block::map::{MapEntry, MapIter};
use crate::escape::printable;
use crate::units::human;

/// Prints the allocation map.
///
/// # Errors
/// Metadata errors of any layer; write errors.
pub fn run(chain: &Chain, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    if let Some(nbd) = chain.layers.first().and_then(|l| l.nbd.as_ref()) {
        // Over NBD the server's chain is known only through its metadata
        // contexts: the whole export is mapped in one go (memory: a few
        // entries per allocated range).
        let map = nbd.map_entries(0, crate::block::BlockSource::len(nbd.as_ref()))?;
        print(chain, map.entries.into_iter().map(Ok), json, out, true)?;
        return match map.stopped {
            // What was mapped is printed; the rest is an error, so a
            // script does not take a partial map for the whole export.
            Some(stop) => {
                out.flush()?;
                Err(anyhow::anyhow!("{}: {stop}", printable(&chain_name(chain))))
            }
            None => Ok(()),
        };
    }
    let reader = LayeredReader::new(chain)?;
    let entries = if json {
        MapIter::qemu(&reader)
    } else {
        MapIter::new(&reader)
    };
    print(chain, entries, json, out, false)
}

fn chain_name(chain: &Chain) -> String {
    chain.top().map(|l| l.path.clone()).unwrap_or_default()
}

/// Prints map entries as JSON (qemu's layout) or a table with a summary.
fn print(
    chain: &Chain,
    entries: impl Iterator<Item = Result<MapEntry, crate::block::BlockError>>,
    json: bool,
    out: &mut dyn Write,
    remote: bool,
) -> anyhow::Result<()> {
    if json {
        // Streamed in qemu's own layout, so the output can even be diffed
        // as text against `qemu-img map --output=json`.
        let mut first = true;
        for entry in entries {
            let entry = entry?;
            out.write_all(if first { b"[" } else { b",\n" })?;
            first = false;
            out.write_all(entry.qemu_json().as_bytes())?;
        }
        out.write_all(if first { b"[]\n" } else { b"]\n" })?;
        return Ok(());
    }
    if remote {
        return print_remote(entries, out);
    }
    let layers = chain.layers.len();
    let name_of = |e: &MapEntry| -> String {
        if !e.present {
            return "-".into();
        }
        let index = layers
            .saturating_sub(1)
            .saturating_sub(crate::bytes::us(e.depth));
        let path = chain.layers.get(index).map_or("?", |l| l.path.as_str());
        let file = path.rsplit('/').next().unwrap_or(path);
        format!("{index} {}", printable(file))
    };
    // Per layer (plus one slot for "no layer"): bytes and ranges.
    let mut held = vec![(0u64, 0u64); layers.saturating_add(1)];
    header(out, "layer")?;
    for entry in entries {
        let e = entry?;
        row(out, &e, &name_of(&e))?;
        let slot = if e.present {
            layers
                .saturating_sub(1)
                .saturating_sub(crate::bytes::us(e.depth))
        } else {
            layers
        };
        if let Some(h) = held.get_mut(slot) {
            h.0 = h.0.saturating_add(e.length);
            h.1 = h.1.saturating_add(1);
        }
    }
    writeln!(out, "\nwhat each layer serves:")?;
    for (index, layer) in chain.layers.iter().enumerate().rev() {
        let (bytes, ranges) = held.get(index).copied().unwrap_or_default();
        writeln!(
            out,
            "  layer {index}  {:<32} {:>10} in {ranges} range{}",
            printable(&layer.path),
            human(bytes),
            if ranges == 1 { "" } else { "s" }
        )?;
    }
    let (bytes, ranges) = held.get(layers).copied().unwrap_or_default();
    writeln!(
        out,
        "  no layer {:<32} {:>10} in {ranges} range{} (reads as zeros)",
        "",
        human(bytes),
        if ranges == 1 { "" } else { "s" }
    )?;
    Ok(())
}

/// The table's heading.
fn header(out: &mut dyn Write, layer: &str) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>18} {:>18} {:>10}  {layer:<24} kind",
        "start", "end", "length"
    )
}

/// One range of the table.
fn row(out: &mut dyn Write, e: &MapEntry, layer: &str) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>#18x} {:>#18x} {:>10}  {layer:<24} {}",
        e.start,
        e.start.saturating_add(e.length),
        human(e.length),
        kind_of(e)
    )
}

fn kind_of(e: &MapEntry) -> &'static str {
    match (e.present, e.data, e.zero, e.compressed) {
        (false, ..) => "unallocated (zeros)",
        (true, true, _, true) => "data, compressed",
        (true, true, _, false) => "data",
        _ => "zeros",
    }
}

/// The map of an NBD export: layers are known by depth only (1 is the
/// server's top layer).
fn print_remote(
    entries: impl Iterator<Item = Result<MapEntry, crate::block::BlockError>>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut by_depth: std::collections::BTreeMap<Option<u64>, (u64, u64)> = Default::default();
    header(out, "server layer")?;
    for entry in entries {
        let e = entry?;
        let layer = if e.present {
            format!("depth {}", e.depth)
        } else {
            "-".into()
        };
        row(out, &e, &layer)?;
        let slot = by_depth.entry(e.present.then_some(e.depth)).or_default();
        slot.0 = slot.0.saturating_add(e.length);
        slot.1 = slot.1.saturating_add(1);
    }
    writeln!(out, "\nwhat each server layer serves (depth 0 is the top):")?;
    for (depth, (bytes, ranges)) in &by_depth {
        let name = depth.map_or_else(|| "no layer".to_owned(), |d| format!("depth {d}"));
        writeln!(
            out,
            "  {name:<10} {:>10} in {ranges} range{}",
            human(*bytes),
            if *ranges == 1 { "" } else { "s" }
        )?;
    }
    Ok(())
}
