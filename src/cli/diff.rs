//! `layerscope diff` and `blame`: what overlays changed, in files.
use std::io::{self, Write};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use serde_json::json;

use super::ImageArgs;
use crate::block::chain::Chain;
use crate::block::layered::LayeredReader;
use crate::block::BlockSource;
use crate::diff::blame::{Blame, Views};
use crate::diff::{blocks, Diff, Progress};
use crate::fs::Filesystem;
use crate::volume::{Geometry, VolumeSource};
use std::ops::ControlFlow;

// Arguments of `diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// The older layer (default: the one below the top).
    #[arg(long)]
    pub from: Option<usize>,
    /// The newer layer (default: the top).
    #[arg(long)]
    pub to: Option<usize>,
    /// Walk and compare both whole trees instead of following the
    /// overlays' clusters (slow; the reference the quick diff is tested
    /// against).
    #[arg(long)]
    pub full: bool,
    /// Walk and compare both trees through the filesystem-independent
    /// path (what filesystems without a quick diff get), reading only
    /// the file bytes the overlays may have changed (with --full: all).
    #[arg(long)]
    pub trees: bool,
    /// The volume holding the filesystem (`p1`, `vg0/root`, as
    /// `layerscope volumes` names them; `--partition N` = `--volume pN`).
    #[arg(long, visible_alias = "partition", value_name = "NAME")]
    pub volume: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Report per inode, as found: a file replaced at its path is a `D`
    /// and an `A`, a moved directory one `R`. By default changes are in
    /// path terms: a replaced file is one `M` (replaced), and everything
    /// under a moved directory is listed as moved with it.
    #[arg(long)]
    pub by_inode: bool,
    /// In path terms, list a moved directory alone, not the paths under
    /// it that only moved with it.
    #[arg(long)]
    pub no_expand: bool,
    /// Instead of comparing layers: the files this persistent dirty
    /// bitmap marks (of the top qcow2 layer, or the NBD server's
    /// `qemu:dirty-bitmap:NAME`), i.e. what an incremental backup from it
    /// will carry, in files.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["from", "to", "full", "trees", "by_inode", "no_expand"])]
    pub bitmap: Option<String>,
    /// Compare the top (qcow2) layer as it was at this internal snapshot
    /// (ID or name) with it as it is now, or as of `--snapshot`: what
    /// changed since the snapshot (or between the two), found from the
    /// L2 tables that differ.
    #[arg(long, value_name = "ID|NAME", conflicts_with_all = ["from", "to", "bitmap"])]
    pub from_snapshot: Option<String>,
    #[command(flatten)]
    pub replay: super::ReplayArgs,
}

// Arguments of `blame`.
#[derive(Debug, Args)]
pub struct BlameArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// The file (or, with -R, the directory; default: the root).
    #[arg(default_value = "/")]
    pub path: std::ffi::OsString,
    /// Every file under the directory.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// The volume holding the filesystem (`p1`, `vg0/root`, as
    /// `layerscope volumes` names them; `--partition N` = `--volume pN`).
    #[arg(long, visible_alias = "partition", value_name = "NAME")]
    pub volume: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub replay: super::ReplayArgs,
}

/// The chain and where its filesystem is: opened as of the top once to
/// find the volume, then seen as of any layer.
pub(super) struct Disk {
    pub(super) chain: Chain,
    /// Where the filesystem's volume lies on the disk.
    pub(super) geometry: Arc<Geometry>,
    /// The volume's name.
    volume: String,
    replay: super::ReplayArgs,
    /// The filesystem found on the top layer (and its reader) while
    /// looking for the volume, when [`Disk::view`] of the top would open
    /// the same one again: handed to the first such view instead of a
    /// second open (issue 19: a small overlay's diff read and decoded the
    /// top's metadata twice).
    probed: std::sync::Mutex<Option<View>>,
}

/// A filesystem as of a layer, and the reader of the chain cut there.
type View = (Arc<dyn Filesystem>, Arc<LayeredReader>);

