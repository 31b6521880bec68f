//! `layerscope grep`: lines of file contents matching a regular
//! expression, like `grep -rn`, each with the chain layer that holds it;
//! through the [`Filesystem`] seam (ext, XFS, FAT) on any volume.
//!
//! Matching is over bytes, as grep in the C locale: a file's content is
//! read in chunks, the whole chunk is searched at once and only a
//! candidate's line is checked again alone (a pattern such as `[^x]`
//! could otherwise match across a line end), so the cost follows the
//! bytes, not the lines. Memory is one chunk and one line (a line longer
//! than [`MAX_LINE`] is searched in pieces of that size). A file holding
//! a NUL byte is binary, as grep decides it: its matching lines are not
//! printed, one "binary file matches" is (`-a` prints them).
//! `--all-layers` greps each layer's version of each file and says in
//! which layers each matching line is.
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::ops::ControlFlow;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use regex::bytes::{Regex, RegexBuilder};
use serde_json::json;

use super::find::{note, raw_path};
use super::fs::{arg_bytes, resolve_bytes};
use super::walk::{walk_views, ViewsVisit};
use super::FsArgs;
use crate::block::buffer::AlignedBuf;
use crate::block::layered::LayeredReader;
use crate::bytes::{u64_of, us};
use crate::fs::{FileType, Filesystem, NodeId, Run, RunKind};
use crate::volume::Geometry;

// Arguments of `grep`.
#[derive(Debug, Args)]
pub struct GrepArgs {
    #[command(flatten)]
    pub fs: FsArgs,
    /// The regular expression (Rust syntax, close to `grep -E`), matched
    /// against each line's bytes.
    pub pattern: String,
    /// A directory to search under, or one file (default: the root).
    /// Any bytes; the escaped form `ls` prints is accepted too.
    #[arg(default_value = "/")]
    pub path: OsString,
    /// Ignore ASCII case (`grep -i`).
    #[arg(short = 'i', long)]
    pub ignore_case: bool,
    /// PATTERN is a fixed string, not a regular expression (`grep -F`;
    /// `-F` itself is the backing format here, as in qemu-img).
    #[arg(long)]
    pub fixed_strings: bool,
    /// Print only the names of files with a match (`grep -l`).
    #[arg(short = 'l', long)]
    pub files_with_matches: bool,
    /// Search binary files as text: print their matching lines (`grep -a`).
    #[arg(short = 'a', long)]
    pub text: bool,
    /// Search the filesystem as of every layer; each hit says in which
    /// layers it is found (`--layer` is then ignored).
    #[arg(long, conflicts_with = "layer")]
    pub all_layers: bool,
    /// Follow each file name with a NUL byte instead of `:` or a newline,
    /// and print names as their raw bytes (`grep -Z`, for `xargs -0`).
    #[arg(short = 'Z', long = "print0", alias = "null", conflicts_with = "json")]
    pub print0: bool,
}

/// Nothing matched: exit status 1 without a message, as grep.
#[derive(Debug)]
pub struct NoMatch;

impl std::fmt::Display for NoMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no match")
    }
}

impl std::error::Error for NoMatch {}

/// Bytes read from a file at a time.
const CHUNK: usize = 1 << 20;
/// The longest line held whole; longer ones are searched in pieces.
pub const MAX_LINE: usize = 1 << 20;
/// Hits of one file kept to compare layers (`--all-layers`); more are
/// dropped with a warning.
const MAX_HITS_PER_FILE: usize = 100_000;

/// One matching line.
pub(super) struct LineHit<'a> {
    /// 1-based.
    pub line: u64,
    /// Byte offset of the line in the file.
    pub offset: u64,
    /// The line, without its end.
    pub text: &'a [u8],
}

/// What searching one file found.
#[derive(Default)]
pub(super) struct FileResult {
    pub matches: u64,
    /// The file is binary (holds a NUL) and matched.
    pub binary: bool,
}

