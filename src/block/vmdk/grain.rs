//! Compressed grains of a streamOptimized extent: an optional grain marker
//! (`lba: u64`, `size: u32`) followed by a zlib stream that inflates to at
//! most one grain (qemu's `vmdk_read_extent`).
//!
//! Bounded: at most two grains of input are read, and output never grows
//! past one grain; a stream that would inflate further is an error, not a
//! bigger buffer.
use flate2::{Decompress, FlushDecompress, Status};

use crate::block::image::{le32, read_exact};
use crate::block::storage::Storage;
use crate::block::BlockError;

/// Size of a grain marker before the compressed bytes.
pub const MARKER_LEN: u64 = 12;

/// Inflates a zlib stream into at most `max` bytes; the stream must end
/// within them.
///
/// # Errors
/// A one-line description of what is wrong with the stream.
pub fn inflate(input: &[u8], max: usize) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; max];
    let mut z = Decompress::new(true);
    let status = z
        .decompress(input, &mut out, FlushDecompress::Finish)
        .map_err(|e| format!("zlib: {e}"))?;
    let produced = usize::try_from(z.total_out()).unwrap_or(usize::MAX);
    match status {
        Status::StreamEnd => {
            out.truncate(produced);
            Ok(out)
        }
        _ if produced >= max => Err(format!(
            "the compressed grain inflates past the grain size ({max} bytes)"
        )),
        _ => Err(format!(
            "the compressed grain's zlib stream is truncated after {produced} bytes"
        )),
    }
}

/// Reads and inflates the grain stored at `host`; returns `want` bytes
/// (the grain's part of the extent). `marker` is the grain's expected
/// sector when grains carry markers (its value is not checked, as in
/// qemu), `None` when the compressed bytes start at `host`.
///
/// # Errors
/// `Corrupt` naming the grain's offset.
pub fn read_compressed(
    storage: &dyn Storage,
    path: &str,
    host: u64,
    grain_bytes: u64,
    want: u64,
    marker: Option<u64>,
) -> Result<Vec<u8>, BlockError> {
    let file_len = storage.len();
    let avail = file_len
        .saturating_sub(host)
        .min(grain_bytes.saturating_mul(2));
    let mut buf = vec![0u8; usize::try_from(avail).unwrap_or(0)];
    read_exact(storage, path, "VMDK compressed grain", host, &mut buf)?;
    let bad = |detail: String| BlockError::corrupt(path, "VMDK compressed grain", host, detail);
    let data = if marker.is_some() {
        let size = le32(&buf, 8).ok_or_else(|| bad("grain marker truncated".into()))?;
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let start = usize::try_from(MARKER_LEN).unwrap_or(12);
        if size == 0 {
            return Err(bad("grain marker says 0 compressed bytes".into()));
        }
        buf.get(start..start.saturating_add(size)).ok_or_else(|| {
            bad(format!(
                "grain marker says {size} compressed bytes, more than the {} that follow it (limit: two grains)",
                buf.len().saturating_sub(start)
            ))
        })?
    } else {
        let n = usize::try_from(grain_bytes)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        buf.get(..n).unwrap_or_default()
    };
    let max = usize::try_from(grain_bytes).unwrap_or(usize::MAX);
    let mut out = inflate(data, max).map_err(bad)?;
    let want = usize::try_from(want).unwrap_or(usize::MAX);
    if out.len() < want {
        return Err(bad(format!(
            "the grain inflates to {} bytes, the extent needs {want} from it",
            out.len()
        )));
    }
    out.truncate(want);
    Ok(out)
}

#[cfg(test)]
#[allow(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::as_conversions
)]
mod tests {
    use super::*;
    use flate2::{write::ZlibEncoder, Compression};
    use std::io::Write;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn inflates_within_bounds() {
        let data = vec![7u8; 4096];
        assert_eq!(inflate(&zlib(&data), 4096).unwrap(), data);
        let err = inflate(&zlib(&vec![1u8; 8192]), 4096).unwrap_err();
        assert!(err.contains("inflates past"), "{err}");
        let z = zlib(&data);
        let err = inflate(&z[..z.len() / 2], 4096).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        assert!(inflate(b"garbage garbage", 4096).is_err());
    }

    #[test]
    fn marker_size_is_bounded() {
        use crate::block::storage::MemStorage;
        let mut file = vec![0u8; 512];
        let z = zlib(&[3u8; 1024]);
        let mut g = 0u64.to_le_bytes().to_vec();
        g.extend_from_slice(&(z.len() as u32).to_le_bytes());
        g.extend_from_slice(&z);
        file.extend_from_slice(&g);
        let s = MemStorage::new(file.clone());
        let out = read_compressed(&s, "f", 512, 1024, 1024, Some(0)).unwrap();
        assert_eq!(out, vec![3u8; 1024]);
        file[512 + 8..512 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        let s = MemStorage::new(file);
        let err = read_compressed(&s, "f", 512, 1024, 1024, Some(0)).unwrap_err();
        assert!(err.to_string().contains("grain marker says"), "{err}");
    }
}
