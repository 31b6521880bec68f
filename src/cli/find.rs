//! `layerscope find`: files by name, type, size, time and by the layer
//! that last wrote them, like `find(1)` with layers; through the
//! [`Filesystem`] seam, so ext, XFS and FAT alike, on any volume.
//!
//! The tests are find's own, with find's arithmetic (`--size` rounds up
//! to its unit, `--mtime` counts whole days of age), so a script can
//! move from `find` on a mounted copy to `layerscope find` on the image.
//! Results stream as the tree is walked; `--all-layers` walks the trees
//! of every layer side by side ([`super::walk::walk_views`]) and says in
//! which layers each match exists.
use std::ffi::OsString;
use std::io::Write;
use std::ops::ControlFlow;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use regex::bytes::{Regex, RegexBuilder};
use serde_json::json;

use super::fs::{arg_bytes, resolve_bytes};
use super::walk::{walk_views, ViewsVisit};
use super::FsArgs;
use crate::fs::{FileType, Filesystem, Metadata};

// Arguments of `find`.
#[derive(Debug, Args)]
pub struct FindArgs {
    #[command(flatten)]
    pub fs: FsArgs,
    /// Where to start (a directory; default the root). Any bytes; the
    /// escaped form `ls` prints is accepted too.
    #[arg(default_value = "/")]
    pub start: OsString,
    /// The last component matches this shell pattern (`*`, `?`, `[a-z]`,
    /// `[!x]`, `\` quotes), like `find -name`.
    #[arg(long, value_name = "GLOB")]
    pub name: Option<OsString>,
    /// As `--name`, ignoring ASCII case (`find -iname`).
    #[arg(long, value_name = "GLOB")]
    pub iname: Option<OsString>,
    /// The whole path matches this shell pattern (`*` crosses `/`), like
    /// `find -path`.
    #[arg(long, value_name = "GLOB")]
    pub path: Option<OsString>,
    /// The whole path matches this regular expression (Rust syntax, over
    /// the path's bytes, anchored at both ends like `find -regex`).
    #[arg(long, value_name = "RE")]
    pub regex: Option<String>,
    /// Type: f (regular), d, l, c, b, p, s; several as `f,l`.
    #[arg(long = "type", value_name = "T", value_delimiter = ',', value_parser = parse_type)]
    pub types: Vec<FileType>,
    /// Size, as `find -size`: `N` exactly, `+N` more, `-N` less, in
    /// units of `c` (bytes), `w` (2), `b` (512, the default), `k`, `M`,
    /// `G`; the size is rounded up to the unit first (`-1M` is empty
    /// files only, as in find).
    #[arg(long, value_name = "[+-]N[ckMG]", allow_hyphen_values = true, value_parser = parse_size_test)]
    pub size: Option<SizeTest>,
    /// Modified N days ago (`+N` more, `-N` less), whole days of age, as
    /// `find -mtime`.
    #[arg(long, value_name = "[+-]N", allow_hyphen_values = true, value_parser = parse_num_test)]
    pub mtime: Option<NumTest>,
    /// As `--mtime`, in minutes (`find -mmin`).
    #[arg(long, value_name = "[+-]N", allow_hyphen_values = true, value_parser = parse_num_test)]
    pub mmin: Option<NumTest>,
    /// Modified after this time: `@SECONDS` or `YYYY-MM-DD[THH:MM[:SS]]`
    /// (UTC), like `find -newermt`.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub newer: Option<i64>,
    /// Modified before this time (same forms as `--newer`): `find ! -newermt`.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub older: Option<i64>,
    /// Only files the given layer last wrote: the newest layer that
    /// changed the file's content or metadata (as `blame` finds it; a
    /// layer that only copied its bytes up does not count).
    #[arg(long, value_name = "N", conflicts_with = "all_layers")]
    pub written_in: Option<usize>,
    /// Descend at most N levels below the start (`find -maxdepth`).
    #[arg(long, value_name = "N")]
    pub maxdepth: Option<usize>,
    /// Report only from N levels down (`find -mindepth`; default 1: the
    /// start itself is not listed).
    #[arg(long, value_name = "N", default_value = "1")]
    pub mindepth: usize,
    /// Search the filesystem as of every layer; each match says in which
    /// layers it matches (`--layer` is then ignored).
    #[arg(long, conflicts_with = "layer")]
    pub all_layers: bool,
    /// Print each path as its raw bytes followed by a NUL byte, not
    /// escaped and followed by a newline (`find -print0`, for `xargs
    /// -0`); with `--all-layers` the layers follow the NUL, then a
    /// newline.
    #[arg(long, conflicts_with = "json")]
    pub print0: bool,
}

