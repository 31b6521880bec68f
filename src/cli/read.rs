//! `layerscope read`: raw bytes of the virtual disk, for pipes and files.
//!
//! Streams like `qemu-img convert`: ranges that read as zeros are never
//! read or copied (the layered reader says where they are, a raw layer's
//! holes included), reader threads fill the next segments while this one
//! is written (`crate::block::stream`), and a regular file as stdout
//! becomes a sparse file, into which the kernel copies the runs that
//! layers keep as-is in local files ([`SparseFile`]); a pipe or
//! `/dev/null` gets those runs by `sendfile` ([`Descriptor`]).
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

use super::ReadArgs;
use crate::block::chain::Chain;
use crate::block::layered::LayeredReader;
use crate::block::stream::{stream_with, Piece, StreamError};
use crate::block::{check_range, BlockError, BlockSource, Stored};
use crate::bytes::{u64_of, us};

/// Where the bytes go: a pipe (zeros are written) or a sparse file (zeros
/// become holes).
pub trait Sink {
    /// Writes data.
    ///
    /// # Errors
    /// Write errors.
    fn data(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Writes `len` zero bytes.
    ///
    /// # Errors
    /// Write errors.
    fn zeros(&mut self, len: u64) -> io::Result<()>;
    /// Whether the sink copies [`Stored`] runs itself (from file to file
    /// in the kernel); otherwise the stream reads them.
    fn takes_stored(&self) -> bool {
        false
    }
    /// Writes the bytes of a run as they lie in a local file. By default
    /// they are read, a megabyte at a time, and written as data.
    ///
    /// # Errors
    /// Read and write errors.
    fn stored(&mut self, run: Stored<'_>) -> io::Result<()> {
        read_stored(run, &mut |bytes| self.data(bytes))
    }
    /// Completes the output.
    ///
    /// # Errors
    /// Write errors.
    fn finish(&mut self) -> io::Result<()>;
}

/// Any writer: zeros are written out.
pub struct Plain<W: Write>(pub W);

impl<W: Write> Sink for Plain<W> {
    fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }

