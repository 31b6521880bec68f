//! An image format read over a protocol: an NBD export whose bytes are an
//! image file (qcow2, VMDK, VHD, …) rather than a disk, as `nbdkit file
//! dir=DIR` serves each file of a directory. The export is a [`Storage`]
//! like a local file, and the chain's [`Opener`] opens backing files (and
//! VMDK extents) as sibling exports of the same server, so a chain is
//! explored where it is stored, without copying it.
//!
//! What this module does not own: the NBD protocol (`block::nbd`), and the
//! one-layer view of an export that is a disk (`chain::open_nbd`).
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::as_conversions
)]
use std::io;
use std::sync::Arc;

use crate::block::buffer::FetchBuf;
use crate::block::chain::{FileId, Opened, Opener, MAX_SIBLINGS};
use crate::block::nbd::{list_exports, NbdClient, NbdUri, Options};
use crate::block::storage::Storage;
use crate::block::storage_cache::{CachedStorage, ChunkCache};
use crate::block::{BlockError, BlockSource};

/// An export's bytes as a file.
pub struct NbdStorage {
    client: Arc<NbdClient>,
}

impl NbdStorage {
    /// The client underneath.
    pub fn client(&self) -> &Arc<NbdClient> {
        &self.client
    }
}

impl Storage for NbdStorage {
    fn len(&self) -> u64 {
        self.client.len()
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        if offset
            .checked_add(len)
            .is_none_or(|e| e > self.client.len())
        {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.client
            .read_at(offset, buf)
            .map_err(|e| io::Error::other(e.to_string()))
    }

    fn read_many(&self, reqs: &mut [(u64, &mut [u8])]) -> io::Result<()> {
        let size = self.client.len();
        for (offset, buf) in reqs.iter() {
            let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
            if offset.checked_add(len).is_none_or(|e| e > size) {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        self.client
            .read_many(reqs)
            .map_err(|e| io::Error::other(e.to_string()))
    }

    fn remote(&self) -> bool {
        true
    }

    fn next_run(&self, _offset: u64) -> io::Result<Option<(bool, u64)>> {
        // Holes of the served file are not asked for: everything counts
        // as data (qemu over NBD asks base:allocation; see the README).
        Ok(None)
    }

    fn allocated_size(&self) -> Option<u64> {
        None
    }
}

/// Opens exports of one NBD server by name.
pub struct NbdOpener {
    server: NbdUri,
    opts: Options,
    /// One bound for the metadata of every export opened (tables are
    /// read in small pieces; each would otherwise be a round trip).
    cache: Arc<ChunkCache>,
}

/// Bytes of exports kept in memory, shared by every layer.
const CACHE_BYTES: u64 = 64 << 20;

impl NbdOpener {
    /// An opener for the server of `uri`.
    pub fn new(uri: &NbdUri, opts: Options) -> NbdOpener {
        NbdOpener {
            server: uri.clone(),
            opts,
            cache: Arc::new(ChunkCache::new(CACHE_BYTES)),
        }
    }

    fn connect(&self, export: &str) -> Result<NbdClient, BlockError> {
        // Same server, same TLS settings, another export.
        let uri = NbdUri {
            export: export.to_owned(),
            ..self.server.clone()
        };
        NbdClient::connect(uri, self.opts.clone())
    }
}

impl Opener for NbdOpener {
    fn open(&self, path: &str) -> Result<Opened, BlockError> {
        // nbdkit's file plugin names exports by file name: a backing
        // name with directories (absolute, or `../x`) is tried as written,
        // then by its last component.
        let client = match self.connect(path) {
            Ok(c) => c,
            Err(first) => match path.rsplit('/').next().filter(|leaf| *leaf != path) {
                Some(leaf) => self.connect(leaf).map_err(|_| open_error(path, &first))?,
                None => return Err(open_error(path, &first)),
            },
        };
        let id = FileId::Name(client.name().to_owned());
        let storage = Arc::new(NbdStorage {
            client: Arc::new(client),
        });
        Ok(Opened {
            storage: Arc::new(CachedStorage::new(storage, Arc::clone(&self.cache))),
            id,
        })
    }

    fn siblings(&self, _path: &str) -> Result<Vec<String>, BlockError> {
        let exports = list_exports(&self.server, &self.opts)?;
        Ok(exports
            .into_iter()
            .map(|(name, _)| name)
            .take(MAX_SIBLINGS)
            .collect())
    }
}

/// A failed export open as an `Open` error, so a missing backing export
/// reads like a missing backing file.
fn open_error(path: &str, e: &BlockError) -> BlockError {
    BlockError::Open {
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::NotFound, e.to_string()),
    }
}

/// Bytes of the export's head the probe reads (its first 512 decide).
const PROBE_HEAD: u64 = 128 << 10;

/// Most bytes of the head the probe reads for a command that walks the
/// whole tree (`ls -R`, `find`, …): the start of a disk holds most of a
/// filesystem's metadata (ext4 packs the inode tables of its first 16
/// groups there, flex_bg; XFS its first AG's inodes; FAT its tables), so
/// the walk's first batch (the in-use inode tables) is then answered
/// from memory, not a round trip after the probe's.
const WALK_HEAD: u64 = 8 << 20;

/// The head the probe reads: a walk's longer one is at most 1/256 of the
/// disk, so the guess never costs more than a small part of what copying
/// the disk would.
fn probe_head(len: u64, walk: bool) -> u64 {
    let head = if walk {
        WALK_HEAD.min(len / 256).max(PROBE_HEAD)
    } else {
        PROBE_HEAD
    };
    head.min(len)
}

/// Opens an NBD URI: a disk export as one NBD layer (what qemu-nbd serves),
/// or, when `opts.format` names an image format or the export's first and
/// last bytes look like one, the image stored in the export with its
/// backing files opened as sibling exports.
///
/// # Errors
/// Connection errors; the image's errors; `NotAnImage` for a format
/// layerscope does not read.
pub fn open_uri(
    uri: &str,
    opts: crate::block::chain::ChainOptions,
    nbd_opts: Options,
) -> Result<crate::block::chain::Chain, BlockError> {
    use crate::block::probe::{probe, Format, Probe};
    if opts.format == Some(Format::Raw) {
        return crate::block::chain::open_nbd(uri, nbd_opts);
    }
    let parsed = NbdUri::parse(uri).map_err(|why| BlockError::Open {
        path: uri.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, why),
    })?;
    let format = match opts.format {
        Some(f) => f,
        None => {
            let client = NbdClient::connect(parsed.clone(), nbd_opts.clone())?;
            let len = client.len();
            let n = len.min(512);
            // The head is read whole (same round trip, a few more bytes):
            // the partition table, the filesystem's superblock and its
            // group descriptors are read next, and the client keeps it.
            let walk = nbd_opts.walk_ahead;
            let mut head = FetchBuf::zeroed(usize::try_from(probe_head(len, walk)).unwrap_or(0));
            let mut tail = vec![0u8; usize::try_from(n).unwrap_or(0)];
            // Both in flight together: one round trip.
            // Block status for the whole export goes in the same write.
            let tail_at = len.saturating_sub(n);
            client.read_many_with_status(&mut [(0, &mut head[..]), (tail_at, &mut tail)])?;
            // Kept for the reads that follow, without a copy (the walk's
            // head is megabytes).
            let (head, tail) = (head.into_bytes(), bytes::Bytes::from(tail));
            client.keep_shared(0, &head);
            client.keep_shared(tail_at, &tail);
            let head = head
                .get(..usize::try_from(n).unwrap_or(0))
                .unwrap_or_default();
            match probe(head, &tail) {
                // A disk (or bytes we cannot tell from one): the export as
                // qemu-nbd serves it.
                // The probing connection is the disk's (a fresh one would
                // be one more than the user asked for).
                Probe::Readable(Format::Raw) => {
                    return Ok(crate::block::chain::nbd_chain(uri, client));
                }
                Probe::Readable(f) => f,
                Probe::Foreign(name) => {
                    return Err(BlockError::NotAnImage {
                        path: uri.to_owned(),
                        detected: name.to_owned(),
                    })
                }
            }
        }
    };
    let opener = NbdOpener::new(&parsed, nbd_opts);
    let mut chain = crate::block::chain::open_chain(
        &parsed.export,
        crate::block::chain::ChainOptions {
            format: Some(format),
            ..opts
        },
        &opener,
    )?;
    // Say where the bytes came from: the top layer's name is the URI.
    if let Some(top) = chain.layers.last_mut() {
        top.path = uri.to_owned();
        top.format_probed = opts.format.is_none();
    }
    Ok(chain)
}