impl Disk {
    pub(super) fn open(
        image: &ImageArgs,
        volume: Option<&str>,
        replay: &super::ReplayArgs,
    ) -> anyhow::Result<Disk> {
        Disk::open_cut(image, volume, None, replay)
    }

    /// [`Disk::open`] of the chain cut at `layer` (`--layer`).
    pub(super) fn open_cut(
        image: &ImageArgs,
        volume: Option<&str>,
        layer: Option<usize>,
        replay: &super::ReplayArgs,
    ) -> anyhow::Result<Disk> {
        let chain = image.open()?;
        let chain = match layer {
            Some(n) if n >= chain.layers.len() => {
                anyhow::bail!(
                    "--layer {n}: the chain has layers 0 to {}",
                    chain.layers.len().saturating_sub(1)
                )
            }
            Some(n) => chain.cut(n),
            None => chain,
        };
        let top = super::fs::open_in(&chain, volume)?;
        let probed = same_as_view(&top).then(|| (Arc::clone(&top.fs), Arc::clone(&top.reader)));
        Ok(Disk {
            chain,
            geometry: top.geometry,
            volume: top.volume,
            replay: replay.clone(),
            probed: std::sync::Mutex::new(probed),
        })
    }

    /// The volume's name (`p1`, `vg0/root`, `whole disk`).
    pub(super) fn volume_name(&self) -> &str {
        &self.volume
    }

    /// The volume over `src` (the chain as of a layer, or one layer alone).
    fn over(&self, src: Arc<dyn BlockSource>, name: String) -> Arc<dyn BlockSource> {
        if self.geometry.window_start() == Some(0) && self.geometry.len() == src.len() {
            return src;
        }
        Arc::new(VolumeSource::new(src, self.geometry.clone(), name))
    }

    /// The filesystem as of layer `n`.
    pub(super) fn view(&self, n: usize) -> anyhow::Result<View> {
        let probed = if n.saturating_add(1) == self.chain.layers.len() {
            self.probed.lock().ok().and_then(|mut p| p.take())
        } else {
            None
        };
        if let Some((fs, reader)) = probed {
            // What the open below checks of the arguments, checked alike.
            super::fs::mount(&self.replay, &reader, &self.geometry)?;
            return Ok((fs, reader));
        }
        let reader = Arc::new(LayeredReader::new(&self.chain.cut(n))?);
        let src = self.over(reader.clone(), format!("layer {n} {}", self.volume));
        let mount = super::fs::mount(&self.replay, &reader, &self.geometry)?;
        let fs = crate::fs::open_with(src, &mount)
            .with_context(|| format!("the filesystem as of layer {n}"))?;
        if let Some(note) = fs.replay_note() {
            eprintln!(
                "layerscope: note: layer {n}: {}",
                crate::escape::printable(&note)
            );
        }
        Ok((fs, reader))
    }

    /// Every layer's view, for [`Views::blame`] (`blame`, `find
    /// --written-in`).
    pub(super) fn views(&self) -> anyhow::Result<Views> {
        let top = self.chain.layers.len().saturating_sub(1);
        let mut fs = Vec::new();
        let mut reader = None;
        for n in 0..=top {
            let (f, r) = self.view(n)?;
            fs.push(f);
            reader = Some(r);
        }
        Ok(Views {
            fs,
            layers: self
                .chain
                .layers
                .iter()
                .map(|l| self.over(Arc::clone(&l.source), l.path.clone()))
                .collect(),
            reader: reader.context("an empty chain")?,
            geometry: self.geometry.clone(),
            same_blocks: Default::default(),
            scratch: Default::default(),
            spans: Default::default(),
            replays: Default::default(),
        })
    }
}

/// A progress bar on a terminal's stderr; nothing otherwise.
pub(super) struct Bar(pub(super) indicatif::ProgressBar);

impl Bar {
    pub(super) fn new() -> Bar {
        let bar = if io::IsTerminal::is_terminal(&io::stderr()) {
            indicatif::ProgressBar::new(0)
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg:28} {wide_bar} {pos}/{len}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Bar(bar)
    }
}

