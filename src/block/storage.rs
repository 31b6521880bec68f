//! Where a layer's bytes live: a file opened read-only, or bytes in memory
//! (the embedded demo chain). Format readers see only [`Storage`].
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Arc;

/// Positional, read-only access to the bytes of one image file.
pub trait Storage: Send + Sync {
    /// The file's length in bytes.
    fn len(&self) -> u64;

    /// True when the file has no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    ///
    /// # Errors
    /// `UnexpectedEof` when the range passes the end of the file.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// The next run at or after `offset` as `(is_data, end)`: where the
    /// kernel knows holes (SEEK_DATA/SEEK_HOLE). `None` means the storage
    /// cannot tell, and everything counts as data.
    ///
    /// # Errors
    /// I/O errors from the kernel.
    fn next_run(&self, offset: u64) -> io::Result<Option<(bool, u64)>>;

    /// Bytes the file occupies on disk (`st_blocks * 512`), as
    /// `qemu-img info` reports `actual-size`.
    fn allocated_size(&self) -> Option<u64>;

    /// Reads several ranges, each exactly. Storage that pays a round trip
    /// per request sends them all together; the default reads them one
    /// after another.
    ///
    /// # Errors
    /// As [`Storage::read_exact_at`].
    fn read_many(&self, reqs: &mut [(u64, &mut [u8])]) -> io::Result<()> {
        for (offset, buf) in reqs.iter_mut() {
            self.read_exact_at(*offset, buf)?;
        }
        Ok(())
    }

    /// A hint: these `(offset, len)` ranges will be read soon. Storage that
    /// pays a round trip per request fetches them now, together, into its
    /// bounded cache; local files ignore it. Errors are left for the real
    /// read to report.
    fn prefetch(&self, _ranges: &[(u64, u64)]) {}

    /// True when each request pays a round trip (a file over ssh or NBD):
    /// readers above then batch what they need.
    fn remote(&self) -> bool {
        false
    }

    /// The ssh session the file is read through, for the UI's status pane
    /// (`None` for local files).
    fn ssh_session(&self) -> Option<Arc<crate::block::ssh::Session>> {
        None
    }

    /// The local file itself, opened read-only, when the storage is one:
    /// a bulk copy then has the kernel move its bytes into the output
    /// (`copy_file_range`, `sendfile`) instead of reading them out first.
    fn local_file(&self) -> Option<&File> {
        None
    }
}

/// A file opened read-only.
pub struct FileStorage {
    file: File,
    len: u64,
    blocks_bytes: u64,
}

impl FileStorage {
    /// Wraps a file whose length the caller knows (a block device).
    pub fn with_len(file: File, len: u64) -> Self {
        FileStorage {
            file,
            len,
            blocks_bytes: 0,
        }
    }

    /// Wraps an open file (opened read-only by the caller).
    ///
    /// # Errors
    /// When the file's metadata cannot be read.
    pub fn new(file: File) -> io::Result<Self> {
        let meta = file.metadata()?;
        Ok(FileStorage {
            len: meta.len(),
            blocks_bytes: meta.blocks().saturating_mul(512),
            file,
        })
    }
}

impl Storage for FileStorage {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn next_run(&self, offset: u64) -> io::Result<Option<(bool, u64)>> {
        use rustix::fs::{seek, SeekFrom};
        if offset >= self.len {
            return Ok(Some((false, self.len)));
        }
        // SEEK_DATA from inside data returns the offset itself.
        let data = match seek(&self.file, SeekFrom::Data(offset)) {
            Ok(d) => d,
            // ENXIO: no data at or after offset: a trailing hole.
            Err(rustix::io::Errno::NXIO) => return Ok(Some((false, self.len))),
            // The filesystem does not support it: everything is data.
            Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::OPNOTSUPP) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if data > offset {
            return Ok(Some((false, data.min(self.len))));
        }
        let hole = match seek(&self.file, SeekFrom::Hole(offset)) {
            Ok(h) => h,
            Err(rustix::io::Errno::NXIO) => self.len,
            Err(e) => return Err(e.into()),
        };
        Ok(Some((true, hole.clamp(offset.saturating_add(1), self.len))))
    }

    fn allocated_size(&self) -> Option<u64> {
        Some(self.blocks_bytes)
    }

    fn local_file(&self) -> Option<&File> {
        Some(&self.file)
    }
}

/// Bytes in memory, such as the demo chain compiled into the binary.
pub struct MemStorage {
    bytes: Arc<[u8]>,
}

impl MemStorage {
    /// Wraps a byte buffer.
    pub fn new(bytes: impl Into<Arc<[u8]>>) -> Self {
        MemStorage {
            bytes: bytes.into(),
        }
    }
}

impl Storage for MemStorage {
    fn len(&self) -> u64 {
        u64::try_from(self.bytes.len()).unwrap_or(u64::MAX)
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .filter(|&e| e <= self.bytes.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        let from = self
            .bytes
            .get(start..end)
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(from);
        Ok(())
    }

    fn next_run(&self, _offset: u64) -> io::Result<Option<(bool, u64)>> {
        Ok(None)
    }

    fn allocated_size(&self) -> Option<u64> {
        Some(self.len())
    }
}
