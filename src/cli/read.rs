//! `layerscope read`: raw bytes of the virtual disk, for pipes and files.
//!
//! Streams like `qemu-img convert`: ranges that read as zeros are never
//! read or copied (the layered reader says where they are, a raw layer's
//! holes included), reader threads fill the next segments while this one
//! is written (`crate::block::stream`), and a regular file as stdout
//! becomes a sparse file.
use std::io::{self, Write};

use super::ReadArgs;
use crate::block::chain::Chain;
use crate::block::layered::LayeredReader;
use crate::block::stream::{stream, Piece, StreamError};
use crate::block::{check_range, BlockError, BlockSource};
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
    let mut consume = |piece: Piece<'_>| match piece {
        Piece::Data(bytes) => sink.data(bytes),
        Piece::Zeros(n) => sink.zeros(n),
    };
    match stream(&reader, offset, length, reader_threads(), &mut consume) {
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

/// Writes to a regular file, seeking over zeros instead of writing them, so
/// `layerscope read disk.qcow2 > disk.raw` makes a sparse file the way
/// `qemu-img convert` and `cp --sparse` do. Data blocks that happen to be
/// all zeros become holes too.
pub struct SparseFile {
    file: std::fs::File,
    /// Zero bytes seen but not yet skipped over.
    hole: u64,
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
        Some(SparseFile { file, hole: 0 })
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
