//! `layerscope journal`: the ext3/4 journal's log, decoded. Like `debugfs
//! logdump -a` it lists each transaction's descriptor, data, revoke and
//! commit blocks in log order; beyond it, each logged block says what it
//! is (an inode table block and the inodes in it that differ from the
//! disk, a bitmap, a directory block of some path), each transaction says
//! whether the kernel's recovery replays it, and the fast-commit area and
//! the orphan inodes are listed.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use serde_json::{json, Value};

use super::superblock::Civil;
use super::FsArgs;
use crate::diff::index::{for_each_inode, Paths};
use crate::escape::{printable, printable_bytes};
use crate::fs::ext::jbd2::classify::{Layout, What};
use crate::fs::ext::jbd2::fast_commit::{self, Area};
use crate::fs::ext::jbd2::mount::Journal;
use crate::fs::ext::jbd2::orphan::{self, Orphan};
use crate::fs::ext::jbd2::recovery::{Fate, Recovery};
use crate::fs::ext::jbd2::walk::Record;
use crate::fs::ext::jbd2::{blocktype, feature, Outcome, MAGIC};
use crate::fs::ext::superblock::{sb, Incompat};
use crate::fs::ext::Ext4;

// Arguments of `journal`.
#[derive(Debug, Args)]
pub struct JournalArgs {
    #[command(flatten)]
    pub fs: FsArgs,
    /// Name at most this many paths (inodes in logged inode table blocks,
    /// owners of logged file blocks); the rest are given by number.
    #[arg(long, default_value = "2000")]
    pub max_paths: usize,
}

/// Most inodes whose names are searched (each search lists directories).
const NAME_SEARCH: usize = 256;

/// One logged block, described.
#[derive(serde::Serialize)]
struct Logged {
    journal_block: u64,
    fs_block: u64,
    flags: u16,
    escaped: bool,
    fate: Fate,
    what: What,
    /// Inode table blocks: the inodes whose slot differs from the block
    /// on disk.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    changed_inodes: Vec<Named>,
    /// Other blocks: the inode that owns the block after recovery.
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<Owner>,
}

#[derive(Clone, serde::Serialize)]
struct Named {
    inode: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
}

#[derive(Clone, serde::Serialize)]
struct Owner {
    inode: u64,
    /// `data`, `directory`, `map` (extent or indirect block), `xattr`.
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
}

/// A transaction as listed.
#[derive(serde::Serialize)]
struct Transaction {
    sequence: u32,
    /// Journal block of its first block.
    first_block: u64,
    committed: bool,
    replayed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    commit: Option<Value>,
    descriptors: Vec<Value>,
    blocks: Vec<Logged>,
    revokes: Vec<Value>,
}

