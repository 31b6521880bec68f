//! `layerscope ls`, `stat`, `cat` and `blocks`: files and directories of
//! any filesystem behind [`Filesystem`], in debugfs's words where debugfs
//! has a word for it (`ls -l`, `dump`, `blocks`; ext's `stat` is
//! debugfs's own, through [`super::ext`]).
use std::collections::HashSet;
use std::io::Write;
use std::ops::ControlFlow;

use serde_json::json;

use super::fs::{open, open_full};
use super::superblock::Civil;
use crate::escape::{printable, printable_bytes};
use crate::fs::{
    FileType, Filesystem, FsError, Metadata, NodeId, Problem, Report, Run, RunKind, Xattr,
};

/// debugfs's date format for `ls -l` (`14-Nov-2023 22:13`, UTC).
fn ls_date(t: i64) -> String {
    let c = Civil::of(t);
    format!(
        "{:>2}-{}-{} {:02}:{:02}",
        c.day, c.month, c.year, c.hour, c.minute
    )
}

/// Errors kept for the end of a listing, at most: a damaged tree cannot
/// grow them without end (the rest are counted).
const MAX_ERRORS: usize = 10_000;

/// The errors of a listing, bounded.
#[derive(Default)]
struct Errors {
    list: Vec<String>,
    dropped: u64,
}

impl Errors {
    fn push(&mut self, e: String) {
        if self.list.len() < MAX_ERRORS {
            self.list.push(e);
        } else {
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    fn finish(mut self) -> Vec<String> {
        if self.dropped > 0 {
            self.list
                .push(format!("… and {} more errors", self.dropped));
        }
        self.list
    }
}

/// How `ls` prints what it lists.
struct Listing<'a> {
    out: &'a mut dyn Write,
    json: bool,
    long: bool,
    /// The next JSON entry is the first.
    first: bool,
    /// Print the 32-bit seconds word as debugfs does (ext).
    debugfs_dates: bool,
    /// JSON: the directory the `dir_json` prefix was made for.
    dir_path: Option<Vec<u8>>,
    /// JSON: `{"dir":…,"dir_bytes":…,` of `dir_path`, made once per
    /// directory.
    dir_json: Vec<u8>,
    /// JSON: the entry being written (one write per entry).
    line: Vec<u8>,
}

impl Listing<'_> {
    /// One entry of directory `path`: its name, or the long line, or the
    /// JSON object.
    fn entry(
        &mut self,
        path: &[u8],
        e: &crate::fs::DirEntry,
        meta: Option<&Metadata>,
    ) -> anyhow::Result<()> {
        let Some(m) = meta else {
            crate::escape::write_printable_bytes(self.out, &e.name)?;
            self.out.write_all(b"\n")?;
            return Ok(());
        };
        let code = e.file_type.map_or(0, FileType::code);
        if self.json {
            self.json_entry(path, e, m, code)?;
        } else if self.long {
            let secs = m.mtime.map_or(0, |t| t.secs);
            let secs = if self.debugfs_dates {
                super::ext::ls_seconds(secs)
            } else {
                secs
            };
            writeln!(
                self.out,
                " {:>6}  {:>6o} ({code})  {:>5}  {:>5}   {:>5} {} {}",
                e.node,
                m.mode,
                m.uid,
                m.gid,
                m.size,
                ls_date(secs),
                printable_bytes(&e.name)
            )?;
        } else {
            writeln!(self.out, "{}", printable_bytes(&e.name))?;
        }
        Ok(())
    }

