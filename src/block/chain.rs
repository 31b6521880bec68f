//! Discovering a backing chain the way qemu does: the backing file name is
//! taken relative to the overlay's directory (not the current directory),
//! its format comes from the overlay's header extension or is probed, the
//! depth is bounded and a file that appears twice is a loop.
//!
//! Files are opened through an [`Opener`], so the embedded demo chain (bytes
//! in the binary) resolves its backing names exactly like files on disk.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::sync::Arc;

use crate::block::image::{ImageInfo, ParentRef};
use crate::block::probe::{probe, Format, Probe};
use crate::block::qcow2::Qcow2Layer;
use crate::block::raw::RawFile;
use crate::block::storage::{FileStorage, Storage};
use crate::block::{BlockError, BlockSource};
use crate::bytes::{u64_of, us};

/// qemu-like bound on chain length; deeper chains are refused.
pub const MAX_CHAIN_DEPTH: usize = 64;

/// Identifies a file for loop detection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FileId {
    /// Device and inode of a file on disk.
    Inode(u64, u64),
    /// A name in an in-memory table.
    Name(String),
}

/// An opened image file.
pub struct Opened {
    pub storage: Arc<dyn Storage>,
    pub id: FileId,
}

/// Opens image files by path, read-only.
pub trait Opener {
    /// Opens `path`.
    ///
    /// # Errors
    /// `Open` (with the `io::Error`, so a missing backing file can be told
    /// apart), `IsDirectory`.
    fn open(&self, path: &str) -> Result<Opened, BlockError>;

    /// The names of the files in the directory of `path`, as paths the
    /// opener opens (for formats that find a parent by its identity rather
    /// than by name). At most [`MAX_SIBLINGS`]; none when the opener
    /// cannot list.
    ///
    /// # Errors
    /// Listing errors.
    fn siblings(&self, _path: &str) -> Result<Vec<String>, BlockError> {
        Ok(Vec::new())
    }

    /// Where the backing file `name`, written in `overlay` (a path this
    /// opener opened), is: by default qemu's rule for local files
    /// ([`resolve_backing`]). A remote opener keeps absolute names on its
    /// host.
    ///
    /// # Errors
    /// As [`resolve_backing`].
    fn resolve_backing(&self, overlay: &str, name: &str) -> Result<String, BlockError> {
        resolve_backing(overlay, name)
    }

    /// A hint: `path` is likely opened next (the backing file an
    /// overlay's header names, while the overlay's tables load). A remote
    /// opener sends the open now and [`Opener::open`] takes its answer,
    /// so the open costs no round trip of its own. Errors are left for
    /// that open.
    fn open_ahead(&self, _path: &str) {}
}

/// Most directory entries looked at when searching for a parent by
/// identity.
pub const MAX_SIBLINGS: usize = 4096;

/// Opens files on the local filesystem, read-only.
pub struct FsOpener;

