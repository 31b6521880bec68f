//! The layered reader: a chain of layers seen as one disk.
//!
//! Each read is split where the serving layer changes; each piece is served
//! by the topmost layer that holds it (data or zeros), and what no layer
//! holds reads as zeros. Every piece is recorded in the [`HitMap`].
//!
//! The static allocation map ([`LayeredReader::map_entry`]) answers "which
//! layer owns this range" from metadata alone, with qemu's exact rules (see
//! [`crate::block::map`]).
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::sync::Arc;

use crate::block::chain::Chain;
use crate::block::hitmap::HitMap;
use crate::block::map::MapEntry;
use crate::block::{check_range, BlockError, BlockSource, Status};
use crate::bytes::{u64_of, us};

/// A chain of layers read as one disk.
pub struct LayeredReader {
    name: String,
    /// Base first.
    layers: Vec<Arc<dyn BlockSource>>,
    size: u64,
    hits: Arc<HitMap>,
    /// An NBD export whose server says which of its layers serves what
    /// (`qemu:allocation-depth`): hits are recorded by that depth.
    remote: Option<Arc<crate::block::nbd::NbdClient>>,
    /// Several layers, some remote: a layer's missing map is fetched
    /// with the other layers' ([`LayeredReader::warm_maps`]).
    warm: bool,
}

/// Each layer's last block status during a walk (see
/// [`LayeredReader::map_entry_cached`]).
#[derive(Debug, Default)]
pub struct StatusCache {
    last: Vec<Option<crate::block::Extent>>,
    /// Ask each layer what qemu would say ([`BlockSource::qemu_status`])
    /// rather than what it holds.
    pub qemu: bool,
}

/// Who serves a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The layer that holds the range (0 is the base), `None` when no layer
    /// does and it reads as zeros.
    pub layer: Option<usize>,
    /// What that layer says about it.
    pub status: Status,
    /// How far this answer holds, from the queried offset.
    pub len: u64,
    /// The layer stores the range compressed (qcow2 compressed clusters).
    pub compressed: bool,
}

impl LayeredReader {
    /// Stacks the layers of `chain`.
    ///
    /// # Errors
    /// `Internal` for an empty chain.
    pub fn new(chain: &Chain) -> Result<Self, BlockError> {
        let top = chain.top().ok_or_else(|| BlockError::Internal {
            what: "a chain with no layers".into(),
        })?;
        let min_cluster = chain
            .layers
            .iter()
            .filter_map(|l| {
                l.qcow2
                    .as_ref()
                    .map(|q| q.header().cluster_size())
                    .or_else(|| l.info.as_ref().and_then(|i| i.cluster_size()))
            })
            .min()
            .unwrap_or(65536);
        let size = top.source.len();
        let remote = match chain.layers.as_slice() {
            [only] => only
                .nbd
                .clone()
                .filter(|n| n.info().context("qemu:allocation-depth").is_some()),
            _ => None,
        };
        let hits = match remote {
            // qemu allocates in clusters, 64 KiB by default; 4 KiB cells
            // still show a small write's block.
            Some(_) => HitMap::by_depth(size, 4096),
            None => HitMap::new(size, chain.layers.len(), min_cluster),
        };
        let warm = chain.layers.len() > 1 && chain.layers.iter().any(|l| l.source.remote());
        Ok(LayeredReader {
            warm,
            name: top.path.clone(),
            layers: chain.layers.iter().map(|l| Arc::clone(&l.source)).collect(),
            size,
            hits: Arc::new(hits),
            remote,
        })
    }

    /// Records in the hit map that `owner` served `[offset, offset + len)`;
    /// over NBD with allocation depths, the server's layers that did.
    fn record(&self, owner: Option<usize>, offset: u64, len: u64) -> Result<(), BlockError> {
        let Some(remote) = &self.remote else {
            self.hits.record(owner, offset, len);
            return Ok(());
        };
        let mut at = offset;
        for (n, depth) in remote.served_depths(offset, len)?.unwrap_or_default() {
            let depth = usize::try_from(depth).unwrap_or(usize::MAX);
            self.hits.record_depth(depth.checked_sub(1), at, n);
            at = at.saturating_add(n);
        }
        Ok(())
    }

    /// The runtime hit map.
    pub fn hits(&self) -> &Arc<HitMap> {
        &self.hits
    }

