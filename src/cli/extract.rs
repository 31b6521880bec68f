//! `layerscope extract IMAGE PATH DEST`: a file or a whole tree out of the
//! image (like `debugfs rdump`, `virt-copy-out`), read-only on the image.
//!
//! - Sparse files stay sparse: blocks that read as zeros are not written
//!   (`du` of the copy equals `du` of debugfs rdump's).
//! - Modes, times, owners (when allowed: as root), symlinks, hard links
//!   (as links), FIFOs and, as root, device nodes; extended attributes
//!   where the destination takes them (others are counted and named once).
//! - Never outside DEST: every entry is created relative to a directory
//!   this run created and holds open (`openat`/`mkdirat`/`symlinkat` with
//!   `O_EXCL`/`O_NOFOLLOW`), so no symlink, `..` or `/` in a name, from the
//!   image or planted in DEST, is followed.
//! - Refuses a non-empty DEST unless `--force`.
//!
//! Through the [`Filesystem`] seam: ext, XFS and FAT alike.
use crate::bytes::u64_of;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};
use serde_json::json;

use super::FsArgs;
use crate::fs::{FileType, Filesystem, Metadata, NodeId};

// Arguments of `extract`.
#[derive(Debug, Args)]
pub struct ExtractArgs {
    #[command(flatten)]
    pub fs: FsArgs,
    /// The file or directory in the image (`/etc`, or `<12>`).
    pub path: std::ffi::OsString,
    /// Where to write it: a new or empty directory for a tree (a file
    /// name, or a directory to put it in, for a file).
    pub dest: PathBuf,
    /// Write into a non-empty DEST, replacing entries of the same name.
    #[arg(long)]
    pub force: bool,
}

/// Directories deeper than this are not entered (each level holds a
/// directory open).
const MAX_DEPTH: usize = 200;
/// Bytes read from the image at once.
const CHUNK: usize = 1 << 20;

#[derive(Default, serde::Serialize)]
struct Stats {
    files: u64,
    directories: u64,
    symlinks: u64,
    hard_links: u64,
    special: u64,
    bytes: u64,
    /// Bytes left as holes (read as zeros, not written).
    sparse_bytes: u64,
    skipped: u64,
    xattrs: u64,
    xattrs_not_set: u64,
    warnings: u64,
}

struct Extractor<'a> {
    fs: &'a dyn Filesystem,
    force: bool,
    stats: Stats,
    /// Nodes already written (for hard links): their path under DEST.
    linked: HashMap<NodeId, PathBuf>,
    dest: OwnedFd,
    xattr_error: Option<String>,
    /// The read buffer, kept from file to file (a fresh zeroed megabyte
    /// per file cost more than copying a small file), page-aligned.
    buf: Option<crate::block::buffer::AlignedBuf>,
}

fn warn(stats: &mut Stats, what: &str) {
    stats.warnings = stats.warnings.saturating_add(1);
    eprintln!("layerscope: warning: {}", crate::escape::printable(what));
}

fn timespec(t: Option<crate::fs::Timestamp>) -> Timespec {
    t.map_or(
        Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        |t| Timespec {
            tv_sec: t.secs,
            tv_nsec: i64::from(t.nsec.min(999_999_999)),
        },
    )
}

fn times(m: &Metadata) -> Timestamps {
    Timestamps {
        last_access: timespec(m.atime),
        last_modification: timespec(m.mtime),
    }
}

/// A name safe to create in a directory: not empty, `.`, `..`, and
/// without `/` or NUL.
fn safe_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