    fn zeros(&mut self, len: u64) -> io::Result<()> {
        static ZEROS: [u8; 1 << 20] = [0; 1 << 20];
        let mut left = len;
        while left > 0 {
            let n = us(left).min(ZEROS.len());
            self.0.write_all(ZEROS.get(..n).unwrap_or_default())?;
            left = left.saturating_sub(u64_of(n));
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Stdout as a file descriptor that is not a regular file (a pipe,
/// `/dev/null`, a socket): zeros are written out, and runs that layers
/// keep as-is in local files go by `sendfile`, which hands the page
/// cache's pages to a pipe (or drops them, for `/dev/null`) instead of
/// copying them out and back in. Where the kernel refuses, they are read.
pub struct Descriptor {
    file: std::fs::File,
    kernel: bool,
}

impl Descriptor {
    /// A sink writing to `file`.
    pub fn new(file: std::fs::File) -> Descriptor {
        Descriptor { file, kernel: true }
    }
}

impl Sink for Descriptor {
    fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)
    }

    fn zeros(&mut self, len: u64) -> io::Result<()> {
        Plain(&mut self.file).zeros(len)
    }

    fn takes_stored(&self) -> bool {
        true
    }

    fn stored(&mut self, run: Stored<'_>) -> io::Result<()> {
        use rustix::io::Errno;
        let mut at = run.host;
        let end = run.host.saturating_add(run.len);
        while at < end && self.kernel {
            let before = at;
            let n = us(end.saturating_sub(at).min(1 << 30));
            match rustix::fs::sendfile(&self.file, run.file, Some(&mut at), n) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("a layer's file ended at {at:#x}, inside a run of data"),
                    ))
                }
                Ok(_) | Err(Errno::INTR) => {}
                Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) if at == before => {
                    self.kernel = false;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if at < end {
            let rest = Stored {
                host: at,
                len: end.saturating_sub(at),
                ..run
            };
            let file = &mut self.file;
            read_stored(rest, &mut |bytes| file.write_all(bytes))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Reader threads for a bulk copy: one per core, at most 4 (beyond that
/// the page cache and the consumer are the limit).
fn reader_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// Copies `[offset, offset + length)` of the disk to `sink`.
///
/// # Errors
/// A range outside the disk; read errors naming the layer and offset;
/// write errors (a closed pipe is reported as such, and the binary exits 0).
pub fn run(chain: &Chain, args: &ReadArgs, sink: &mut dyn Sink) -> anyhow::Result<()> {
    let (offset, length) = (args.offset, args.length);
    let reader = LayeredReader::new(chain)?;
    let size = reader.len();
    let length = length.unwrap_or(size.saturating_sub(offset));
    check_range(reader.name(), size, offset, length)?;
    let kernel_copy = sink.takes_stored();
    let mut consume = |piece: Piece<'_>| match piece {
        Piece::Data(bytes) => sink.data(bytes),
        Piece::Zeros(n) => sink.zeros(n),
        Piece::Stored(run) => sink.stored(run),
    };
    let threads = reader_threads();
    match stream_with(&reader, offset, length, threads, kernel_copy, &mut consume) {
        Ok(()) => {}
        Err(StreamError::Read(e)) => return Err(e.into()),
        Err(StreamError::Consumer(e)) => return Err(e.into()),
    }
    sink.finish()?;
    if args.hits {
        // Over NBD the layers are the server's, known by depth only (0 is
        // the top, as in `qemu-img map`) and numbered from the deepest one
        // that served anything: no path.
        let (layers, nowhere) = reader.hits().totals();
        let top = layers.len().saturating_sub(1);
        let remote = reader.hits().is_by_depth();
        let layers: Vec<_> = layers
            .iter()
            .enumerate()
            .map(|(index, t)| {
                let path = chain.layers.get(index).filter(|_| !remote).map(|l| &l.path);
                serde_json::json!({"index": index, "depth": top.saturating_sub(index), "path": path, "bytes": t.bytes, "reads": t.reads})
            })
            .collect();
        let line = serde_json::json!({"layers": layers, "nowhere": nowhere});
        eprintln!("{}", crate::escape::json::to_string(&line)?);
    }
    Ok(())
}

/// A hex dump of the range through the hexyl library (its layout, glyphs
/// and colours), with the disk offsets in the gutter.
///
/// # Errors
/// Read and write errors.
pub fn hex(chain: &Chain, args: &ReadArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    use super::ColorChoice;
    let reader = LayeredReader::new(chain)?;
    let size = reader.len();
    let length = args
        .length
        .unwrap_or(size.saturating_sub(args.offset).min(4096));
    check_range(reader.name(), size, args.offset, length)?;
    let color = match args.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            io::IsTerminal::is_terminal(&io::stdout())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    };
    let mut w = io::BufWriter::new(out);
    let mut printer = hexyl::PrinterBuilder::new(&mut w)
        .show_color(color)
        .enable_squeezing(true)
        .build();
    printer.display_offset(args.offset);
    // Stream in pieces: a dump of a whole disk must not sit in memory.
    let mut stream = ReadStream {
        reader: &reader,
        pos: args.offset,
        end: args.offset.saturating_add(length),
        failed: None,
    };
    let printed = printer.print_all(&mut stream);
    drop(printer);
    // The dump ends where the disk could not be read: the lines before
    // the failure are printed, then the error.
    w.flush()?;
    if let Some(e) = stream.failed {
        return Err(e.into());
    }
    printed?;
    Ok(())
}

/// The disk as an `io::Read`, for hexyl. hexyl's printer ignores a read
/// error and asks again, forever (printing its last line each time), so
/// the first error is kept here and the stream ends: a failing source is
/// read once, never retried in a loop.
struct ReadStream<'a> {
    reader: &'a LayeredReader,
    pos: u64,
    end: u64,
    failed: Option<BlockError>,
}

impl io::Read for ReadStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failed.is_some() {
            return Ok(0);
        }
        let n = buf
            .len()
            .min(us(self.end.saturating_sub(self.pos)))
            .min(1 << 20);
        let Some(buf) = buf.get_mut(..n) else {
            return Ok(0);
        };
        if let Err(e) = self.reader.read_at(self.pos, buf) {
            self.failed = Some(e);
            return Ok(0);
        }
        self.pos = self.pos.saturating_add(u64_of(n));
        Ok(n)
    }
}

/// Stdout as a plain `File` (a duplicate of its descriptor), unbuffered.
pub fn stdout_file() -> Option<std::fs::File> {
    use std::os::fd::AsFd;
    Some(std::fs::File::from(
        io::stdout().as_fd().try_clone_to_owned().ok()?,
    ))
}

/// Granularity of hole detection in [`SparseFile`].
const HOLE_BLOCK: usize = 4096;

/// Reads a stored run a megabyte at a time into `write`.
fn read_stored(run: Stored<'_>, write: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
    let mut buf = crate::block::buffer::AlignedBuf::new(us(run.len.min(1 << 20)));
    let (mut at, end) = (run.host, run.host.saturating_add(run.len));
    while at < end {
        let n = us(end.saturating_sub(at)).min(buf.len());
        let piece = buf.get_mut(..n).unwrap_or_default();
        run.file.read_exact_at(piece, at)?;
        write(piece)?;
        at = at.saturating_add(u64_of(n));
    }
    Ok(())
}