    /// Number of layers.
    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// Layer `index` (0 is the base).
    fn layer(&self, index: usize) -> Result<&Arc<dyn BlockSource>, BlockError> {
        self.layers.get(index).ok_or_else(|| BlockError::Internal {
            what: format!(
                "{}: no layer {index} in a chain of {}",
                self.name,
                self.layers.len()
            ),
        })
    }

    /// The pieces layer `index` serves, read in one batch.
    fn read_layer(&self, index: usize, pieces: &mut [(u64, &mut [u8])]) -> Result<(), BlockError> {
        let layer = self.layer(index)?;
        match pieces {
            [] => Ok(()),
            // A remote layer reads even one piece as a batch: a long
            // range fetched ahead (inode tables) is then sent as a batch
            // is (few large requests at once), not as a bulk read.
            [(pos, piece)] if !layer.remote() => layer.read_at(*pos, piece),
            many => layer.read_many(many),
        }
    }

    /// Which layer would serve a read at `offset`, and for how long.
    ///
    /// # Errors
    /// Errors of the layers' metadata.
    pub fn owner(&self, offset: u64, len: u64) -> Result<Owner, BlockError> {
        self.owner_by(offset, len, false)
    }

    /// [`LayeredReader::owner`] exact about ranges that read as zeros (a
    /// raw layer's holes among them), for streams that skip them.
    ///
    /// # Errors
    /// Errors of the layers' metadata.
    pub fn owner_exact(&self, offset: u64, len: u64) -> Result<Owner, BlockError> {
        self.owner_by(offset, len, true)
    }

    fn owner_by(&self, offset: u64, len: u64, exact: bool) -> Result<Owner, BlockError> {
        check_range(&self.name, self.size, offset, len)?;
        self.warm_maps(offset);
        let mut len = len;
        for (index, layer) in self.layers.iter().enumerate().rev() {
            let Some(left) = layer.len().checked_sub(offset).filter(|&n| n > 0) else {
                // Past the end of a shorter backing file: zeros.
                break;
            };
            len = len.min(left);
            let e = if exact {
                layer.locate_exact(offset, len)?
            } else {
                layer.locate(offset, len)?
            };
            if e.len == 0 && len > 0 {
                // Readers loop on the answer: an empty one would never end.
                return Err(empty_answer(layer.name(), offset));
            }
            len = e.len.min(len);
            if e.status != Status::Unallocated {
                // Data stored in a hole of the layer's file reads as zeros
                // (flat VMDK extents, fixed VHD, static VDI).
                let status = match e.status {
                    Status::Data if exact && e.reads_zero => Status::Zero,
                    s => s,
                };
                return Ok(Owner {
                    layer: Some(index),
                    status,
                    len,
                    compressed: e.compressed,
                });
            }
        }
        Ok(Owner {
            layer: None,
            status: Status::Zero,
            len,
            compressed: false,
        })
    }

    /// Over a remote chain, the maps of `offset` that the layers do not
    /// hold yet (qcow2 L2 tables), fetched by all those layers at once,
    /// one thread each, their requests in flight together: asking the
    /// layers from the top would otherwise pay a round trip per layer.
    /// Only when two or more layers miss theirs.
    fn warm_maps(&self, offset: u64) {
        if !self.warm {
            return;
        }
        let cold: Vec<&Arc<dyn BlockSource>> = self
            .layers
            .iter()
            .filter(|l| offset < l.len() && l.map_missing(offset))
            .collect();
        if cold.len() < 2 {
            return;
        }
        std::thread::scope(|s| {
            for layer in cold {
                s.spawn(move || layer.warm_map(offset));
            }
        });
    }

    /// The topmost layer holding anything of its own (data or zeros) in
    /// `[offset, offset + len)`, `None` when no layer does: what the
    /// static hit map shows for a cell, the same as merging the map's
    /// entries over it (each layer asked from the top, within its own
    /// length, until one holds something).
    ///
    /// # Errors
    /// Errors of the layers' metadata; an empty block status answer.
    pub fn topmost_in(&self, offset: u64, len: u64) -> Result<Option<usize>, BlockError> {
        check_range(&self.name, self.size, offset, len)?;
        let end = offset.saturating_add(len);
        for (index, layer) in self.layers.iter().enumerate().rev() {
            let stop = end.min(layer.len());
            let mut at = offset;
            while at < stop {
                let answer = layer.block_status(at, stop.saturating_sub(at))?;
                if answer.is_empty() {
                    return Err(empty_answer(layer.name(), at));
                }
                for e in answer {
                    if e.len == 0 {
                        return Err(empty_answer(layer.name(), at));
                    }
                    if e.status != Status::Unallocated {
                        return Ok(Some(index));
                    }
                    at = at.saturating_add(e.len);
                    if at >= stop {
                        break;
                    }
                }
            }
        }
        Ok(None)
    }