/// `journal`.
///
/// # Errors
/// Opening the image; a filesystem without a journal.
pub fn run(args: &JournalArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let fsa = &args.fs;
    let chain = fsa.image.open()?;
    let chain = match fsa.layer {
        Some(n) if n >= chain.layers.len() => {
            anyhow::bail!(
                "--layer {n}: the chain has layers 0 to {}",
                chain.layers.len().saturating_sub(1)
            )
        }
        Some(n) => chain.cut(n),
        None => chain,
    };
    // The journal is read from the disk as it is; paths come from the
    // replayed view (what the kernel sees after recovery).
    let on_disk = super::ReplayArgs {
        no_replay: true,
        journal_dev: fsa.replay.journal_dev.clone(),
    };
    let opened = super::fs::open_in_with(&chain, fsa.volume.as_deref(), &on_disk)?;
    let disk = super::ext::as_ext(opened.fs.as_ref()).ok_or_else(|| {
        anyhow::anyhow!(
            "{}: {} has no journal layerscope reads (only ext3/4's jbd2)",
            fsa.image.image,
            opened.fs.kind().name()
        )
    })?;
    let mount = super::fs::mount(&fsa.replay, &opened.reader, &opened.geometry)?;
    let journal = disk
        .journal_log(mount.journal_dev.clone())
        .context("reading the journal")?
        .ok_or_else(|| anyhow::anyhow!("{}: the filesystem has no journal", fsa.image.image))?;
    let rec = disk.recover(&journal);
    let geo = &journal.geometry;
    let fc = fast_commit::scan(geo, &journal.log, rec.end_transaction);
    let is_device = disk.superblock().has_incompat(Incompat::JOURNAL_DEV);
    let view = if is_device {
        None
    } else if fsa.replay.no_replay || rec.replay.is_empty() {
        Some(Ext4::open_on_disk(Arc::clone(disk.disk().inner()))?)
    } else {
        Some(Ext4::open_with(Arc::clone(disk.disk().inner()), &mount)?)
    };
    let transactions = describe(disk, view.as_ref(), &journal, &rec, args.max_paths)?;
    let (orphans, orphan_notes) = match &view {
        Some(v) => orphan::orphans(v),
        None => (Vec::new(), Vec::new()),
    };
    if fsa.json {
        let sb_check = crate::fs::ext::jbd2::checksum::superblock(geo, &journal.superblock);
        let v = json!({
            "journal": {
                "location": match &journal.log.layout {
                    crate::fs::ext::jbd2::log::Layout::Inode { ino, .. } => json!({"inode": ino}),
                    crate::fs::ext::jbd2::log::Layout::Device { start } => json!({"device": printable(journal.log.source.name()), "start": start}),
                },
                "geometry": geo,
                "features": features(geo),
                "superblock_checksum": sb_check,
            },
            "recovery": {
                "needed": rec.needed,
                "outcome": rec.outcome,
                "start_block": geo.start,
                "start_sequence": geo.sequence,
                "end_sequence": rec.end_transaction,
                "transactions_replayed": rec.transactions,
                "blocks_replayed": rec.blocks(),
                "revokes": rec.revokes,
                "revoke_hits": rec.revoke_hits,
                "log_end": rec.walk.end,
                "notes": rec.notes.iter().map(|n| printable(n)).collect::<Vec<_>>(),
            },
            "transactions": transactions,
            "fast_commit": fc.as_ref().map(fc_json),
            "orphans": orphans,
            "orphan_notes": orphan_notes.iter().map(|n| printable(n)).collect::<Vec<_>>(),
        });
        serde_json::to_writer_pretty(&mut *out, &v)?;
        writeln!(out)?;
        return Ok(());
    }
    text(
        out,
        &journal,
        &rec,
        &transactions,
        fc.as_ref(),
        &orphans,
        &orphan_notes,
    )
}

fn features(geo: &crate::fs::ext::jbd2::Geometry) -> Vec<&'static str> {
    let mut v = Vec::new();
    if geo.csum_v1() {
        v.push("journal_checksum");
    }
    for (bit, name) in [
        (feature::INCOMPAT_REVOKE, "journal_incompat_revoke"),
        (feature::INCOMPAT_64BIT, "journal_64bit"),
        (feature::INCOMPAT_ASYNC_COMMIT, "journal_async_commit"),
        (feature::INCOMPAT_CSUM_V2, "journal_checksum_v2"),
        (feature::INCOMPAT_CSUM_V3, "journal_checksum_v3"),
        (feature::INCOMPAT_FAST_COMMIT, "journal_fast_commit"),
    ] {
        if geo.has_incompat(bit) {
            v.push(name);
        }
    }
    v
}

fn fc_json(a: &Area) -> Value {
    json!({
        "first_block": a.first,
        "last_block": a.last,
        "expected_transaction": a.expected_tid,
        "records": a.records.iter().map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
            if let fast_commit::Value::Create { name, .. } | fast_commit::Value::Link { name, .. } | fast_commit::Value::Unlink { name, .. } = &r.value {
                super::json::set(&mut v, "name", Value::String(printable_bytes(name)));
            }
            super::json::set(&mut v, "tag", Value::String(r.value.name().to_owned()));
            v
        }).collect::<Vec<_>>(),
        "valid_records": a.valid,
        "replayed": false,
        "notes": a.notes.iter().map(|n| printable(n)).collect::<Vec<_>>(),
    })
}

