//! Opening the filesystem a command is about, and `layerscope info` and
//! `groups`: the superblock and the group headers of any filesystem
//! behind [`Filesystem`] (ext's in dumpe2fs's words, through
//! [`super::ext`]).
use std::io::Write;
use std::sync::Arc;

use serde_json::json;

use super::{FsArgs, InfoArgs};
use crate::block::chain::Chain;
use crate::block::layered::LayeredReader;
use crate::block::partition::{read_table, Partition, Slice, Table};
use crate::block::BlockSource;
use crate::escape::printable;
use crate::fs::{Filesystem, GroupRow, NodeId};

/// Opens the filesystem of the image's chain, cut at `--layer`.
pub(super) fn open(args: &FsArgs) -> anyhow::Result<Arc<dyn Filesystem>> {
    Ok(open_full(args)?.fs)
}

/// An opened filesystem and where it sits.
pub(super) struct Opened {
    pub fs: Arc<dyn Filesystem>,
    /// The layered reader of the whole disk (to say which layer holds what).
    pub reader: Arc<LayeredReader>,
    /// Byte offset of the filesystem on the disk (its partition's start).
    pub base: u64,
    table: Option<Table>,
    /// The partition used, if any.
    partition: Option<usize>,
}

/// Opens the chain (cut at `--layer`), finds the partition (`--partition`,
/// or the only one holding ext2/3/4), and opens the filesystem.
pub(super) fn open_full(args: &FsArgs) -> anyhow::Result<Opened> {
    let chain = args.image.open()?;
    let chain = match args.layer {
        Some(n) if n >= chain.layers.len() => {
            anyhow::bail!(
                "--layer {n}: the chain has layers 0 to {}",
                chain.layers.len() - 1
            )
        }
        Some(n) => chain.cut(n),
        None => chain,
    };
    open_in(&chain, args.partition)
}

/// Finds the partition (`partition`, or the only one holding a
/// filesystem layerscope reads) of an opened chain and opens its
/// filesystem.
pub(super) fn open_in(chain: &Chain, partition: Option<usize>) -> anyhow::Result<Opened> {
    let reader = Arc::new(LayeredReader::new(chain)?);
    let name = chain.top().map(|l| l.path.clone()).unwrap_or_default();
    let table = read_table(reader.as_ref())?;
    let slice = |p: &Partition| -> Arc<dyn BlockSource> {
        Arc::new(Slice::new(
            reader.clone(),
            p.start,
            p.len,
            format!("{name} partition {}", p.index),
        ))
    };
    let describe = |t: &Table| -> String {
        t.partitions
            .iter()
            .map(|p| {
                format!(
                    "{} (type {}, {} at {:#x})",
                    p.index,
                    p.kind,
                    crate::units::human(p.len),
                    p.start
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(n) = partition {
        let t = table.as_ref().ok_or_else(|| {
            anyhow::anyhow!("{name}: --partition {n}: the disk has no partition table")
        })?;
        let p = t.partitions.iter().find(|p| p.index == n).ok_or_else(|| {
            anyhow::anyhow!(
                "{name}: no partition {n}; the {} table has {}",
                t.label,
                describe(t)
            )
        })?;
        let fs = crate::fs::open(slice(p))
            .map_err(|e| anyhow::Error::new(e).context(format!("{name} partition {n}")))?;
        return Ok(Opened {
            fs,
            base: p.start,
            reader,
            partition: Some(n),
            table,
        });
    }
    let whole: Arc<dyn BlockSource> = reader.clone();
    match crate::fs::open(whole) {
        Ok(fs) => Ok(Opened {
            fs,
            reader,
            base: 0,
            table: None,
            partition: None,
        }),
        Err(e) => {
            let Some(t) = table.as_ref().filter(|t| !t.partitions.is_empty()) else {
                return Err(anyhow::Error::new(e).context(name));
            };
            // The only partition with a filesystem, if there is exactly
            // one; else the user chooses.
            let mut found: Vec<(Arc<dyn Filesystem>, &Partition)> = t
                .partitions
                .iter()
                .filter_map(|p| crate::fs::open(slice(p)).ok().map(|fs| (fs, p)))
                .collect();
            if found.len() == 1 {
                let (fs, p) = found.remove(0);
                let (base, index) = (p.start, p.index);
                return Ok(Opened {
                    fs,
                    reader,
                    base,
                    partition: Some(index),
                    table,
                });
            }
            anyhow::bail!(
                "{name}: no filesystem layerscope reads at the start of the disk; its {} partition table has {}: choose one with --partition N",
                t.label,
                describe(t)
            )
        }
    }
}

/// `<N>` (debugfs's inode syntax) or a path.
pub(super) fn resolve(fs: &dyn Filesystem, target: &str) -> anyhow::Result<NodeId> {
    if let Some(n) = target.strip_prefix('<').and_then(|t| t.strip_suffix('>')) {
        return n
            .parse()
            .map_err(|_| anyhow::anyhow!("{target:?}: not an inode number"));
    }
    Ok(fs.lookup(target.as_bytes())?)
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
            "partition_table": opened.table,
            "partition": opened.partition,
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
            None => j["fields"] = json!(report.fields),
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
    if let Some(t) = &opened.table {
        // The table first (in words dumpe2fs does not use, so lines cannot
        // be mistaken for its fields).
        writeln!(
            out,
            "{} partition table, filesystem in partition {}:",
            t.label,
            opened.partition.unwrap_or(0)
        )?;
        for p in &t.partitions {
            let mark = if Some(p.index) == opened.partition {
                " <- this filesystem"
            } else {
                ""
            };
            writeln!(
                out,
                "  #{} type {} start {:#x} length {} {}{mark}",
                p.index,
                p.kind,
                p.start,
                crate::units::human(p.len),
                printable(&p.name)
            )?;
        }
        for problem in &t.problems {
            writeln!(out, "  problem: {}", printable(problem))?;
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
