//! `layerscope ls`, `stat`, `cat` and `blocks`: files and directories of
//! an ext2/3/4 filesystem, in debugfs's words where debugfs has a word for
//! it (`ls -l`, `stat`, `dump`, `blocks`).
use std::collections::HashSet;
use std::io::Write;

use serde_json::{json, Value};

use super::fs::{open, open_full, resolve};
use super::superblock::{asctime, Civil};
use crate::escape::{printable, printable_bytes};
use crate::fs::ext::blockmap::{BlockMap, Run};
use crate::fs::ext::file::Xattrs;
use crate::fs::ext::inode::{Inode, Timestamp, EXTENTS_FL};
use crate::fs::ext::xattr::Xattr;
use crate::fs::ext::{Ext4, FsError};

/// debugfs's date format for `ls -l` (`14-Nov-2023 22:13`, UTC).
fn ls_date(t: i64) -> String {
    let c = Civil::of(t);
    format!(
        "{:>2}-{}-{} {:02}:{:02}",
        c.day, c.month, c.year, c.hour, c.minute
    )
}

/// `ls`.
///
/// # Errors
/// Opening; a path that does not exist or is not a directory.
pub fn ls(args: &super::LsArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let fs = open(&args.fs)?;
    let start = resolve(&fs, &args.path)?;
    let mut json_rows = Vec::new();
    let mut errors = Vec::new();
    // Paths are bytes: names on disk need not be UTF-8.
    let mut stack = vec![(start, args.path.trim_end_matches('/').as_bytes().to_vec())];
    let mut seen = HashSet::new();
    // Depth first, printing each directory as it is read: memory stays
    // proportional to the deepest path's siblings, not the whole tree.
    while let Some((ino, path)) = stack.pop() {
        let shown = if path.is_empty() {
            "/".to_owned()
        } else {
            printable_bytes(&path)
        };
        if !seen.insert(ino) {
            errors.push(format!(
                "{shown}: directory inode {ino} already listed (a loop)"
            ));
            continue;
        }
        let node = match fs.inode(ino) {
            Ok(n) if n.is_dir() => n,
            // The start must be a directory; below it, an entry typed as a
            // directory whose inode is not one is reported and skipped.
            Ok(_) if ino == start => anyhow::bail!("{shown}: not a directory (inode {ino})"),
            Ok(n) => {
                errors.push(format!(
                    "{shown}: the entry says directory, inode {ino} is a {}",
                    n.type_name()
                ));
                continue;
            }
            Err(e) if ino == start => return Err(e.into()),
            Err(e) => {
                errors.push(format!("{shown}: {e}"));
                continue;
            }
        };
        if args.recursive && !args.fs.json {
            writeln!(out, "\n{shown}:")?;
        }
        let entries = match fs.read_dir(&node, &mut errors) {
            Ok(entries) => entries,
            Err(e @ FsError::Io(_)) => return Err(e.into()),
            // A directory whose map cannot be read is reported; the walk
            // goes on with the next one.
            Err(e) => {
                errors.push(format!("{shown}: {e}"));
                continue;
            }
        };
        let mut subdirs = Vec::new();
        // Names alone need no inode where entries carry their type (the
        // filetype feature): like `ls` with d_type, only directories are
        // read, when they are listed. Entries of unknown type are read.
        let names_only = !args.long && !args.fs.json && fs.superblock().has_filetype();
        for e in entries {
            let child = if names_only && e.file_type != 0 {
                if let Err(err) = fs.check_inode_number(u64::from(e.inode)) {
                    errors.push(format!("{}: {err}", e.display_name()));
                    continue;
                }
                None
            } else {
                match fs.inode(u64::from(e.inode)) {
                    Ok(i) => Some(i),
                    Err(err) => {
                        errors.push(format!("{}: {err}", e.display_name()));
                        continue;
                    }
                }
            };
            let is_dir = match &child {
                Some(c) => c.is_dir(),
                None => e.file_type == 2,
            };
            let name = e.display_name();
            if args.recursive && is_dir && !e.is_dot_or_dotdot() {
                let mut sub = path.clone();
                sub.push(b'/');
                sub.extend_from_slice(&e.name);
                subdirs.push((u64::from(e.inode), sub));
            }
            let Some(child) = child else {
                writeln!(out, "{name}")?;
                continue;
            };
            if args.fs.json {
                json_rows.push(json!({
                    "dir": String::from_utf8_lossy(if path.is_empty() { b"/" } else { &path }),
                    "name": String::from_utf8_lossy(&e.name), "inode": e.inode,
                    "file_type": e.file_type, "mode": child.mode, "uid": child.uid, "gid": child.gid,
                    "size": child.size, "links": child.links, "mtime": child.mtime.secs,
                }));
            } else if args.long {
                // debugfs prints the 32-bit seconds as they are.
                writeln!(
                    out,
                    " {:>6}  {:>6o} ({})  {:>5}  {:>5}   {:>5} {} {name}",
                    e.inode,
                    child.mode,
                    e.file_type,
                    child.uid,
                    child.gid,
                    child.size,
                    ls_date(i64::from(child.mtime.raw))
                )?;
            } else {
                writeln!(out, "{name}")?;
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    if args.fs.json {
        crate::escape::json::to_writer_pretty(
            &mut *out,
            &json!({"entries": json_rows, "errors": errors}),
        )?;
        writeln!(out)?;
        return Ok(());
    }
    for err in errors {
        writeln!(out, "error: {}", printable(&err))?;
    }
    Ok(())
}

/// e2fsprogs' `print_c_string`: C escapes, octal for the rest.
fn c_string(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes {
        match b {
            7 => s.push_str("\\a"),
            8 => s.push_str("\\b"),
            12 => s.push_str("\\f"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            11 => s.push_str("\\v"),
            b'\\' => s.push_str("\\\\"),
            b'\'' => s.push_str("\\'"),
            b'"' => s.push_str("\\\""),
            32..=126 => s.push(char::from(b)),
            _ => s.push_str(&format!("\\{b:03o}")),
        }
    }
    s
}

/// debugfs's `print_xattr_string`: a C string when printable enough,
/// else hex bytes.
fn xattr_string(bytes: &[u8], quotes: bool) -> String {
    let printable = bytes.iter().filter(|b| (32..=126).contains(*b)).count();
    if printable <= bytes.len() * 7 / 8 {
        return bytes.iter().map(|b| format!("{b:02x} ")).collect();
    }
    if quotes {
        format!("\"{}\"", c_string(bytes))
    } else {
        c_string(bytes)
    }
}

/// One attribute as `debugfs stat` lists it.
fn xattr_line(x: &Xattr) -> String {
    let mut line = format!("  {} ({})", xattr_string(&x.name, false), x.value_size);
    if x.name != b"system.data" && !x.value.is_empty() && x.value.len() < 40 {
        line.push_str(&format!(" = {}", xattr_string(&x.value, true)));
    }
    line
}

/// debugfs's block list (`(0-11):100-111, (IND):112, …`) for `runs`.
fn block_list(runs: &[Run], extents: bool) -> String {
    let mut parts = Vec::new();
    for r in runs {
        if r.meta {
            parts.push(if extents {
                format!("(ETB{}):{}", r.level, r.physical)
            } else {
                let name = ["", "IND", "DIND", "TIND"][usize::from(r.level.min(3))];
                format!("({name}):{}", r.physical)
            });
            continue;
        }
        let u = if r.uninit { "[u]" } else { "" };
        parts.push(if r.len == 1 {
            format!("({}{u}):{}", r.logical, r.physical)
        } else {
            format!(
                "({}-{}{u}):{}-{}",
                r.logical,
                r.logical + r.len - 1,
                r.physical,
                r.physical + r.len - 1
            )
        });
    }
    parts.join(", ")
}

/// The part of `stat` that equals `debugfs stat` (e2fsprogs 1.47): the
/// same lines under the same conditions, which debugfs decides from the
/// raw `i_extra_isize`, even an invalid one.
fn stat_debugfs(fs: &Ext4, i: &Inode, map: &Option<BlockMap>, xattrs: &Xattrs) -> String {
    let sb = fs.superblock();
    let raw = i.raw();
    let r16 = |at: usize| {
        raw.get(at..at + 2)
            .map_or(0, |b| u32::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let r32 = |at: usize| {
        raw.get(at..at + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let large = sb.inode_size > 128;
    let x = if large { r16(0x80) } else { 0 };
    let hurd = sb.get("s_creator_os") == 1;
    let mut s = String::new();
    s += &format!(
        "Inode: {}   Type: {}    Mode:  0{:03o}   Flags: {:#x}\n",
        i.ino,
        i.type_name(),
        i.mode & 0o7777,
        i.flags
    );
    if large && x >= 24 {
        s += &format!(
            "Generation: {}    Version: {:#010x}:{:08x}\n",
            i.generation,
            r32(0x98),
            i.version
        );
    } else {
        s += &format!(
            "Generation: {}    Version: {:#010x}\n",
            i.generation, i.version
        );
    }
    s += &format!("User: {:>5}   Group: {:>5}", i.uid as i32, i.gid as i32);
    if large && x >= 32 {
        s += &format!("   Project: {:>5}", r32(0x9c) as i32);
    }
    let size = if i.is_reg() || i.is_dir() {
        i.size
    } else {
        i.size & 0xffff_ffff
    };
    s += &format!("   Size: {size}\n");
    if hurd {
        s += &format!("File ACL: {} Translator: {}\n", r32(0x68), i.version);
        s += &format!("Links: {}   Blockcount: {}\n", i.links, r32(0x1c));
        s += &format!(
            "Fragment:  Address: {}    Number: {}    Size: {}\n",
            r32(0x70),
            raw[0x74],
            raw[0x75]
        );
    } else {
        s += &format!("File ACL: {}\n", i.file_acl);
        s += &format!("Links: {}   Blockcount: {}\n", i.links, i.blocks);
        s += &format!(
            "Fragment:  Address: {}    Number: 0    Size: 0\n",
            r32(0x70)
        );
    }
    let decode = |secs: u32, extra: u32| i64::from(secs as i32) + (i64::from(extra & 3) << 32);
    if large && x >= 24 {
        for (name, at, extra) in [
            (" ctime", 0xc, 0x84),
            (" atime", 0x8, 0x8c),
            (" mtime", 0x10, 0x88),
            ("crtime", 0x90, 0x94),
        ] {
            let (t, e) = (r32(at), r32(extra));
            s += &format!("{name}: {t:#010x}:{e:08x} -- {}\n", asctime(decode(t, e)));
        }
        if i.dtime != 0 {
            let e = r32(0x84);
            s += &format!(
                " dtime: {:#010x}:({e:08x}) -- {}\n",
                i.dtime,
                asctime(decode(i.dtime, e))
            );
        }
    } else {
        for (name, at) in [("ctime", 0xc), ("atime", 0x8), ("mtime", 0x10)] {
            let t = r32(at);
            s += &format!("{name}: {t:#010x} -- {}\n", asctime(decode(t, 0)));
        }
        if i.dtime != 0 {
            s += &format!(
                "dtime: {:#010x} -- {}\n",
                i.dtime,
                asctime(decode(i.dtime, 0))
            );
        }
    }
    if large {
        s += &format!("Size of extra inode fields: {x}\n");
    }
    // debugfs lists attributes only when all of them could be read.
    if !xattrs.attrs.is_empty() && xattrs.problems.is_empty() {
        s += "Extended attributes:\n";
        for a in &xattrs.attrs {
            s += &xattr_line(a);
            s.push('\n');
        }
    }
    if sb.has_metadata_csum() {
        let hi = if large && x >= 2 { r16(0x82) << 16 } else { 0 };
        s += &format!("Inode checksum: {:#010x}\n", r16(0x7c) | hi);
    }
    let fast = i.is_symlink() && i.size > 0 && i.size < 60;
    if fast || (i.is_symlink() && i.has_inline_data()) {
        // The target as stored (debugfs prints it up to a NUL).
        let target = if fast {
            i.block[..i.size as usize].to_vec()
        } else {
            fs.symlink_target(i).unwrap_or_default()
        };
        let end = target.iter().position(|&b| b == 0).unwrap_or(target.len());
        s += &format!("Fast link dest: \"{}\"\n", printable_bytes(&target[..end]));
    } else if i.is_device() {
        let w = |n: usize| {
            u32::from_le_bytes([i.block[n], i.block[n + 1], i.block[n + 2], i.block[n + 3]])
        };
        let (major, minor, note) = if w(0) != 0 {
            ((w(0) >> 8) & 255, w(0) & 255, "")
        } else {
            (
                (w(4) & 0xfff00) >> 8,
                (w(4) & 0xff) | ((w(4) >> 12) & 0xfff00),
                "(New-style) ",
            )
        };
        s += &format!(
            "{note}Device major/minor number: {major:02}:{minor:02} (hex {major:02x}:{minor:02x})\n"
        );
    } else if i.flags & EXTENTS_FL != 0 {
        s += "EXTENTS:\n";
        if let Some(m) = map {
            let list = block_list(&m.runs, true);
            if !list.is_empty() {
                s += &list;
                s.push('\n');
            }
        }
    } else if i.has_inline_data() {
        if let Ok(d) = fs.inline_data(i) {
            s += &format!("Size of inline data: {}\n", d.len());
        }
    } else {
        s += "BLOCKS:\n";
        if let Some(m) = map {
            s += &block_list(&m.runs, false);
            if !m.runs.is_empty() {
                let total: u64 = m.runs.iter().map(|r| r.len).sum();
                s += &format!("\nTOTAL: {total}\n");
            }
        }
        s.push('\n');
    }
    s
}

fn time_json(t: &Timestamp) -> Value {
    json!({"secs": t.secs, "nsec": t.nsec, "raw": t.raw, "extra": t.extra})
}

fn xattr_json(x: &Xattr) -> Value {
    json!({
        "name": String::from_utf8_lossy(&x.name), "name_index": x.name_index,
        "value_size": x.value_size,
        "value_text": std::str::from_utf8(&x.value).ok(),
        "value_hex": x.value.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "value_inum": x.value_inum, "in_inode": x.in_inode, "offset": x.offset,
    })
}

/// `stat`: debugfs's lines first, then what layerscope adds (checksums
/// verified, flag names, problems, the htree index, every field with its
/// offset).
///
/// # Errors
/// Opening; a bad path or inode.
pub fn stat(args: &super::PathArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let fs = open(&args.fs)?;
    let ino = resolve(&fs, &args.path)?;
    let i = fs.inode(ino)?;
    let (map, map_error) = match fs.block_map(&i) {
        Ok(m) => (Some(m), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let xattrs = fs.xattrs(&i)?;
    let htree = fs.htree(&i)?;
    let target = if i.is_symlink() {
        fs.symlink_target(&i).ok()
    } else {
        None
    };
    let mut problems: Vec<String> = i.problems.iter().map(|e| e.to_string()).collect();
    problems.extend(map_error);
    if let Some(m) = &map {
        problems.extend(m.skipped.iter().chain(&m.warnings).map(|e| e.to_string()));
        if m.more_problems > 0 {
            problems.push(format!(
                "{} more block map problems not listed",
                m.more_problems
            ));
        }
    }
    problems.extend(xattrs.problems.iter().map(|e| e.to_string()));
    if let Some(h) = &htree {
        problems.extend(h.problems.iter().map(|e| e.to_string()));
        let bad = h
            .root
            .iter()
            .chain(h.nodes.iter().map(|n| &n.1))
            .filter_map(|n| n.checksum)
            .filter(|c| !c.ok())
            .count();
        if bad > 0 {
            problems.push(format!("{bad} htree index blocks with a bad checksum"));
        }
    }
    if args.fs.json {
        // The runs are written from the map as they are, not through a
        // JSON tree: a file of 2^20 extents would otherwise cost a
        // gigabyte of `Value`s.
        #[derive(serde::Serialize)]
        struct StatJson<'a> {
            #[serde(flatten)]
            rest: Value,
            runs: Option<&'a [Run]>,
        }
        crate::escape::json::to_writer_pretty(
            &mut *out,
            &StatJson {
                runs: map.as_ref().map(|m| m.runs.as_slice()),
                rest: json!({
                    "inode": ino, "type": i.type_name(), "mode": i.mode, "uid": i.uid, "gid": i.gid,
                    "size": i.size, "links": i.links, "flags": i.flags, "flag_names": i.flag_names(),
                    "blocks": i.blocks, "generation": i.generation, "version": i.version,
                    "version_hi": i.version_hi, "file_acl": i.file_acl, "extra_isize": i.extra_isize,
                    "projid": i.projid, "atime": time_json(&i.atime), "ctime": time_json(&i.ctime),
                    "mtime": time_json(&i.mtime), "crtime": i.crtime.as_ref().map(time_json),
                    "dtime": i.dtime,
                    "checksum": i.checksum.map(|c| json!({"stored": c.stored, "computed": c.computed, "ok": c.ok()})),
                    "symlink_target": target.as_ref().map(|t| String::from_utf8_lossy(t)),
                    "inline_data_size": if i.has_inline_data() { fs.inline_data(&i).ok().map(|d| d.len()) } else { None },
                    "xattrs": xattrs.attrs.iter().map(xattr_json).collect::<Vec<_>>(),
                    "htree": htree,
                    "problems": problems, "fields": i.fields(),
                }),
            },
        )?;
        writeln!(out)?;
        return Ok(());
    }
    out.write_all(stat_debugfs(&fs, &i, &map, &xattrs).as_bytes())?;
    writeln!(out, "\nFlags: {}", i.flag_names().join(" "))?;
    if let Some(c) = i.checksum {
        let state = if c.ok() {
            "ok".to_owned()
        } else {
            format!("BAD (computed {:#010x})", c.computed)
        };
        writeln!(out, "Inode checksum {:#010x}: {state}", c.stored)?;
    }
    if let Some(t) = target.as_ref().filter(|_| !fs.fast_symlink(&i)) {
        writeln!(out, "Link target: \"{}\"", printable_bytes(t))?;
    }
    if let Some(root) = htree.as_ref().and_then(|h| h.root.as_ref()) {
        writeln!(
            out,
            "Htree: hash version {}, {} index levels below the root, root {}/{} entries, {} inner nodes",
            root.hash_version,
            root.indirect_levels,
            root.count,
            root.limit,
            htree.as_ref().map_or(0, |h| h.nodes.len())
        )?;
    }
    for p in &problems {
        writeln!(out, "problem: {}", printable(p))?;
    }
    writeln!(out, "Fields:")?;
    for f in &i.fields() {
        match &f.text {
            Some(t) => writeln!(out, "  {:#08x}  {:<16} {t}", f.offset, f.name)?,
            None => writeln!(out, "  {:#08x}  {:<16} {}", f.offset, f.name, f.value)?,
        }
    }
    Ok(())
}

/// Reports the map's problems on stderr; fails when parts of the map were
/// skipped (the output has zeros there).
fn report(map: &BlockMap, ino: u64) -> anyhow::Result<()> {
    for e in &map.warnings {
        eprintln!("layerscope: warning: {}", printable(&e.to_string()));
    }
    if let Some(first) = map.skipped.first() {
        for e in &map.skipped[1..] {
            eprintln!("layerscope: {}", printable(&e.to_string()));
        }
        if map.more_problems > 0 {
            eprintln!(
                "layerscope: inode {ino}: {} more block map problems not listed",
                map.more_problems
            );
        }
        anyhow::bail!(
            "inode {ino}: {} part(s) of the block map skipped (read as zeros): {first}",
            map.skipped.len()
        );
    }
    Ok(())
}

/// `cat`: the file's bytes, streamed; holes and uninitialized extents as
/// zeros, like `debugfs dump`.
///
/// # Errors
/// Opening; a bad path; read errors; a block map with skipped parts
/// (after writing what could be read).
pub fn cat(args: &super::PathArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let fs = open(&args.fs)?;
    let ino = resolve(&fs, &args.path)?;
    let i = fs.inode(ino)?;
    let map = fs.block_map(&i)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < i.size {
        let n = (i.size - pos).min(buf.len() as u64) as usize;
        fs.read_file(&i, &map.runs, pos, &mut buf[..n])?;
        out.write_all(&buf[..n])?;
        pos += n as u64;
    }
    out.flush()?;
    report(&map, ino)
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
}

/// `blocks`: the file's physical blocks, and the layer holding each run.
/// Rows are written as they are found (a file of 2^20 extents costs its
/// map, not a list of rows).
///
/// # Errors
/// Opening; a bad path; corrupt block maps.
pub fn blocks(args: &super::PathArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let opened = open_full(&args.fs)?;
    let fs = &opened.fs;
    let ino = resolve(fs, &args.path)?;
    let i = fs.inode(ino)?;
    let bs = fs.superblock().block_size;
    let map = fs.block_map(&i)?;
    let failed = std::cell::RefCell::new(None);
    // Each run split where the serving layer changes.
    let rows = map.runs.iter().flat_map(|r| {
        let (start, end) = (
            r.physical.saturating_mul(bs),
            r.physical.saturating_add(r.len).saturating_mul(bs),
        );
        let mut at = start;
        let failed = &failed;
        let opened = &opened;
        std::iter::from_fn(move || {
            if at >= end || failed.borrow().is_some() {
                return None;
            }
            match opened.owner(at, end - at) {
                Ok(o) => {
                    let block = at / bs;
                    let row = BlockRow {
                        logical: r.logical + (block - r.physical),
                        physical: block,
                        count: o.len.div_ceil(bs),
                        uninit: r.uninit,
                        meta: r.meta,
                        level: r.level,
                        layer: o.layer,
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
        for r in rows {
            let layer = r
                .layer
                .map_or_else(|| "none".to_owned(), |l| format!("layer {l}"));
            writeln!(
                out,
                "{}-{} ({} blocks) {layer}",
                r.physical,
                (r.physical + r.count).saturating_sub(1),
                r.count
            )?;
        }
    }
    if let Some(e) = failed.into_inner() {
        return Err(e);
    }
    out.flush()?;
    report(&map, ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debugfs_string_forms() {
        assert_eq!(c_string(b"a\"b\\\n\x01\xff"), "a\\\"b\\\\\\n\\001\\377");
        assert_eq!(xattr_string(b"hello", true), "\"hello\"");
        assert_eq!(xattr_string(&[1, 2, 3], true), "01 02 03 ");
        assert_eq!(ls_date(0), " 1-Jan-1970 00:00");
        let runs = [
            Run {
                logical: 0,
                physical: 10,
                len: 12,
                uninit: false,
                meta: false,
                level: 0,
            },
            Run {
                logical: 12,
                physical: 22,
                len: 1,
                uninit: false,
                meta: true,
                level: 1,
            },
            Run {
                logical: 12,
                physical: 23,
                len: 1,
                uninit: true,
                meta: false,
                level: 0,
            },
        ];
        assert_eq!(
            block_list(&runs, false),
            "(0-11):10-21, (IND):22, (12[u]):23"
        );
        assert_eq!(
            block_list(&runs, true),
            "(0-11):10-21, (ETB1):22, (12[u]):23"
        );
    }
}