    /// qemu's `get_block_status` for `qemu-img map`: the status of a prefix
    /// of `[offset, offset + len)`, from the topmost layer that holds it.
    ///
    /// # Errors
    /// Errors of the layers' metadata.
    pub fn map_entry(&self, offset: u64, len: u64) -> Result<MapEntry, BlockError> {
        self.map_entry_cached(offset, len, &mut StatusCache::default())
    }

    /// [`LayeredReader::map_entry`] for a walk over the disk: `cache` keeps
    /// each layer's last answer, so a long run in an upper layer is scanned
    /// once rather than once per entry found below it.
    ///
    /// # Errors
    /// Errors of the layers' metadata.
    pub fn map_entry_cached(
        &self,
        offset: u64,
        len: u64,
        cache: &mut StatusCache,
    ) -> Result<MapEntry, BlockError> {
        check_range(&self.name, self.size, offset, len)?;
        cache.last.resize(self.layers.len(), None);
        let top = self
            .layers
            .len()
            .checked_sub(1)
            .ok_or_else(|| BlockError::Internal {
                what: format!("{}: a chain with no layers", self.name),
            })?;
        let mut bytes = len;
        let mut index = top;
        loop {
            let cached = cache.last.get(index).copied().flatten();
            let e = match cached.and_then(|e| e.remainder(offset)) {
                Some(e) => e,
                None => {
                    let layer = self.layer(index)?;
                    let answer = if cache.qemu {
                        layer.qemu_status(offset, bytes)?
                    } else {
                        layer.block_status(offset, bytes)?
                    };
                    let e = answer
                        .into_iter()
                        .next()
                        .ok_or_else(|| BlockError::Internal {
                            what: format!("{}: no block status at {offset:#x}", layer.name()),
                        })?;
                    if e.len == 0 {
                        // The map walk moves by the answer: it must move.
                        return Err(empty_answer(layer.name(), offset));
                    }
                    if let Some(slot) = cache.last.get_mut(index) {
                        *slot = Some(e);
                    }
                    e
                }
            };
            bytes = e.len.min(bytes);
            let below = index
                .checked_sub(1)
                .and_then(|i| Some((i, self.layers.get(i)?.len())));
            match (e.status, below) {
                // Ask the layer below, for no more than it has.
                (Status::Unallocated, Some((i, below_len))) if offset < below_len => {
                    bytes = bytes.min(below_len.saturating_sub(offset));
                    index = i;
                }
                _ => {
                    let present = e.status != Status::Unallocated;
                    return Ok(MapEntry {
                        start: offset,
                        length: bytes,
                        depth: u64_of(top.saturating_sub(index)),
                        present,
                        zero: e.status != Status::Data || e.reads_zero,
                        data: e.status == Status::Data,
                        compressed: e.compressed,
                        offset: e.host_offset,
                    });
                }
            }
        }
    }
}

/// What [`LayeredReader::read_chunk`] produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// This many bytes of data were read into the buffer.
    Data(usize),
    /// This many bytes read as zeros; the buffer was not touched.
    Zeros(u64),
}

impl LayeredReader {
    /// The next extent of a stream at `offset` (at most `max_len` bytes),
    /// exact about what reads as zeros. A zero run is recorded in the hit
    /// map here, since nothing will read it; a data run is recorded by
    /// [`LayeredReader::read_chunk`] when it is read.
    ///
    /// # Errors
    /// Errors of the layers' metadata.
    pub fn stream_extent(&self, offset: u64, max_len: u64) -> Result<Owner, BlockError> {
        let o = self.owner_exact(offset, max_len)?;
        if o.status != Status::Data {
            self.record(o.layer, offset, o.len)?;
        }
        Ok(o)
    }

