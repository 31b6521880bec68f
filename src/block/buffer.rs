//! Page-aligned buffers for bulk reads.
//!
//! The kernel copies from the page cache into a user buffer fastest when
//! the destination is page-aligned, and glibc puts a large allocation 16
//! bytes past a page boundary (its chunk header). Measured on this
//! project's machine, 300 MiB of cached `pread` cost 193-211 ms of kernel
//! time into buffers at offsets 8 and 16 from a page, 71 ms at 0 and 86-91
//! ms at 32-64; qemu aligns its buffers the same way (`qemu_blockalign`).
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::ops::{Deref, DerefMut};

/// Alignment of [`AlignedBuf`]'s bytes.
pub const ALIGN: usize = 4096;

/// A zeroed, page-aligned byte buffer of a fixed length. The default is
/// empty and allocates nothing (a buffer kept for later reads).
#[derive(Default)]
pub struct AlignedBuf {
    /// `len + ALIGN` bytes; the aligned window starts at `start`.
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// A buffer of `len` zero bytes starting on a page boundary.
    pub fn new(len: usize) -> AlignedBuf {
        let bytes = vec![0u8; len.saturating_add(ALIGN)];
        let start = bytes.as_ptr().align_offset(ALIGN).min(ALIGN);
        AlignedBuf { bytes, start, len }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        let end = self.start.saturating_add(self.len);
        self.bytes.get(self.start..end).unwrap_or_default()
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        let end = self.start.saturating_add(self.len);
        self.bytes.get_mut(self.start..end).unwrap_or_default()
    }
}

/// A zeroed buffer that bytes fetched from a remote source are read
/// into and then shared without a copy ([`FetchBuf::into_bytes`]): the
/// probe's head of an NBD export, a walk's batch of scattered metadata.
/// From 2 MiB up an anonymous mapping the kernel is asked to back with
/// huge pages: as ordinary memory (one allocation or many small ones),
/// 8 MiB cost 2,048 page faults to fill and as many pages to free.
pub struct FetchBuf(Fetch);

enum Fetch {
    Heap(Vec<u8>),
    Mapped(memmap2::MmapMut),
}

/// Buffers from this size up are mapped ([`FetchBuf`]).
const MAPPED_FROM: usize = 2 << 20;

impl FetchBuf {
    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> FetchBuf {
        if len >= MAPPED_FROM {
            if let Ok(map) = memmap2::MmapMut::map_anon(len) {
                // Advice only: without huge pages the mapping is ordinary.
                #[cfg(target_os = "linux")]
                let _ = map.advise(memmap2::Advice::HugePage);
                return FetchBuf(Fetch::Mapped(map));
            }
        }
        FetchBuf(Fetch::Heap(vec![0u8; len]))
    }

    /// The memory the buffer may take: a mapping's length rounded up to
    /// whole huge pages (the kernel backs a partly used one whole), a
    /// heap buffer's own length. What a store keeping it counts.
    pub fn footprint(&self) -> u64 {
        match &self.0 {
            Fetch::Heap(v) => crate::bytes::u64_of(v.len()),
            Fetch::Mapped(m) => {
                crate::bytes::u64_of(m.len()).next_multiple_of(crate::bytes::u64_of(MAPPED_FROM))
            }
        }
    }

    /// The bytes, shared without a copy.
    pub fn into_bytes(self) -> bytes::Bytes {
        match self.0 {
            Fetch::Heap(v) => bytes::Bytes::from(v),
            Fetch::Mapped(m) => bytes::Bytes::from_owner(m),
        }
    }
}

impl Deref for FetchBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Fetch::Heap(v) => v,
            Fetch::Mapped(m) => m,
        }
    }
}

impl DerefMut for FetchBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.0 {
            Fetch::Heap(v) => v,
            Fetch::Mapped(m) => m,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetch_buffer_is_zeroed_and_keeps_what_is_read_into_it() {
        for len in [0usize, 512, MAPPED_FROM - 1, 8 << 20] {
            let mut buf = FetchBuf::zeroed(len);
            assert_eq!(matches!(buf.0, Fetch::Mapped(_)), len >= MAPPED_FROM);
            assert_eq!(buf.len(), len);
            assert!(buf.iter().all(|&b| b == 0));
            let whole = if len >= MAPPED_FROM {
                8 << 20
            } else {
                len as u64
            };
            assert_eq!(buf.footprint(), whole);
            if len == 0 {
                assert!(buf.into_bytes().is_empty());
                continue;
            }
            buf[0] = 1;
            buf[len - 1] = 2;
            let bytes = buf.into_bytes();
            assert_eq!((bytes.len(), bytes[0], bytes[len - 1]), (len, 1, 2));
            // Slices share it, and outlive the first handle.
            let tail = bytes.slice(len - 1..);
            drop(bytes);
            assert_eq!(tail[..], [2]);
        }
    }

    #[test]
    fn aligned_and_whole() {
        for len in [0, 1, 4095, 4096, 2 << 20] {
            let mut b = AlignedBuf::new(len);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_ptr() as usize % ALIGN, 0);
            assert!(b.iter().all(|&x| x == 0));
            if len > 0 {
                b[len - 1] = 7;
                assert_eq!(b[len - 1], 7);
            }
        }
    }
}