    /// The JSON object of one entry, on its own line, written as
    /// `json!({...})` under the escaping policy writes it (keys in order),
    /// without building a map per entry: the directory's part is made
    /// once per directory.
    fn json_entry(
        &mut self,
        path: &[u8],
        e: &crate::fs::DirEntry,
        m: &Metadata,
        code: u8,
    ) -> anyhow::Result<()> {
        if self.dir_path.as_deref() != Some(path) {
            let dir: &[u8] = if path.is_empty() { b"/" } else { path };
            self.dir_json.clear();
            self.dir_json.extend_from_slice(b"{\"dir\":");
            json_text(&mut self.dir_json, dir)?;
            self.dir_json.extend_from_slice(b",\"dir_bytes\":");
            json_text_bytes(&mut self.dir_json, dir)?;
            self.dir_json.push(b',');
            self.dir_path = Some(path.to_vec());
        }
        let line = &mut self.line;
        line.clear();
        line.extend_from_slice(if self.first { b"\n  " } else { b",\n  " });
        self.first = false;
        line.extend_from_slice(&self.dir_json);
        let mtime = m.mtime.map_or(0, |t| t.secs);
        write!(
            line,
            "\"file_type\":{code},\"gid\":{},\"inode\":{},\"links\":{},\"mode\":{},\"mtime\":{mtime},\"name\":",
            m.gid, e.node, m.links, m.mode
        )?;
        json_text(line, &e.name)?;
        line.extend_from_slice(b",\"name_bytes\":");
        json_text_bytes(line, &e.name)?;
        write!(line, ",\"size\":{},\"uid\":{}}}", m.size, m.uid)?;
        self.out.write_all(line)?;
        Ok(())
    }
}

/// `bytes` as [`super::json::text`] serializes it.
fn json_text(out: &mut Vec<u8>, bytes: &[u8]) -> anyhow::Result<()> {
    match std::str::from_utf8(bytes) {
        Ok(s) => crate::escape::json::to_writer(out, s)?,
        Err(_) => crate::escape::json::to_writer(out, &printable_bytes(bytes))?,
    }
    Ok(())
}

/// `bytes` as [`super::json::hex_unless_utf8`] serializes it.
fn json_text_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> anyhow::Result<()> {
    crate::escape::json::to_writer(out, &super::json::hex_unless_utf8(bytes))?;
    Ok(())
}