/// How [`SparseFile`] copies a stored run; each step down is taken once,
/// when the kernel refuses the one above for this pair of files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CopyBy {
    /// `copy_file_range`: file to file in the kernel, the same filesystem
    /// (on some, extents are shared rather than copied).
    CopyFileRange,
    /// `sendfile`: file to file through the page cache, across
    /// filesystems too (ext4 to tmpfs, where `copy_file_range` says EXDEV).
    SendFile,
    /// Read into memory, then written, zero blocks as holes.
    Read,
}

/// Writes to a regular file, seeking over zeros instead of writing them, so
/// `layerscope read disk.qcow2 > disk.raw` makes a sparse file the way
/// `qemu-img convert` and `cp --sparse` do.
///
/// What is a hole: every range that reads as zeros by the image's own
/// metadata (unallocated clusters, zero clusters, a raw layer's holes, a
/// hole in a qcow2 file under a data cluster) stays a hole. Data the
/// stream reads into memory (compressed clusters, other formats) is
/// checked per 4 KiB block, and all-zero blocks become holes too. Runs a
/// layer keeps as-is in a local file (a raw layer's data, plain qcow2
/// clusters, VHD, VDI and VHDX data blocks, VMDK extents) are copied by the
/// kernel without
/// passing through memory, so
/// all-zero 4 KiB blocks *stored as data* inside them stay data, as with
/// `qemu-img convert -C` or `cp --sparse=auto`: the bytes are the same,
/// only `du` can differ. That is what makes the copy cheap: one kernel
/// copy instead of two, no scan of the bytes in user space.
pub struct SparseFile {
    file: std::fs::File,
    /// Zero bytes seen but not yet skipped over.
    hole: u64,
    copy_by: CopyBy,
}

impl SparseFile {
    /// Stdout as a sparse writer, when it is a regular file that was not
    /// opened for appending (seeking would not move appended writes).
    pub fn for_stdout() -> Option<SparseFile> {
        use std::os::fd::AsFd;
        let stdout = io::stdout();
        let flags = rustix::fs::fcntl_getfl(stdout.as_fd()).ok()?;
        if flags.contains(rustix::fs::OFlags::APPEND) {
            return None;
        }
        let file = std::fs::File::from(stdout.as_fd().try_clone_to_owned().ok()?);
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        Some(SparseFile::new(file))
    }

    /// A sparse writer to `file` (a regular file, not in append mode),
    /// from its current position.
    pub fn new(file: std::fs::File) -> SparseFile {
        SparseFile {
            file,
            hole: 0,
            copy_by: CopyBy::CopyFileRange,
        }
    }

    fn skip_hole(&mut self) -> io::Result<()> {
        use std::io::{Seek, SeekFrom};
        if self.hole > 0 {
            let step = i64::try_from(self.hole).map_err(|_| io::ErrorKind::InvalidInput)?;
            self.file.seek(SeekFrom::Current(step))?;
            self.hole = 0;
        }
        Ok(())
    }

    /// One kernel copy of at most `left` bytes from `run.file` at `*at`
    /// to the file's position, by `how`: the bytes copied (0 at the end
    /// of the source), or the kernel's refusal.
    fn kernel_copy(
        &self,
        how: CopyBy,
        run: &Stored<'_>,
        at: &mut u64,
        left: u64,
    ) -> rustix::io::Result<usize> {
        // Both calls take at most 2 GiB minus a page at a time.
        let n = us(left.min(1 << 30));
        match how {
            CopyBy::CopyFileRange => {
                rustix::fs::copy_file_range(run.file, Some(at), &self.file, None, n)
            }
            _ => rustix::fs::sendfile(&self.file, run.file, Some(at), n),
        }
    }
}