impl Extractor<'_> {
    /// Owner, mode, times and attributes of an open node.
    fn finish(&mut self, fd: &OwnedFd, node: NodeId, m: &Metadata, path: &[u8]) {
        // Only root may give files away; a user's run keeps them its own.
        let _ = rustix::fs::fchown(
            fd,
            Some(rustix::fs::Uid::from_raw(m.uid)),
            Some(rustix::fs::Gid::from_raw(m.gid)),
        );
        self.xattrs(fd, node, path);
        if let Err(e) = rustix::fs::fchmod(fd, Mode::from_raw_mode(m.mode & 0o7777)) {
            warn(
                &mut self.stats,
                &format!("{}: chmod: {e}", crate::escape::printable_bytes(path)),
            );
        }
        if let Err(e) = rustix::fs::futimens(fd, &times(m)) {
            warn(
                &mut self.stats,
                &format!("{}: times: {e}", crate::escape::printable_bytes(path)),
            );
        }
    }

    fn xattrs(&mut self, fd: &OwnedFd, node: NodeId, path: &[u8]) {
        let mut problems = Vec::new();
        let list = match self.fs.xattrs(node, &mut problems) {
            Ok(l) => l,
            Err(e) => {
                warn(
                    &mut self.stats,
                    &format!("{}: attributes: {e}", crate::escape::printable_bytes(path)),
                );
                return;
            }
        };
        for p in problems {
            warn(
                &mut self.stats,
                &format!("{}: attributes: {p}", crate::escape::printable_bytes(path)),
            );
        }
        for x in list {
            match rustix::fs::fsetxattr(
                fd,
                OsStr::from_bytes(&x.name),
                &x.value,
                rustix::fs::XattrFlags::empty(),
            ) {
                Ok(()) => self.stats.xattrs = self.stats.xattrs.saturating_add(1),
                Err(e) => {
                    self.stats.xattrs_not_set = self.stats.xattrs_not_set.saturating_add(1);
                    if self.xattr_error.is_none() {
                        self.xattr_error = Some(format!(
                            "{}: attribute {}: {e}",
                            crate::escape::printable_bytes(path),
                            crate::escape::printable_bytes(&x.name)
                        ));
                    }
                }
            }
        }
    }

    /// Writes regular file `node` to `file`, leaving zero blocks as holes.
    fn copy(&mut self, node: NodeId, m: &Metadata, file: &File, path: &[u8]) -> anyhow::Result<()> {
        let buf = self
            .buf
            .get_or_insert_with(|| crate::block::buffer::AlignedBuf::new(CHUNK));
        let mut off = 0u64;
        // Where the bytes written end: past it, the file is sized by
        // set_len (a hole at the end).
        let mut written = 0u64;
        while off < m.size {
            let want = usize::try_from(m.size.saturating_sub(off))
                .unwrap_or(CHUNK)
                .min(CHUNK);
            let part = buf.get_mut(..want).unwrap_or_default();
            let n = self
                .fs
                .read_file(node, off, part)
                .with_context(|| format!("reading {}", crate::escape::printable_bytes(path)))?;
            if n == 0 {
                break;
            }
            let data = part.get(..n).unwrap_or_default();
            // Zero blocks become holes (as `cp --sparse=always` and
            // debugfs's dump do); the runs of blocks between them are
            // written at once.
            let mut run: Option<usize> = None; // start of the data run
            for (i, block) in data.chunks(4096).enumerate() {
                let start = i.saturating_mul(4096);
                if block.iter().all(|&b| b == 0) {
                    self.stats.sparse_bytes =
                        self.stats.sparse_bytes.saturating_add(u64_of(block.len()));
                    if let Some(r) = run.take() {
                        let at = off.saturating_add(u64_of(r));
                        file.write_all_at(data.get(r..start).unwrap_or_default(), at)?;
                        written = at.saturating_add(u64_of(start.saturating_sub(r)));
                    }
                } else if run.is_none() {
                    run = Some(start);
                }
            }
            if let Some(r) = run {
                let at = off.saturating_add(u64_of(r));
                file.write_all_at(data.get(r..).unwrap_or_default(), at)?;
                written = at.saturating_add(u64_of(n.saturating_sub(r)));
            }
            self.stats.bytes = self.stats.bytes.saturating_add(u64_of(n));
            off = off.saturating_add(u64_of(n));
        }
        if written != m.size {
            file.set_len(m.size)?;
        }
        Ok(())
    }

    /// Creates entry `name` (node `node`) in open directory `dir`, at
    /// `rel` under DEST.
    fn entry(
        &mut self,
        dir: &OwnedFd,
        rel: &std::path::Path,
        name: &[u8],
        node: NodeId,
        path: &[u8],
        depth: usize,
    ) {
        if !safe_name(name) {
            self.stats.skipped = self.stats.skipped.saturating_add(1);
            warn(
                &mut self.stats,
                &format!(
                    "{}: a name that cannot be written safely; skipped",
                    crate::escape::printable_bytes(path)
                ),
            );
            return;
        }
        let os = OsStr::from_bytes(name);
        let m = match self.fs.metadata(node) {
            Ok(m) => m,
            Err(e) => {
                self.stats.skipped = self.stats.skipped.saturating_add(1);
                warn(
                    &mut self.stats,
                    &format!("{}: {e}", crate::escape::printable_bytes(path)),
                );
                return;
            }
        };
        let my_rel = rel.join(os);
        if self.force && m.file_type != FileType::Directory {
            // Replace what is there (a symlink itself, never its target).
            let _ = rustix::fs::unlinkat(dir, os, AtFlags::empty());
        }
        if m.file_type != FileType::Directory && m.links > 1 {
            if let Some(first) = self.linked.get(&node) {
                match rustix::fs::linkat(&self.dest, first.as_path(), dir, os, AtFlags::empty()) {
                    Ok(()) => {
                        self.stats.hard_links = self.stats.hard_links.saturating_add(1);
                        return;
                    }
                    Err(e) => warn(
                        &mut self.stats,
                        &format!(
                            "{}: hard link: {e}; written again",
                            crate::escape::printable_bytes(path)
                        ),
                    ),
                }
            }
        }
        let result: anyhow::Result<()> = (|| {
            match m.file_type {
                FileType::Regular => {
                    let fd = rustix::fs::openat(
                        dir,
                        os,
                        OFlags::WRONLY
                            | OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        Mode::from_raw_mode(0o600),
                    )?;
                    let file = File::from(fd);
                    self.copy(node, &m, &file, path)?;
                    let fd = OwnedFd::from(file);
                    self.finish(&fd, node, &m, path);
                    self.stats.files = self.stats.files.saturating_add(1);
                }
                FileType::Directory => {
                    if depth >= MAX_DEPTH {
                        anyhow::bail!("deeper than {MAX_DEPTH} directories; not entered");
                    }
                    match rustix::fs::mkdirat(dir, os, Mode::from_raw_mode(0o700)) {
                        Ok(()) => {}
                        Err(rustix::io::Errno::EXIST) if self.force => {}
                        Err(e) => return Err(e.into()),
                    }
                    let fd = rustix::fs::openat(
                        dir,
                        os,
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )?;
                    self.stats.directories = self.stats.directories.saturating_add(1);
                    self.tree(&fd, &my_rel, node, path, depth.saturating_add(1));
                    self.finish(&fd, node, &m, path);
                }
                FileType::Symlink => {
                    let target = self.fs.read_link(node)?;
                    rustix::fs::symlinkat(OsStr::from_bytes(&target), dir, os)?;
                    let _ = rustix::fs::chownat(
                        dir,
                        os,
                        Some(rustix::fs::Uid::from_raw(m.uid)),
                        Some(rustix::fs::Gid::from_raw(m.gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    );
                    let _ = rustix::fs::utimensat(dir, os, &times(&m), AtFlags::SYMLINK_NOFOLLOW);
                    self.stats.symlinks = self.stats.symlinks.saturating_add(1);
                }
                FileType::Fifo
                | FileType::CharDevice
                | FileType::BlockDevice
                | FileType::Socket => {
                    let (kind, dev) = match m.file_type {
                        FileType::Fifo => (rustix::fs::FileType::Fifo, 0),
                        FileType::Socket => (rustix::fs::FileType::Socket, 0),
                        FileType::CharDevice => (
                            rustix::fs::FileType::CharacterDevice,
                            m.rdev.map_or(0, |(a, b)| rustix::fs::makedev(a, b)),
                        ),
                        _ => (
                            rustix::fs::FileType::BlockDevice,
                            m.rdev.map_or(0, |(a, b)| rustix::fs::makedev(a, b)),
                        ),
                    };
                    rustix::fs::mknodat(dir, os, kind, Mode::from_raw_mode(m.mode & 0o7777), dev)?;
                    let _ = rustix::fs::utimensat(dir, os, &times(&m), AtFlags::SYMLINK_NOFOLLOW);
                    self.stats.special = self.stats.special.saturating_add(1);
                }
                FileType::Unknown => anyhow::bail!("a node of unknown type"),
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                if m.file_type != FileType::Directory && m.links > 1 {
                    self.linked.entry(node).or_insert(my_rel);
                }
            }
            Err(e) => {
                self.stats.skipped = self.stats.skipped.saturating_add(1);
                warn(
                    &mut self.stats,
                    &format!("{}: {e:#}", crate::escape::printable_bytes(path)),
                );
            }
        }
    }

    /// The entries of directory `node` into open directory `dir`.
    fn tree(
        &mut self,
        dir: &OwnedFd,
        rel: &std::path::Path,
        node: NodeId,
        path: &[u8],
        depth: usize,
    ) {
        let mut entries = Vec::new();
        let mut problems = Vec::new();
        if let Err(e) = self.fs.read_dir(node, &mut problems, &mut |e| {
            if !e.is_dot_or_dotdot() {
                entries.push((e.name, e.node));
            }
            std::ops::ControlFlow::Continue(())
        }) {
            warn(
                &mut self.stats,
                &format!("{}: {e}", crate::escape::printable_bytes(path)),
            );
        }
        for p in problems {
            warn(
                &mut self.stats,
                &format!("{}: {p}", crate::escape::printable_bytes(path)),
            );
        }
        for (name, child) in entries {
            let child_path = super::walk::join(path, &name);
            self.entry(dir, rel, &name, child, &child_path, depth);
        }
    }
}

/// `extract`.
///
/// # Errors
/// Opening the image or the filesystem; PATH not found; DEST not empty
/// without `--force`, or not writable.
pub fn run(args: &ExtractArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let opened = super::fs::open_full(&args.fs)?;
    let fs: &dyn Filesystem = fs_of(&opened);
    let node = super::fs::resolve_bytes(fs, super::fs::arg_bytes(&args.path))?;
    let meta = fs.metadata(node)?;
    let src_raw = super::find::raw_path(&[Some(fs)], super::fs::arg_bytes(&args.path));
    let src = src_raw.as_slice();
    let dest = &args.dest;
    let is_dir = meta.file_type == FileType::Directory;
    // Where the top entry goes: for a tree, DEST itself; for a file, DEST
    // (or DEST/name when DEST is a directory).
    let (parent, name): (PathBuf, Vec<u8>) = if is_dir {
        match std::fs::read_dir(dest) {
            Ok(mut d) => {
                if d.next().is_some() && !args.force {
                    anyhow::bail!(
                        "{}: not empty (use --force to write into it)",
                        dest.display()
                    );
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(dest)
                    .with_context(|| format!("creating {}", dest.display()))?;
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("{}", dest.display()))),
        }
        (dest.clone(), Vec::new())
    } else if dest.is_dir() {
        let base = src.rsplit(|&b| b == b'/').next().unwrap_or(src).to_vec();
        (
            dest.clone(),
            if base.is_empty() || base.starts_with(b"<") {
                format!("inode{node}").into_bytes()
            } else {
                base
            },
        )
    } else {
        let p = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let n = dest
            .file_name()
            .ok_or_else(|| anyhow::anyhow!("{}: not a file name", dest.display()))?;
        if dest.symlink_metadata().is_ok() && !args.force {
            anyhow::bail!("{}: exists (use --force to replace it)", dest.display());
        }
        (p.to_path_buf(), n.as_bytes().to_vec())
    };
    let dir = rustix::fs::open(
        &parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening {}", parent.display()))?;
    // Hard links are made relative to the top directory.
    let dest_fd = rustix::io::dup(&dir)?;
    let mut x = Extractor {
        fs,
        force: args.force,
        stats: Stats::default(),
        linked: HashMap::new(),
        dest: dest_fd,
        xattr_error: None,
        buf: None,
    };
    if is_dir {
        x.tree(&dir, &PathBuf::new(), node, src, 0);
        x.finish(&dir, node, &meta, src);
        x.stats.directories = x.stats.directories.saturating_add(1);
    } else {
        x.entry(&dir, &PathBuf::new(), &name, node, src, 0);
    }
    if let Some(e) = &x.xattr_error {
        eprintln!(
            "layerscope: note: {} extended attribute(s) not set (the destination refused them), the first: {}",
            x.stats.xattrs_not_set,
            crate::escape::printable(e)
        );
    }
    let s = &x.stats;
    if args.fs.json {
        crate::escape::json::to_writer_pretty(&mut *out, &json!(s))?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{} files, {} directories, {} symlinks, {} hard links, {} special; {} bytes ({} left as holes); {} skipped",
            s.files, s.directories, s.symlinks, s.hard_links, s.special, s.bytes, s.sparse_bytes, s.skipped
        )?;
    }
    if s.skipped > 0 {
        anyhow::bail!(
            "{} entries could not be extracted (see the warnings above)",
            s.skipped
        );
    }
    Ok(())
}

/// The filesystem of an opened volume, through the seam.
fn fs_of(opened: &super::fs::Opened) -> &dyn Filesystem {
    opened.fs.as_ref()
}