    /// Where layer `index`, which serves `[offset, offset + len)` as data
    /// (a stream's [`LayeredReader::stream_extent`] said so), keeps a
    /// prefix of it as-is in a local file, or in a hole of that file
    /// ([`BlockSource::stored`]). The prefix is recorded in the hit map:
    /// the layer serves it, though nothing here reads it.
    ///
    /// # Errors
    /// Errors of the layer's metadata.
    pub fn stored(
        &self,
        index: usize,
        offset: u64,
        len: u64,
    ) -> Result<Option<crate::block::HostRun<'_>>, BlockError> {
        use crate::block::HostRun;
        check_range(&self.name, self.size, offset, len)?;
        let run = match self.layer(index)?.stored(offset, len)? {
            Some(HostRun::Stored(mut s)) => {
                s.len = s.len.min(len);
                HostRun::Stored(s)
            }
            Some(HostRun::Hole(n)) => HostRun::Hole(n.min(len)),
            None => return Ok(None),
        };
        if run.is_empty() {
            return Ok(None);
        }
        self.record(Some(index), offset, run.len())?;
        Ok(Some(run))
    }

    /// Reads the next piece of a stream at `offset` (at most `max_len`
    /// bytes): either data into `buf` (stopping before the next range that
    /// reads as zeros), or the length of a zero range, which is neither
    /// read nor copied. Streaming copies use it to skip unallocated space
    /// the way `qemu-img convert` does. Hits are recorded either way.
    ///
    /// # Errors
    /// As [`BlockSource::read_at`].
    pub fn read_chunk(
        &self,
        offset: u64,
        max_len: u64,
        buf: &mut [u8],
    ) -> Result<Chunk, BlockError> {
        check_range(&self.name, self.size, offset, max_len)?;
        let first = self.owner_exact(offset, max_len)?;
        if first.status != Status::Data {
            self.record(first.layer, offset, first.len)?;
            return Ok(Chunk::Zeros(first.len));
        }
        let want = us(max_len).min(buf.len());
        // Each piece is at most what is left of `rest`; offsets stay inside
        // the range check_range accepted.
        let mut rest = buf.get_mut(..want).unwrap_or_default();
        let mut pos = offset;
        let mut owner = first;
        loop {
            let n = us(owner.len).min(rest.len());
            let (piece, tail) = rest.split_at_mut(n);
            rest = tail;
            if let Some(index) = owner.layer {
                self.layer(index)?.read_at(pos, piece)?;
            }
            self.record(owner.layer, pos, u64_of(n))?;
            pos = pos.saturating_add(u64_of(n));
            if rest.is_empty() {
                break;
            }
            owner = self.owner_exact(pos, u64_of(rest.len()))?;
            if owner.status != Status::Data {
                break;
            }
        }
        Ok(Chunk::Data(want.saturating_sub(rest.len())))
    }
}