impl Sink for SparseFile {
    fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut data_start = None;
        let mut at = 0;
        for block in buf.chunks(HOLE_BLOCK) {
            let zero = block.iter().all(|&b| b == 0);
            match (zero, data_start) {
                (true, Some(start)) => {
                    self.file
                        .write_all(buf.get(start..at).unwrap_or_default())?;
                    data_start = None;
                    self.hole = self.hole.saturating_add(u64_of(block.len()));
                }
                (true, None) => self.hole = self.hole.saturating_add(u64_of(block.len())),
                (false, None) => {
                    self.skip_hole()?;
                    data_start = Some(at);
                }
                (false, Some(_)) => {}
            }
            at = at.saturating_add(block.len());
        }
        if let Some(start) = data_start {
            self.file.write_all(buf.get(start..).unwrap_or_default())?;
        }
        Ok(())
    }

    fn zeros(&mut self, len: u64) -> io::Result<()> {
        self.hole = self.hole.saturating_add(len);
        Ok(())
    }

    fn takes_stored(&self) -> bool {
        true
    }

    /// `copy_file_range`, else `sendfile` (EXDEV across filesystems,
    /// EINVAL or ENOSYS where the kernel or the files do not support it),
    /// else a read; both kernel calls write at the file's position, after
    /// the pending hole, and move it on.
    fn stored(&mut self, run: Stored<'_>) -> io::Result<()> {
        use rustix::io::Errno;
        self.skip_hole()?;
        let mut at = run.host;
        let end = run.host.saturating_add(run.len);
        while at < end && self.copy_by != CopyBy::Read {
            let (before, left) = (at, end.saturating_sub(at));
            match self.kernel_copy(self.copy_by, &run, &mut at, left) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("a layer's file ended at {at:#x}, inside a run of data"),
                    ))
                }
                // The kernel moved `at` on by what it copied.
                Ok(_) => {}
                Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP | Errno::PERM)
                    if at == before =>
                {
                    self.copy_by = match self.copy_by {
                        CopyBy::CopyFileRange => CopyBy::SendFile,
                        _ => CopyBy::Read,
                    };
                }
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if at < end {
            let rest = Stored {
                host: at,
                len: end.saturating_sub(at),
                ..run
            };
            // The kernel would not copy: read, zero blocks as holes.
            read_stored(rest, &mut |bytes| self.data(bytes))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        use std::io::Seek;
        if self.hole > 0 {
            self.skip_hole()?;
            // A trailing hole: make the file reach the end.
            let end = self.file.stream_position()?;
            if self.file.metadata()?.len() < end {
                self.file.set_len(end)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek};

    use super::*;

    /// The data ranges of a file (SEEK_DATA / SEEK_HOLE).
    fn data_ranges(file: &std::fs::File) -> Vec<(u64, u64)> {
        use rustix::fs::{seek, SeekFrom};
        let len = file.metadata().unwrap().len();
        let (mut out, mut at) = (Vec::new(), 0);
        while at < len {
            let Ok(start) = seek(file, SeekFrom::Data(at)) else {
                break;
            };
            let end = seek(file, SeekFrom::Hole(start)).unwrap();
            out.push((start, end));
            at = end;
        }
        out
    }

    #[test]
    fn a_stored_run_goes_to_a_socket_or_pipe_by_sendfile_with_its_bytes() {
        use std::os::fd::OwnedFd;
        let dir = tempfile::tempdir().unwrap();
        let src: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("src"), &src).unwrap();
        let from = std::fs::File::open(dir.path().join("src")).unwrap();
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut theirs = theirs;
            theirs.read_to_end(&mut got).unwrap();
            got
        });
        let mut sink = Descriptor::new(std::fs::File::from(OwnedFd::from(ours)));
        sink.data(b"head").unwrap();
        sink.stored(Stored {
            file: &from,
            host: 1000,
            len: 250_000,
        })
        .unwrap();
        sink.zeros(5).unwrap();
        sink.finish().unwrap();
        assert!(sink.kernel, "sendfile to a socket was refused");
        drop(sink);
        let got = reader.join().unwrap();
        let mut want = b"head".to_vec();
        want.extend_from_slice(&src[1000..251_000]);
        want.extend_from_slice(&[0; 5]);
        assert!(got == want);
    }

    #[test]
    fn a_stored_run_lands_after_the_hole_by_each_way_of_copying() {
        let dir = tempfile::tempdir().unwrap();
        // Source: 4 KiB of data, 4 KiB of zeros stored as data, 4 KiB of
        // data, at host offset 4096.
        let mut src = vec![0u8; 4 << 12];
        src[4096..8192].fill(0x5a);
        src[12288..].fill(0xa5);
        std::fs::write(dir.path().join("src"), &src).unwrap();
        let from = std::fs::File::open(dir.path().join("src")).unwrap();
        let run = Stored {
            file: &from,
            host: 4096,
            len: 3 << 12,
        };
        for how in [CopyBy::CopyFileRange, CopyBy::SendFile, CopyBy::Read] {
            let path = dir.path().join(format!("{how:?}"));
            let mut sink = SparseFile::new(std::fs::File::create(&path).unwrap());
            sink.copy_by = how;
            sink.zeros(8192).unwrap();
            sink.stored(run).unwrap();
            sink.zeros(4096).unwrap();
            sink.finish().unwrap();
            let mut out = std::fs::File::open(&path).unwrap();
            let mut got = Vec::new();
            out.read_to_end(&mut got).unwrap();
            let mut want = vec![0u8; 8192];
            want.extend_from_slice(&src[4096..]);
            want.resize(want.len() + 4096, 0);
            assert_eq!(got, want, "{how:?}");
            out.rewind().unwrap();
            // The leading and trailing zeros are holes either way; the
            // zeros stored as data are a hole only when read and scanned.
            let data = data_ranges(&out);
            let want = match how {
                CopyBy::Read => vec![(8192, 12288), (16384, 20480)],
                _ => vec![(8192, 20480)],
            };
            assert_eq!(data, want, "{how:?}");
        }
    }
}
