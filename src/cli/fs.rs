//! Opening the filesystem a command is about, and `layerscope info` and
//! `groups`: the superblock and the group headers of any filesystem
//! behind [`Filesystem`] (ext's in dumpe2fs's words, through
//! [`super::ext`]).
use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use serde_json::json;

use super::{FsArgs, InfoArgs};
use crate::block::chain::Chain;
use crate::block::layered::LayeredReader;
use crate::block::layered::Owner;
use crate::block::BlockSource;
use crate::escape::printable;
use crate::fs::{Filesystem, GroupRow, NodeId};
use crate::volume::{ChooseError, Geometry, Role, Table, VolumeTree};

/// Opens the filesystem of the image's chain, cut at `--layer`.
pub(super) fn open(args: &FsArgs) -> anyhow::Result<Arc<dyn Filesystem>> {
    Ok(open_full(args)?.fs)
}

/// An opened filesystem and where it sits.
pub(super) struct Opened {
    pub fs: Arc<dyn Filesystem>,
    /// The layered reader of the whole disk (to say which layer holds what).
    pub reader: Arc<LayeredReader>,
    /// Byte offset of the filesystem on the disk when its volume is one
    /// window (a partition, the disk); see `geometry` for the general case.
    pub base: u64,
    /// The disk's volumes.
    pub tree: VolumeTree,
    /// The name of the volume in use (`disk`, `p1`, `vg0/root`).
    pub volume: String,
    /// Where the volume's bytes are on the disk.
    pub geometry: Arc<Geometry>,
}

impl Opened {
    /// Who serves the volume's bytes `[offset, offset + len)`: the answer
    /// for a prefix that is contiguous on the disk (`len` of the answer).
    pub fn owner(&self, offset: u64, len: u64) -> anyhow::Result<Owner> {
        let (disk, run) = self.geometry.to_disk(offset).ok_or_else(|| {
            anyhow::anyhow!("volume {}: offset {offset:#x} is past its end", self.volume)
        })?;
        Ok(self.reader.owner(disk, run.min(len))?)
    }

    /// The partition table, if any.
    fn table(&self) -> Option<&Table> {
        self.tree.table.as_ref()
    }

    /// The partition number in use, if the volume is a partition.
    fn partition(&self) -> Option<u32> {
        self.tree.find(&self.volume).and_then(|v| match &v.role {
            Role::Partition(p) => Some(p.number),
            _ => None,
        })
    }
}

/// Opens the chain (cut at `--layer`), picks the volume (`--volume`, or
/// the one holding a filesystem), and opens the filesystem.
pub(super) fn open_full(args: &FsArgs) -> anyhow::Result<Opened> {
    let chain = args.image.open()?;
    let chain = match args.layer {
        Some(n) if n >= chain.layers.len() => {
            anyhow::bail!(
                "--layer {n}: the chain has layers 0 to {}",
                chain.layers.len().saturating_sub(1)
            )
        }
        Some(n) => chain.cut(n),
        None => chain,
    };
    let opened = open_in_with(&chain, args.volume.as_deref(), &args.replay)?;
    if let Some(note) = opened.fs.replay_note() {
        eprintln!("layerscope: note: {}", crate::escape::printable(&note));
    }
    Ok(opened)
}

/// The mount options of `--no-replay` and `--journal-dev` for a
/// filesystem whose volume lies at `geometry` on the disk `reader` reads.
pub(super) fn mount(
    replay: &super::ReplayArgs,
    reader: &Arc<LayeredReader>,
    geometry: &Arc<Geometry>,
) -> anyhow::Result<crate::fs::Mount> {
    Ok(crate::fs::Mount {
        no_replay: replay.no_replay,
        origin: Some(Arc::new(crate::volume::layers::Origin {
            reader: Arc::clone(reader),
            geometry: Arc::clone(geometry),
        })),
        journal_dev: journal_dev(replay)?,
    })
}

/// The `--journal-dev` image, opened.
fn journal_dev(replay: &super::ReplayArgs) -> anyhow::Result<Option<Arc<dyn BlockSource>>> {
    let Some(path) = &replay.journal_dev else {
        return Ok(None);
    };
    let args = super::ImageArgs {
        image: path.clone(),
        format: None,
        backing_format: None,
        remote: Default::default(),
        log_as_is: false,
        snapshot: None,
    };
    let chain = args
        .open()
        .with_context(|| format!("--journal-dev {path}"))?;
    let dev: Arc<dyn BlockSource> = Arc::new(LayeredReader::new(&chain)?);
    Ok(Some(dev))
}

/// `--no-replay` and `--journal-dev` for the UI's worker.
pub(super) fn worker_replay(
    replay: &super::ReplayArgs,
) -> anyhow::Result<crate::ui::worker::Replay> {
    Ok(crate::ui::worker::Replay {
        no_replay: replay.no_replay,
        journal_dev: journal_dev(replay)?,
    })
}

