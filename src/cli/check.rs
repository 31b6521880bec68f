//! `layerscope check`: the whole image's consistency, read-only: each
//! qcow2 layer's metadata as `qemu-img check` sees it, then the
//! filesystem as `e2fsck -fn` does. Exit status as fsck's: 0 clean, 1
//! problems found, 2 could not check.
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use super::ImageArgs;
use crate::block::probe::Format;
use crate::check::{self, Problem, Problems, Progress, Severity};

// Arguments of `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Print JSON: each layer as `qemu-img check --output=json` prints it
    /// (with its problems), then the filesystem's problems.
    #[arg(long)]
    pub json: bool,
    /// Check the chain as of layer N (0 is the base): layers 0 to N and
    /// the filesystem as N sees it.
    #[arg(long)]
    pub layer: Option<usize>,
    /// The volume holding the filesystem, as `layerscope volumes` names
    /// it (default: the one holding a filesystem).
    #[arg(long, visible_alias = "partition", value_name = "NAME")]
    pub volume: Option<String>,
    /// Only the image layers' metadata (like `qemu-img check`).
    #[arg(long, conflicts_with = "fs_only")]
    pub image_only: bool,
    /// Only the filesystem (like `e2fsck -fn`).
    #[arg(long)]
    pub fs_only: bool,
    /// The filesystem is checked as the kernel would mount it (a journal
    /// that needs recovery replayed in memory) unless `--no-replay`.
    #[command(flatten)]
    pub replay: super::ReplayArgs,
}

/// The check found problems: the report is printed; exit status 1.
#[derive(Debug, thiserror::Error)]
#[error("{0} problem(s) found")]
pub struct ProblemsFound(pub u64);

/// The check could not be done: exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("could not check: {0:#}")]
pub struct CouldNotCheck(pub anyhow::Error);

/// A progress line on stderr when it is a terminal (updated at most ten
/// times a second; erased at the end).
struct Bar {
    on: bool,
    stage: Mutex<(String, u64)>,
    done: AtomicU64,
    last: Mutex<Instant>,
}

impl Bar {
    fn new() -> Bar {
        Bar {
            on: std::io::stderr().is_terminal(),
            stage: Mutex::new((String::new(), 0)),
            done: AtomicU64::new(0),
            last: Mutex::new(Instant::now()),
        }
    }

    fn clear(&self) {
        if self.on {
            eprint!("\r\x1b[K");
        }
    }
}

impl Progress for Bar {
    fn stage(&self, what: &str, total: u64) {
        if let Ok(mut s) = self.stage.lock() {
            *s = (what.to_owned(), total);
        }
        self.done.store(0, Ordering::Relaxed);
    }

    fn advance(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        if !self.on {
            return;
        }
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if last.elapsed() < Duration::from_millis(100) {
            return;
        }
        *last = Instant::now();
        if let Ok(s) = self.stage.lock() {
            let pct = done
                .saturating_mul(100)
                .checked_div(s.1.max(1))
                .unwrap_or(0);
            eprint!(
                "\r\x1b[Kchecking {}: {}%",
                crate::escape::printable(&s.0),
                pct.min(100)
            );
        }
    }
}

fn problem_line(p: &Problem) -> String {
    let sev = match p.severity {
        Severity::Leak => "leak",
        Severity::Error => "error",
    };
    let at = p.offset.map(|o| format!(" at {o:#x}")).unwrap_or_default();
    let layer = match (p.offset, p.layer) {
        (_, Some(l)) => format!(" (layer {l})"),
        (Some(_), None) => " (no layer: reads as zeros)".into(),
        (None, None) => String::new(),
    };
    crate::escape::printable(&format!(
        "  {sev} {}: {}{at}{layer}: {}",
        p.kind, p.structure, p.detail
    ))
}

/// Problems that make the filesystem damaged (not mere leaks).
fn errors(p: &Problems) -> u64 {
    let n = p
        .list
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count();
    u64::try_from(n)
        .unwrap_or(u64::MAX)
        .saturating_add(p.dropped)
}

fn problems_json(p: &Problems) -> serde_json::Value {
    json!({"list": p.list, "not_shown": p.dropped})
}

