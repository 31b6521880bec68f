//! What only ext2/3/4 has, for the commands: dumpe2fs's superblock and
//! journal lines, debugfs's `stat`. The one place the CLI looks behind
//! [`Filesystem`] (by downcasting through [`Filesystem::as_any`]); every
//! other line of the commands reads any filesystem through the trait.
use crate::fs::ext::superblock::{sb, Compat, Incompat};
use std::io::Write;

use serde_json::{json, Value};

use super::superblock::asctime;
use crate::escape::{printable, printable_bytes};
use crate::fs::ext::blockmap::{BlockMap, Run};
use crate::fs::ext::file::Xattrs;
use crate::fs::ext::inode::{Inode, Timestamp, EXTENTS_FL};
use crate::fs::ext::superblock::feature_names;
use crate::fs::ext::xattr::Xattr;
use crate::fs::ext::Ext4;
use crate::fs::{Filesystem, NodeId};

/// The ext2/3/4 filesystem behind `fs`, if that is what it is.
pub(super) fn as_ext(fs: &dyn Filesystem) -> Option<&Ext4> {
    fs.as_any().downcast_ref::<Ext4>()
}

/// `info --json`'s ext keys: dumpe2fs's lines as pairs, the feature
/// names, the journal superblock, the bad block list, every field.
pub(super) fn info_json(fs: &Ext4, j: &mut Value) {
    let sb = fs.superblock();
    let bad_blocks = bad_blocks(fs);
    let extra = json!({
        "summary": super::superblock::info_lines(sb).into_iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
        "features": feature_names(sb.feature_compat, sb.feature_incompat, sb.feature_ro_compat),
        "journal": fs.journal().map(|j| j.report()),
        "checksum_ok": sb.checksum_ok(),
        "checksum": sb.checksum,
        "csum_seed": sb.csum_seed,
        "bad_blocks": bad_blocks.as_ref().ok(),
        "bad_blocks_error": bad_blocks.as_ref().err().map(|e| e.to_string()),
        "fields": sb.report().fields,
    });
    if let (Value::Object(to), Value::Object(from)) = (j, extra) {
        to.extend(from);
    }
}

/// The bad block list (a journal device has no inodes, so none).
fn bad_blocks(fs: &Ext4) -> Result<Vec<u64>, crate::fs::FsError> {
    if fs.superblock().has_incompat(Incompat::JOURNAL_DEV) {
        Ok(Vec::new())
    } else {
        fs.bad_blocks()
    }
}

/// `info`'s lines: dumpe2fs -h's superblock lines, its journal lines,
/// the bad blocks (a bad block inode that cannot be read is a warning on
/// stderr, as the rest is still right).
pub(super) fn info_lines(fs: &Ext4) -> Vec<(String, String)> {
    let sb = fs.superblock();
    let mut lines = super::superblock::info_lines(sb);
    if let Some(j) = fs.journal() {
        lines.extend(j.lines(sb.block_size, sb.has_compat(Compat::FAST_COMMIT)));
    }
    match bad_blocks(fs) {
        Ok(bad) if !bad.is_empty() => {
            let list: Vec<String> = bad.iter().map(u64::to_string).collect();
            lines.push(("Bad blocks".into(), list.join(", ")));
        }
        Ok(_) => {}
        Err(e) => eprintln!(
            "layerscope: warning: the bad block inode: {}",
            printable(&e.to_string())
        ),
    }
    lines
}

