//! `layerscope timeline`: every file's times, as a Sleuth Kit bodyfile
//! (`fls -r -m /` format, for `mactime` and the tools that read it) or as
//! a sorted text view like `mactime -d`'s, with the layer of the chain
//! that holds each inode (the layer that last wrote its metadata).
//! Through the [`Filesystem`] seam: ext, XFS and FAT alike.
use std::io::Write;
use std::ops::ControlFlow;

use clap::Args;
use serde_json::json;

use super::walk::walk;
use super::FsArgs;
use crate::fs::{FileType, Filesystem, Metadata, Timestamp};

// Arguments of `timeline`.
#[derive(Debug, Args)]
pub struct TimelineArgs {
    #[command(flatten)]
    pub fs: FsArgs,
    /// Print a bodyfile (`MD5|name|inode|mode|UID|GID|size|atime|mtime|ctime|crtime`,
    /// as `fls -r -m /` does) instead of the sorted view.
    #[arg(long, conflicts_with = "json")]
    pub body: bool,
}

/// One file's row.
struct Row {
    path: Vec<u8>,
    meta: Metadata,
    link: Option<Vec<u8>>,
    layer: Option<usize>,
}

/// The Sleuth Kit's mode string: `r/rrw-r--r--`, `d/drwxr-xr-x`.
pub(super) fn tsk_mode(t: FileType, mode: u32) -> String {
    let letter = match t {
        FileType::Regular => 'r',
        FileType::Directory => 'd',
        FileType::Symlink => 'l',
        FileType::CharDevice => 'c',
        FileType::BlockDevice => 'b',
        FileType::Fifo => 'p',
        FileType::Socket => 'h',
        FileType::Unknown => '-',
    };
    let bit = |m: u32, c: char| if mode & m != 0 { c } else { '-' };
    let special = |x: u32, s: u32, on: char, off: char| match (mode & x != 0, mode & s != 0) {
        (true, true) => on,
        (false, true) => off,
        (x, false) => {
            if x {
                'x'
            } else {
                '-'
            }
        }
    };
    format!(
        "{letter}/{letter}{}{}{}{}{}{}{}{}{}",
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        special(0o100, 0o4000, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        special(0o010, 0o2000, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        special(0o001, 0o1000, 't', 'T'),
    )
}

fn secs(t: Option<Timestamp>) -> i64 {
    t.map_or(0, |t| t.secs)
}

/// `timeline`.
///
/// # Errors
/// Opening the image or the filesystem; writing.
pub fn run(args: &TimelineArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let opened = super::fs::open_full(&args.fs)?;
    let fs: &dyn Filesystem = fs_of(&opened);
    let mut rows: Vec<Row> = Vec::new();
    let mut failed: Option<std::io::Error> = None;
    walk(
        fs,
        fs.root(),
        b"/",
        &mut |v| {
            let meta = match fs.metadata(v.entry.node) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!(
                        "layerscope: warning: {}: {}",
                        crate::escape::printable_bytes(v.path),
                        crate::escape::printable(&e.to_string())
                    );
                    return ControlFlow::Continue(());
                }
            };
            let link = (meta.file_type == FileType::Symlink)
                .then(|| fs.read_link(v.entry.node).ok())
                .flatten();
            let layer = fs
                .node_offset(v.entry.node)
                .ok()
                .and_then(|at| opened.owner(at, 1).ok())
                .and_then(|o| o.layer);
            let row = Row {
                path: v.path.to_vec(),
                meta,
                link,
                layer,
            };
            if args.body {
                // Streamed: a bodyfile needs no sorting.
                if let Err(e) = body_line(out, &row) {
                    failed = Some(e);
                    return ControlFlow::Break(());
                }
            } else {
                rows.push(row);
            }
            ControlFlow::Continue(())
        },
        &mut |w| eprintln!("layerscope: warning: {}", crate::escape::printable(&w)),
    );
    if let Some(e) = failed {
        return Err(e.into());
    }
    if args.body {
        return Ok(());
    }
    // mactime's view: one line per time and file, with the letters of the
    // times that fall on it (m a c b), oldest first.
    let mut events: Vec<(i64, String, usize)> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let m = &r.meta;
        let times = [
            (secs(m.mtime), 'm'),
            (secs(m.atime), 'a'),
            (secs(m.ctime), 'c'),
            (secs(m.crtime), 'b'),
        ];
        let mut distinct: Vec<i64> = times.iter().map(|t| t.0).filter(|&t| t != 0).collect();
        distinct.sort_unstable();
        distinct.dedup();
        for t in distinct {
            let letters: String = times
                .iter()
                .map(|&(s, c)| if s == t { c } else { '.' })
                .collect();
            events.push((t, letters, i));
        }
    }
    events.sort_by(|a, b| {
        a.0.cmp(&b.0).then_with(|| {
            rows.get(a.2)
                .map(|r| &r.path)
                .cmp(&rows.get(b.2).map(|r| &r.path))
        })
    });
    if args.fs.json {
        let list: Vec<_> = events
            .iter()
            .filter_map(|(t, letters, i)| {
                let r = rows.get(*i)?;
                Some(json!({
                    "time": t, "date": date(*t), "macb": letters, "size": r.meta.size,
                    "mode": tsk_mode(r.meta.file_type, r.meta.mode), "uid": r.meta.uid,
                    "gid": r.meta.gid, "inode": r.meta.node, "layer": r.layer,
                    "path": crate::escape::printable_bytes(&r.path),
                }))
            })
            .collect();
        crate::escape::json::to_writer_pretty(&mut *out, &list)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "Date                  Size Type Mode          UID  GID  Meta   Layer File Name"
    )?;
    for (t, letters, i) in &events {
        let Some(r) = rows.get(*i) else { continue };
        writeln!(
            out,
            "{} {:>8} {letters} {} {:>4} {:>4} {:>6} {:>5} {}",
            date(*t),
            r.meta.size,
            tsk_mode(r.meta.file_type, r.meta.mode),
            r.meta.uid,
            r.meta.gid,
            r.meta.node,
            r.layer.map_or("-".into(), |l| l.to_string()),
            crate::escape::printable_bytes(&name_with_link(r))
        )?;
    }
    Ok(())
}