/// `check`.
///
/// # Errors
/// [`ProblemsFound`] after the report when it found problems;
/// [`CouldNotCheck`] when the image could not be opened.
pub fn run(args: &CheckArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let chain = args.image.open().map_err(CouldNotCheck)?;
    let chain = match args.layer {
        Some(n) if n >= chain.layers.len() => {
            return Err(CouldNotCheck(anyhow::anyhow!(
                "--layer {n}: the chain has layers 0 to {}",
                chain.layers.len().saturating_sub(1)
            ))
            .into())
        }
        Some(n) => chain.cut(n),
        None => chain,
    };
    let bar = Bar::new();
    let mut total = 0u64;
    let mut layers_json = Vec::new();
    if !args.fs_only {
        for layer in &chain.layers {
            let name = crate::escape::printable(&layer.path);
            let (Format::Qcow2, Some(storage)) = (layer.format, layer.storage.as_ref()) else {
                if !args.json {
                    writeln!(
                        out,
                        "layer {} ({name}): {}: no image metadata to check",
                        layer.index,
                        layer.format.name()
                    )?;
                }
                continue;
            };
            let q = crate::block::qcow2::Qcow2Layer::open(&layer.path, storage.clone())
                .map_err(|e| CouldNotCheck(anyhow::Error::new(e).context(name.clone())))?;
            let r = check::qcow2::check(layer.index, &q, &bar);
            bar.clear();
            total = total
                .saturating_add(r.problems.total())
                .saturating_add(r.check_errors);
            if args.json {
                let mut j = serde_json::to_value(&r)?;
                super::json::set(&mut j, "problems", problems_json(&r.problems));
                layers_json.push(j);
                continue;
            }
            let state = if r.problems.is_empty() && r.check_errors == 0 {
                "clean".to_owned()
            } else {
                format!(
                    "{} leaked cluster(s), {} corruption(s), {} check error(s)",
                    r.leaks, r.corruptions, r.check_errors
                )
            };
            writeln!(out, "layer {} ({name}): qcow2: {state}", layer.index)?;
            for p in &r.problems.list {
                writeln!(out, "{}", problem_line(p))?;
            }
            for e in &r.errors {
                writeln!(out, "  could not check: {}", crate::escape::printable(e))?;
            }
            if r.problems.dropped > 0 {
                writeln!(out, "  … and {} more", r.problems.dropped)?;
            }
        }
    }
    let mut fs_json = serde_json::Value::Null;
    if !args.image_only {
        let (problems, summary, what) =
            filesystem(&chain, args.volume.as_deref(), &args.replay, &bar)?;
        bar.clear();
        // Loose counts (a superblock's free count) are shown, not failed
        // on, as e2fsck exits 0 for them.
        total = total.saturating_add(errors(&problems));
        if args.json {
            fs_json = json!({"filesystem": what, "summary": summary, "problems": problems_json(&problems)});
        } else {
            let state = if problems.is_empty() {
                "clean".to_owned()
            } else {
                format!("{} problem(s)", problems.total())
            };
            let counts = summary
                .map(|s| {
                    format!(
                        " ({}/{} inodes, {}/{} blocks, {} directories)",
                        s.inodes_used, s.inodes_count, s.blocks_used, s.blocks_count, s.directories
                    )
                })
                .unwrap_or_default();
            writeln!(out, "{}: {state}{counts}", crate::escape::printable(&what))?;
            for p in &problems.list {
                writeln!(out, "{}", problem_line(p))?;
            }
            if problems.dropped > 0 {
                writeln!(out, "  … and {} more", problems.dropped)?;
            }
        }
    }
    if args.json {
        let j = json!({"clean": total == 0, "problems": total, "layers": layers_json, "filesystem": fs_json});
        crate::escape::json::to_writer_pretty(&mut *out, &j)?;
        writeln!(out)?;
    }
    out.flush()?;
    if total > 0 {
        return Err(ProblemsFound(total).into());
    }
    Ok(())
}

/// The filesystem side: its problems, its counts, and what was checked.
fn filesystem(
    chain: &crate::block::chain::Chain,
    volume: Option<&str>,
    replay: &super::ReplayArgs,
    bar: &Bar,
) -> anyhow::Result<(Problems, Option<check::ext::Summary>, String)> {
    let opened = match super::fs::open_in_with(chain, volume, replay) {
        Ok(o) => {
            if let Some(note) = o.fs.replay_note() {
                eprintln!("layerscope: note: {}", crate::escape::printable(&note));
            }
            o
        }
        Err(e) => {
            // A filesystem that is recognized but cannot be opened is a
            // problem found; no filesystem at all is a check not done.
            let corrupt = e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<crate::fs::FsError>(),
                    Some(crate::fs::FsError::Corrupt { .. })
                )
            });
            if !corrupt {
                return Err(CouldNotCheck(e).into());
            }
            let mut p = Problems::default();
            p.push(Problem {
                severity: Severity::Error,
                kind: "superblock",
                structure: "superblock".into(),
                offset: None,
                space: check::Space::Volume,
                layer: None,
                detail: format!("{e:#}"),
            });
            return Ok((p, None, "filesystem".into()));
        }
    };
    let what = format!("filesystem on volume {}", opened.volume);
    let layer_of = |offset: u64| opened.owner(offset, 1).ok().and_then(|o| o.layer);
    if let Some(fat) = opened.fs.as_any().downcast_ref::<crate::fs::fat::Fat>() {
        let (problems, s) = check::fat::check(fat, &layer_of, bar);
        return Ok((
            problems,
            None,
            format!(
                "{} {what} ({} files, {}/{} clusters)",
                fat.boot().fat_type.name(),
                s.files,
                s.clusters_used,
                s.clusters
            ),
        ));
    }
    if let Some(x) = opened.fs.as_any().downcast_ref::<crate::fs::xfs::Xfs>() {
        let (problems, s) = check::xfs::check(x, &layer_of, bar);
        return Ok((
            problems,
            None,
            format!(
                "XFS {what} ({} allocation groups, {} inodes, {} free blocks)",
                s.ags, s.inodes, s.free_blocks
            ),
        ));
    }
    let Some(ext) = as_ext(&opened) else {
        return Ok((
            Problems::default(),
            None,
            format!("{what}: no checker for this filesystem yet"),
        ));
    };
    let (problems, summary) = check::ext::check(ext, &layer_of, bar);
    let kind = if ext
        .superblock()
        .has_incompat(crate::fs::ext::superblock::Incompat::EXTENT)
    {
        "ext4"
    } else if ext
        .superblock()
        .has_compat(crate::fs::ext::superblock::Compat::HAS_JOURNAL)
    {
        "ext3"
    } else {
        "ext2"
    };
    Ok((problems, Some(summary), format!("{kind} {what}")))
}

/// The ext filesystem of an opened volume, if it is one.
fn as_ext(opened: &super::fs::Opened) -> Option<&crate::fs::ext::Ext4> {
    opened.fs.as_any().downcast_ref()
}