impl Progress for Bar {
    fn step(&self, phase: &str, done: u64, total: u64) -> bool {
        // Nothing to draw (not a terminal): no state to keep either.
        if self.0.is_hidden() {
            return true;
        }
        if self.0.length() != Some(total) {
            self.0.set_length(total);
            self.0.set_message(phase.to_owned());
        }
        self.0.set_position(done);
        true
    }
}

/// `diff`.
/// Whether the filesystem `top` probed is the one [`Disk::view`] of the
/// top layer opens: ext read straight from the whole disk (the view's
/// source is then the same reader, under the same name), with no journal
/// to recover (the probe never replays; the view opens a filesystem that
/// needs no recovery as it is on disk, whatever the replay options).
fn same_as_view(top: &super::fs::Opened) -> bool {
    let Some(ext) = super::ext::as_ext(top.fs.as_ref()) else {
        return false;
    };
    let disk = ext.disk();
    !ext.superblock()
        .has_incompat(crate::fs::ext::superblock::Incompat::NEEDS_RECOVERY)
        && top.geometry.window_start() == Some(0)
        && top.geometry.len() == top.reader.len()
        && disk.len() == top.reader.len()
        && disk.name() == top.reader.name()
}

pub fn diff(args: &DiffArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let disk = Disk::open(&args.image, args.volume.as_deref(), &args.replay)?;
    let top = disk.chain.layers.len().saturating_sub(1);
    if let Some(name) = &args.bitmap {
        return super::dirty::run(args, &disk, name, out);
    }
    if let Some(snap) = &args.from_snapshot {
        return snapshot_diff(args, &disk, snap, out);
    }
    if top == 0 {
        anyhow::bail!(
            "{}: the chain has one layer: nothing to compare (diff compares a layer with one below it; `layerscope chain` shows the layers)",
            crate::escape::printable(&args.image.image)
        );
    }
    let to = args.to.unwrap_or(top);
    let from = args.from.unwrap_or(to.saturating_sub(1));
    if to > top {
        anyhow::bail!("--to {to}: the chain has layers 0 to {top}");
    }
    if from >= to {
        anyhow::bail!("--from {from} --to {to}: expected a layer below the other (0 is the base, {top} the top)");
    }
    let (old, _) = disk.view(from)?;
    let (new, _) = disk.view(to)?;
    let sides = Sides {
        old,
        new,
        from: json!(from),
        to: json!(to),
        label: format!("from layer {from} to layer {to}"),
    };
    let held = || {
        Ok(blocks::held_volume_ranges(
            &disk.chain,
            from,
            to,
            &disk.geometry,
        )?)
    };
    compare(args, &sides, &held, out)
}

/// `diff --from-snapshot A [--snapshot B]`: the top layer as of snapshot A
/// against it now (or as of B), over the same backing chain.
fn snapshot_diff(
    args: &DiffArgs,
    disk: &Disk,
    snap: &str,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut image = args.image.clone();
    image.snapshot = Some(snap.to_owned());
    let then = Disk::open(&image, args.volume.as_deref(), &args.replay)?;
    let top = disk.chain.layers.len().saturating_sub(1);
    let (Some(new_q), Some(old_q)) = (
        disk.chain.top().and_then(|l| l.qcow2.clone()),
        then.chain.top().and_then(|l| l.qcow2.clone()),
    ) else {
        anyhow::bail!("--from-snapshot: internal snapshots are a qcow2 feature");
    };
    let name = |q: &crate::block::qcow2::Qcow2Layer| {
        q.snapshot().map_or_else(
            || "now".to_owned(),
            |s| format!("snapshot {} ({})", s.id, crate::escape::printable(&s.name)),
        )
    };
    let (from, to) = (name(&old_q), name(&new_q));
    let (old, _) = then.view(top)?;
    let (new, _) = disk.view(top)?;
    let block = new.block_size();
    let sides = Sides {
        old,
        new,
        from: json!(from),
        to: json!(to),
        label: format!("from {from} to {to}"),
    };
    let held = || -> anyhow::Result<Vec<(u64, u64)>> {
        let mut r = crate::diff::dirty::DirtyRanges::new(block);
        for (s, l) in new_q.differs_from(&old_q)? {
            r.add_disk(&disk.geometry, s, l)?;
        }
        r.finish();
        Ok(r.ranges().to_vec())
    };
    compare(args, &sides, &held, out)
}