/// Picks the volume (`volume`, or the one holding a filesystem) of an
/// opened chain and opens its filesystem as on disk.
pub(super) fn open_in(chain: &Chain, volume: Option<&str>) -> anyhow::Result<Opened> {
    let replay = super::ReplayArgs {
        no_replay: true,
        journal_dev: None,
    };
    open_in_with(chain, volume, &replay)
}

/// [`open_in`], replaying the journal as `replay` says (the volume is
/// chosen by its filesystem as on disk; the replay then runs once, on the
/// chosen one).
pub(super) fn open_in_with(
    chain: &Chain,
    volume: Option<&str>,
    replay: &super::ReplayArgs,
) -> anyhow::Result<Opened> {
    let reader = Arc::new(LayeredReader::new(chain)?);
    let disk: Arc<dyn BlockSource> = reader.clone();
    let tree = crate::volume::scan(disk.clone())?;
    let (v, fs) = match tree.choose(&disk, volume, crate::fs::probe) {
        Ok(found) => found,
        Err(ChooseError::Volume(e)) => return Err(e.into()),
        Err(ChooseError::Open(name, e)) => {
            let e = anyhow::Error::new(e);
            return Err(if tree.volumes.len() == 1 {
                e.context(tree.disk_name.clone())
            } else {
                e.context(format!("{} volume {name}", tree.disk_name))
            });
        }
    };
    let geometry = v
        .geometry()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("volume {}: no geometry", v.name))?;
    let (volume, base) = (v.name.clone(), geometry.window_start().unwrap_or(0));
    // Only ext has a journal to replay: the others stay as probed.
    let fs = if replay.no_replay || super::ext::as_ext(fs.as_ref()).is_none() {
        fs
    } else {
        let src = v.source_over(disk.clone())?;
        crate::fs::open_with(src, &mount(replay, &reader, &geometry)?)
            .with_context(|| format!("{} volume {volume}", tree.disk_name))?
    };
    Ok(Opened {
        fs,
        reader,
        base,
        tree,
        volume,
        geometry,
    })
}

/// The bytes of a path argument: any bytes the shell passes (names on
/// disk need not be UTF-8).
pub(super) fn arg_bytes(arg: &std::ffi::OsStr) -> &[u8] {
    std::os::unix::ffi::OsStrExt::as_bytes(arg)
}

/// `<N>` (debugfs's inode syntax) or a path, given as bytes. A path that is not found as
/// given but holds escapes is tried in its unescaped form, so the names
/// `ls` prints escaped (`bad\xffname`) are accepted back. `<0>` and other
/// numbers no inode can have are the user's input, said so.
pub(super) fn resolve_bytes(fs: &dyn Filesystem, target: &[u8]) -> anyhow::Result<NodeId> {
    let shown = crate::escape::printable_bytes(target);
    if let Some(n) = target.strip_prefix(b"<").and_then(|t| t.strip_suffix(b">")) {
        let n: NodeId = std::str::from_utf8(n)
            .ok()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("{shown}: not an inode number"))?;
        // A number out of the filesystem's range is a typo, not damage:
        // say so (a corrupt inode in range is still opened, to inspect).
        if let Err(crate::fs::FsError::Corrupt { detail, .. }) = fs.metadata(n) {
            if n == 0 || detail.contains("does not exist") {
                anyhow::bail!(
                    "{shown}: no such inode ({})",
                    crate::escape::printable(&detail)
                );
            }
        }
        return Ok(n);
    }
    match fs.lookup(target) {
        Ok(n) => Ok(n),
        Err(first) => match crate::escape::unescape(target) {
            Some(raw) => fs.lookup(&raw).map_err(|_| first.into()),
            None => Err(first.into()),
        },
    }
}

/// `info`: the partition table (when there is one), then the superblock:
/// ext's in dumpe2fs's lines, any other filesystem's as its report.
///
/// # Errors
/// Opening the image or the filesystem.
pub fn info(info: &InfoArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let args = &info.fs;
    let opened = open_full(args)?;
    let fs = opened.fs.as_ref();
    let report = fs.superblock();
    if args.json {
        let mut j = json!({
            "partition_table": opened.table(),
            "partition": opened.partition(),
            "volume": opened.volume,
            "offset": opened.base,
            "filesystem": fs.kind().name(),
            "kind": fs.kind(),
            "label": fs.label().map(|l| super::json::text(&l)),
            "label_bytes": fs.label().and_then(|l| super::json::hex_unless_utf8(&l)),
            "uuid": fs.uuid(),
            "block_size": fs.block_size(),
            "superblock": report,
        });
        match super::ext::as_ext(fs) {
            Some(ext) => super::ext::info_json(ext, &mut j),
            None => super::json::set(&mut j, "fields", json!(report.fields)),
        }
        if !info.groups {
            super::json::write(out, &j)?;
            return Ok(());
        }
        // The groups last, streamed page by page into the object.
        let fields = match j {
            serde_json::Value::Object(map) => map.into_iter().collect(),
            _ => Vec::new(),
        };
        return super::json::write_object_with_seq(out, fields, "groups", GroupPages::new(fs));
    }
    if let Some(t) = opened.table() {
        // The table first (in words dumpe2fs does not use, so lines cannot
        // be mistaken for its fields).
        writeln!(
            out,
            "{} partition table, filesystem in volume {}:",
            t.label,
            crate::escape::printable(&opened.volume)
        )?;
        for p in &t.partitions {
            let mark = if Some(p.number) == opened.partition() {
                " <- this filesystem"
            } else {
                ""
            };
            writeln!(
                out,
                "  #{} type {} start {:#x} length {} {}{mark}",
                p.number,
                p.kind,
                p.start,
                crate::units::human(p.len),
                p.name
            )?;
        }
        for problem in &t.problems {
            writeln!(
                out,
                "  problem: {}",
                crate::escape::printable(&problem.to_string())
            )?;
        }
        writeln!(out)?;
    }
    let lines = match super::ext::as_ext(fs) {
        Some(ext) => super::ext::info_lines(ext),
        None => generic_info_lines(fs, &report),
    };
    for (k, v) in lines {
        let (k, v) = (printable(&k), printable(&v));
        if k.is_empty() {
            writeln!(out, "{:<26}{v}", "")?;
        } else {
            writeln!(out, "{:<26}{v}", format!("{k}:"))?;
        }
    }
    if info.groups {
        writeln!(out)?;
        group_text(fs, out)?;
    }
    Ok(())
}