/// Groups the walk into transactions and describes every logged block.
fn describe(
    disk: &Ext4,
    view: Option<&Ext4>,
    journal: &Journal,
    rec: &Recovery,
    max_paths: usize,
) -> anyhow::Result<Vec<Transaction>> {
    let layout = match view {
        Some(v) => Some(Layout::read(v)?),
        None => None,
    };
    let replays = !matches!(rec.outcome, Outcome::Failed { .. } | Outcome::Clean);
    let mut out: Vec<Transaction> = Vec::new();
    for (i, r) in rec.walk.records.iter().enumerate() {
        let seq = r.sequence();
        if out.last().is_none_or(|t| t.sequence != seq) {
            out.push(Transaction {
                sequence: seq,
                first_block: r.at(),
                committed: false,
                replayed: replays && crate::fs::ext::jbd2::tid_gt(rec.end_transaction, seq),
                commit: None,
                descriptors: Vec::new(),
                blocks: Vec::new(),
                revokes: Vec::new(),
            });
        }
        let Some(t) = out.last_mut() else { continue };
        match r {
            Record::Descriptor {
                at,
                tags,
                data,
                tail,
                ..
            } => {
                t.descriptors
                    .push(json!({"journal_block": at, "tags": tags.len(), "checksum": tail}));
                for (k, (tag, &jb)) in tags.iter().zip(data).enumerate() {
                    let what = layout.as_ref().map_or(What::Other, |l| l.what(tag.block));
                    t.blocks.push(Logged {
                        journal_block: jb,
                        fs_block: tag.block,
                        flags: tag.flags,
                        escaped: tag.escaped(),
                        fate: rec.fate(i, k),
                        what,
                        changed_inodes: Vec::new(),
                        owner: None,
                    });
                }
            }
            Record::Commit {
                at, commit, check, ..
            } => {
                t.committed = true;
                t.commit = Some(json!({
                    "journal_block": at,
                    "sec": commit.sec,
                    "nsec": commit.nsec,
                    "checksum": check,
                    "checksum_v1": (commit.chksum_type != 0).then_some(commit.chksum),
                }));
            }
            Record::Revoke {
                at, revokes, tail, ..
            } => {
                t.revokes.push(json!({
                    "journal_block": at,
                    "r_count": revokes.r_count,
                    "count_past_block": revokes.count_past_block,
                    "blocks": revokes.blocks,
                    "checksum": tail,
                }));
            }
        }
    }
    if let Some(view) = view {
        annotate(disk, view, journal, &mut out, max_paths)?;
    }
    Ok(out)
}