/// The two views a diff compares, and how to name them.
pub(super) struct Sides {
    pub(super) old: Arc<dyn Filesystem>,
    pub(super) new: Arc<dyn Filesystem>,
    /// `from` and `to` in the JSON (layer numbers, or snapshot names).
    pub(super) from: serde_json::Value,
    pub(super) to: serde_json::Value,
    /// "from layer 1 to layer 2", for the summary line.
    pub(super) label: String,
}

/// The volume ranges the overlays between two sides hold.
type Held<'a> = dyn Fn() -> anyhow::Result<Vec<(u64, u64)>> + 'a;

/// Compares two views (quick, full or by trees, as `args` ask; `held`
/// says where they may differ) and prints the changes.
fn compare(args: &DiffArgs, sides: &Sides, held: &Held, out: &mut dyn Write) -> anyhow::Result<()> {
    let (old, new) = (&sides.old, &sides.new);
    let bar = Bar::new();
    // ext has a quick diff of its own (from inode-table slots); any other
    // filesystem, or --trees, compares trees through the trait.
    let ext = match (
        super::ext::as_ext(old.as_ref()),
        super::ext::as_ext(new.as_ref()),
    ) {
        (Some(o), Some(n)) if !args.trees => Some((o, n)),
        _ => None,
    };
    let (method, mut result): (&str, Diff) = match ext {
        Some((o, n)) if args.full => ("full", crate::diff::diff_full(o, n, &bar)?),
        Some((o, n)) => {
            // Blocks either view replays from its journal changed too.
            let held = blocks::with_replayed(held()?, o, n);
            return super::diff_stream::quick(args, sides, (o, n), &held, &bar, out);
        }
        None => {
            let held = if args.full { None } else { Some(held()?) };
            let d =
                crate::diff::tree::diff_trees(old.as_ref(), new.as_ref(), held.as_deref(), &bar)?;
            ("trees", d)
        }
    };
    if let (false, Some((o, n))) = (args.by_inode, ext) {
        crate::diff::paths::path_level(&mut result, o, n, !args.no_expand);
    }
    bar.0.finish_and_clear();
    if args.json {
        let terms = if args.by_inode || ext.is_none() {
            "inodes"
        } else {
            "paths"
        };
        return write_json(out, sides, method, terms, &result);
    }
    for c in &result.changes {
        out.write_all(text_line(c).as_bytes())?;
    }
    summary(args, sides, &result, result.changes.len(), out)
}

/// A change as a line of text.
pub(super) fn text_line(c: &crate::diff::Change) -> String {
    let mut line = format!("{}  {:<9}  ", c.change.letter(), c.file_type);
    match &c.from {
        Some(f) => line.push_str(&format!("{f} -> {}", c.path)),
        None => line.push_str(&c.path),
    }
    let mut what = Vec::new();
    if c.replaced {
        what.push(format!("replaced: was inode {}", c.old_inode.unwrap_or(0)));
    }
    if c.hard_link {
        let verb = if c.change == crate::diff::Kind::Deleted {
            "hard link removed"
        } else {
            "hard link"
        };
        match &c.link_path {
            Some(p) if c.change == crate::diff::Kind::Deleted => {
                what.push(format!("{verb}; still at {p}"))
            }
            Some(p) => what.push(format!("{verb} to {p}")),
            None => what.push(verb.to_owned()),
        }
    }
    if c.delta.content {
        what.push("content".to_owned());
    }
    if !c.delta.metadata.is_empty() {
        what.push(c.delta.metadata.join(","));
    }
    if !what.is_empty() {
        line.push_str(&format!("  ({})", what.join("; ")));
    }
    line.push('\n');
    line
}