/// `N`, `+N` or `-N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumTest {
    Exactly(u64),
    More(u64),
    Less(u64),
}

impl NumTest {
    fn matches(self, v: u64) -> bool {
        match self {
            NumTest::Exactly(n) => v == n,
            NumTest::More(n) => v > n,
            NumTest::Less(n) => v < n,
        }
    }
}

/// `--size`: the test and its unit in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeTest {
    test: NumTest,
    unit: u64,
}

fn parse_num_test(text: &str) -> Result<NumTest, String> {
    let (make, digits): (fn(u64) -> NumTest, &str) = match text.as_bytes().first() {
        Some(b'+') => (NumTest::More, &text[1..]),
        Some(b'-') => (NumTest::Less, &text[1..]),
        _ => (NumTest::Exactly, text),
    };
    digits
        .parse()
        .map(make)
        .map_err(|_| format!("{text:?}: expected N, +N or -N"))
}

fn parse_size_test(text: &str) -> Result<SizeTest, String> {
    let unit = match text.as_bytes().last() {
        Some(b'c') => Some(1),
        Some(b'w') => Some(2),
        Some(b'b') => Some(512),
        Some(b'k') => Some(1 << 10),
        Some(b'M') => Some(1 << 20),
        Some(b'G') => Some(1 << 30),
        _ => None,
    };
    // The unit is one ASCII byte, so the body ends on a char boundary.
    let (body, unit) = match unit {
        Some(u) => (text.get(..text.len().saturating_sub(1)).unwrap_or(""), u),
        None => (text, 512),
    };
    let test = parse_num_test(body).map_err(|_| {
        format!("{text:?}: expected [+-]N with a unit c, w, b, k, M or G (as find -size)")
    })?;
    Ok(SizeTest { test, unit })
}

fn parse_type(text: &str) -> Result<FileType, String> {
    Ok(match text {
        "f" => FileType::Regular,
        "d" => FileType::Directory,
        "l" => FileType::Symlink,
        "c" => FileType::CharDevice,
        "b" => FileType::BlockDevice,
        "p" => FileType::Fifo,
        "s" => FileType::Socket,
        _ => return Err(format!("{text:?}: expected f, d, l, c, b, p or s")),
    })
}

/// `@SECONDS`, `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS]` (UTC).
pub(super) fn parse_time(text: &str) -> Result<i64, String> {
    let bad = || format!("{text:?}: expected @SECONDS or YYYY-MM-DD[THH:MM[:SS]] (UTC)");
    if let Some(s) = text.strip_prefix('@') {
        return s.parse().map_err(|_| bad());
    }
    let (date, time) = text
        .split_once(['T', ' '])
        .map_or((text, None), |(d, t)| (d, Some(t)));
    let mut d = date.split('-').map(str::parse::<i64>);
    let (Some(Ok(y)), Some(Ok(m)), Some(Ok(day)), None) = (d.next(), d.next(), d.next(), d.next())
    else {
        return Err(bad());
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return Err(bad());
    }
    let mut secs = 0;
    if let Some(t) = time {
        let parts: Vec<i64> = t
            .trim_end_matches('Z')
            .split(':')
            .map(|p| p.parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        let (h, mi, s) = match parts.as_slice() {
            [h, mi] => (*h, *mi, 0),
            [h, mi, s] => (*h, *mi, *s),
            _ => return Err(bad()),
        };
        if !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0..61).contains(&s) {
            return Err(bad());
        }
        secs = h
            .saturating_mul(3600)
            .saturating_add(mi.saturating_mul(60))
            .saturating_add(s);
    }
    // A year past i64's seconds (about 2.9e11) is refused, not wrapped.
    days_from_civil(y, m, day)
        .and_then(|d| d.checked_mul(86_400)?.checked_add(secs))
        .ok_or_else(bad)
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm);
/// None past i64. `m` is 1 to 12 and `d` 1 to 31 (checked by the caller):
/// only the year can be large.
fn days_from_civil(y: i64, m: i64, d: i64) -> Option<i64> {
    let y = if m <= 2 { y.checked_sub(1)? } else { y };
    let era = y.div_euclid(400);
    era.checked_mul(146_097)?
        .checked_add(day_of_era(y.rem_euclid(400), m, d))?
        .checked_sub(719_468)
}