/// The name as fls writes it: a symlink's with ` -> target`.
fn name_with_link(r: &Row) -> Vec<u8> {
    let mut name = r.path.clone();
    if let Some(t) = &r.link {
        name.extend_from_slice(b" -> ");
        name.extend_from_slice(t);
    }
    name
}

/// One bodyfile line (TSK 3 format).
fn body_line(out: &mut dyn Write, r: &Row) -> std::io::Result<()> {
    let m = &r.meta;
    writeln!(
        out,
        "0|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
        crate::escape::printable_bytes(&name_with_link(r)).replace('|', "\\x7c"),
        m.node,
        tsk_mode(m.file_type, m.mode),
        m.uid,
        m.gid,
        m.size,
        secs(m.atime),
        secs(m.mtime),
        secs(m.ctime),
        secs(m.crtime)
    )
}

/// `2026-11-30T22:24:19Z`, as `mactime -y -d` prints it.
#[allow(
    clippy::arithmetic_side_effects,
    reason = "|days| <= 2^63 / 86,400 < 2^47: every sum and product below is under 2^58"
)]
fn date(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let rem = t.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The filesystem of an opened volume, through the seam.
fn fs_of(opened: &super::fs::Opened) -> &dyn Filesystem {
    opened.fs.as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_modes_like_the_sleuth_kit() {
        assert_eq!(date(0), "1970-01-01T00:00:00Z");
        assert_eq!(date(1_796_077_459), "2026-11-30T22:24:19Z");
        assert_eq!(tsk_mode(FileType::Regular, 0o100644), "r/rrw-r--r--");
        assert_eq!(tsk_mode(FileType::Directory, 0o41777), "d/drwxrwxrwt");
        assert_eq!(tsk_mode(FileType::Regular, 0o104755), "r/rrwsr-xr-x");
    }
}