impl Opener for FsOpener {
    fn open(&self, path: &str) -> Result<Opened, BlockError> {
        let open_err = |source: io::Error| BlockError::Open {
            path: path.to_owned(),
            source,
        };
        // The type first: opening a FIFO blocks until a writer comes, a
        // socket cannot be read as a disk, and a character device
        // (a terminal, /dev/zero) has no size. Only regular files and
        // block devices are disks.
        let refuse = |meta: &std::fs::Metadata| -> Result<(), BlockError> {
            let t = meta.file_type();
            let kind = if t.is_dir() {
                return Err(BlockError::IsDirectory {
                    path: path.to_owned(),
                });
            } else if t.is_fifo() {
                "FIFO (named pipe)"
            } else if t.is_socket() {
                "socket"
            } else if t.is_char_device() {
                "character device"
            } else {
                return Ok(());
            };
            Err(BlockError::SpecialFile {
                path: path.to_owned(),
                kind,
            })
        };
        refuse(&std::fs::metadata(path).map_err(open_err)?)?;
        // Read-only (layerscope never writes), and O_NONBLOCK so that a
        // path swapped for a FIFO after the check above cannot block the
        // open; the type is checked again on what was opened.
        use rustix::fs::{Mode, OFlags};
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        )
        .map_err(|e| open_err(e.into()))?;
        let mut file = File::from(fd);
        let meta = file.metadata().map_err(open_err)?;
        refuse(&meta)?;
        rustix::fs::fcntl_setfl(&file, OFlags::empty()).map_err(|e| open_err(e.into()))?;
        let id = FileId::Inode(meta.dev(), meta.ino());
        let storage = if meta.is_file() {
            FileStorage::new(file).map_err(open_err)?
        } else {
            // A block device: its size is where a seek to the end lands.
            let len = file.seek(SeekFrom::End(0)).map_err(open_err)?;
            FileStorage::with_len(file, len)
        };
        Ok(Opened {
            storage: Arc::new(storage),
            id,
        })
    }

    fn siblings(&self, path: &str) -> Result<Vec<String>, BlockError> {
        let dir_len = path.rfind('/').map_or(0, |i| i.saturating_add(1));
        let prefix = path.get(..dir_len).unwrap_or_default();
        let dir = if prefix.is_empty() { "." } else { prefix };
        let entries = std::fs::read_dir(dir).map_err(|source| BlockError::Open {
            path: dir.to_owned(),
            source,
        })?;
        let mut names: Vec<String> = entries
            .take(MAX_SIBLINGS)
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .map(|n| format!("{prefix}{n}"))
            .collect();
        names.sort();
        Ok(names)
    }
}

/// How to open a chain.
#[derive(Clone, Debug, Default)]
pub struct ChainOptions {
    /// Format of the top image (default: probe).
    pub format: Option<Format>,
    /// Format of backing files whose overlay names none (default: probe).
    pub backing_format: Option<Format>,
    /// Read VHDX images whose log needs replaying as they are on disk
    /// (default: refuse them).
    pub log_as_is: bool,
    /// Read the top layer (qcow2) as it was at this internal snapshot (an
    /// ID, else a name), like `qemu-img convert -l`.
    pub snapshot: Option<String>,
}

/// One layer of a chain.
pub struct Layer {
    /// Position from the bottom: 0 is the base.
    pub index: usize,
    /// The path it was opened by (for backing files: the resolved path).
    pub path: String,
    pub format: Format,
    /// The format was guessed from the content, not stated.
    pub format_probed: bool,
    pub source: Arc<dyn BlockSource>,
    /// The qcow2 reader, for qcow2 layers.
    pub qcow2: Option<Arc<Qcow2Layer>>,
    /// What the format reader says about the layer, for the other image
    /// formats (VMDK, VHD, VHDX, VDI).
    pub info: Option<Arc<dyn ImageInfo>>,
    /// The NBD client, for a layer read over NBD.
    pub nbd: Option<Arc<crate::block::nbd::NbdClient>>,
    /// The file, for layers that are files.
    pub storage: Option<Arc<dyn Storage>>,
    /// The backing file name as written in the image.
    pub backing_name: Option<String>,
    /// The backing file name resolved like qemu resolves it.
    pub backing_resolved: Option<String>,
    /// The backing format named in the image's header extension.
    pub backing_format: Option<String>,
}

/// A backing chain, base first.
pub struct Chain {
    pub layers: Vec<Layer>,
}

/// How a chain's files are named where it is shown (`render --paths`), so
/// that frames and snapshots do not depend on where the images are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PathStyle {
    /// As they were given or resolved (the default).
    #[default]
    AsGiven,
    /// Their file names alone.
    Name,
    /// `layer N`, hiding the names.
    Redacted,
}

impl Chain {
    /// Renames the layers' paths (and resolved backing names) for display
    /// in `style`. The files stay open as they are: only what is shown
    /// changes, so call it after opening.
    pub fn show_paths(&mut self, style: PathStyle) {
        let name = |p: &str| p.rsplit('/').next().unwrap_or(p).to_owned();
        for layer in &mut self.layers {
            let below = layer.index.checked_sub(1);
            match style {
                PathStyle::AsGiven => {}
                PathStyle::Name => {
                    layer.path = name(&layer.path);
                    layer.backing_resolved = layer.backing_resolved.as_deref().map(name);
                }
                PathStyle::Redacted => {
                    layer.path = format!("layer {}", layer.index);
                    let label = below.map(|b| format!("layer {b}"));
                    if layer.backing_name.is_some() {
                        layer.backing_name.clone_from(&label);
                    }
                    if layer.backing_resolved.is_some() {
                        layer.backing_resolved = label;
                    }
                }
            }
        }
    }