/// The superblock of a filesystem without a dumpe2fs of its own: what
/// every filesystem has, then each field of its report.
fn generic_info_lines(fs: &dyn Filesystem, report: &crate::fs::Report) -> Vec<(String, String)> {
    let mut v = vec![
        ("Filesystem type".to_owned(), fs.kind().name().to_owned()),
        (
            "Filesystem volume name".to_owned(),
            fs.label().map_or_else(
                || "<none>".to_owned(),
                |l| String::from_utf8_lossy(&l).into_owned(),
            ),
        ),
        (
            "Filesystem UUID".to_owned(),
            fs.uuid().unwrap_or_else(|| "<none>".to_owned()),
        ),
        ("Block size".to_owned(), fs.block_size().to_string()),
    ];
    for f in &report.fields {
        v.push((f.name.to_owned(), f.text()));
    }
    for p in &report.problems {
        v.push(("Problem".to_owned(), p.clone()));
    }
    v
}

/// `groups`.
///
/// # Errors
/// Opening the image or the filesystem.
pub fn groups(args: &FsArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let fs = open(args)?;
    if args.json {
        super::json::write_seq(out, GroupPages::new(fs.as_ref()))?;
        writeln!(out)?;
        return Ok(());
    }
    group_text(fs.as_ref(), out)
}

/// Rows asked from the filesystem at a time: memory stays flat however
/// many groups there are.
const GROUP_PAGE: u64 = 1024;

/// The group table, page by page, as an iterator of rows (a page that
/// cannot be read is one row with the error).
pub(super) struct GroupPages<'a> {
    fs: &'a dyn Filesystem,
    next: u64,
    total: Option<u64>,
    page: std::vec::IntoIter<GroupRow>,
}

impl<'a> GroupPages<'a> {
    pub(super) fn new(fs: &'a dyn Filesystem) -> GroupPages<'a> {
        GroupPages {
            fs,
            next: 0,
            total: None,
            page: Vec::new().into_iter(),
        }
    }

    /// The next page's table (its columns and total), or an error row.
    fn fetch(&mut self) -> Option<Result<crate::fs::GroupTable, GroupRow>> {
        if self.total.is_some_and(|t| self.next >= t) {
            return None;
        }
        match self.fs.groups(self.next, GROUP_PAGE) {
            Ok(t) => {
                self.total = Some(t.total);
                self.next = self.next.saturating_add(GROUP_PAGE);
                Some(Ok(t))
            }
            Err(e) => {
                let row = GroupRow::failed(self.next, e.to_string());
                self.total = Some(0);
                Some(Err(row))
            }
        }
    }
}

impl Iterator for GroupPages<'_> {
    type Item = GroupRow;

    fn next(&mut self) -> Option<GroupRow> {
        loop {
            if let Some(r) = self.page.next() {
                return Some(r);
            }
            match self.fetch()? {
                Ok(t) if t.rows.is_empty() => return None,
                Ok(t) => self.page = t.rows.into_iter(),
                Err(row) => return Some(row),
            }
        }
    }
}

/// The group table as text, a page at a time: a header, one line per
/// group, then the errors (bitmaps that could not be read).
fn group_text(fs: &dyn Filesystem, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut first = 0u64;
    let mut header = false;
    loop {
        let table = match fs.groups(first, GROUP_PAGE) {
            Ok(t) => t,
            Err(e) => {
                writeln!(out, "error: {}", printable(&e.to_string()))?;
                return Ok(());
            }
        };
        if !header {
            writeln!(out, "{}", table.header())?;
            header = true;
        }
        for row in &table.rows {
            writeln!(out, "{}", printable(&table.line(row)))?;
        }
        first = first.saturating_add(GROUP_PAGE);
        if table.rows.is_empty() || first >= table.total {
            return Ok(());
        }
    }
}
