//! `layerscope info` and `groups`: the ext2/3/4 superblock and group
//! descriptors, in dumpe2fs's words where dumpe2fs has a word for it.
use std::io::Write;
use std::sync::Arc;

use serde_json::json;

use super::FsArgs;
use crate::block::layered::LayeredReader;
use crate::block::partition::{read_table, Partition, Slice, Table};
use crate::block::BlockSource;
use crate::fs::ext::checksum::Check;
use crate::fs::ext::group_desc::placement;
use crate::fs::ext::superblock::{feature_names, Superblock};
use crate::fs::ext::Ext4;

/// Opens the filesystem of the image's chain, cut at `--layer`.
pub(super) fn open(args: &FsArgs) -> anyhow::Result<Ext4> {
    Ok(open_full(args)?.fs)
}

/// An opened filesystem and where it sits.
pub(super) struct Opened {
    pub fs: Ext4,
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
    let reader = Arc::new(LayeredReader::new(&chain)?);
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
    if let Some(n) = args.partition {
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
        let fs = Ext4::open(slice(p))
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
    match Ext4::open(whole) {
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
            // The only partition with an ext2/3/4 filesystem, if there is
            // exactly one; else the user chooses.
            let mut found: Vec<(Ext4, &Partition)> = t
                .partitions
                .iter()
                .filter_map(|p| Ext4::open(slice(p)).ok().map(|fs| (fs, p)))
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
                "{name}: no ext2/3/4 filesystem at the start of the disk; its {} partition table has {}: choose one with --partition N",
                t.label,
                describe(t)
            )
        }
    }
}

/// `<N>` (debugfs's inode syntax) or a path.
pub(super) fn resolve(fs: &Ext4, target: &str) -> anyhow::Result<u64> {
    if let Some(n) = target.strip_prefix('<').and_then(|t| t.strip_suffix('>')) {
        return n
            .parse()
            .map_err(|_| anyhow::anyhow!("{target:?}: not an inode number"));
    }
    Ok(fs.lookup(target)?)
}

/// A Unix time as dumpe2fs prints it (`ctime`, in UTC), or `n/a` for 0.
pub fn ctime(t: u64) -> String {
    if t == 0 {
        return "n/a".into();
    }
    asctime(i64::try_from(t).unwrap_or(i64::MAX))
}