/// The day in its 400-year era of year `yoe` of the era, month `m`, day `d`.
#[allow(
    clippy::arithmetic_side_effects,
    reason = "0 <= yoe < 400, 1 <= m <= 12, 1 <= d <= 31: every term is below 2^18"
)]
fn day_of_era(yoe: i64, m: i64, d: i64) -> i64 {
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    yoe * 365 + yoe / 4 - yoe / 100 + doy
}

/// A shell pattern as a regular expression over bytes, anchored: `*` any
/// bytes, `?` one character (or one byte that is not UTF-8), `[...]` a
/// set (`[!...]`/`[^...]` its complement), `\x` the byte x. As fnmatch
/// without `FNM_PATHNAME` or `FNM_PERIOD`, which is what `find -name`
/// and `-path` use.
pub(super) fn glob_regex(glob: &[u8], ignore_case: bool) -> anyhow::Result<Regex> {
    const ANY_ONE: &str = "(?:(?s:.)|(?-u:[\\x80-\\xff]))";
    let lit = |b: u8, re: &mut String| {
        if b.is_ascii_alphanumeric() {
            re.push(char::from(b));
        } else {
            re.push_str(&format!("(?-u:\\x{b:02x})"));
        }
    };
    let mut re = String::from("^(?s)");
    let mut i = 0;
    while let Some(&b) = glob.get(i) {
        i = i.saturating_add(1);
        match b {
            b'*' => re.push_str("(?s-u:.)*"),
            b'?' => re.push_str(ANY_ONE),
            b'\\' => match glob.get(i) {
                Some(&n) => {
                    lit(n, &mut re);
                    i = i.saturating_add(1);
                }
                None => lit(b'\\', &mut re),
            },
            b'[' => {
                // A set runs to the first `]` that is not its first member;
                // without one, `[` is itself.
                let mut j = i;
                let negate = matches!(glob.get(j), Some(b'!' | b'^'));
                if negate {
                    j = j.saturating_add(1);
                }
                let first = j;
                while let Some(&c) = glob.get(j) {
                    if c == b']' && j > first {
                        break;
                    }
                    j = j.saturating_add(1);
                }
                if glob.get(j) != Some(&b']') {
                    lit(b'[', &mut re);
                    continue;
                }
                re.push_str(if negate { "(?-u:[^" } else { "(?-u:[" });
                let mut k = first;
                while k < j {
                    let c = glob.get(k).copied().unwrap_or(b']');
                    if c == b'-' && k > first && k.saturating_add(1) < j {
                        re.push('-');
                    } else {
                        re.push_str(&format!("\\x{c:02x}"));
                    }
                    k = k.saturating_add(1);
                }
                re.push_str("])");
                i = j.saturating_add(1);
            }
            _ => lit(b, &mut re),
        }
    }
    re.push('$');
    RegexBuilder::new(&re)
        .case_insensitive(ignore_case)
        .build()
        .with_context(|| format!("the pattern {:?}", crate::escape::printable_bytes(glob)))
}