impl BlockSource for LayeredReader {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        check_range(&self.name, self.size, offset, u64_of(buf.len()))?;
        if self.warm {
            // Over a remote chain, a read spanning layers sends their
            // pieces together ([`BlockSource::read_many`] below).
            return self.read_many(&mut [(offset, buf)]);
        }
        // Offsets stay inside the range check_range accepted.
        let mut pos = offset;
        let mut rest = buf;
        while !rest.is_empty() {
            let owner = self.owner(pos, u64_of(rest.len()))?;
            // owner_by never answers 0 bytes for a non-empty range.
            let n = us(owner.len).min(rest.len());
            let (piece, tail) = rest.split_at_mut(n);
            rest = tail;
            match (owner.layer, owner.status) {
                (Some(index), Status::Data) => self.layer(index)?.read_at(pos, piece)?,
                _ => piece.fill(0),
            }
            self.record(owner.layer, pos, u64_of(n))?;
            pos = pos.saturating_add(u64_of(n));
        }
        Ok(())
    }

    /// Each range split where the serving layer changes, as
    /// [`LayeredReader::read_at`] does; the pieces each layer serves are
    /// passed to it in one [`BlockSource::read_many`], so a remote layer
    /// gets them all in flight together.
    fn read_many(&self, reqs: &mut [(u64, &mut [u8])]) -> Result<(), BlockError> {
        let mut by_layer: Vec<Vec<(u64, &mut [u8])>> = Vec::new();
        by_layer.resize_with(self.layers.len(), Vec::new);
        for (offset, buf) in reqs.iter_mut() {
            let offset = *offset;
            check_range(&self.name, self.size, offset, u64_of(buf.len()))?;
            let mut pos = offset;
            let mut rest: &mut [u8] = buf;
            while !rest.is_empty() {
                let owner = self.owner(pos, u64_of(rest.len()))?;
                let n = us(owner.len).min(rest.len());
                let (piece, tail) = std::mem::take(&mut rest).split_at_mut(n);
                rest = tail;
                self.record(owner.layer, pos, u64_of(n))?;
                match (owner.layer, owner.status) {
                    (Some(index), Status::Data) => by_layer
                        .get_mut(index)
                        .ok_or_else(|| BlockError::Internal {
                            what: format!("{}: no layer {index}", self.name),
                        })?
                        .push((pos, piece)),
                    _ => piece.fill(0),
                }
                pos = pos.saturating_add(u64_of(n));
            }
        }
        let busy: Vec<_> = by_layer
            .into_iter()
            .enumerate()
            .filter(|(_, pieces)| !pieces.is_empty())
            .collect();
        if !self.warm || busy.len() < 2 {
            for (index, mut pieces) in busy {
                self.read_layer(index, &mut pieces)?;
            }
            return Ok(());
        }
        // Over a remote chain, the layers' reads go out together, one
        // thread each: layer after layer would pay a round trip each (a
        // batch of directory blocks spread over four layers paid four).
        std::thread::scope(|s| {
            let tasks: Vec<_> = busy
                .into_iter()
                .map(|(index, mut pieces)| s.spawn(move || self.read_layer(index, &mut pieces)))
                .collect();
            tasks.into_iter().try_for_each(|t| {
                t.join().unwrap_or_else(|_| {
                    Err(BlockError::Internal {
                        what: format!("{}: a layer's read thread panicked", self.name),
                    })
                })
            })
        })
    }

    fn remote(&self) -> bool {
        self.layers.iter().any(|l| l.remote())
    }

    /// What the layer serving `offset` holds there, within the run it
    /// serves (a range across layers, or reading as zeros, is not held:
    /// it is read).
    fn held(&self, offset: u64, max: u64) -> Option<bytes::Bytes> {
        let max = max.min(self.size.checked_sub(offset)?);
        if max == 0 {
            return None;
        }
        let owner = self.owner(offset, max).ok()?;
        let (Some(index), Status::Data) = (owner.layer, owner.status) else {
            return None;
        };
        let bytes = self.layer(index).ok()?.held(offset, owner.len.min(max))?;
        self.record(owner.layer, offset, u64_of(bytes.len())).ok()?;
        Some(bytes)
    }

    fn bulk_readers(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.bulk_readers())
            .max()
            .unwrap_or(1)
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<crate::block::Extent>, BlockError> {
        let e = self.map_entry(offset, len)?;
        Ok(vec![crate::block::Extent {
            offset,
            len: e.length,
            status: if e.data {
                Status::Data
            } else if e.present {
                Status::Zero
            } else {
                Status::Unallocated
            },
            compressed: e.compressed,
            host_offset: None,
            reads_zero: false,
        }])
    }

    fn locate(&self, offset: u64, len: u64) -> Result<crate::block::Extent, BlockError> {
        Ok(located(self.owner(offset, len)?, offset))
    }

    fn locate_exact(&self, offset: u64, len: u64) -> Result<crate::block::Extent, BlockError> {
        Ok(located(self.owner_exact(offset, len)?, offset))
    }
}

/// A layer answered an empty extent for a non-empty range.
fn empty_answer(layer: &str, offset: u64) -> BlockError {
    BlockError::Internal {
        what: format!("{layer}: block status answered 0 bytes at {offset:#x}"),
    }
}