/// A Unix time as C's `asctime(gmtime(t))` prints it, without the
/// newline: `Thu Jan  1 00:00:00 1970`.
pub fn asctime(t: i64) -> String {
    // Keep the year within four or five digits.
    let t = t.clamp(-(1i64 << 40), 1i64 << 40);
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MO: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {year}",
        WD[days.rem_euclid(7) as usize],
        MO[(month - 1) as usize],
        day,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// e2fsprogs' `interval_string`.
fn interval(secs: u64) -> String {
    if secs == 0 {
        return "<none>".into();
    }
    let mut parts = Vec::new();
    let mut left = secs;
    for (unit, name) in [(86400 * 30, "month"), (86400 * 7, "week"), (86400, "day")] {
        if left >= unit {
            let n = left / unit;
            left -= n * unit;
            parts.push(format!("{n} {name}{}", if n > 1 { "s" } else { "" }));
        }
    }
    if left > 0 {
        parts.push(format!(
            "{}:{:02}:{:02}",
            left / 3600,
            left / 60 % 60,
            left % 60
        ));
    }
    parts.join(", ")
}

/// The local name of a uid or gid, as dumpe2fs shows it (from this
/// machine's /etc/passwd or /etc/group, like getpwuid).
fn local_name(file: &str, id: u64) -> String {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                let mut cols = l.split(':');
                let name = cols.next()?;
                cols.nth(1)?
                    .parse::<u64>()
                    .ok()
                    .filter(|&v| v == id)
                    .map(|_| crate::escape::printable(name))
            })
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The superblock as (dumpe2fs name, value) lines.
pub fn info_lines(sb: &Superblock) -> Vec<(String, String)> {
    let g = |n: &str| sb.get(n);
    let mut v: Vec<(String, String)> = Vec::new();
    let mut add = |k: &str, val: String| v.push((k.to_owned(), val));
    let label = sb.text("s_volume_name");
    add(
        "Filesystem volume name",
        if label.is_empty() {
            "<none>".into()
        } else {
            label
        },
    );
    let lm = sb.text("s_last_mounted");
    add(
        "Last mounted on",
        if lm.is_empty() {
            "<not available>".into()
        } else {
            lm
        },
    );
    add("Filesystem UUID", sb.text("s_uuid"));
    add(
        "Filesystem magic number",
        format!("{:#06X}", g("s_magic")).replace("0X", "0x"),
    );
    add(
        "Filesystem revision #",
        format!(
            "{} ({})",
            sb.rev_level,
            if sb.rev_level == 0 {
                "original"
            } else {
                "dynamic"
            }
        ),
    );
    let features = feature_names(sb.feature_compat, sb.feature_incompat, sb.feature_ro_compat);
    add(
        "Filesystem features",
        if features.is_empty() {
            "(none)".into()
        } else {
            features.join(" ")
        },
    );
    let flags: Vec<&str> = [
        (1, "signed_directory_hash"),
        (2, "unsigned_directory_hash"),
        (4, "test_filesystem"),
    ]
    .iter()
    .filter(|(b, _)| g("s_flags") & b != 0)
    .map(|(_, n)| *n)
    .collect();
    if !flags.is_empty() {
        add("Filesystem flags", flags.join(" "));
    }
    let opts = g("s_default_mount_opts");
    let mut names: Vec<String> = Vec::new();
    match opts & 0x60 {
        0x20 => names.push("journal_data".into()),
        0x40 => names.push("journal_data_ordered".into()),
        0x60 => names.push("journal_data_writeback".into()),
        _ => {}
    }
    const MNTOPTS: &[(u64, &str)] = &[
        (0x1, "debug"),
        (0x2, "bsdgroups"),
        (0x4, "user_xattr"),
        (0x8, "acl"),
        (0x10, "uid16"),
        (0x100, "nobarrier"),
        (0x200, "block_validity"),
        (0x400, "discard"),
        (0x800, "nodelalloc"),
    ];
    for bit in (0..32)
        .map(|i| 1u64 << i)
        .filter(|b| b & 0x60 == 0 && opts & b != 0)
    {
        names.push(MNTOPTS.iter().find(|(m, _)| *m == bit).map_or_else(
            || format!("MNTOPT_{}", bit.trailing_zeros()),
            |(_, n)| (*n).to_owned(),
        ));
    }
    add(
        "Default mount options",
        if names.is_empty() {
            "(none)".into()
        } else {
            names.join(" ")
        },
    );
    let state = g("s_state");
    let mut st = if state & 1 != 0 {
        "clean".to_owned()
    } else {
        "not clean".to_owned()
    };
    if state & 2 != 0 {
        st.push_str(" with errors");
    }
    add("Filesystem state", st);
    add(
        "Errors behavior",
        match g("s_errors") {
            1 => "Continue".into(),
            2 => "Remount read-only".into(),
            3 => "Panic".into(),
            n => format!("Unknown (continue) {n}"),
        },
    );
    add(
        "Filesystem OS type",
        match g("s_creator_os") {
            0 => "Linux".into(),
            1 => "Hurd".into(),
            2 => "Masix".into(),
            3 => "FreeBSD".into(),
            4 => "Lites".into(),
            n => format!("(unknown os {n})"),
        },
    );
    add("Inode count", sb.inodes_count.to_string());
    add("Block count", sb.blocks_count.to_string());
    let hi = |lo: &str, hi: &str| g(lo) | if sb.is_64bit() { g(hi) << 32 } else { 0 };
    add(
        "Reserved block count",
        hi("s_r_blocks_count_lo", "s_r_blocks_count_hi").to_string(),
    );
    if g("s_overhead_clusters") != 0 {
        add("Overhead clusters", g("s_overhead_clusters").to_string());
    }
    add(
        "Free blocks",
        hi("s_free_blocks_count_lo", "s_free_blocks_count_hi").to_string(),
    );
    add("Free inodes", g("s_free_inodes_count").to_string());
    add("First block", sb.first_data_block.to_string());
    add("Block size", sb.block_size.to_string());
    let bigalloc = sb.has_ro_compat(0x200);
    let cluster = 1024u64 << g("s_log_cluster_size").min(30);
    add(
        if bigalloc {
            "Cluster size"
        } else {
            "Fragment size"
        },
        cluster.to_string(),
    );
    if sb.is_64bit() {
        add("Group descriptor size", sb.desc_size.to_string());
    }
    if g("s_reserved_gdt_blocks") != 0 {
        add(
            "Reserved GDT blocks",
            g("s_reserved_gdt_blocks").to_string(),
        );
    }
    add("Blocks per group", sb.blocks_per_group.to_string());
    add(
        if bigalloc {
            "Clusters per group"
        } else {
            "Fragments per group"
        },
        g("s_clusters_per_group").to_string(),
    );
    add("Inodes per group", sb.inodes_per_group.to_string());
    add(
        "Inode blocks per group",
        (u64::from(sb.inodes_per_group) * u64::from(sb.inode_size))
            .div_ceil(sb.block_size)
            .to_string(),
    );
    if sb.has_incompat(0x200) {
        add(
            "Flex block group size",
            (1u64 << g("s_log_groups_per_flex").min(31)).to_string(),
        );
    }
    let t = |lo: &str, hi: &str| g(lo) | (g(hi) << 32);
    if g("s_mkfs_time") != 0 {
        add(
            "Filesystem created",
            ctime(t("s_mkfs_time", "s_mkfs_time_hi")),
        );
    }
    add("Last mount time", ctime(t("s_mtime", "s_mtime_hi")));
    add("Last write time", ctime(t("s_wtime", "s_wtime_hi")));
    add("Mount count", g("s_mnt_count").to_string());
    add(
        "Maximum mount count",
        (g("s_max_mnt_count") as u16 as i16).to_string(),
    );
    add("Last checked", ctime(t("s_lastcheck", "s_lastcheck_hi")));
    add(
        "Check interval",
        format!(
            "{} ({})",
            g("s_checkinterval"),
            interval(g("s_checkinterval"))
        ),
    );
    let kb = g("s_kbytes_written");
    if kb != 0 {
        add(
            "Lifetime writes",
            match kb {
                k if k < 1 << 13 => format!("{k} kB"),
                k if k < 1 << 23 => format!("{} MB", (k + (1 << 9)) >> 10),
                k if k < 1 << 33 => format!("{} GB", (k + (1 << 19)) >> 20),
                k if k < 1 << 43 => format!("{} TB", (k + (1 << 29)) >> 30),
                k => format!("{} PB", (k + (1 << 39)) >> 40),
            },
        );
    }
    let uid = g("s_def_resuid");
    add(
        "Reserved blocks uid",
        format!("{uid} (user {})", local_name("/etc/passwd", uid)),
    );
    let gid = g("s_def_resgid");
    add(
        "Reserved blocks gid",
        format!("{gid} (group {})", local_name("/etc/group", gid)),
    );
    add("First inode", g("s_first_ino").to_string());
    add("Inode size", sb.inode_size.to_string());
    if sb.inode_size > 128 {
        add("Required extra isize", g("s_min_extra_isize").to_string());
        add("Desired extra isize", g("s_want_extra_isize").to_string());
    }
    if g("s_journal_inum") != 0 {
        add("Journal inode", g("s_journal_inum").to_string());
    }
    if g("s_first_meta_bg") != 0 {
        add("First meta block group", g("s_first_meta_bg").to_string());
    }
    add(
        "Default directory hash",
        match g("s_def_hash_version") {
            0 => "legacy".into(),
            1 => "half_md4".into(),
            2 => "tea".into(),
            6 => "siphash".into(),
            n => format!("unknown ({n})"),
        },
    );
    add("Directory Hash Seed", sb.text("s_hash_seed"));
    if g("s_jnl_backup_type") == 1 {
        add("Journal backup", "inode blocks".into());
    }
    if sb.has_metadata_csum() {
        add(
            "Checksum type",
            if g("s_checksum_type") == 1 {
                "crc32c".into()
            } else {
                format!("unknown ({})", g("s_checksum_type"))
            },
        );
        let state = match sb.checksum_ok {
            Some(false) => " (does not match the superblock)",
            _ => "",
        };
        add("Checksum", format!("{:#010x}{state}", g("s_checksum")));
    }
    if sb.has_incompat(0x2000) {
        add("Checksum seed", format!("{:#010x}", g("s_checksum_seed")));
    }
    v
}