/// The tests of one `find`, ready to apply.
struct Tests {
    name: Option<Regex>,
    path: Option<Regex>,
    regex: Option<Regex>,
    types: Vec<FileType>,
    size: Option<SizeTest>,
    mtime: Option<NumTest>,
    mmin: Option<NumTest>,
    newer: Option<i64>,
    older: Option<i64>,
    now: i64,
}

impl Tests {
    fn new(args: &FindArgs) -> anyhow::Result<Tests> {
        let name = match (&args.name, &args.iname) {
            (Some(g), None) => Some(glob_regex(arg_bytes(g), false)?),
            (None, Some(g)) => Some(glob_regex(arg_bytes(g), true)?),
            (Some(_), Some(_)) => anyhow::bail!("--name and --iname: give one"),
            (None, None) => None,
        };
        let regex = match &args.regex {
            Some(r) => Some(
                RegexBuilder::new(&format!("^(?:{r})$"))
                    .build()
                    .with_context(|| format!("--regex {r:?}"))?,
            ),
            None => None,
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Ok(Tests {
            name,
            path: args
                .path
                .as_ref()
                .map(|g| glob_regex(arg_bytes(g), false))
                .transpose()?,
            regex,
            types: args.types.clone(),
            size: args.size,
            mtime: args.mtime,
            mmin: args.mmin,
            newer: args.newer,
            older: args.older,
            now,
        })
    }

    /// Whether a test needs the node's metadata (not only its entry).
    fn needs_metadata(&self) -> bool {
        self.size.is_some()
            || self.mtime.is_some()
            || self.mmin.is_some()
            || self.newer.is_some()
            || self.older.is_some()
    }

    /// The tests on the name and type alone.
    fn by_name(&self, path: &[u8], t: FileType) -> bool {
        let last = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
        self.name.as_ref().is_none_or(|r| r.is_match(last))
            && self.path.as_ref().is_none_or(|r| r.is_match(path))
            && self.regex.as_ref().is_none_or(|r| r.is_match(path))
            && (self.types.is_empty() || self.types.contains(&t))
    }

    /// The tests on the metadata.
    fn by_metadata(&self, m: &Metadata) -> bool {
        let mtime = m.mtime.map_or(0, |t| t.secs);
        // find: age in whole units, rounded down; size rounded up.
        let age = |unit: i64| u64::try_from(self.now.saturating_sub(mtime).div_euclid(unit)).ok();
        self.size
            .is_none_or(|s| s.test.matches(m.size.div_ceil(s.unit)))
            && self
                .mtime
                .is_none_or(|t| age(86_400).is_some_and(|a| t.matches(a)))
            && self
                .mmin
                .is_none_or(|t| age(60).is_some_and(|a| t.matches(a)))
            && self.newer.is_none_or(|n| mtime > n)
            && self.older.is_none_or(|n| mtime < n)
    }
}

/// One match, as printed.
struct Hit<'a> {
    path: &'a [u8],
    file_type: FileType,
    meta: Option<Metadata>,
    node: u64,
    /// `--written-in`'s answer for it.
    written: Option<usize>,
    /// `--all-layers`: the layers where it matches.
    layers: Option<Vec<usize>>,
}