/// Buffers reused from file to file: a fresh buffer per file costs its
/// page faults every time, more than searching a small file.
#[derive(Default)]
pub(super) struct Scratch {
    /// [`CARRY`] bytes for the unfinished line carried over, then
    /// [`CHUNK`] bytes the file is read into: page-aligned, so the
    /// kernel's copy into it is the fast one (a plain `Vec` of this size
    /// starts 16 bytes past a page), and searched where it was read, with
    /// no second copy.
    buf: Option<AlignedBuf>,
}

/// Room before the read area for the unfinished line carried over: a
/// multiple of the page size, so the read area stays aligned.
const CARRY: usize = MAX_LINE;

/// Content no larger than this may be held in the node itself (inline
/// data, XFS local format: at most a block or an inode).
const INLINE_MAX: u64 = 64 * 1024;

/// The file's data on disk, `(start, end)` in file bytes, in order, when
/// it has holes (or unwritten extents): `None` when its content is not in
/// runs (inline data) or the runs cannot be had, for a file small enough
/// to read whole. Where the map is lost or unreadable, the data found is
/// all there is to read: the rest counts as holes, so the cost follows
/// the map, not the size the inode claims (a damaged inode may claim
/// 2^63 bytes).
fn data_ranges(fs: &dyn Filesystem, node: NodeId, size: u64) -> Option<Vec<(u64, u64)>> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut problems = Vec::new();
    let mut any_content = false;
    let mapped = fs.runs(node, &mut problems, &mut |r| {
        if r.kind.is_content() {
            any_content = true;
        }
        if r.kind == RunKind::Data {
            ranges.push((r.logical, r.logical.saturating_add(r.len).min(size)));
        }
        ControlFlow::Continue(())
    });
    if (mapped.is_err() || !any_content) && size <= INLINE_MAX {
        return None;
    }
    ranges.sort_unstable();
    Some(ranges)
}