/// The text form's last line (`count` changes) and the notes.
pub(super) fn summary(
    args: &DiffArgs,
    sides: &Sides,
    result: &Diff,
    count: usize,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let new = &sides.new;
    let s = &result.stats;
    if s.trees_compared {
        writeln!(
            out,
            "{} change(s) {}; trees compared ({}): {} file(s) compared, {} director(ies) listed",
            count,
            sides.label,
            if args.trees {
                "--trees".to_owned()
            } else {
                format!("{} has no quick diff", new.kind().name())
            },
            s.inodes_compared,
            s.directories_listed,
        )?;
        for n in &result.notes {
            eprintln!("layerscope: note: {}", crate::escape::printable(n));
        }
        return Ok(());
    }
    writeln!(
        out,
        "{} change(s) {}; {} block(s) changed, {} held unchanged (copy-up), {} inode(s) compared, {} director(ies) listed{}",
        count,
        sides.label,
        s.changed_blocks,
        s.copied_up_blocks,
        s.inodes_compared,
        s.directories_listed,
        if s.inode_tables_searched { ", inode tables searched for owners" } else { "" }
    )?;
    for n in &result.notes {
        eprintln!("layerscope: note: {}", crate::escape::printable(n));
    }
    Ok(())
}

/// `diff --json`: the document `json!` of the whole would be (keys in
/// order, pretty, escaped), written as it goes: each change is made JSON
/// and written alone, so the output costs one change's JSON at a time,
/// not a copy of them all.
pub(super) fn write_json(
    out: &mut dyn Write,
    sides: &Sides,
    method: &str,
    terms: &str,
    result: &Diff,
) -> anyhow::Result<()> {
    use serde::ser::{SerializeMap, Serializer as _};
    let mut ser = serde_json::Serializer::with_formatter(
        &mut *out,
        crate::escape::json::Escaping(serde_json::ser::PrettyFormatter::new()),
    );
    let notes: Vec<String> = result
        .notes
        .iter()
        .map(|n| crate::escape::printable(n))
        .collect();
    // A map's keys in order, as `json!` (a sorted map) writes them.
    let mut map = ser.serialize_map(None)?;
    map.serialize_entry("changes", &EachAsValue(&result.changes))?;
    map.serialize_entry("from", &sides.from)?;
    map.serialize_entry("method", method)?;
    map.serialize_entry("notes", &notes)?;
    map.serialize_entry("stats", &serde_json::to_value(&result.stats)?)?;
    map.serialize_entry("terms", terms)?;
    map.serialize_entry("to", &sides.to)?;
    map.end()?;
    writeln!(out)?;
    Ok(())
}

/// A list written item by item, each as its `serde_json::Value` (keys
/// sorted, as in a document made by `json!`).
struct EachAsValue<'a, T>(&'a [T]);

impl<T: serde::Serialize> serde::Serialize for EachAsValue<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeSeq};
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for item in self.0 {
            let v = serde_json::to_value(item).map_err(S::Error::custom)?;
            seq.serialize_element(&v)?;
        }
        seq.end()
    }
}

