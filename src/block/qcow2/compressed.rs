//! Decompressing one qcow2 compressed cluster (zlib raw deflate or zstd).
//!
//! The stored length is rounded up to whole sectors, so bytes after the end
//! of the stream are normal and ignored. A stream that inflates to *more*
//! than one cluster is damage: qemu returns EIO for such a zstd cluster,
//! and we refuse zlib ones the same way (qemu's zlib path keeps the first
//! cluster's worth and drops the rest; silently showing part of a damaged
//! cluster would hide that). Nothing is ever produced past one cluster: a
//! hostile stream cannot make us allocate more.
use std::io::Read;

use super::header::Compression;

/// Decompresses `input` into exactly `out.len()` bytes.
///
/// # Errors
/// A one-line description of what went wrong in the stream.
pub fn decompress(kind: Compression, input: &[u8], out: &mut [u8]) -> Result<(), String> {
    match kind {
        Compression::Zlib => inflate_raw(input, out),
        Compression::Zstd => unzstd(input, out),
    }
}

fn inflate_raw(input: &[u8], out: &mut [u8]) -> Result<(), String> {
    use flate2::{Decompress, FlushDecompress, Status};
    // qemu writes raw deflate (window bits -12), no zlib header.
    let mut inflater = Decompress::new(false);
    let status = inflater
        .decompress(input, out, FlushDecompress::None)
        .map_err(|e| format!("zlib: {e}"))?;
    let produced = inflater.total_out();
    let cluster = u64::try_from(out.len()).unwrap_or(u64::MAX);
    match status {
        Status::StreamEnd if produced == cluster => Ok(()),
        _ if produced == cluster => {
            // The cluster is full but the stream did not say it ended:
            // one more byte tells a stream cut at the cluster's end (as
            // qemu accepts) from one that goes on past it.
            let used = usize::try_from(inflater.total_in()).unwrap_or(usize::MAX);
            let rest = input.get(used..).unwrap_or_default();
            let mut extra = [0u8; 1];
            let _ = inflater.decompress(rest, &mut extra, FlushDecompress::None);
            if inflater.total_out() > produced {
                Err(format!(
                    "zlib stream inflates past the cluster size ({} bytes)",
                    out.len()
                ))
            } else {
                Ok(())
            }
        }
        Status::StreamEnd => Err(format!(
            "zlib stream ended after {produced} bytes, a cluster has {}",
            out.len()
        )),
        _ => Err(format!(
            "zlib stream truncated after {produced} of {} bytes",
            out.len()
        )),
    }
}

fn unzstd(input: &[u8], out: &mut [u8]) -> Result<(), String> {
    let mut source = input;
    let mut decoder = ruzstd::decoding::StreamingDecoder::new(&mut source)
        .map_err(|e| format!("zstd frame header: {e}"))?;
    let mut filled = 0;
    while let Some(rest) = out.get_mut(filled..).filter(|r| !r.is_empty()) {
        match decoder.read(rest) {
            Ok(0) => {
                return Err(format!(
                    "zstd stream ended after {filled} bytes, a cluster has {}",
                    out.len()
                ))
            }
            // n <= rest.len(): filled stays within out.
            Ok(n) => filled = filled.saturating_add(n),
            Err(e) => return Err(format!("zstd: {e}")),
        }
    }
    // qemu (qcow2_zstd_decompress) wants the frame to end with the
    // cluster: more output, or a frame that is not finished, is EIO.
    let mut extra = [0u8; 1];
    match decoder.read(&mut extra) {
        Ok(0) => Ok(()),
        Ok(_) => Err(format!(
            "zstd stream inflates past the cluster size ({} bytes)",
            out.len()
        )),
        Err(e) => Err(format!(
            "zstd: frame not finished at the cluster's end: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_deflate_roundtrip_and_truncation() {
        use flate2::{write::DeflateEncoder, Compression as Level};
        use std::io::Write;
        let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let mut enc = DeflateEncoder::new(Vec::new(), Level::default());
        enc.write_all(&data).unwrap();
        let mut packed = enc.finish().unwrap();
        packed.extend_from_slice(&[0xAA; 100]); // sector padding after the stream
        let mut out = vec![0; 4096];
        decompress(Compression::Zlib, &packed, &mut out).unwrap();
        assert_eq!(out, data);
        let err = decompress(Compression::Zlib, &packed[..10], &mut out).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        let mut big = vec![0; 8192];
        let err = decompress(Compression::Zlib, &packed, &mut big).unwrap_err();
        assert!(err.contains("ended after 4096"), "{err}");
    }

    #[test]
    fn streams_that_inflate_past_the_cluster_are_errors() {
        use flate2::{write::DeflateEncoder, Compression as Level};
        use std::io::Write;
        let data = vec![0x5au8; 8192];
        let mut enc = DeflateEncoder::new(Vec::new(), Level::default());
        enc.write_all(&data).unwrap();
        let packed = enc.finish().unwrap();
        let mut out = vec![0; 4096];
        let err = decompress(Compression::Zlib, &packed, &mut out).unwrap_err();
        assert!(err.contains("inflates past the cluster size"), "{err}");
        let zstd = ruzstd::encoding::compress_to_vec(
            &data[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let err = decompress(Compression::Zstd, &zstd, &mut out).unwrap_err();
        assert!(err.contains("inflates past the cluster size"), "{err}");
        // Exactly one cluster is fine, padding after the frame too.
        let mut exact = ruzstd::encoding::compress_to_vec(
            &data[..4096],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        exact.extend_from_slice(&[0; 300]);
        decompress(Compression::Zstd, &exact, &mut out).unwrap();
        assert_eq!(out, &data[..4096]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut out = vec![0; 65536];
        for seed in 0..64u8 {
            let junk: Vec<u8> = (0..300u32)
                .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed))
                .collect();
            let _ = decompress(Compression::Zlib, &junk, &mut out);
            let _ = decompress(Compression::Zstd, &junk, &mut out);
        }
    }
}