/// Searches one file's content, calling `hit` for each matching line
/// until it breaks (a binary file's lines are not given unless `text`;
/// its first match ends the search). Line numbers are counted only when
/// `lines` (else [`LineHit::line`] is 0).
///
/// Holes are not read: unless `text`, a file with a hole is binary (it
/// holds NULs), and a hole searched as binary is the same as one NUL
/// (NULs end lines there), so one NUL stands for it.
///
/// # Errors
/// Read errors of the file.
pub(super) fn search_file(
    fs: &dyn Filesystem,
    node: NodeId,
    re: &Regex,
    text: bool,
    lines: bool,
    scratch: &mut Scratch,
    hit: &mut dyn FnMut(&LineHit<'_>) -> ControlFlow<()>,
) -> Result<FileResult, crate::fs::FsError> {
    let mut result = FileResult::default();
    let meta = fs.metadata(node)?;
    let size = meta.size;
    // The map is asked for every file larger than inline data can be,
    // not only those whose block count says they have holes: a damaged
    // inode's block count is a claim like its size.
    let data = if !text && (meta.allocated < size || size > INLINE_MAX) {
        data_ranges(fs, node, size)
    } else {
        None
    };
    let buf = scratch
        .buf
        .get_or_insert_with(|| AlignedBuf::new(CARRY.saturating_add(CHUNK)));
    // buf[CARRY - carry..CARRY] is the unfinished line carried over.
    let mut carry = 0usize;
    let mut window_offset = 0u64; // file offset of the window's start
    let mut window_line = 1u64; // line number of the window's start
    let mut read_at = 0u64;
    let mut binary = false;
    loop {
        let area = buf.get_mut(CARRY..).unwrap_or_default();
        let left = size.saturating_sub(read_at);
        // Where the next read stops: the end of the data run it is in.
        let (hole_end, data_end) = match &data {
            None => (read_at, size),
            Some(ranges) => match ranges.iter().find(|(_, e)| *e > read_at) {
                Some(&(s, e)) if s <= read_at => (read_at, e),
                Some(&(s, _)) => (s.min(size), size),
                None => (size, size),
            },
        };
        let n = if left == 0 {
            0
        } else if hole_end > read_at {
            // A hole: one NUL stands for it (see above).
            binary = true;
            if let Some(b) = area.first_mut() {
                *b = 0;
            }
            read_at = hole_end;
            1
        } else {
            let want = us(data_end.saturating_sub(read_at).min(u64_of(CHUNK)));
            let part = area.get_mut(..want).unwrap_or_default();
            let n = fs.read_file(node, read_at, part)?;
            if !text && !binary && memchr::memchr(0, part.get(..n).unwrap_or(&[])).is_some() {
                binary = true;
            }
            read_at = read_at.saturating_add(u64_of(n));
            n
        };
        let eof = n == 0;
        let window = buf
            .get(CARRY.saturating_sub(carry)..CARRY.saturating_add(n))
            .unwrap_or_default();
        // Whole lines only, unless at the end or the line is too long to
        // carry.
        let end = if eof {
            window.len()
        } else {
            match memchr::memrchr(b'\n', window) {
                Some(i) if window.len().saturating_sub(i) <= CARRY => i.saturating_add(1),
                _ if window.len() > CARRY => window.len(),
                _ => {
                    // Not one whole line yet: carry it all.
                    let from = CARRY.saturating_sub(carry);
                    let to = CARRY.saturating_add(n);
                    carry = to.saturating_sub(from);
                    buf.copy_within(from..to, CARRY.saturating_sub(carry));
                    continue;
                }
            }
        };
        let region = window.get(..end).unwrap_or(&[]);
        let mut pos = 0;
        let mut counted = 0; // region[..counted] newlines are in `line_no`
        let mut line_no = window_line;
        while pos < region.len() {
            let Some(m) = re.find_at(region, pos) else {
                break;
            };
            let start = memchr::memrchr(b'\n', region.get(..m.start()).unwrap_or(&[]))
                .map_or(0, |i| i.saturating_add(1));
            let stop = memchr::memchr(b'\n', region.get(m.start()..).unwrap_or(&[]))
                .map_or(region.len(), |i| m.start().saturating_add(i));
            let line = region.get(start..stop).unwrap_or(&[]);
            let real = if binary {
                // In a binary file NULs end lines too, as for grep.
                line.split(|&b| b == 0).any(|piece| re.is_match(piece))
            } else {
                re.is_match(line)
            };
            if real {
                result.matches = result.matches.saturating_add(1);
                if binary {
                    result.binary = true;
                    return Ok(result);
                }
                if lines {
                    line_no = line_no.saturating_add(u64_of(
                        memchr::memchr_iter(b'\n', region.get(counted..start).unwrap_or(&[]))
                            .count(),
                    ));
                    counted = start;
                }
                let h = LineHit {
                    line: if lines { line_no } else { 0 },
                    offset: window_offset.saturating_add(u64_of(start)),
                    text: line,
                };
                if hit(&h).is_break() {
                    return Ok(result);
                }
            }
            pos = stop.saturating_add(1);
        }
        if eof {
            return Ok(result);
        }
        if lines {
            window_line = line_no.saturating_add(u64_of(
                memchr::memchr_iter(b'\n', region.get(counted..).unwrap_or(&[])).count(),
            ));
        }
        window_offset = window_offset.saturating_add(u64_of(end));
        // The unfinished line moves to just before the read area.
        let from = CARRY.saturating_sub(carry).saturating_add(end);
        let to = CARRY.saturating_add(n);
        carry = to.saturating_sub(from);
        buf.copy_within(from..to, CARRY.saturating_sub(carry));
    }
}

/// Which chain layer holds a file's bytes: its data runs, found once per
/// file with a match.
struct LayerOf {
    reader: Arc<LayeredReader>,
    geometry: Arc<Geometry>,
}

impl LayerOf {
    /// The layer holding the file's byte at `offset` (`None`: a hole, or
    /// bytes kept in the node itself, or no layer holds them).
    fn at(&self, runs: &[Run], node_at: Option<u64>, offset: u64) -> Option<usize> {
        let volume = runs
            .iter()
            .find(|r| {
                r.kind == RunKind::Data
                    && r.logical <= offset
                    && offset < r.logical.saturating_add(r.len)
            })
            .map(|r| r.physical.saturating_add(offset.saturating_sub(r.logical)))
            .or(if runs.iter().any(|r| r.kind == RunKind::Data) {
                None
            } else {
                // No data runs: the content is in the node (inline data).
                node_at
            })?;
        let (disk, _) = self.geometry.to_disk(volume)?;
        self.reader.owner(disk, 1).ok()?.layer
    }
}

/// The data runs of a file and where its node lies.
fn runs_of(fs: &dyn Filesystem, node: NodeId) -> (Vec<Run>, Option<u64>) {
    let mut runs = Vec::new();
    let mut problems = Vec::new();
    let _ = fs.runs(node, &mut problems, &mut |r| {
        if r.kind == RunKind::Data {
            runs.push(r);
        }
        ControlFlow::Continue(())
    });
    (runs, fs.node_offset(node).ok())
}

/// `grep`.
///
/// # Errors
/// Opening the image or the filesystem; a path that is not found; a
/// pattern that does not compile; writing; [`NoMatch`] when nothing
/// matched.
pub fn run(args: &GrepArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let pattern = if args.fixed_strings {
        regex::escape(&args.pattern)
    } else {
        args.pattern.clone()
    };
    let re = RegexBuilder::new(&pattern)
        .unicode(false)
        // `^` and `$` at each line's ends: the search runs over many lines.
        .multi_line(true)
        .case_insensitive(args.ignore_case)
        .build()
        .with_context(|| format!("the pattern {:?}", args.pattern))?;
    let disk = super::diff::Disk::open_cut(
        &args.fs.image,
        args.fs.volume.as_deref(),
        if args.all_layers { None } else { args.fs.layer },
        &args.fs.replay,
    )?;
    let top = disk.chain.layers.len().saturating_sub(1);
    let mut views: Vec<Option<Arc<dyn Filesystem>>> = Vec::new();
    let mut layer_of = None;
    if args.all_layers {
        for n in 0..=top {
            match disk.view(n) {
                Ok((fs, _)) => views.push(Some(fs)),
                Err(e) => {
                    note(&format!("layer {n}: {e:#} (not searched)"));
                    views.push(None);
                }
            }
        }
    } else {
        let (fs, reader) = disk.view(top)?;
        views.push(Some(fs));
        layer_of = Some(LayerOf {
            reader,
            geometry: disk.geometry.clone(),
        });
    }
    let held: Vec<Option<&dyn Filesystem>> = views.iter().map(|v| v.as_deref()).collect();
    let arg = arg_bytes(&args.path);
    let start_path = raw_path(&held, arg);
    // The start in each view: a directory to walk, or one file.
    let mut starts: Vec<Option<(NodeId, FileType)>> = Vec::new();
    for fs in &held {
        starts.push(fs.and_then(|fs| {
            let n = resolve_bytes(fs, arg).ok()?;
            Some((n, fs.metadata(n).ok()?.file_type))
        }));
    }
    if starts.iter().all(Option::is_none) {
        let fs = held
            .iter()
            .rev()
            .flatten()
            .next()
            .context("no layer could be opened")?;
        resolve_bytes(*fs, arg)?;
        anyhow::bail!("{}: cannot be read", crate::escape::printable_bytes(arg));
    }
    let mut printer = Printer {
        out,
        json: args.fs.json,
        first: true,
        files_only: args.files_with_matches,
        print0: args.print0,
        any: false,
    };
    if args.fs.json {
        printer.out.write_all(b"[")?;
    }
    let mut failed: Option<anyhow::Error> = None;
    let mut scratch = Scratch::default();
    let mut one_path = |path: &[u8], found: &[Option<(NodeId, FileType)>], p: &mut Printer<'_>| {
        let search = Search {
            args,
            re: &re,
            views: &held,
            layer_of: layer_of.as_ref(),
        };
        if let Err(e) = grep_path(&search, path, found, p, &mut scratch) {
            failed = Some(e);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    };
    let walk_dirs = starts
        .iter()
        .any(|s| matches!(s, Some((_, FileType::Directory))));
    if walk_dirs {
        let dirs: Vec<Option<NodeId>> = starts
            .iter()
            .map(|s| s.and_then(|(n, t)| (t == FileType::Directory).then_some(n)))
            .collect();
        walk_views(
            &held,
            &dirs,
            &start_path,
            None,
            &mut |v: &ViewsVisit<'_>| {
                let found: Vec<Option<(NodeId, FileType)>> = v
                    .found
                    .iter()
                    .map(|f| f.as_ref().map(|(e, t)| (e.node, *t)))
                    .collect();
                one_path(v.path, &found, &mut printer)
            },
            &mut |w| note(&w),
        );
    } else {
        let _ = one_path(&start_path, &starts, &mut printer);
    }
    if let Some(e) = failed {
        return Err(e);
    }
    if printer.json {
        printer
            .out
            .write_all(if printer.first { b"]\n" } else { b"\n]\n" })?;
    }
    printer.out.flush()?;
    if !printer.any {
        return Err(NoMatch.into());
    }
    Ok(())
}

