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
    let reader = LayeredReader::new(chain)?;
    if json {
        // Streamed in qemu's own layout, so the output can even be diffed
        // as text against `qemu-img map --output=json`.
        let mut first = true;
        for entry in MapIter::new(&reader) {
            let entry = entry?;
            out.write_all(if first { b"[" } else { b",\n" })?;
            first = false;
            out.write_all(entry.qemu_json().as_bytes())?;
        }
        out.write_all(if first { b"[]\n" } else { b"]\n" })?;
        return Ok(());
    }
    let layers = chain.layers.len();
    let name_of = |e: &MapEntry| -> String {
        if !e.present {
            return "-".into();
        }
        let index = layers.saturating_sub(1).saturating_sub(e.depth as usize);
        let path = chain.layers.get(index).map_or("?", |l| l.path.as_str());
        let file = path.rsplit('/').next().unwrap_or(path);
        format!("{index} {}", printable(file))
    };
    let kind_of = |e: &MapEntry| match (e.present, e.data, e.zero, e.compressed) {
        (false, ..) => "unallocated (zeros)",
        (true, true, _, true) => "data, compressed",
        (true, true, _, false) => "data",
        _ => "zeros",
    };
    // Per layer (plus one slot for "no layer"): bytes and ranges.
    let mut held = vec![(0u64, 0u64); layers + 1];
    writeln!(
        out,
        "{:>18} {:>18} {:>10}  {:<24} kind",
        "start", "end", "length", "layer"
    )?;
    for entry in MapIter::new(&reader) {
        let e = entry?;
        writeln!(
            out,
            "{:>#18x} {:>#18x} {:>10}  {:<24} {}",
            e.start,
            e.start + e.length,
            human(e.length),
            name_of(&e),
            kind_of(&e)
        )?;
        let slot = if e.present {
            layers.saturating_sub(1).saturating_sub(e.depth as usize)
        } else {
            layers
        };
        held[slot].0 += e.length;
        held[slot].1 += 1;
    }
    writeln!(out, "\nwhat each layer serves:")?;
    for (index, layer) in chain.layers.iter().enumerate().rev() {
        let (bytes, ranges) = held[index];
        writeln!(
            out,
            "  layer {index}  {:<32} {:>10} in {ranges} range{}",
            printable(&layer.path),
            human(bytes),
            if ranges == 1 { "" } else { "s" }
        )?;
    }
    let (bytes, ranges) = held[layers];
    writeln!(
        out,
        "  no layer {:<32} {:>10} in {ranges} range{} (reads as zeros)",
        "",
        human(bytes),
        if ranges == 1 { "" } else { "s" }
    )?;
    Ok(())
}
