//! Bulk reading of a layered disk, in order, by several threads.
//!
//! A copy of a disk (`read`) is bounded by how fast bytes come out of the
//! page cache, decompression and the network, one read at a time: on a
//! machine with two or more cores a single reader leaves the others idle
//! (qemu-img convert keeps 8 requests in flight for the same reason). Here
//! one planner walks the disk's extents: a run that reads as zeros is
//! passed on as a length (never read, never copied), a run of data is cut
//! into segments dealt round-robin to reader threads, each with its own
//! few buffers; the consumer takes the segments back in disk order. Memory
//! is bounded by `threads × BUFFERS × SEGMENT` whatever the disk's size,
//! and a zero run of any length costs one step.
//!
//! A consumer that can have the kernel copy file to file (`read` to a
//! regular file) asks for [`Piece::Stored`] too: a run that a layer keeps
//! as-is in a local file (a raw layer's data, plain qcow2 clusters, VHD,
//! VDI and VHDX blocks, VMDK extents) is then passed on as that file's
//! range, never read into user space (and one in a hole of that file as
//! zeros, never read at all). Three quarters of a copy's CPU time went
//! to the two kernel copies (out of the page cache into a buffer, then
//! into the output); this leaves one.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::cell::Cell;
use std::sync::mpsc::{self, Receiver, SyncSender};

use crate::block::buffer::AlignedBuf;
use crate::block::layered::{Chunk, LayeredReader};
use crate::block::{check_range, BlockError, BlockSource, HostRun, Status, Stored};
use crate::bytes::u64_of;

/// Bytes per segment handed to one reader thread.
pub const SEGMENT: u64 = 2 << 20;
/// Buffers per reader thread: one being filled, one queued, one being
/// consumed.
const BUFFERS: usize = 3;
/// Planned steps the planner may run ahead of the consumer.
const AHEAD: usize = 64;