/// Where hits go.
struct Printer<'a> {
    out: &'a mut dyn Write,
    json: bool,
    first: bool,
    files_only: bool,
    /// `-Z`: raw names, each followed by a NUL.
    print0: bool,
    /// Something matched.
    any: bool,
}

/// `3` or `0,1,2` or `-`.
fn layers_text(layers: &[Option<usize>]) -> String {
    let v: Vec<String> = layers
        .iter()
        .map(|l| l.map_or("-".to_owned(), |l| l.to_string()))
        .collect();
    v.join(",")
}

impl Printer<'_> {
    /// A matching line: `path:line:layers:text`, as `grep -rn` with the
    /// layers where `grep -b` puts the offset.
    fn line(
        &mut self,
        path: &[u8],
        line: u64,
        offset: u64,
        text: &[u8],
        layers: &[Option<usize>],
        all: bool,
    ) -> anyhow::Result<()> {
        self.any = true;
        if self.json {
            let mut v = json!({
                "path": super::json::text(path),
                "line": line,
                "offset": offset,
                "text": super::json::text(text),
            });
            if all {
                super::json::set(&mut v, "layers", json!(layers));
            } else {
                super::json::set(&mut v, "layer", json!(layers.first().copied().flatten()));
            }
            if let Some(b) = super::json::hex_unless_utf8(path) {
                super::json::set(&mut v, "path_bytes", json!(b));
            }
            if let Some(b) = super::json::hex_unless_utf8(text) {
                super::json::set(&mut v, "text_bytes", json!(b));
            }
            return super::json::write_item(self.out, &mut self.first, &v);
        }
        if self.print0 {
            self.out.write_all(path)?;
            self.out.write_all(b"\0")?;
        } else {
            write!(self.out, "{}:", crate::escape::printable_bytes(path))?;
        }
        writeln!(
            self.out,
            "{line}:{}:{}",
            layers_text(layers),
            crate::escape::printable_bytes(text)
        )?;
        Ok(())
    }

    /// A file with a match (`-l`), or a binary file that matched.
    fn file(
        &mut self,
        path: &[u8],
        layers: &[Option<usize>],
        binary: bool,
        all: bool,
    ) -> anyhow::Result<()> {
        self.any = true;
        if self.json {
            let mut v = json!({ "path": super::json::text(path) });
            if binary {
                super::json::set(&mut v, "binary", json!(true));
            }
            if all {
                super::json::set(&mut v, "layers", json!(layers));
            }
            if let Some(b) = super::json::hex_unless_utf8(path) {
                super::json::set(&mut v, "path_bytes", json!(b));
            }
            return super::json::write_item(self.out, &mut self.first, &v);
        }
        let shown = crate::escape::printable_bytes(path);
        if self.files_only && self.print0 {
            self.out.write_all(path)?;
            self.out.write_all(b"\0")?;
            if all {
                writeln!(self.out, "{}", layers_text(layers))?;
            }
        } else if self.files_only {
            if all {
                writeln!(self.out, "{shown}:{}", layers_text(layers))?;
            } else {
                writeln!(self.out, "{shown}")?;
            }
        } else {
            // As grep 3.5 and later: on stderr, the results stay lines.
            self.out.flush()?;
            eprintln!(
                "layerscope: {shown}: binary file matches{}",
                if all {
                    format!(" (layers {})", layers_text(layers))
                } else {
                    String::new()
                }
            );
        }
        Ok(())
    }
}

