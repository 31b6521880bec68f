//! `layerscope read`: raw bytes of the virtual disk, for pipes.
use std::io::Write;

use super::ReadArgs;
use crate::block::chain::Chain;
use crate::block::layered::LayeredReader;
use crate::block::{check_range, BlockSource};

/// Bytes per read: large enough that per-call overhead vanishes.
const BUF: u64 = 4 << 20;

/// Copies `[offset, offset + length)` of the disk to `out`.
///
/// # Errors
/// A range outside the disk; read errors naming the layer and offset;
/// write errors (a closed pipe is reported as such, and the binary exits 0).
pub fn run(chain: &Chain, args: &ReadArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let (offset, length) = (args.offset, args.length);
    let reader = LayeredReader::new(chain)?;
    let size = reader.len();
    let length = length.unwrap_or(size.saturating_sub(offset));
    check_range(reader.name(), size, offset, length)?;
    let mut buf = vec![0u8; BUF.min(length) as usize];
    let mut pos = offset;
    let end = offset + length;
    while pos < end {
        let n = BUF.min(end - pos) as usize;
        reader.read_at(pos, &mut buf[..n])?;
        out.write_all(&buf[..n])?;
        pos += n as u64;
    }
    out.flush()?;
    if args.hits {
        let (layers, nowhere) = reader.hits().totals();
        let layers: Vec<_> = layers
            .iter()
            .zip(&chain.layers)
            .map(|(t, l)| serde_json::json!({"index": l.index, "path": l.path, "bytes": t.bytes, "reads": t.reads}))
            .collect();
        let line = serde_json::json!({"layers": layers, "nowhere": nowhere});
        eprintln!("{line}");
    }
    Ok(())
}
