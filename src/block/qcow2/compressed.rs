//! Decompressing one qcow2 compressed cluster (zlib raw deflate or zstd).
//!
//! qemu accepts a cluster when the output buffer is filled exactly, even if
//! the compressed stream goes on (the stored length is rounded up to whole
//! sectors, so trailing bytes are normal). We do the same, and never produce
//! more than one cluster: a hostile stream cannot make us allocate more.
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
        .decompress(input, out, FlushDecompress::Finish)
        .map_err(|e| format!("zlib: {e}"))?;
    let produced = inflater.total_out();
    match status {
        _ if produced == out.len() as u64 => Ok(()),
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
    while filled < out.len() {
        match decoder.read(&mut out[filled..]) {
            Ok(0) => {
                return Err(format!(
                    "zstd stream ended after {filled} bytes, a cluster has {}",
                    out.len()
                ))
            }
            Ok(n) => filled += n,
            Err(e) => return Err(format!("zstd: {e}")),
        }
    }
    Ok(())
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