/// `info`.
///
/// # Errors
/// Opening the image or the filesystem.
pub fn info(args: &FsArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let opened = open_full(args)?;
    let fs = &opened.fs;
    let sb = fs.superblock();
    if args.json {
        let j = json!({
            "partition_table": opened.table,
            "partition": opened.partition,
            "offset": opened.base,
            "summary": info_lines(sb).into_iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
            "features": feature_names(sb.feature_compat, sb.feature_incompat, sb.feature_ro_compat),
            "journal": fs.journal().map(|j| j.fields),
            "checksum_ok": sb.checksum_ok,
            "fields": sb.fields,
        });
        serde_json::to_writer_pretty(&mut *out, &j)?;
        writeln!(out)?;
        return Ok(());
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
                p.name
            )?;
        }
        for problem in &t.problems {
            writeln!(out, "  problem: {}", crate::escape::printable(problem))?;
        }
        writeln!(out)?;
    }
    let mut lines = info_lines(sb);
    if let Some(j) = fs.journal() {
        lines.extend(j.lines(sb.block_size));
    }
    for (k, v) in lines {
        writeln!(out, "{:<26}{v}", format!("{k}:"))?;
    }
    Ok(())
}

/// `groups`.
///
/// # Errors
/// Opening the image or the filesystem.
pub fn groups(args: &FsArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let fs = open(args)?;
    let count = fs.superblock().group_count();
    let mut list = Vec::new();
    let mut problems = Vec::new();
    if !args.json {
        writeln!(
            out,
            "{:>6} {:>21} {:>12} {:>12} {:>21} {:>8} {:>8} {:>6}  flags, checksum; placement",
            "group",
            "blocks",
            "block bmp",
            "inode bmp",
            "inode table",
            "free blk",
            "free ino",
            "dirs"
        )?;
    }
    let itable_blocks = (u64::from(fs.superblock().inodes_per_group)
        * u64::from(fs.superblock().inode_size))
    .div_ceil(fs.superblock().block_size);
    for g in 0..count {
        let d = match fs.group(g) {
            Ok(d) => d,
            Err(e) => {
                // Keep going: later groups may still be readable.
                if args.json {
                    list.push(
                        json!({"group": g, "error": crate::escape::printable(&format!("{e:#}"))}),
                    );
                } else {
                    writeln!(
                        out,
                        "{g:>6} error: {}",
                        crate::escape::printable(&format!("{e:#}"))
                    )?;
                }
                continue;
            }
        };
        let (first, last) = fs.group_blocks(g);
        let csum = match d.checksum_ok {
            Some(true) => format!("csum {:#06x} ok", d.checksum),
            Some(false) => format!("csum {:#06x} BAD", d.checksum),
            None => String::new(),
        };
        let place = placement(fs.superblock(), g);
        // A bitmap that cannot be read is an error of its own; the rest
        // of the group is still shown.
        let mut bitmap_error = None;
        let (bb, ib) = fs.bitmap_checksums(&d).unwrap_or_else(|e| {
            bitmap_error = Some(format!("group {g}: bitmaps: {e}"));
            (None, None)
        });
        let bitmap_csum = |c: Option<Check>| c.map(|c| c.ok());
        if args.json {
            list.push(json!({
                "group": g, "first_block": first, "last_block": last,
                "superblock": place.superblock,
                "descriptors": place.descriptors.map(|(a, b)| [a, b]),
                "reserved_gdt": place.reserved_gdt.map(|(a, b)| [a, b]),
                "meta_descriptor": place.meta_descriptor,
                "block_bitmap": d.block_bitmap, "inode_bitmap": d.inode_bitmap,
                "inode_table": d.inode_table, "inode_table_last": d.inode_table + itable_blocks.saturating_sub(1),
                "free_blocks": d.free_blocks, "free_inodes": d.free_inodes, "directories": d.used_dirs,
                "unused_inodes": d.itable_unused, "flags": d.flag_names(), "checksum": d.checksum,
                "checksum_ok": d.checksum_ok,
                "block_bitmap_csum": fs.superblock().has_metadata_csum().then_some(d.block_bitmap_csum),
                "block_bitmap_csum_ok": bitmap_csum(bb),
                "inode_bitmap_csum": fs.superblock().has_metadata_csum().then_some(d.inode_bitmap_csum),
                "inode_bitmap_csum_ok": bitmap_csum(ib),
                "bitmap_error": bitmap_error,
                "fields": d.fields,
            }));
        } else {
            problems.extend(bitmap_error);
            let mut notes = Vec::new();
            if let Some(s) = place.superblock {
                notes.push(format!(
                    "{} sb {s}",
                    if g == 0 { "primary" } else { "backup" }
                ));
            }
            if let Some((a, b)) = place.descriptors {
                notes.push(format!("gdt {a}-{b}"));
            }
            if let Some((a, b)) = place.reserved_gdt {
                notes.push(format!("reserved gdt {a}-{b}"));
            }
            if let Some(m) = place.meta_descriptor {
                notes.push(format!("meta_bg gdt {m}"));
            }
            for (name, c) in [("block bitmap", bb), ("inode bitmap", ib)] {
                match c {
                    Some(c) if c.ok() => notes.push(format!("{name} csum ok")),
                    Some(c) => notes.push(format!(
                        "{name} csum {:#010x} BAD (computed {:#010x})",
                        c.stored, c.computed
                    )),
                    None => {}
                }
            }
            writeln!(
                out,
                "{g:>6} {:>21} {:>12} {:>12} {:>21} {:>8} {:>8} {:>6}  {} {csum}{}{}",
                format!("{first}-{last}"),
                d.block_bitmap,
                d.inode_bitmap,
                format!(
                    "{}-{}",
                    d.inode_table,
                    d.inode_table + itable_blocks.saturating_sub(1)
                ),
                d.free_blocks,
                d.free_inodes,
                d.used_dirs,
                d.flag_names().join(","),
                if notes.is_empty() { "" } else { "; " },
                notes.join(", ")
            )?;
        }
    }
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &list)?;
        writeln!(out)?;
    }
    for p in problems {
        writeln!(out, "error: {}", crate::escape::printable(&p))?;
    }
    Ok(())
}