/// `find`.
///
/// # Errors
/// Opening the image or the filesystem; a start that is not found;
/// a pattern that does not compile; writing.
pub fn run(args: &FindArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let tests = Tests::new(args)?;
    let disk = super::diff::Disk::open_cut(
        &args.fs.image,
        args.fs.volume.as_deref(),
        if args.all_layers { None } else { args.fs.layer },
        &args.fs.replay,
    )?;
    let top = disk.chain.layers.len().saturating_sub(1);
    // The views walked: every layer's, or the top's alone.
    let mut views: Vec<Option<Arc<dyn Filesystem>>> = Vec::new();
    let blame = match args.written_in {
        Some(n) if n > top => anyhow::bail!("--written-in {n}: the chain has layers 0 to {top}"),
        Some(_) => {
            let v = disk.views()?;
            views.push(v.fs.get(top).cloned());
            Some(v)
        }
        None => None,
    };
    if blame.is_none() {
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
            views.push(Some(disk.view(top)?.0));
        }
    }
    let start = arg_bytes(&args.start);
    let mut starts = Vec::new();
    let mut found_any = false;
    for v in &views {
        let s = v.as_ref().and_then(|fs| {
            let n = resolve_bytes(fs.as_ref(), start).ok()?;
            (fs.metadata(n).ok()?.file_type == FileType::Directory).then_some(n)
        });
        found_any |= s.is_some();
        starts.push(s);
    }
    if !found_any {
        // The error of the top view, which says why.
        let fs = views
            .iter()
            .rev()
            .flatten()
            .next()
            .context("no layer could be opened")?;
        let n = resolve_bytes(fs.as_ref(), start)?;
        anyhow::bail!(
            "{}: not a directory ({})",
            crate::escape::printable_bytes(start),
            fs.node_name(n)
        );
    }
    let held: Vec<Option<&dyn Filesystem>> = views.iter().map(|v| v.as_deref()).collect();
    let start_path = raw_path(&held, start);
    let json = args.fs.json;
    let mut first = true;
    if json {
        out.write_all(b"[")?;
    }
    let mut failed: Option<anyhow::Error> = None;
    let mut emit = |hit: &Hit<'_>| -> anyhow::Result<()> {
        if json {
            let mut v = json!({
                "path": super::json::text(hit.path),
                "type": hit.file_type.name(),
                "inode": hit.node,
            });
            if let Some(b) = super::json::hex_unless_utf8(hit.path) {
                super::json::set(&mut v, "path_bytes", b);
            }
            if let Some(m) = &hit.meta {
                super::json::set(&mut v, "size", m.size);
                super::json::set(&mut v, "mode", m.mode);
                super::json::set(&mut v, "mtime", json!(m.mtime.map(|t| t.secs)));
            }
            if let Some(w) = hit.written {
                super::json::set(&mut v, "written_in", json!(w));
            }
            if let Some(l) = &hit.layers {
                super::json::set(&mut v, "layers", json!(l));
            }
            super::json::write_item(out, &mut first, &v)?;
        } else if args.print0 {
            out.write_all(hit.path)?;
            out.write_all(b"\0")?;
            if let Some(l) = &hit.layers {
                writeln!(
                    out,
                    "layers {}",
                    l.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                )?;
            }
        } else {
            let shown = crate::escape::printable_bytes(hit.path);
            match &hit.layers {
                Some(l) => writeln!(
                    out,
                    "{shown}\tlayers {}",
                    l.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                )?,
                None => writeln!(out, "{shown}")?,
            }
        }
        Ok(())
    };
    let all = args.all_layers;
    let need_meta = tests.needs_metadata() || json;
    walk_views(
        &held,
        &starts,
        &start_path,
        args.maxdepth,
        &mut |v: &ViewsVisit<'_>| {
            if v.depth < args.mindepth {
                return ControlFlow::Continue(());
            }
            let mut layers = Vec::new();
            let mut shown: Option<(FileType, Option<Metadata>, u64)> = None;
            for (k, f) in v.found.iter().enumerate() {
                let Some((e, t)) = f else { continue };
                if !tests.by_name(v.path, *t) {
                    continue;
                }
                let meta = if need_meta {
                    match held.get(k).copied().flatten().map(|fs| fs.metadata(e.node)) {
                        Some(Ok(m)) => Some(m),
                        Some(Err(err)) => {
                            note(&format!(
                                "{}: {err}",
                                crate::escape::printable_bytes(v.path)
                            ));
                            continue;
                        }
                        None => continue,
                    }
                } else {
                    None
                };
                if meta.as_ref().is_some_and(|m| !tests.by_metadata(m)) {
                    continue;
                }
                layers.push(k);
                shown = Some((*t, meta, e.node));
            }
            let Some((file_type, meta, node)) = shown else {
                return ControlFlow::Continue(());
            };
            let mut written = None;
            if let (Some(want), Some(b)) = (args.written_in, &blame) {
                match b.blame(node, crate::escape::printable_bytes(v.path)) {
                    Ok(b) => {
                        let w = b.content_layer.max(b.metadata_layer);
                        if w != want {
                            return ControlFlow::Continue(());
                        }
                        written = Some(w);
                    }
                    Err(e) => {
                        note(&format!("{}: {e}", crate::escape::printable_bytes(v.path)));
                        return ControlFlow::Continue(());
                    }
                }
            }
            let hit = Hit {
                path: v.path,
                file_type,
                meta,
                node,
                written,
                layers: all.then_some(layers),
            };
            match emit(&hit) {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => {
                    failed = Some(e);
                    ControlFlow::Break(())
                }
            }
        },
        &mut |w| note(&w),
    );
    if let Some(e) = failed {
        return Err(e);
    }
    if json {
        out.write_all(if first { b"]\n" } else { b"\n]\n" })?;
    }
    Ok(())
}