    /// The top layer.
    pub fn top(&self) -> Option<&Layer> {
        self.layers.last()
    }

    /// qemu's depth of layer `index` (0 is the top).
    pub fn depth_of(&self, index: usize) -> usize {
        self.layers.len().saturating_sub(1).saturating_sub(index)
    }

    /// The chain as of layer `index`: that layer and everything below it.
    pub fn cut(&self, index: usize) -> Chain {
        Chain {
            layers: self
                .layers
                .iter()
                .take(index.saturating_add(1))
                .map(Layer::share)
                .collect(),
        }
    }
}

impl Layer {
    /// A layer that is `source` alone: no format reader, no file, no
    /// backing name. An NBD export is one, and a chain opener or a test
    /// sets the rest with struct update syntax.
    pub fn bare(index: usize, path: &str, format: Format, source: Arc<dyn BlockSource>) -> Layer {
        Layer {
            index,
            path: path.to_owned(),
            format,
            format_probed: false,
            source,
            qcow2: None,
            info: None,
            nbd: None,
            storage: None,
            backing_name: None,
            backing_resolved: None,
            backing_format: None,
        }
    }

    fn share(&self) -> Layer {
        Layer {
            index: self.index,
            path: self.path.clone(),
            format: self.format,
            format_probed: self.format_probed,
            source: Arc::clone(&self.source),
            qcow2: self.qcow2.clone(),
            info: self.info.clone(),
            nbd: self.nbd.clone(),
            storage: self.storage.clone(),
            backing_name: self.backing_name.clone(),
            backing_resolved: self.backing_resolved.clone(),
            backing_format: self.backing_format.clone(),
        }
    }
}

/// qemu's `path_has_protocol`: a `:` before any `/`.
fn has_protocol(name: &str) -> bool {
    name.find([':', '/'])
        .is_some_and(|i| name.as_bytes().get(i) == Some(&b':'))
}

/// Resolves a backing file name the way qemu's `path_combine` does: an
/// absolute name stays; a relative one is joined to the overlay's directory
/// as a string (so `dir/top.qcow2` + `../base` gives `dir/../base`).
///
/// # Errors
/// `Unsupported` for protocol names (`nbd:…`, `json:{…}`).
pub fn resolve_backing(overlay: &str, name: &str) -> Result<String, BlockError> {
    if name.starts_with('/') {
        return Ok(name.to_owned());
    }
    if has_protocol(name) {
        return Err(BlockError::unsupported(
            overlay,
            format!("backing file {name:?} uses a protocol, not a local file"),
        ));
    }
    let dir = overlay
        .rfind('/')
        .and_then(|i| overlay.get(..=i))
        .unwrap_or_default();
    Ok(format!("{dir}{name}"))
}

