//! `layerscope map --bitmap NAME`: a persistent dirty bitmap's ranges, in
//! nbdinfo's words, read from the qcow2 file itself (no qemu-nbd needed).
use std::io::Write;

use anyhow::Context;

use crate::block::chain::Chain;
use crate::block::BlockError;
use crate::escape::printable;

/// Prints the runs of bitmap `name` of the top layer: text as
/// `nbdinfo --map` prints them, or its `--json` array.
///
/// # Errors
/// A top layer that is not qcow2; no such bitmap; a damaged bitmap; write
/// errors.
pub fn run(chain: &Chain, name: &str, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let top = chain.top().context("an empty chain")?;
    let Some(q) = top.qcow2.as_ref() else {
        anyhow::bail!(
            "{}: persistent bitmaps are a qcow2 feature, and this is {}",
            printable(&top.path),
            top.format.name()
        );
    };
    let mut first = true;
    let mut each = |offset: u64, len: u64, dirty: bool| -> Result<(), BlockError> {
        let (kind, what) = if dirty { (1, "dirty") } else { (0, "clean") };
        let r = if json {
            let line = format!(
                "{}{{ \"offset\": {offset}, \"length\": {len}, \"type\": {kind}, \"description\": \"{what}\"}}",
                if first { "[\n" } else { ",\n" }
            );
            out.write_all(line.as_bytes())
        } else {
            writeln!(out, "{offset:>10}  {len:>10}  {kind:>3}  {what}")
        };
        first = false;
        r.map_err(|e| BlockError::io("stdout", "writing the bitmap map", offset, e))
    };
    q.bitmap_runs(name, &mut each)?;
    if json {
        out.write_all(if first { b"[\n]\n" } else { b"\n]\n" })?;
    }
    Ok(())
}