/// The path a start argument names, raw: as given when a view has it,
/// else unescaped (the form `ls` prints), without trailing slashes.
pub(super) fn raw_path(views: &[Option<&dyn Filesystem>], arg: &[u8]) -> Vec<u8> {
    let mut p = arg.to_vec();
    while p.len() > 1 && p.last() == Some(&b'/') {
        p.pop();
    }
    if views.iter().flatten().any(|fs| fs.lookup(&p).is_ok()) {
        return p;
    }
    crate::escape::unescape(&p).unwrap_or(p)
}

/// A warning on stderr (never mixed into the results).
pub(super) fn note(text: &str) {
    eprintln!("layerscope: warning: {}", crate::escape::printable(text));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_as_fnmatch() {
        let m = |g: &str, n: &[u8]| glob_regex(g.as_bytes(), false).unwrap().is_match(n);
        assert!(m("*.txt", b"a.txt"));
        assert!(m("*.txt", b".txt"));
        assert!(!m("*.txt", b"a.txt.gz"));
        assert!(m("f?.bin", b"f1.bin"));
        assert!(m("f?.bin", "fé.bin".as_bytes()));
        assert!(m("f?.bin", b"f\xff.bin"));
        assert!(m("[a-c]x", b"bx"));
        assert!(!m("[!a-c]x", b"bx"));
        assert!(m("[]]", b"]"));
        assert!(m("a\\*", b"a*"));
        assert!(!m("a\\*", b"ab"));
        assert!(m("[", b"["));
        assert!(m("(x)+.", b"(x)+."));
        assert!(glob_regex(b"HELLO*", true).unwrap().is_match(b"hello.txt"));
    }

    #[test]
    fn sizes_and_times_as_find() {
        let s = parse_size_test("-1M").unwrap();
        assert!(s.test.matches(0u64.div_ceil(s.unit)));
        assert!(!s.test.matches(1u64.div_ceil(s.unit)));
        assert_eq!(
            parse_size_test("+4k").unwrap(),
            SizeTest {
                test: NumTest::More(4),
                unit: 1024
            }
        );
        assert_eq!(parse_time("@12").unwrap(), 12);
        assert_eq!(parse_time("1970-01-02").unwrap(), 86_400);
        assert_eq!(parse_time("2026-11-30T22:24:19").unwrap(), 1_796_077_459);
        assert!(parse_time("2026-13-01").is_err());
        // Oracle: `date -u -d 1900-03-01 +%s`, `date -u -d 2400-02-29T23:59:59 +%s`.
        assert_eq!(parse_time("1900-03-01").unwrap(), -2_203_891_200);
        assert_eq!(parse_time("2400-02-29T23:59:59").unwrap(), 13_574_649_599);
        // A year past i64's seconds is refused (it overflowed before).
        assert!(parse_time("9223372036854775807-01-01").is_err());
        assert!(parse_time("300000000000-01-01").is_err());
    }
}