/// Fills in the inodes of logged inode table blocks and the owners of
/// logged file blocks, with their paths after recovery.
fn annotate(
    disk: &Ext4,
    view: &Ext4,
    journal: &Journal,
    out: &mut [Transaction],
    max_paths: usize,
) -> anyhow::Result<()> {
    let sb = disk.superblock();
    let isz = u64::from(sb.inode_size).max(128);
    // Inode table blocks: slots that differ from the disk.
    for t in out.iter_mut() {
        for b in t.blocks.iter_mut() {
            let What::InodeTable { first, last, .. } = b.what else {
                continue;
            };
            let (Ok(mut copy), Ok(home)) =
                (journal.log.read(b.journal_block), disk.block(b.fs_block))
            else {
                continue;
            };
            if b.escaped {
                if let Some(head) = copy.get_mut(..4) {
                    head.copy_from_slice(&MAGIC.to_be_bytes());
                }
            }
            for ino in first..=last {
                let at = usize::try_from(ino.saturating_sub(first).saturating_mul(isz))
                    .unwrap_or(usize::MAX);
                let end = at.saturating_add(usize::try_from(isz).unwrap_or(0));
                if copy.get(at..end) != home.get(at..end) {
                    b.changed_inodes.push(Named {
                        inode: ino,
                        path: None,
                    });
                }
            }
        }
    }
    // Other blocks: their owners after recovery.
    let wanted: BTreeSet<u64> = out
        .iter()
        .flat_map(|t| t.blocks.iter())
        .filter(|b| b.what == What::Other && b.fs_block < sb.blocks_count)
        .map(|b| b.fs_block)
        .collect();
    let mut owners: HashMap<u64, (u64, &'static str)> = HashMap::new();
    if !wanted.is_empty() {
        for g in 0..view.superblock().group_count() {
            if owners.len() == wanted.len() {
                break;
            }
            let r = for_each_inode(view, g, &mut |i| {
                if i.file_acl != 0 && wanted.contains(&i.file_acl) {
                    owners.insert(i.file_acl, (i.ino, "xattr"));
                }
                let no_map = !(i.is_reg() || i.is_dir() || i.is_symlink())
                    || i.has_inline_data()
                    || view.fast_symlink(&i);
                if no_map {
                    return Ok(());
                }
                let Ok(map) = view.block_map(&i) else {
                    return Ok(());
                };
                for run in &map.runs {
                    let end = run.physical.saturating_add(run.len);
                    for &b in wanted.range(run.physical..end) {
                        let role = if run.meta {
                            "map"
                        } else if i.is_dir() {
                            "directory"
                        } else {
                            "data"
                        };
                        owners.insert(b, (i.ino, role));
                    }
                }
                Ok(())
            });
            if let Err(e) = r {
                eprintln!(
                    "layerscope: warning: group {g}: {}",
                    printable(&e.to_string())
                );
            }
        }
    }
    // Paths, for as many inodes as allowed.
    let mut inos: BTreeSet<u64> = BTreeSet::new();
    for t in out.iter() {
        for b in &t.blocks {
            inos.extend(b.changed_inodes.iter().map(|n| n.inode));
        }
    }
    inos.extend(owners.values().map(|o| o.0));
    let inos: Vec<u64> = inos.into_iter().take(max_paths).collect();
    let paths = names(view, &inos)?;
    for t in out.iter_mut() {
        for b in t.blocks.iter_mut() {
            for n in b.changed_inodes.iter_mut() {
                n.path = paths.get(&n.inode).cloned();
            }
            if let Some(&(inode, role)) = owners.get(&b.fs_block) {
                b.owner = Some(Owner {
                    inode,
                    role,
                    path: paths.get(&inode).cloned(),
                });
            }
        }
    }
    Ok(())
}

/// One path for each inode it can find: directories by their `..`,
/// others by searching directories (for a bounded number of them).
fn names(fs: &Ext4, inos: &[u64]) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut paths = Paths::new(fs);
    let mut out = BTreeMap::new();
    let mut targets = HashMap::new();
    for &ino in inos {
        let Ok(i) = fs.inode(ino) else { continue };
        if i.mode == 0 || i.links == 0 {
            continue;
        }
        if i.is_dir() {
            if let Some(p) = paths.dir_path(ino) {
                out.insert(ino, printable_bytes(&p));
            }
        } else if targets.len() < NAME_SEARCH
            && ino >= fs.superblock().get(sb!("s_first_ino")).max(11)
        {
            targets.insert(ino, 1u16);
        }
    }
    if !targets.is_empty() {
        for (ino, found) in paths.names(&targets)? {
            if let Some(p) = found.first() {
                out.insert(ino, printable_bytes(p));
            }
        }
    }
    Ok(out)
}

/// A commit time: `2025-11-30 18:40:31.123456789 UTC`.
fn when(sec: u64, nsec: u64) -> String {
    let c = Civil::of(i64::try_from(sec).unwrap_or(i64::MAX));
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == c.month)
    .map_or(0, |p| p.saturating_add(1));
    format!(
        "{}-{month:02}-{:02} {:02}:{:02}:{:02}.{nsec:09} UTC",
        c.year, c.day, c.hour, c.minute, c.second
    )
}