/// An owner as an extent of the layered disk.
fn located(o: Owner, offset: u64) -> crate::block::Extent {
    crate::block::Extent {
        offset,
        len: o.len,
        status: if o.layer.is_some() {
            o.status
        } else {
            Status::Unallocated
        },
        compressed: false,
        host_offset: None,
        reads_zero: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::chain::Layer;
    use crate::block::probe::Format;
    use crate::block::Extent;

    /// A layer that answers every block status with an empty extent, as a
    /// broken format reader or a hostile server could.
    struct EmptyAnswers;

    impl BlockSource for EmptyAnswers {
        fn name(&self) -> &str {
            "empty-answers"
        }

        fn len(&self) -> u64 {
            1 << 20
        }

        fn read_at(&self, _offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
            buf.fill(0);
            Ok(())
        }

        fn block_status(&self, offset: u64, _len: u64) -> Result<Vec<Extent>, BlockError> {
            Ok(vec![Extent {
                offset,
                len: 0,
                status: Status::Data,
                compressed: false,
                host_offset: None,
                reads_zero: false,
            }])
        }
    }

    /// A remote layer holding data in `[0, data)` (unallocated above),
    /// whose reads wait until every layer sharing `met` is reading: a
    /// chain that read its layers one after another never gets there,
    /// and the first read gives up with an error.
    struct Rendezvous {
        name: &'static str,
        data: u64,
        met: Arc<(std::sync::Mutex<usize>, std::sync::Condvar)>,
        of: usize,
    }

    impl BlockSource for Rendezvous {
        fn name(&self) -> &str {
            self.name
        }

        fn len(&self) -> u64 {
            1 << 20
        }

        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
            let (lock, all) = &*self.met;
            let mut n = lock.lock().unwrap();
            *n += 1;
            all.notify_all();
            let (n, wait) = all
                .wait_timeout_while(n, std::time::Duration::from_secs(20), |n| *n < self.of)
                .unwrap();
            if wait.timed_out() {
                return Err(BlockError::Internal {
                    what: format!(
                        "{}: read alone ({} of {} layers reading)",
                        self.name, *n, self.of
                    ),
                });
            }
            buf.fill(self.name.as_bytes()[0]);
            let _ = offset;
            Ok(())
        }

        fn remote(&self) -> bool {
            true
        }

        fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, BlockError> {
            let (status, len) = if offset < self.data {
                (Status::Data, len.min(self.data - offset))
            } else {
                (Status::Unallocated, len)
            };
            Ok(vec![Extent {
                offset,
                len,
                status,
                compressed: false,
                host_offset: None,
                reads_zero: false,
            }])
        }
    }

    fn layer(index: usize, source: Arc<dyn BlockSource>) -> Layer {
        let name = source.name().to_owned();
        Layer::bare(index, &name, Format::Raw, source)
    }

    /// A remote base and a top layer holding the first 64 KiB, meeting
    /// in their reads ([`Rendezvous`]).
    fn rendezvous_chain() -> LayeredReader {
        let met = Arc::new((std::sync::Mutex::new(0), std::sync::Condvar::new()));
        let base = Rendezvous {
            name: "base",
            data: 1 << 20,
            met: Arc::clone(&met),
            of: 2,
        };
        let top = Rendezvous {
            name: "top",
            data: 64 << 10,
            met,
            of: 2,
        };
        let chain = Chain {
            layers: vec![layer(0, Arc::new(base)), layer(1, Arc::new(top))],
        };
        LayeredReader::new(&chain).unwrap()
    }

    #[test]
    fn a_remote_chain_reads_its_layers_pieces_at_once() {
        let reader = rendezvous_chain();
        let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 4096]);
        reader
            .read_many(&mut [(0x1000, &mut a[..]), (0x40000, &mut b[..])])
            .unwrap();
        assert!(a.iter().all(|&x| x == b't'), "the top layer's piece");
        assert!(b.iter().all(|&x| x == b'b'), "the base's piece");
        // One read across the layers' boundary: both pieces at once too.
        let reader = rendezvous_chain();
        let mut c = vec![0u8; 0x10000];
        reader.read_at(0x8000, &mut c).unwrap();
        assert!(c[..0x8000].iter().all(|&x| x == b't'));
        assert!(c[0x8000..].iter().all(|&x| x == b'b'));
    }

    #[test]
    fn an_empty_block_status_answer_is_an_error_not_an_endless_loop() {
        let chain = Chain {
            layers: vec![Layer::bare(
                0,
                "empty-answers",
                Format::Raw,
                Arc::new(EmptyAnswers),
            )],
        };
        let reader = LayeredReader::new(&chain).unwrap();
        let mut buf = [0u8; 4096];
        let e = reader.read_at(0x1000, &mut buf).unwrap_err();
        assert_eq!(
            e.to_string(),
            "internal error: empty-answers: block status answered 0 bytes at 0x1000"
        );
        assert!(reader.read_chunk(0, 4096, &mut buf).is_err());
        assert!(reader.map_entry(0, 4096).is_err());
        // A walk of the map ends (with the error) rather than spinning.
        assert!(crate::block::map::MapIter::range(&reader, 0, 1 << 20).any(|e| e.is_err()));
    }
}