/// `ls -l`'s time: debugfs prints the inode's 32-bit seconds word as it
/// is (without the epoch bits that carry it past 2038), which is the low
/// 32 bits of the decoded time.
pub(super) fn ls_seconds(secs: i64) -> i64 {
    secs & 0xffff_ffff
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
    if printable <= bytes.len().saturating_mul(7) / 8 {
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
                let name = ["", "IND", "DIND", "TIND"]
                    .get(usize::from(r.level))
                    .unwrap_or(&"TIND");
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
                r.logical.saturating_add(r.len).saturating_sub(1),
                r.physical,
                r.physical.saturating_add(r.len).saturating_sub(1)
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
    let r16 = |at: usize| crate::bytes::le16(raw, at).map_or(0, u32::from);
    let r32 = |at: usize| crate::bytes::le32(raw, at).unwrap_or(0);
    let large = sb.inode_size > 128;
    let x = if large { r16(0x80) } else { 0 };
    let hurd = sb.get(sb!("s_creator_os")) == 1;
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
    s += &format!(
        "User: {:>5}   Group: {:>5}",
        crate::bytes::signed32(i.uid),
        crate::bytes::signed32(i.gid)
    );
    if large && x >= 32 {
        s += &format!("   Project: {:>5}", crate::bytes::signed32(r32(0x9c)));
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
            crate::bytes::u8_at(raw, 0x74).unwrap_or(0),
            crate::bytes::u8_at(raw, 0x75).unwrap_or(0)
        );
    } else {
        s += &format!("File ACL: {}\n", i.file_acl);
        s += &format!("Links: {}   Blockcount: {}\n", i.links, i.blocks);
        s += &format!(
            "Fragment:  Address: {}    Number: 0    Size: 0\n",
            r32(0x70)
        );
    }
    // Seconds since 1970 signed, plus the epoch bits: at most 2^34 + 2^31.
    let decode = |secs: u32, extra: u32| {
        i64::from(crate::bytes::signed32(secs)).saturating_add(i64::from(extra & 3) << 32)
    };
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
            i.block
                .get(..crate::bytes::us(i.size))
                .unwrap_or_default()
                .to_vec()
        } else {
            fs.symlink_target(i).unwrap_or_default()
        };
        let end = target.iter().position(|&b| b == 0).unwrap_or(target.len());
        let target = target.get(..end).unwrap_or_default();
        s += &format!("Fast link dest: \"{}\"\n", printable_bytes(target));
    } else if i.is_device() {
        let w = |n: usize| crate::bytes::le32(&i.block, n).unwrap_or(0);
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
        "name": super::json::text(&x.name), "name_bytes": super::json::hex_unless_utf8(&x.name),
        "name_index": x.name_index,
        "value_size": x.value_size,
        "value_text": std::str::from_utf8(&x.value).ok(),
        "value_hex": x.value.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "value_inum": x.value_inum, "in_inode": x.in_inode, "offset": x.offset,
    })
}

/// ext's `stat` of inode `ino`: debugfs's lines first, then what
/// layerscope adds (checksums verified, flag names, problems, the htree
/// index, every field with its offset).
///
/// # Errors
/// A bad inode; read errors.
pub(super) fn stat(fs: &Ext4, ino: NodeId, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
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
    let report = Filesystem::node_report(fs, ino)?;
    if json {
        // The runs are written from the map as they are, not through a
        // JSON tree: a file of 2^20 extents would otherwise cost a
        // gigabyte of `Value`s.
        #[derive(serde::Serialize)]
        struct StatJson<'a> {
            #[serde(flatten)]
            rest: Value,
            runs: Option<&'a [crate::fs::ext::blockmap::Run]>,
        }
        super::json::write(
            out,
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
                    "symlink_target": target.as_ref().map(|t| super::json::text(t)),
                    "symlink_target_bytes": target.as_ref().and_then(|t| super::json::hex_unless_utf8(t)),
                    "inline_data_size": if i.has_inline_data() { fs.inline_data(&i).ok().map(|d| d.len()) } else { None },
                    "xattrs": xattrs.attrs.iter().map(xattr_json).collect::<Vec<_>>(),
                    "htree": htree,
                    "problems": problems, "fields": report.fields,
                }),
            },
        )?;
        return Ok(());
    }
    out.write_all(stat_debugfs(fs, &i, &map, &xattrs).as_bytes())?;
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
    super::files::write_fields(&report, out)
}