/// `blame`.
pub fn blame(args: &BlameArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let disk = Disk::open(&args.image, args.volume.as_deref(), &args.replay)?;
    let top = disk.chain.layers.len().saturating_sub(1);
    let views = disk.views()?;
    let topfs = views
        .fs
        .get(top)
        .map(|f| f.as_ref())
        .context("no filesystem in the top layer")?;
    let ino = super::fs::resolve_bytes(topfs, super::fs::arg_bytes(&args.path))?;
    let arg_path = super::find::raw_path(&[Some(topfs)], super::fs::arg_bytes(&args.path));
    let bar = Bar::new();
    let by_inode = super::fs::arg_bytes(&args.path).starts_with(b"<");
    // Each file is blamed and written as the walk finds it: `blame -R`
    // over millions of names keeps one at a time.
    let count = std::cell::Cell::new(0u64);
    let blame_one = |ino: u64, path: &[u8], emit: &mut dyn FnMut(&Blame) -> anyhow::Result<()>| {
        bar.step("blaming", count.get(), 0);
        count.set(count.get().saturating_add(1));
        let shown = crate::escape::printable_bytes(path);
        // A path is blamed as a path (its history may hold several
        // files); under `<N>`, inodes alone are followed.
        let raw = (!by_inode).then_some(path);
        match views.blame_path(ino, shown.clone(), raw) {
            Ok(b) => emit(&b),
            Err(e) => {
                eprintln!(
                    "layerscope: {shown}: {}",
                    crate::escape::printable(&e.to_string())
                );
                Ok(())
            }
        }
    };
    // Each file of `blame -R`, blamed in one walk ([`Views::blame_tree`]).
    let each = |path: &[u8],
                b: Result<Blame, crate::diff::DiffError>,
                emit: &mut dyn FnMut(&Blame) -> anyhow::Result<()>| {
        // The bar moves every 256 files: asking the clock per file costs.
        if count.get().trailing_zeros() >= 8 {
            bar.step("blaming", count.get(), 0);
        }
        count.set(count.get().saturating_add(1));
        match b {
            Ok(b) => emit(&b),
            Err(e) => {
                eprintln!(
                    "layerscope: {}: {}",
                    crate::escape::printable_bytes(path),
                    crate::escape::printable(&e.to_string())
                );
                Ok(())
            }
        }
    };
    let mut note = |n: String| eprintln!("layerscope: {}", crate::escape::printable(&n));
    // The argument, then (with -R) every file under it, each handed to
    // `emit` as it is blamed; the first error `emit` returns stops the walk.
    let mut blame_all = |emit: &mut dyn FnMut(&Blame) -> anyhow::Result<()>| {
        blame_one(ino, &arg_path, emit)?;
        if args.recursive {
            let mut failed: Option<anyhow::Error> = None;
            views.blame_tree(
                ino,
                &arg_path,
                !by_inode,
                &mut note,
                &mut |p, b| match each(p, b, emit) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(e) => {
                        failed = Some(e);
                        ControlFlow::Break(())
                    }
                },
            );
            if let Some(e) = failed {
                return Err(e);
            }
        }
        anyhow::Ok(())
    };
    if args.json {
        use serde::ser::{SerializeSeq, Serializer as _};
        let mut ser = serde_json::Serializer::with_formatter(
            &mut *out,
            crate::escape::json::Escaping(serde_json::ser::PrettyFormatter::new()),
        );
        let mut seq = ser.serialize_seq(None)?;
        blame_all(&mut |b: &Blame| Ok(seq.serialize_element(b)?))?;
        seq.end()?;
        writeln!(out)?;
        bar.0.finish_and_clear();
        return Ok(());
    }
    writeln!(out, "content  metadata  created  layers (bytes)  path")?;
    // One line per file, formatted into buffers kept across files (what
    // "{:>7}  {:>8}  {:>7}  {:<14}  {}" writes).
    let (mut line, mut shares) = (String::new(), String::new());
    let mut emit = |b: &Blame| -> anyhow::Result<()> {
        use crate::units::{human_to, push_u64, push_u64_right};
        let wide = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        shares.clear();
        for s in &b.layers {
            if !shares.is_empty() {
                shares.push(' ');
            }
            match (s.layer, s.journal) {
                (Some(l), journal) => {
                    if journal {
                        shares.push('j');
                    }
                    push_u64(&mut shares, wide(l));
                }
                (None, true) => shares.push_str("j?"),
                (None, false) => shares.push_str("zero"),
            }
            shares.push(':');
            human_to(&mut shares, s.bytes);
        }
        if shares.is_empty() {
            shares.push('-');
        }
        line.clear();
        push_u64_right(&mut line, wide(b.content_layer), 7);
        line.push_str("  ");
        push_u64_right(&mut line, wide(b.metadata_layer), 8);
        line.push_str("  ");
        match b.created_layer {
            Some(0) => line.push_str("   base"),
            Some(l) => push_u64_right(&mut line, wide(l), 7),
            None => line.push_str("      -"),
        }
        line.push_str("  ");
        line.push_str(&shares);
        for _ in shares.chars().count()..14 {
            line.push(' ');
        }
        line.push_str("  ");
        line.push_str(&b.path);
        line.push('\n');
        out.write_all(line.as_bytes())?;
        Ok(())
    };
    let done = blame_all(&mut emit);
    bar.0.finish_and_clear();
    done
}