/// `ls`: a directory (with `-R`, the tree under it, depth first, each
/// directory printed as it is read). Memory stays flat in the number of
/// files: entries stream from the filesystem to the output (`--json`
/// too), and only the directories still to visit are kept.
///
/// # Errors
/// Opening; a path that does not exist or is not a directory; I/O errors.
pub fn ls(args: &super::LsArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let fs = open(&args.fs)?;
    let fs = fs.as_ref();
    let start = super::fs::resolve_bytes(fs, super::fs::arg_bytes(&args.path))?;
    let mut start_path = super::find::raw_path(&[Some(fs)], super::fs::arg_bytes(&args.path));
    if start_path == b"/" {
        start_path.clear();
    }
    let shown_of = |path: &[u8]| {
        if path.is_empty() {
            "/".to_owned()
        } else {
            printable_bytes(path)
        }
    };
    let mut ahead = super::walk::Ahead::new();
    if args.recursive {
        // Before the start's inode is read: over a remote disk, that read
        // comes with the batch that fetches the whole tree.
        ahead.whole_tree(fs, start);
    }
    let start_meta = fs.metadata(start)?;
    if start_meta.file_type != FileType::Directory {
        anyhow::bail!(
            "{}: not a directory ({})",
            shown_of(&start_path),
            fs.node_name(start)
        );
    }
    let json = args.fs.json;
    if json {
        out.write_all(b"{\"entries\": [")?;
    }
    let mut printer = Listing {
        out,
        json,
        long: args.long,
        first: true,
        debugfs_dates: super::ext::as_ext(fs).is_some(),
        dir_path: None,
        dir_json: Vec::new(),
        line: Vec::new(),
    };
    let mut errors = Errors::default();
    // Paths are bytes: names on disk need not be UTF-8.
    let mut stack = vec![(start, start_path)];
    let mut seen = HashSet::new();
    // Names alone need no metadata where entries carry their type: like
    // `ls` with d_type, only directories are read, when they are listed.
    let names_only = !args.long && !json;
    while let Some((node, path)) = stack.pop() {
        let shown = shown_of(&path);
        if !seen.insert(node) {
            errors.push(format!(
                "{shown}: directory {} already listed (a loop)",
                fs.node_name(node)
            ));
            continue;
        }
        if args.recursive {
            ahead.before(fs, node, stack.iter().map(|(n, _)| *n));
        }
        if node != start {
            // An entry typed as a directory whose node is not one is
            // reported and skipped.
            match fs.metadata(node) {
                Ok(m) if m.file_type == FileType::Directory => {}
                Ok(m) => {
                    errors.push(format!(
                        "{shown}: the entry says directory, {} is a {}",
                        fs.node_name(node),
                        m.file_type.name()
                    ));
                    continue;
                }
                Err(e) => {
                    errors.push(format!("{shown}: {e}"));
                    continue;
                }
            }
        }
        if args.recursive && !json {
            writeln!(printer.out, "\n{shown}:")?;
        }
        let mut subdirs = Vec::new();
        let mut problems: Vec<Problem> = Vec::new();
        let mut failed: Option<anyhow::Error> = None;
        let listed = fs.read_dir(node, &mut problems, &mut |e| {
            let meta = if names_only && e.file_type.is_some() {
                None
            } else {
                match fs.metadata(e.node) {
                    Ok(m) => Some(m),
                    Err(err) => {
                        errors.push(format!("{}: {err}", printable_bytes(&e.name)));
                        return ControlFlow::Continue(());
                    }
                }
            };
            let is_dir = match &meta {
                Some(m) => m.file_type == FileType::Directory,
                None => e.file_type == Some(FileType::Directory),
            };
            if args.recursive && is_dir && !e.is_dot_or_dotdot() {
                let mut sub = path.clone();
                sub.push(b'/');
                sub.extend_from_slice(&e.name);
                subdirs.push((e.node, sub));
            }
            let meta = if names_only { None } else { meta };
            match printer.entry(&path, &e, meta.as_ref()) {
                Ok(()) => ControlFlow::Continue(()),
                Err(err) => {
                    failed = Some(err);
                    ControlFlow::Break(())
                }
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        for p in problems {
            errors.push(p.to_string());
        }
        match listed {
            Ok(()) => {}
            Err(e @ FsError::Io(_)) => return Err(e.into()),
            // A directory whose map cannot be read is reported; the walk
            // goes on with the next one.
            Err(e) => {
                errors.push(format!("{shown}: {e}"));
                continue;
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    let errors = errors.finish();
    if json {
        let out = printer.out;
        out.write_all(b"\n], \"errors\": ")?;
        crate::escape::json::to_writer(&mut *out, &errors)?;
        out.write_all(b"}\n")?;
        return Ok(());
    }
    for err in errors {
        writeln!(printer.out, "error: {}", printable(&err))?;
    }
    Ok(())
}

/// A report's fields, one line each: offset, name, value.
///
/// # Errors
/// Write errors.
pub(super) fn write_fields(report: &Report, out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(out, "Fields:")?;
    for f in &report.fields {
        writeln!(
            out,
            "  {:#08x}  {:<16} {}",
            f.offset,
            f.name,
            printable(&f.text())
        )?;
    }
    Ok(())
}

/// `stat`: ext's is debugfs's (see [`super::ext::stat`]); any other
/// filesystem's is its metadata, attributes, runs and on-disk fields.
///
/// # Errors
/// Opening; a bad path or node.
pub fn stat(args: &super::PathArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let fs = open(&args.fs)?;
    let fs = fs.as_ref();
    let node = super::fs::resolve_bytes(fs, super::fs::arg_bytes(&args.path))?;
    if let Some(ext) = super::ext::as_ext(fs) {
        return super::ext::stat(ext, node, args.fs.json, out);
    }
    let m = fs.metadata(node)?;
    let report = fs.node_report(node)?;
    let mut problems: Vec<Problem> = Vec::new();
    let mut runs = Vec::new();
    fs.runs(node, &mut problems, &mut |r| {
        runs.push(r);
        ControlFlow::Continue(())
    })?;
    let xattrs = fs.xattrs(node, &mut problems)?;
    let target = if m.file_type == FileType::Symlink {
        fs.read_link(node).ok()
    } else {
        None
    };
    let mut problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
    problems.extend(report.problems.iter().cloned());
    if args.fs.json {
        // The runs are written as they are, not through a JSON tree: a
        // file of 2^20 extents would otherwise cost a gigabyte of `Value`s.
        #[derive(serde::Serialize)]
        struct StatJson<'a> {
            #[serde(flatten)]
            rest: serde_json::Value,
            runs: &'a [Run],
        }
        return super::json::write(
            out,
            &StatJson {
                runs: &runs,
                rest: json!({
                    "inode": node, "node": fs.node_name(node), "type": m.file_type.name(),
                    "mode": m.mode, "uid": m.uid, "gid": m.gid, "size": m.size, "links": m.links,
                    "allocated": m.allocated, "atime": m.atime, "mtime": m.mtime, "ctime": m.ctime,
                    "crtime": m.crtime, "generation": m.generation, "rdev": m.rdev,
                    "flag_names": m.flags,
                    "symlink_target": target.as_ref().map(|t| super::json::text(t)),
                    "symlink_target_bytes": target.as_ref().and_then(|t| super::json::hex_unless_utf8(t)),
                    "xattrs": xattrs.iter().map(xattr_json).collect::<Vec<_>>(),
                    "problems": problems, "fields": report.fields,
                }),
            },
        );
    }
    let time = |t: Option<crate::fs::Timestamp>| {
        t.map_or_else(
            || "-".to_owned(),
            |t| {
                format!(
                    "{} ({}.{:09})",
                    super::superblock::asctime(t.secs),
                    t.secs,
                    t.nsec
                )
            },
        )
    };
    writeln!(
        out,
        "{}   Type: {}    Mode:  0{:03o}   Flags: {}",
        fs.node_name(node),
        m.file_type.name(),
        m.mode & 0o7777,
        m.flags.join(" ")
    )?;
    writeln!(
        out,
        "User: {:>5}   Group: {:>5}   Size: {}\nLinks: {}   Allocated: {}",
        m.uid, m.gid, m.size, m.links, m.allocated
    )?;
    for (name, t) in [
        ("ctime", m.ctime),
        ("atime", m.atime),
        ("mtime", m.mtime),
        ("crtime", m.crtime),
    ] {
        writeln!(out, "{name:>6}: {}", time(t))?;
    }
    if let Some(g) = m.generation {
        writeln!(out, "Generation: {g}")?;
    }
    if let Some((major, minor)) = m.rdev {
        writeln!(out, "Device major/minor number: {major:02}:{minor:02}")?;
    }
    if let Some(t) = &target {
        writeln!(out, "Link target: \"{}\"", printable_bytes(t))?;
    }
    if !xattrs.is_empty() {
        writeln!(out, "Extended attributes:")?;
        for x in &xattrs {
            writeln!(
                out,
                "  {} ({}) = \"{}\"",
                printable_bytes(&x.name),
                x.value.len(),
                printable_bytes(&x.value)
            )?;
        }
    }
    writeln!(out, "Runs (bytes):")?;
    for r in &runs {
        writeln!(
            out,
            "  {:>12} +{:<10} at {:#x} {}",
            r.logical,
            r.len,
            r.physical,
            run_kind(r.kind)
        )?;
    }
    for p in &problems {
        writeln!(out, "problem: {}", printable(p))?;
    }
    write_fields(&report, out)
}

/// A run's kind in words.
fn run_kind(k: RunKind) -> String {
    match k {
        RunKind::Data => "data".into(),
        RunKind::Unwritten => "unwritten".into(),
        RunKind::Meta { level } => format!("map, level {level}"),
        RunKind::Attr => "attributes".into(),
    }
}

fn xattr_json(x: &Xattr) -> serde_json::Value {
    json!({
        "name": super::json::text(&x.name), "name_bytes": super::json::hex_unless_utf8(&x.name),
        "value_text": std::str::from_utf8(&x.value).ok(),
        "value_hex": x.value.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "value_size": x.value.len(),
    })
}

/// The runs of `node` and the problems mapping it met.
fn runs_of(fs: &dyn Filesystem, node: NodeId) -> anyhow::Result<(Vec<Run>, Vec<Problem>)> {
    let mut problems = Vec::new();
    let mut runs = Vec::new();
    fs.runs(node, &mut problems, &mut |r| {
        runs.push(r);
        ControlFlow::Continue(())
    })?;
    Ok((runs, problems))
}

/// Reports the map's problems on stderr; fails when parts of the map were
/// skipped (the output has zeros there).
fn report(fs: &dyn Filesystem, problems: &[Problem], node: NodeId) -> anyhow::Result<()> {
    for p in problems.iter().filter(|p| !p.lost) {
        eprintln!("layerscope: warning: {}", printable(&p.to_string()));
    }
    let lost: Vec<&Problem> = problems.iter().filter(|p| p.lost).collect();
    if let Some((first, rest)) = lost.split_first() {
        for p in rest {
            eprintln!("layerscope: {}", printable(&p.to_string()));
        }
        anyhow::bail!(
            "{}: {} part(s) of the block map skipped (read as zeros): {first}",
            fs.node_name(node),
            lost.len()
        );
    }
    Ok(())
}

/// `cat`: the file's bytes, streamed; holes and unwritten extents as
/// zeros, like `debugfs dump`.
///
/// # Errors
/// Opening; a bad path; read errors; a map with skipped parts (after
/// writing what could be read).
pub fn cat(args: &super::CatArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    if args.fs.json {
        anyhow::bail!(
            "cat has no --json: it writes the file's bytes (`stat --json` gives its metadata, `blocks --json` its runs)"
        );
    }
    let to_terminal = !args.force && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let fs = open(&args.fs)?;
    let fs = fs.as_ref();
    let node = super::fs::resolve_bytes(fs, super::fs::arg_bytes(&args.path))?;
    let size = fs.metadata(node)?.size;
    // The map's problems first (the reads below fill what it skips with
    // zeros).
    let mut problems = Vec::new();
    fs.runs(node, &mut problems, &mut |_| ControlFlow::Continue(()))?;
    let mut buf = crate::block::buffer::AlignedBuf::new(1 << 20);
    let mut pos = 0u64;
    while pos < size {
        let want = usize::try_from(size.saturating_sub(pos))
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = fs.read_file(node, pos, buf.get_mut(..want).unwrap_or_default())?;
        let data = buf.get(..n).unwrap_or_default();
        if data.is_empty() {
            break;
        }
        if to_terminal && !is_text(data) {
            out.flush()?;
            anyhow::bail!(
                "{}: binary content (NUL or control bytes at or after byte {pos}); not written to a terminal: redirect to a file, pipe it (`| hexyl`), or use --force",
                printable_bytes(super::fs::arg_bytes(&args.path))
            );
        }
        out.write_all(data)?;
        pos = pos.saturating_add(crate::bytes::u64_of(n));
    }
    out.flush()?;
    report(fs, &problems, node)
}

/// Whether bytes are text a terminal may show as they are: UTF-8 without
/// NULs or control characters but tab, line ends, form feed and
/// backspace (an escape sequence in a file must not drive the terminal).
fn is_text(bytes: &[u8]) -> bool {
    // A chunk may end inside a character.
    let valid = match std::str::from_utf8(bytes) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    };
    valid
        && !bytes
            .iter()
            .any(|&b| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c | 0x08)) || b == 0x7f)
}

/// One piece of a run, served by one layer.
#[derive(serde::Serialize)]
struct BlockRow {
    logical: u64,
    physical: u64,
    count: u64,
    uninit: bool,
    meta: bool,
    level: u8,
    layer: Option<usize>,
    /// How the serving layer stores it: `data`, `compressed`, `zero` (a
    /// zero cluster or a hole: reads as zeros) or `unallocated` (no
    /// layer holds it: zeros).
    storage: &'static str,
}

impl BlockRow {
    /// What the run is, in words: `data`, `unwritten`, `map (level N)`,
    /// and how it is stored when it is not plain data.
    fn kind(&self) -> String {
        let mut k = if self.meta {
            format!("map (level {})", self.level)
        } else if self.uninit {
            "unwritten".to_owned()
        } else {
            "data".to_owned()
        };
        if self.storage != "data" {
            k.push_str(", ");
            k.push_str(self.storage);
        }
        k
    }
}

/// `blocks`: the file's physical blocks (data and map blocks, as debugfs
/// lists them), and the layer holding each run. Rows are written as they
/// are found (a file of 2^20 extents costs its map, not a list of rows).
///
/// # Errors
/// Opening; a bad path; corrupt maps.
pub fn blocks(args: &super::PathArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let opened = open_full(&args.fs)?;
    let fs = opened.fs.as_ref();
    let node = super::fs::resolve_bytes(fs, super::fs::arg_bytes(&args.path))?;
    let bs = fs.block_size().max(1);
    let (runs, problems) = runs_of(fs, node)?;
    let failed = std::cell::RefCell::new(None);
    // The attribute block is the file's, but not in its block list. Each
    // run is split where the serving layer changes.
    let rows = runs
        .iter()
        .filter(|r| r.kind != RunKind::Attr)
        .flat_map(|r| {
            let (mut at, end) = (r.physical, r.physical.saturating_add(r.len));
            let failed = &failed;
            let opened = &opened;
            std::iter::from_fn(move || {
                if at >= end || failed.borrow().is_some() {
                    return None;
                }
                match opened.owner(at, end.saturating_sub(at)) {
                    Ok(o) => {
                        let row = BlockRow {
                            logical: r
                                .logical
                                .saturating_add(at.saturating_sub(r.physical))
                                .checked_div(bs)
                                .unwrap_or(0),
                            physical: at.checked_div(bs).unwrap_or(0),
                            count: o.len.div_ceil(bs),
                            uninit: r.kind == RunKind::Unwritten,
                            meta: matches!(r.kind, RunKind::Meta { .. }),
                            level: match r.kind {
                                RunKind::Meta { level } => level,
                                _ => 0,
                            },
                            layer: o.layer,
                            storage: match (o.layer, o.status, o.compressed) {
                                (None, _, _) => "unallocated",
                                (_, crate::block::Status::Zero, _) => "zero",
                                (_, _, true) => "compressed",
                                _ => "data",
                            },
                        };
                        at = at.saturating_add(o.len.max(1));
                        Some(row)
                    }
                    Err(e) => {
                        *failed.borrow_mut() = Some(e);
                        None
                    }
                }
            })
        });
    if args.fs.json {
        crate::escape::json::write_seq_pretty(&mut *out, rows)?;
        writeln!(out)?;
    } else {
        // Logical blocks (in the file) beside physical ones (on the
        // volume), as debugfs's `stat` pairs them; map blocks have no
        // place in the file.
        writeln!(
            out,
            "{:>15}  {:>15}  {:>6}  {:<8}  kind",
            "logical", "physical", "blocks", "layer"
        )?;
        let range = |a: u64, n: u64| {
            let last = a.saturating_add(n).saturating_sub(1);
            if n <= 1 {
                a.to_string()
            } else {
                format!("{a}-{last}")
            }
        };
        for r in rows {
            let layer = r
                .layer
                .map_or_else(|| "none".to_owned(), |l| format!("layer {l}"));
            let logical = if r.meta {
                "-".to_owned()
            } else {
                range(r.logical, r.count)
            };
            writeln!(
                out,
                "{logical:>15}  {:>15}  {:>6}  {layer:<8}  {}",
                range(r.physical, r.count),
                r.count,
                r.kind()
            )?;
        }
    }
    if let Some(e) = failed.into_inner() {
        return Err(e);
    }
    out.flush()?;
    report(fs, &problems, node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debugfs_date_form() {
        assert_eq!(ls_date(0), " 1-Jan-1970 00:00");
    }
}