fn text(
    out: &mut dyn Write,
    journal: &Journal,
    rec: &Recovery,
    transactions: &[Transaction],
    fc: Option<&Area>,
    orphans: &[Orphan],
    orphan_notes: &[String],
) -> anyhow::Result<()> {
    let geo = &journal.geometry;
    let place = match &journal.log.layout {
        crate::fs::ext::jbd2::log::Layout::Inode { ino, .. } => format!("inode {ino}"),
        crate::fs::ext::jbd2::log::Layout::Device { start } => {
            format!(
                "device {} from block {start}",
                printable(journal.log.source.name())
            )
        }
    };
    writeln!(
        out,
        "journal: {place}, {} blocks of {} bytes, log blocks {}-{}{}",
        geo.maxlen,
        geo.block_size,
        geo.first,
        geo.last().saturating_sub(1),
        match geo.fc_area() {
            Some((a, b)) => format!(", fast-commit blocks {a}-{b}"),
            None => String::new(),
        }
    )?;
    let f = features(geo);
    writeln!(
        out,
        "features: {}",
        if f.is_empty() {
            "(none)".to_owned()
        } else {
            f.join(" ")
        }
    )?;
    if geo.start == 0 {
        writeln!(
            out,
            "log: empty (the journal is clean), next transaction {}",
            geo.sequence
        )?;
    } else {
        writeln!(
            out,
            "log: starts at block {}, transaction {}; {}",
            geo.start,
            geo.sequence,
            rec.walk.end.describe()
        )?;
    }
    let replay = match &rec.outcome {
        Outcome::Clean if rec.needed => "nothing to replay".to_owned(),
        Outcome::Clean => "not needed".to_owned(),
        Outcome::Replayed => format!(
            "transactions {} to {} replay: {} transaction(s), {} block(s), {} revoked copy(ies) skipped",
            geo.sequence,
            rec.end_transaction.wrapping_sub(1),
            rec.transactions,
            rec.blocks(),
            rec.revoke_hits
        ),
        Outcome::ReplayedThenRefused { why } => format!(
            "{} transaction(s), {} block(s) replay; then the kernel refuses to mount: {why}",
            rec.transactions,
            rec.blocks()
        ),
        Outcome::Failed { why } => format!("fails, nothing is replayed: {why}"),
    };
    writeln!(out, "recovery: {}", printable(&replay))?;
    for n in &rec.notes {
        writeln!(out, "  note: {}", printable(n))?;
    }
    for t in transactions {
        writeln!(out)?;
        let state = match (t.committed, t.replayed) {
            (true, true) => "committed, replayed".to_owned(),
            (true, false) => "committed, not replayed".to_owned(),
            (false, _) => "not committed (no commit block): not replayed".to_owned(),
        };
        let time = t
            .commit
            .as_ref()
            .and_then(|c| Some(when(c["sec"].as_u64()?, c["nsec"].as_u64()?)))
            .map(|w| format!(", {w}"))
            .unwrap_or_default();
        writeln!(
            out,
            "transaction {}{time} ({state}), from journal block {}",
            t.sequence, t.first_block
        )?;
        for d in &t.descriptors {
            let bad = d.pointer("/checksum/stored") != d.pointer("/checksum/computed");
            writeln!(
                out,
                "  descriptor at journal block {}: {} tag(s){}",
                d["journal_block"],
                d["tags"],
                if bad { " (checksum BAD)" } else { "" }
            )?;
        }
        for b in &t.blocks {
            let mut line = format!(
                "  {:>10} <- journal {:<8} {}",
                b.fs_block,
                b.journal_block,
                printable(&b.what.describe())
            );
            if !b.changed_inodes.is_empty() {
                let list: Vec<String> = b
                    .changed_inodes
                    .iter()
                    .map(|n| match &n.path {
                        Some(p) => format!("<{}> {p}", n.inode),
                        None => format!("<{}>", n.inode),
                    })
                    .collect();
                line.push_str(&format!(": changes {}", list.join(", ")));
            }
            if let Some(o) = &b.owner {
                line = format!(
                    "  {:>10} <- journal {:<8} {} block of <{}>{}",
                    b.fs_block,
                    b.journal_block,
                    o.role,
                    o.inode,
                    o.path.as_ref().map(|p| format!(" {p}")).unwrap_or_default()
                );
            }
            let fate = match b.fate {
                Fate::Replayed => "",
                Fate::Revoked => "  [revoked]",
                Fate::BadChecksum => "  [checksum BAD: not written]",
                Fate::Unreadable => "  [unreadable]",
                Fate::OutsideFilesystem => "  [outside the filesystem: not written]",
                Fate::NotReplayed => "  [not replayed]",
            };
            writeln!(
                out,
                "{line}{}{fate}",
                if b.escaped { " (escaped)" } else { "" }
            )?;
        }
        for r in &t.revokes {
            let blocks: Vec<String> = r["blocks"]
                .as_array()
                .map(|a| a.iter().map(|b| b.to_string()).collect())
                .unwrap_or_default();
            writeln!(
                out,
                "  revoke at journal block {}: {}{}",
                r["journal_block"],
                if blocks.is_empty() {
                    "(none)".to_owned()
                } else {
                    blocks.join(" ")
                },
                if r["count_past_block"] == true {
                    format!(" (r_count {} is past the block)", r["r_count"])
                } else {
                    String::new()
                }
            )?;
        }
        if let Some(c) = &t.commit {
            let bad = c.get("checksum").is_some_and(Value::is_object)
                && c.pointer("/checksum/stored") != c.pointer("/checksum/computed");
            writeln!(
                out,
                "  commit at journal block {}{}",
                c["journal_block"],
                if bad { " (checksum BAD)" } else { "" }
            )?;
        }
    }
    if let Some(a) = fc {
        writeln!(out)?;
        if a.records.is_empty() {
            writeln!(
                out,
                "fast commit: blocks {}-{}: no records",
                a.first, a.last
            )?;
        } else {
            writeln!(
                out,
                "fast commit: blocks {}-{}: {} record(s), {} valid for transaction {} (not replayed by layerscope)",
                a.first,
                a.last,
                a.records.len(),
                a.valid,
                a.expected_tid
            )?;
            for r in &a.records {
                let what = match &r.value {
                    fast_commit::Value::AddRange {
                        ino,
                        lblk,
                        pblk,
                        len,
                        ..
                    } => {
                        format!("inode {ino}, lblk {lblk}, pblk {pblk}, len {len}")
                    }
                    fast_commit::Value::DelRange { ino, lblk, len } => {
                        format!("inode {ino}, lblk {lblk}, len {len}")
                    }
                    fast_commit::Value::Create { parent, ino, name }
                    | fast_commit::Value::Link { parent, ino, name }
                    | fast_commit::Value::Unlink { parent, ino, name } => {
                        format!(
                            "parent {parent}, ino {ino}, name \"{}\"",
                            printable_bytes(name)
                        )
                    }
                    fast_commit::Value::Inode { ino } => format!("inode {ino}"),
                    fast_commit::Value::Tail { tid, .. } => format!("tid {tid}"),
                    fast_commit::Value::Head { features, tid } => {
                        format!("features {features:#x}, tid {tid}")
                    }
                    fast_commit::Value::Pad | fast_commit::Value::Unknown { .. } => String::new(),
                };
                writeln!(
                    out,
                    "  {:>8}+{:<5} {:<12} {what}",
                    r.block,
                    r.offset,
                    r.value.name()
                )?;
            }
        }
        for n in &a.notes {
            writeln!(out, "  note: {}", printable(n))?;
        }
    }
    if !orphans.is_empty() || !orphan_notes.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "orphans (after recovery the kernel deletes or truncates them):"
        )?;
        for o in orphans {
            writeln!(
                out,
                "  <{}> {} ({:?}, size {})",
                o.ino,
                match o.action {
                    orphan::Action::Delete => "deleted",
                    orphan::Action::Truncate => "truncated",
                },
                o.place,
                o.size
            )?;
        }
        for n in orphan_notes {
            writeln!(out, "  note: {}", printable(n))?;
        }
    }
    let _ = blocktype::name;
    Ok(())
}