/// Opens the image at `path` and every backing file below it.
///
/// # Errors
/// Open and format errors of any layer (naming it); `MissingBacking`,
/// `BackingLoop`, `ChainTooDeep`.
pub fn open_chain(
    path: &str,
    opts: ChainOptions,
    opener: &dyn Opener,
) -> Result<Chain, BlockError> {
    let mut stack: Vec<Layer> = Vec::new();
    let mut seen: HashMap<FileId, String> = HashMap::new();
    let mut current = path.to_owned();
    let mut hint = opts.format;
    loop {
        let opened = match opener.open(&current) {
            Ok(o) => o,
            Err(BlockError::Open { source, path }) => {
                let Some(above) = stack.last() else {
                    return Err(BlockError::Open { source, path });
                };
                return Err(BlockError::MissingBacking {
                    overlay: above.path.clone(),
                    name: above.backing_name.clone().unwrap_or_default(),
                    tried: current,
                    source,
                });
            }
            Err(e) => return Err(e),
        };
        if let Some(first) = seen.get(&opened.id) {
            let mut names: Vec<&str> = stack.iter().map(|l| l.path.as_str()).collect();
            names.push(&current);
            return Err(BlockError::BackingLoop {
                chain: format!("{} (the same file as {first})", names.join(" -> ")),
            });
        }
        if stack.len() >= MAX_CHAIN_DEPTH {
            return Err(BlockError::ChainTooDeep {
                overlay: path.to_owned(),
                limit: MAX_CHAIN_DEPTH,
            });
        }
        seen.insert(opened.id.clone(), current.clone());
        // An internal snapshot names the top image's own state only.
        let snapshot = opts.snapshot.as_deref().filter(|_| stack.is_empty());
        let (mut layer, parent) =
            open_layer(&current, opened.storage, hint, opener, &opts, snapshot)?;
        let Some(parent) = parent else {
            stack.push(layer);
            break;
        };
        let next = find_parent(&current, &parent, opener)?;
        hint = parent.format.or(opts.backing_format);
        layer.backing_resolved = Some(next.clone());
        stack.push(layer);
        current = next;
    }
    stack.reverse();
    for (i, layer) in stack.iter_mut().enumerate() {
        layer.index = i;
    }
    Ok(Chain { layers: stack })
}

/// Opens an NBD export as a one-layer chain. (qemu-nbd exports the whole
/// chain flattened; `qemu:allocation-depth` says which layer holds what.)
///
/// # Errors
/// Connection and handshake errors.
pub fn open_nbd(uri: &str, opts: crate::block::nbd::Options) -> Result<Chain, BlockError> {
    let parsed = crate::block::nbd::NbdUri::parse(uri).map_err(|why| BlockError::Open {
        path: uri.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, why),
    })?;
    let client = crate::block::nbd::NbdClient::connect(parsed, opts)?;
    Ok(nbd_chain(uri, client))
}

/// An export already connected as a one-layer chain (see [`open_nbd`]).
pub fn nbd_chain(uri: &str, client: crate::block::nbd::NbdClient) -> Chain {
    let client = Arc::new(client);
    Chain {
        layers: vec![Layer {
            nbd: Some(Arc::clone(&client)),
            ..Layer::bare(0, uri, Format::Nbd, client)
        }],
    }
}

/// Finds the parent a layer names: the first candidate name that opens
/// (and, when the child says which identity its parent has, carries it),
/// or a file of the child's directory with that identity.
///
/// # Errors
/// `MissingBacking` naming every name tried; `Unsupported` for protocol
/// names.
fn find_parent(child: &str, parent: &ParentRef, opener: &dyn Opener) -> Result<String, BlockError> {
    // One name and nothing to check: the next step opens it and reports
    // a missing file as qemu does.
    if parent.identity.is_none() && !parent.search_siblings {
        if let [only] = parent.names.as_slice() {
            return opener.resolve_backing(child, only);
        }
    }
    let mut tried = Vec::new();
    let mut candidates = Vec::new();
    for name in &parent.names {
        match opener.resolve_backing(child, name) {
            Ok(p) => candidates.push(p),
            Err(_) => tried.push(format!("{name} (a protocol, not a file)")),
        }
    }
    if parent.search_siblings {
        // Beside the child, then in the directory above (VirtualBox keeps
        // differencing images in Snapshots/ below their base).
        let dir_len = child.rfind('/').map_or(0, |i| i.saturating_add(1));
        let above = format!("{}../-", child.get(..dir_len).unwrap_or_default());
        for probe_in in [child, above.as_str()] {
            for p in opener.siblings(probe_in).unwrap_or_default() {
                if p != child && !candidates.contains(&p) {
                    candidates.push(p);
                }
            }
        }
    }
    for path in candidates {
        let opened = match opener.open(&path) {
            Ok(o) => o,
            Err(e) => {
                if !parent.search_siblings {
                    tried.push(format!("{path} ({e})"));
                }
                continue;
            }
        };
        let Some(want) = parent.identity else {
            return Ok(path);
        };
        match identity_of(&path, opened.storage.as_ref(), parent.format) {
            Some(id) if id == want => return Ok(path),
            Some(id) if !parent.search_siblings => tried.push(format!(
                "{path} (identity {} is not the parent's {})",
                crate::block::image::uuid_text(&id),
                crate::block::image::uuid_text(&want)
            )),
            None if !parent.search_siblings => {
                tried.push(format!("{path} (not an image of the parent's format)"))
            }
            _ => {}
        }
    }
    if parent.search_siblings {
        tried.push(format!(
            "every file beside it (no image with identity {})",
            parent
                .identity
                .map(|i| crate::block::image::uuid_text(&i))
                .unwrap_or_default()
        ));
    }
    Err(BlockError::MissingBacking {
        overlay: child.to_owned(),
        name: parent.display.clone(),
        tried: tried.join("; "),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no parent found"),
    })
}