/// A piece of the stream, in disk order.
pub enum Piece<'a> {
    /// Bytes of data (a range that may still hold zeros).
    Data(&'a [u8]),
    /// This many bytes that read as zeros; nothing was read.
    Zeros(u64),
    /// Bytes of data as they lie in a local file; nothing was read. Only
    /// for a stream that asked for them ([`stream_with`]).
    Stored(Stored<'a>),
}

/// Why a stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The disk could not be read.
    #[error(transparent)]
    Read(#[from] BlockError),
    /// The consumer failed (a write error); the stream stopped there.
    #[error(transparent)]
    Consumer(#[from] std::io::Error),
}

/// One step of the plan, in disk order.
enum Step<'a> {
    Zeros(u64),
    Stored(Stored<'a>),
    /// The next segment of reader thread `n`.
    Data(usize),
    Failed(BlockError),
}

/// A segment as a reader thread returns it: the buffer and what is in it.
struct Filled {
    buf: AlignedBuf,
    /// (start in `buf`, length, data or zeros) in order.
    parts: Vec<(usize, usize, bool)>,
}

/// Streams `[offset, offset + length)` of `reader` to `consume`, in order,
/// with `threads` reader threads (at least one).
///
/// # Errors
/// A range outside the disk; the first read error (naming layer and
/// offset); the consumer's first error, which stops the stream.
pub fn stream(
    reader: &LayeredReader,
    offset: u64,
    length: u64,
    threads: usize,
    consume: &mut dyn FnMut(Piece<'_>) -> std::io::Result<()>,
) -> Result<(), StreamError> {
    stream_with(reader, offset, length, threads, false, consume)
}

/// [`stream`], passing runs stored as-is in local files as
/// [`Piece::Stored`] when `stored` (the consumer copies them itself).
///
/// # Errors
/// As [`stream`].
pub fn stream_with(
    reader: &LayeredReader,
    offset: u64,
    length: u64,
    threads: usize,
    stored: bool,
    consume: &mut dyn FnMut(Piece<'_>) -> std::io::Result<()>,
) -> Result<(), StreamError> {
    check_range(reader.name(), reader.len(), offset, length)?;
    let end = offset.saturating_add(length);
    // No more threads than segments: a small read stays on one.
    let segments = usize::try_from(length.div_ceil(SEGMENT)).unwrap_or(usize::MAX);
    // At least as many as the source serves bulk readers at once (an NBD
    // export's connections), at most 64.
    let threads = threads
        .max(reader.bulk_readers())
        .clamp(1, segments.clamp(1, 64));
    let seg_len = usize::try_from(SEGMENT.min(length.max(1))).unwrap_or(1);

    std::thread::scope(|scope| -> Result<(), StreamError> {
        let (order_tx, order_rx) = mpsc::sync_channel::<Step>(AHEAD);
        let mut jobs = Vec::with_capacity(threads);
        let mut results = Vec::with_capacity(threads);
        let mut recycle = Vec::with_capacity(threads);
        for index in 0..threads {
            let (job_tx, job_rx) = mpsc::sync_channel::<(u64, u64)>(BUFFERS);
            let (done_tx, done_rx) = mpsc::sync_channel::<Result<Filled, BlockError>>(1);
            let (free_tx, free_rx) = mpsc::channel::<AlignedBuf>();
            for _ in 0..BUFFERS {
                // Cannot fail: the receiver is alive.
                let _ = free_tx.send(AlignedBuf::new(seg_len));
            }
            scope.spawn(move || {
                WORKER.with(|w| w.set(Some(index)));
                read_segments(reader, &job_rx, &done_tx, &free_rx);
            });
            jobs.push(job_tx);
            results.push(done_rx);
            recycle.push(free_tx);
        }
        scope.spawn(move || plan(reader, (offset, end), stored, &jobs, &order_tx));
        // Owns every receiving end and the recycling senders: when it
        // returns early, they are dropped and the threads above end.
        consume_in_order(&order_rx, &results, &recycle, consume)
    })
}

thread_local! {
    /// On a stream's reader thread, its index among the stream's readers.
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of this thread among a bulk copy's reader threads, when it
/// is one: a source serving several bulk readers at once
/// ([`BlockSource::bulk_readers`]) gives each its own connection instead
/// of spreading each read over all of them.
pub fn bulk_worker() -> Option<usize> {
    WORKER.with(Cell::get)
}

/// The planner: zero runs as lengths, data runs as segments dealt out
/// round-robin (or, with `stored`, as file ranges where a layer keeps
/// them as-is). Stops at the first error, or when the consumer is gone.
fn plan<'a>(
    reader: &'a LayeredReader,
    (offset, end): (u64, u64),
    stored: bool,
    jobs: &[SyncSender<(u64, u64)>],
    order: &SyncSender<Step<'a>>,
) {
    let mut pos = offset;
    let mut next = 0usize;
    while pos < end {
        let step = match reader.stream_extent(pos, end.saturating_sub(pos)) {
            Err(e) => {
                let _ = order.send(Step::Failed(e));
                return;
            }
            Ok(o) if o.status != Status::Data => {
                pos = pos.saturating_add(o.len.max(1));
                Step::Zeros(o.len)
            }
            Ok(o) => {
                // A run a layer keeps as-is in a local file goes to the
                // consumer as that file's range; the rest is read.
                let kept = match o.layer.filter(|_| stored && !o.compressed) {
                    Some(index) => match reader.stored(index, pos, o.len) {
                        Ok(kept) => kept,
                        Err(e) => {
                            let _ = order.send(Step::Failed(e));
                            return;
                        }
                    },
                    None => None,
                };
                match kept {
                    Some(HostRun::Stored(s)) => {
                        pos = pos.saturating_add(s.len);
                        Step::Stored(s)
                    }
                    // Data in a hole of the layer's file reads as zeros.
                    Some(HostRun::Hole(n)) => {
                        pos = pos.saturating_add(n);
                        Step::Zeros(n)
                    }
                    None => {
                        let Some((worker, len)) = deal(jobs, &mut next, pos, o.len) else {
                            return;
                        };
                        pos = pos.saturating_add(len);
                        Step::Data(worker)
                    }
                }
            }
        };
        if order.send(step).is_err() {
            return;
        }
    }
}

/// Sends the segment at `pos` (at most [`SEGMENT`] of a data run of
/// `run` bytes) to the next reader thread round-robin: that thread and the
/// segment's length, `None` when the threads are gone.
fn deal(
    jobs: &[SyncSender<(u64, u64)>],
    next: &mut usize,
    pos: u64,
    run: u64,
) -> Option<(usize, u64)> {
    // One segment at a time; the run's rest is asked again (an owner
    // lookup per segment is cheap next to 2 MiB).
    let len = run.clamp(1, SEGMENT);
    // Round-robin over the threads (none: nothing to do).
    let (worker, job) = next
        .checked_rem(jobs.len())
        .and_then(|w| Some((w, jobs.get(w)?)))?;
    *next = next.wrapping_add(1);
    job.send((pos, len)).ok()?;
    Some((worker, len))
}

/// A reader thread: fills one segment per job into one of its buffers.
fn read_segments(
    reader: &LayeredReader,
    jobs: &Receiver<(u64, u64)>,
    done: &SyncSender<Result<Filled, BlockError>>,
    free: &Receiver<AlignedBuf>,
) {
    for (start, len) in jobs {
        let Ok(mut buf) = free.recv() else { return };
        let result = fill(reader, start, len, &mut buf).map(|parts| Filled { buf, parts });
        let failed = result.is_err();
        if done.send(result).is_err() || failed {
            return;
        }
    }
}

/// Reads `[start, start + len)` into `buf`; a range the planner saw as
/// data may still end in zeros read by another layer's rules: each part
/// is kept with its kind.
fn fill(
    reader: &LayeredReader,
    start: u64,
    len: u64,
    buf: &mut [u8],
) -> Result<Vec<(usize, usize, bool)>, BlockError> {
    let mut parts = Vec::with_capacity(1);
    let mut at = 0usize;
    let want = usize::try_from(len).unwrap_or(usize::MAX).min(buf.len());
    while at < want {
        let pos = start.saturating_add(u64::try_from(at).unwrap_or(u64::MAX));
        // at < want <= buf.len(): the loop's condition and the min above.
        let left = u64_of(want.saturating_sub(at));
        let into = buf.get_mut(at..want).ok_or_else(|| BlockError::Internal {
            what: format!("a segment's buffer has no bytes at {at}"),
        })?;
        match reader.read_chunk(pos, left, into)? {
            Chunk::Data(n) => {
                parts.push((at, n, true));
                at = at.saturating_add(n.max(1));
            }
            Chunk::Zeros(n) => {
                let n = usize::try_from(n.min(left))
                    .unwrap_or(want.saturating_sub(at))
                    .max(1);
                parts.push((at, n, false));
                at = at.saturating_add(n);
            }
        }
    }
    Ok(parts)
}

/// The consumer's side: the plan in order, each segment from its thread.
fn consume_in_order(
    order: &Receiver<Step<'_>>,
    results: &[Receiver<Result<Filled, BlockError>>],
    recycle: &[mpsc::Sender<AlignedBuf>],
    consume: &mut dyn FnMut(Piece<'_>) -> std::io::Result<()>,
) -> Result<(), StreamError> {
    for step in order {
        match step {
            Step::Zeros(n) => consume(Piece::Zeros(n))?,
            Step::Stored(s) => consume(Piece::Stored(s))?,
            Step::Failed(e) => return Err(e.into()),
            Step::Data(worker) => {
                let ended = || BlockError::Internal {
                    what: "a reader thread ended without its segment".into(),
                };
                let filled = results
                    .get(worker)
                    .ok_or_else(ended)?
                    .recv()
                    .map_err(|_| ended())??;
                for &(at, n, data) in &filled.parts {
                    if data {
                        let bytes = crate::bytes::slice(&filled.buf, at, n).ok_or_else(|| {
                            BlockError::Internal {
                                what: format!("a segment's part {at}+{n} passes its buffer"),
                            }
                        })?;
                        consume(Piece::Data(bytes))?;
                    } else {
                        consume(Piece::Zeros(u64_of(n)))?;
                    }
                }
                // The thread may be done and gone: nothing to recycle for.
                if let Some(r) = recycle.get(worker) {
                    let _ = r.send(filled.buf);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::block::chain::{Chain, Layer};
    use crate::block::probe::Format;
    use crate::block::Extent;

    /// A disk of data whose every segment reads as its index, serving
    /// `readers` bulk readers at once; notes which stream reader thread
    /// read what.
    struct Recording {
        size: u64,
        readers: usize,
        seen: Mutex<BTreeSet<Option<usize>>>,
    }

    impl BlockSource for Recording {
        fn name(&self) -> &str {
            "recording"
        }

        fn len(&self) -> u64 {
            self.size
        }

        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
            self.seen.lock().unwrap().insert(bulk_worker());
            buf.fill(u8::try_from(offset / SEGMENT).unwrap());
            Ok(())
        }

        fn bulk_readers(&self) -> usize {
            self.readers
        }

        fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, BlockError> {
            Ok(vec![Extent {
                offset,
                len,
                status: Status::Data,
                compressed: false,
                host_offset: None,
                reads_zero: false,
            }])
        }
    }

    #[test]
    fn a_source_serving_n_bulk_readers_is_read_by_n_threads_each_knowing_its_index() {
        for readers in [1usize, 3, 6] {
            let src = Arc::new(Recording {
                size: 16 * SEGMENT,
                readers,
                seen: Mutex::default(),
            });
            let chain = Chain {
                layers: vec![Layer::bare(0, "recording", Format::Raw, src.clone())],
            };
            let reader = LayeredReader::new(&chain).unwrap();
            let mut out = Vec::new();
            stream(&reader, 0, reader.len(), 1, &mut |p| {
                if let Piece::Data(b) = p {
                    out.extend_from_slice(b);
                }
                Ok(())
            })
            .unwrap();
            assert_eq!(out.len() as u64, 16 * SEGMENT);
            for (i, seg) in out.chunks(SEGMENT as usize).enumerate() {
                assert!(seg.iter().all(|&b| usize::from(b) == i), "segment {i}");
            }
            let want: BTreeSet<_> = (0..readers).map(Some).collect();
            assert_eq!(*src.seen.lock().unwrap(), want, "{readers} readers");
        }
        // Not a stream's reader thread.
        assert_eq!(bulk_worker(), None);
    }
}