/// A line's offset in the file and the layers holding it.
type LinesAt = (u64, Vec<Option<usize>>);

/// What one `grep` searches with.
struct Search<'a> {
    args: &'a GrepArgs,
    re: &'a Regex,
    views: &'a [Option<&'a dyn Filesystem>],
    layer_of: Option<&'a LayerOf>,
}

/// Greps the file at `path` in each view that has it as a regular file.
fn grep_path(
    search: &Search<'_>,
    path: &[u8],
    found: &[Option<(NodeId, FileType)>],
    p: &mut Printer<'_>,
    scratch: &mut Scratch,
) -> anyhow::Result<()> {
    let Search {
        args,
        re,
        views,
        layer_of,
    } = *search;
    let all = args.all_layers;
    let files_only = args.files_with_matches;
    let shown = || crate::escape::printable_bytes(path);
    if !all {
        let (Some(Some(fs)), Some(Some((node, FileType::Regular)))) =
            (views.first(), found.first())
        else {
            return Ok(());
        };
        let mut runs: Option<(Vec<Run>, Option<u64>)> = None;
        let mut err = None;
        let r = search_file(*fs, *node, re, args.text, !files_only, scratch, &mut |h| {
            if files_only {
                return ControlFlow::Break(());
            }
            let (rs, at) = runs.get_or_insert_with(|| runs_of(*fs, *node));
            let layer = layer_of.and_then(|l| l.at(rs, *at, h.offset));
            match p.line(path, h.line, h.offset, h.text, &[layer], false) {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => {
                    err = Some(e);
                    ControlFlow::Break(())
                }
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
        match r {
            Ok(r) if r.binary || (files_only && r.matches > 0) => {
                let layer = if files_only {
                    None
                } else {
                    let (rs, at) = runs_of(*fs, *node);
                    layer_of.and_then(|l| l.at(&rs, at, 0))
                };
                p.file(path, &[layer], r.binary && !files_only, false)?;
            }
            Ok(_) => {}
            Err(e) => note(&format!("{}: {e}", shown())),
        }
        return Ok(());
    }
    // Every layer's version: (line, text) -> layers, in line order.
    let mut lines: BTreeMap<(u64, Vec<u8>), LinesAt> = BTreeMap::new();
    let mut matched: Vec<Option<usize>> = Vec::new();
    let mut binary: Vec<Option<usize>> = Vec::new();
    for (k, (fs, f)) in views.iter().zip(found).enumerate() {
        let (Some(fs), Some((node, FileType::Regular))) = (fs, f) else {
            continue;
        };
        let mut kept = 0usize;
        let r = search_file(*fs, *node, re, args.text, !files_only, scratch, &mut |h| {
            if files_only {
                return ControlFlow::Break(());
            }
            kept = kept.saturating_add(1);
            if kept > MAX_HITS_PER_FILE {
                return ControlFlow::Break(());
            }
            lines
                .entry((h.line, h.text.to_vec()))
                .or_insert_with(|| (h.offset, Vec::new()))
                .1
                .push(Some(k));
            ControlFlow::Continue(())
        });
        if kept > MAX_HITS_PER_FILE {
            note(&format!(
                "{} (layer {k}): more than {MAX_HITS_PER_FILE} matching lines; the rest not compared",
                shown()
            ));
        }
        match r {
            Ok(r) if r.binary => binary.push(Some(k)),
            Ok(r) if r.matches > 0 => matched.push(Some(k)),
            Ok(_) => {}
            Err(e) => note(&format!("{} (layer {k}): {e}", shown())),
        }
    }
    if files_only {
        matched.extend(binary);
        matched.sort_unstable();
        if !matched.is_empty() {
            p.file(path, &matched, false, true)?;
        }
        return Ok(());
    }
    for ((line, text), (offset, layers)) in &lines {
        p.line(path, *line, *offset, text, layers, true)?;
    }
    if !binary.is_empty() {
        p.file(path, &binary, true, true)?;
    }
    Ok(())
}