/// The identity a child uses to name this file as its parent, if the file
/// is an image of a format that has one.
fn identity_of(path: &str, storage: &dyn Storage, format: Option<Format>) -> Option<[u8; 16]> {
    let format = match format {
        Some(f) => f,
        None => probe_storage(path, storage).ok()?,
    };
    crate::block::formats::identity(format, storage)
}

/// Opens one file as a layer in the given (or probed) format, and says
/// which parent it names.
/// Opens a qcow2 image's external data file. qemu opens a relative name
/// relative to its working directory, not to the image (unlike backing
/// files); that is tried first, then the image's directory, so an image
/// opened from elsewhere still finds a data file beside it.
fn open_data_file(
    image: &str,
    name: &str,
    opener: &dyn Opener,
) -> Result<Arc<dyn Storage>, BlockError> {
    let beside = resolve_backing(image, name)?;
    let mut tried = vec![name.to_owned()];
    if beside != name {
        tried.push(beside.clone());
    }
    let mut last = None;
    for candidate in &tried {
        match opener.open(candidate) {
            Ok(o) => return Ok(o.storage),
            Err(BlockError::Open { source, .. }) => last = Some(source),
            Err(other) => return Err(other),
        }
    }
    Err(BlockError::MissingDataFile {
        image: image.to_owned(),
        name: name.to_owned(),
        tried: tried.join(", then "),
        source: last.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound)),
    })
}

fn open_layer(
    path: &str,
    storage: Arc<dyn Storage>,
    format: Option<Format>,
    opener: &dyn Opener,
    opts: &ChainOptions,
    snapshot: Option<&str>,
) -> Result<(Layer, Option<ParentRef>), BlockError> {
    if storage.is_empty() {
        return Err(BlockError::EmptyFile {
            path: path.to_owned(),
        });
    }
    let (format, probed) = match format {
        Some(Format::Nbd) => {
            return Err(BlockError::unsupported(
                path,
                "an NBD export cannot be a backing file here",
            ))
        }
        Some(f) => (f, false),
        None => (probe_storage(path, storage.as_ref())?, true),
    };
    let mut layer = Layer {
        format_probed: probed,
        storage: Some(Arc::clone(&storage)),
        ..Layer::bare(
            0,
            path,
            format,
            Arc::new(RawFile::new(path, Arc::clone(&storage))),
        )
    };
    if let (Some(_), false) = (snapshot, format == Format::Qcow2) {
        return Err(BlockError::unsupported(
            path,
            format!(
                "internal snapshots are a qcow2 feature, and this is {}",
                format.name()
            ),
        ));
    }
    let mut parent = None;
    match format {
        Format::Qcow2 => {
            if storage.remote() {
                // The backing file opens while this layer's tables load.
                if let Some(name) = crate::block::qcow2::header::backing_hint(storage.as_ref()) {
                    if let Ok(next) = opener.resolve_backing(path, &name) {
                        opener.open_ahead(&next);
                    }
                }
            }
            let mut q = Qcow2Layer::open(path, storage)?;
            if let Some(name) = q.header().data_file.clone() {
                q.set_data_file(open_data_file(path, &name, opener)?);
            }
            if let Some(wanted) = snapshot {
                q = q.at_snapshot(wanted)?;
            }
            let q = Arc::new(q);
            layer.backing_name = q.header().backing_file.clone();
            // qemu reports a backing format only with a backing name: a
            // format extension in a lone image means nothing.
            layer.backing_format = layer
                .backing_name
                .as_ref()
                .and_then(|_| q.header().backing_format.clone());
            if let Some(name) = &layer.backing_name {
                let format = match &layer.backing_format {
                    Some(f) => Some(Format::from_name(f).ok_or_else(|| {
                        BlockError::unsupported(path, format!("backing file format {f:?}"))
                    })?),
                    None => None,
                };
                parent = Some(ParentRef::named(name, format));
            }
            layer.source = q.clone();
            layer.qcow2 = Some(q);
        }
        Format::Raw | Format::Nbd => {}
        other => {
            let opened = crate::block::formats::open(other, path, storage, opener, opts)?;
            layer.source = opened.source;
            layer.info = Some(opened.info);
            if let Some(p) = &opened.parent {
                layer.backing_name = Some(p.display.clone());
                layer.backing_format = p.format.map(|f| f.name().to_owned());
            }
            parent = opened.parent;
        }
    }
    Ok((layer, parent))
}

/// File name endings that promise a qcow2 image.
const QCOW2_SUFFIXES: &[&str] = &[".qcow2", ".qcow", ".qcow2c", ".qcow3"];

fn probe_storage(path: &str, storage: &dyn Storage) -> Result<Format, BlockError> {
    let len = storage.len();
    let mut head = vec![0u8; us(len.min(512))];
    let tail_len = len.min(512);
    // Both ends in one round trip over a remote file (a hint: a local
    // file ignores it).
    storage.prefetch(&[(0, len.min(512)), (len.saturating_sub(tail_len), tail_len)]);
    storage
        .read_exact_at(0, &mut head)
        .map_err(|e| BlockError::io(path, "reading the first sector", 0, e))?;
    let mut tail = vec![0u8; us(len.min(512))];
    let tail_at = len.saturating_sub(u64_of(tail.len()));
    storage
        .read_exact_at(tail_at, &mut tail)
        .map_err(|e| BlockError::io(path, "reading the last sector", tail_at, e))?;
    match probe(&head, &tail) {
        // A file named like a qcow2 image that lacks the magic is a damaged
        // image, not a raw disk: say so instead of showing garbage.
        Probe::Readable(Format::Raw) if QCOW2_SUFFIXES.iter().any(|s| path.ends_with(s)) => {
            let found: Vec<String> = head.iter().take(4).map(|b| format!("{b:02x}")).collect();
            Err(BlockError::corrupt(
                path,
                "qcow2 header",
                0,
                format!(
                    "magic: named like a qcow2 image but found {} instead of 51 46 49 fb; use --format raw to read its bytes as a raw disk",
                    found.join(" ")
                ),
            ))
        }
        Probe::Readable(f) => Ok(f),
        Probe::Foreign(name) => Err(BlockError::NotAnImage {
            path: path.to_owned(),
            detected: name.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backing_paths_resolve_like_qemu() {
        assert_eq!(
            resolve_backing("top.qcow2", "base.qcow2").unwrap(),
            "base.qcow2"
        );
        assert_eq!(
            resolve_backing("dir/top.qcow2", "base.qcow2").unwrap(),
            "dir/base.qcow2"
        );
        assert_eq!(
            resolve_backing("a/b/top", "../c/base").unwrap(),
            "a/b/../c/base"
        );
        assert_eq!(resolve_backing("a/top", "/abs/base").unwrap(), "/abs/base");
        assert!(resolve_backing("top", "nbd://host/x").is_err());
        assert!(resolve_backing("top", "json:{}").is_err());
        // A colon after a slash is part of a file name.
        assert_eq!(resolve_backing("d/top", "x/y:z").unwrap(), "d/x/y:z");
    }
}
