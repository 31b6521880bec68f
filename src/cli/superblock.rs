//! The superblock in dumpe2fs's words (e2fsprogs 1.47's `list_super2`):
//! which lines, in which order, under which conditions, and its date and
//! interval formats.
use crate::bytes::{signed16, signed64};
use crate::fs::ext::superblock::{feature_names, Superblock};
use crate::fs::ext::superblock::{sb, Compat, Incompat, RoCompat};
pub use crate::fs::time::{asctime, ctime, Civil};
use crate::layout::Field;

/// e2fsprogs' `interval_string`.
fn interval(secs: u64) -> String {
    if secs == 0 {
        return "<none>".into();
    }
    let mut parts = Vec::new();
    let mut left = secs;
    for (unit, name) in [(86400 * 30, "month"), (86400 * 7, "week"), (86400, "day")] {
        if left >= unit {
            let n = left.checked_div(unit).unwrap_or(0);
            left = left.checked_rem(unit).unwrap_or(left);
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
                    .map(|_| name.to_owned())
            })
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The superblock as (dumpe2fs name, value) lines.
pub fn info_lines(sb: &Superblock) -> Vec<(String, String)> {
    let g = |f: &'static Field| sb.get(f);
    let mut v: Vec<(String, String)> = Vec::new();
    let mut add = |k: &str, val: String| v.push((k.to_owned(), val));
    let label = sb.text(sb!("s_volume_name"));
    add(
        "Filesystem volume name",
        if label.is_empty() {
            "<none>".into()
        } else {
            label
        },
    );
    let lm = sb.text(sb!("s_last_mounted"));
    add(
        "Last mounted on",
        if lm.is_empty() {
            "<not available>".into()
        } else {
            lm
        },
    );
    add(
        "Filesystem UUID",
        crate::fs::ext::journal::uuid_text(&sb.uuid),
    );
    add(
        "Filesystem magic number",
        format!("{:#06X}", g(sb!("s_magic"))).replace("0X", "0x"),
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
    .filter(|(b, _)| g(sb!("s_flags")) & b != 0)
    .map(|(_, n)| *n)
    .collect();
    if !flags.is_empty() {
        add("Filesystem flags", flags.join(" "));
    }
    let names = crate::fs::ext::superblock::mount_opt_names(g(sb!("s_default_mount_opts")));
    add(
        "Default mount options",
        if names.is_empty() {
            "(none)".into()
        } else {
            names.join(" ")
        },
    );
    let mount_opts = sb.text(sb!("s_mount_opts"));
    if !mount_opts.is_empty() {
        add("Mount options", mount_opts);
    }
    let state = g(sb!("s_state"));
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
        match g(sb!("s_errors")) {
            1 => "Continue".into(),
            2 => "Remount read-only".into(),
            3 => "Panic".into(),
            _ => "Unknown (continue)".into(),
        },
    );
    add(
        "Filesystem OS type",
        match g(sb!("s_creator_os")) {
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
    let hi = |lo: &'static Field, hi: &'static Field| {
        g(lo) | if sb.is_64bit() { g(hi) << 32 } else { 0 }
    };
    add(
        "Reserved block count",
        hi(sb!("s_r_blocks_count_lo"), sb!("s_r_blocks_count_hi")).to_string(),
    );
    if g(sb!("s_overhead_clusters")) != 0 {
        add(
            "Overhead clusters",
            g(sb!("s_overhead_clusters")).to_string(),
        );
    }
    add(
        "Free blocks",
        hi(sb!("s_free_blocks_count_lo"), sb!("s_free_blocks_count_hi")).to_string(),
    );
    add("Free inodes", g(sb!("s_free_inodes_count")).to_string());
    add("First block", sb.first_data_block.to_string());
    add("Block size", sb.block_size.to_string());
    let bigalloc = sb.has_ro_compat(RoCompat::BIGALLOC);
    let cluster = 1024u64 << g(sb!("s_log_cluster_size")).min(30);
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
    if g(sb!("s_reserved_gdt_blocks")) != 0 {
        add(
            "Reserved GDT blocks",
            g(sb!("s_reserved_gdt_blocks")).to_string(),
        );
    }
    add("Blocks per group", sb.blocks_per_group.to_string());
    add(
        if bigalloc {
            "Clusters per group"
        } else {
            "Fragments per group"
        },
        g(sb!("s_clusters_per_group")).to_string(),
    );
    add("Inodes per group", sb.inodes_per_group.to_string());
    add(
        "Inode blocks per group",
        u64::from(sb.inodes_per_group)
            .saturating_mul(u64::from(sb.inode_size))
            .div_ceil(sb.block_size)
            .to_string(),
    );
    let nonzero = |f: &'static Field| Some(g(f)).filter(|&v| v != 0);
    if let Some(v) = nonzero(sb!("s_raid_stride")) {
        add("RAID stride", v.to_string());
    }
    if let Some(v) = nonzero(sb!("s_raid_stripe_width")) {
        add("RAID stripe width", v.to_string());
    }
    if let Some(v) = nonzero(sb!("s_first_meta_bg")) {
        add("First meta block group", v.to_string());
    }
    if let Some(v) = nonzero(sb!("s_log_groups_per_flex")) {
        add("Flex block group size", (1u64 << v.min(31)).to_string());
    }
    let t = |lo: &'static Field, hi: &'static Field| g(lo) | (g(hi) << 32);
    if g(sb!("s_mkfs_time")) != 0 {
        add(
            "Filesystem created",
            ctime(t(sb!("s_mkfs_time"), sb!("s_mkfs_time_hi"))),
        );
    }
    // Only the mount time says n/a for 0 (e2fsprogs' list_super2).
    add(
        "Last mount time",
        ctime(t(sb!("s_mtime"), sb!("s_mtime_hi"))),
    );
    add(
        "Last write time",
        asctime(signed64(t(sb!("s_wtime"), sb!("s_wtime_hi")))),
    );
    add("Mount count", g(sb!("s_mnt_count")).to_string());
    add(
        "Maximum mount count",
        signed16(u16::try_from(g(sb!("s_max_mnt_count")) & 0xffff).unwrap_or_default()).to_string(),
    );
    let lastcheck = t(sb!("s_lastcheck"), sb!("s_lastcheck_hi"));
    add("Last checked", asctime(signed64(lastcheck)));
    let interval_secs = g(sb!("s_checkinterval"));
    add(
        "Check interval",
        format!("{interval_secs} ({})", interval(interval_secs)),
    );
    if interval_secs != 0 {
        add(
            "Next check after",
            asctime(signed64(
                g(sb!("s_lastcheck")).saturating_add(interval_secs),
            )),
        );
    }
    let kb = g(sb!("s_kbytes_written"));
    if kb != 0 {
        add(
            "Lifetime writes",
            match kb {
                k if k < 1 << 13 => format!("{k} kB"),
                k if k < 1 << 23 => format!("{} MB", k.saturating_add(1 << 9) >> 10),
                k if k < 1 << 33 => format!("{} GB", k.saturating_add(1 << 19) >> 20),
                k if k < 1 << 43 => format!("{} TB", k.saturating_add(1 << 29) >> 30),
                k => format!("{} PB", k.saturating_add(1 << 39) >> 40),
            },
        );
    }
    let uid = g(sb!("s_def_resuid"));
    add(
        "Reserved blocks uid",
        format!("{uid} (user {})", local_name("/etc/passwd", uid)),
    );
    let gid = g(sb!("s_def_resgid"));
    add(
        "Reserved blocks gid",
        format!("{gid} (group {})", local_name("/etc/group", gid)),
    );
    if sb.rev_level >= 1 {
        add("First inode", g(sb!("s_first_ino")).to_string());
        add("Inode size", g(sb!("s_inode_size")).to_string());
        if let Some(v) = nonzero(sb!("s_min_extra_isize")) {
            add("Required extra isize", v.to_string());
        }
        if let Some(v) = nonzero(sb!("s_want_extra_isize")) {
            add("Desired extra isize", v.to_string());
        }
    }
    let uuid_set = |f: &'static Field| {
        let t = sb.uuid_of(f);
        (!t.chars().all(|c| c == '0' || c == '-')).then_some(t)
    };
    if let Some(u) = uuid_set(sb!("s_journal_uuid")) {
        add("Journal UUID", u);
    }
    if let Some(v) = nonzero(sb!("s_journal_inum")) {
        add("Journal inode", v.to_string());
    }
    if let Some(v) = nonzero(sb!("s_journal_dev")) {
        add("Journal device", format!("{v:#06x}"));
    }
    if let Some(v) = nonzero(sb!("s_last_orphan")) {
        add("First orphan inode", v.to_string());
    }
    let hash = g(sb!("s_def_hash_version"));
    if sb.has_compat(Compat::DIR_INDEX) || hash != 0 {
        add(
            "Default directory hash",
            match hash {
                0 => "legacy".into(),
                1 => "half_md4".into(),
                2 => "tea".into(),
                n => format!("HASHALG_{n}"),
            },
        );
    }
    if let Some(u) = uuid_set(sb!("s_hash_seed")) {
        add("Directory Hash Seed", u);
    }
    match g(sb!("s_jnl_backup_type")) {
        0 => {}
        1 => add("Journal backup", "inode blocks".into()),
        n => add("Journal backup", format!("type {n}")),
    }
    let backups: Vec<String> = [sb!("s_backup_bgs_0"), sb!("s_backup_bgs_1")]
        .iter()
        .filter_map(|n| nonzero(n))
        .map(|v| v.to_string())
        .collect();
    if !backups.is_empty() {
        add("Backup block groups", backups.join(" "));
    }
    if let Some(v) = nonzero(sb!("s_snapshot_inum")) {
        add("Snapshot inode", v.to_string());
        add("Snapshot ID", g(sb!("s_snapshot_id")).to_string());
        add(
            "Snapshot reserved blocks",
            g(sb!("s_snapshot_r_blocks_count")).to_string(),
        );
    }
    if let Some(v) = nonzero(sb!("s_snapshot_list")) {
        add("Snapshot list head", v.to_string());
    }
    if let Some(v) = nonzero(sb!("s_error_count")) {
        add("FS Error count", v.to_string());
    }
    for (title, time, func, line, ino, block) in [
        (
            "First",
            sb!("s_first_error_time"),
            sb!("s_first_error_func"),
            sb!("s_first_error_line"),
            sb!("s_first_error_ino"),
            sb!("s_first_error_block"),
        ),
        (
            "Last",
            sb!("s_last_error_time"),
            sb!("s_last_error_func"),
            sb!("s_last_error_line"),
            sb!("s_last_error_ino"),
            sb!("s_last_error_block"),
        ),
    ] {
        if g(time) == 0 {
            continue;
        }
        add(&format!("{title} error time"), asctime(signed64(g(time))));
        add(&format!("{title} error function"), sb.text(func));
        add(&format!("{title} error line #"), g(line).to_string());
        if let Some(v) = nonzero(ino) {
            add(&format!("{title} error inode #"), v.to_string());
        }
        if let Some(v) = nonzero(block) {
            add(&format!("{title} error block #"), v.to_string());
        }
        let errcode = if title == "First" {
            sb!("s_first_error_errcode")
        } else {
            sb!("s_last_error_errcode")
        };
        if let Some(v) = nonzero(errcode) {
            const CODES: [&str; 18] = [
                "",
                "UNKNOWN",
                "EIO",
                "ENOMEM",
                "EFSBADCRC",
                "EFSCORRUPTED",
                "ENOSPC",
                "ENOKEY",
                "EROFS",
                "EFBIG",
                "EEXIST",
                "ERANGE",
                "EOVERFLOW",
                "EBUSY",
                "ENOTDIR",
                "ENOTEMPTY",
                "ESHUTDOWN",
                "EFAULT",
            ];
            add(
                &format!("{title} error err"),
                CODES
                    .get(crate::bytes::us(v))
                    .map_or_else(|| format!("UNKNOWN_ERRCODE_{v}"), |c| (*c).to_owned()),
            );
        }
    }
    if sb.has_incompat(Incompat::MMP) {
        add("MMP block number", g(sb!("s_mmp_block")).to_string());
        add("MMP update interval", g(sb!("s_mmp_interval")).to_string());
    }
    for (field, title) in [
        (sb!("s_usr_quota_inum"), "User quota inode"),
        (sb!("s_grp_quota_inum"), "Group quota inode"),
        (sb!("s_prj_quota_inum"), "Project quota inode"),
    ] {
        if let Some(v) = nonzero(field) {
            add(title, v.to_string());
        }
    }
    if sb.has_metadata_csum() {
        add(
            "Checksum type",
            if g(sb!("s_checksum_type")) == 1 {
                "crc32c".into()
            } else {
                "unknown".into()
            },
        );
        let state = match sb.checksum_ok() {
            Some(false) => " (does not match the superblock)",
            _ => "",
        };
        add("Checksum", format!("{:#010x}{state}", g(sb!("s_checksum"))));
    }
    if let Some(u) = uuid_set(sb!("s_encrypt_pw_salt")) {
        add("Encryption PW Salt", u);
    }
    if sb.has_incompat(Incompat::METADATA_CSUM_SEED) {
        add(
            "Checksum seed",
            format!("{:#010x}", g(sb!("s_checksum_seed"))),
        );
    }
    if sb.has_incompat(Incompat::CASEFOLD) {
        add(
            "Character encoding",
            match g(sb!("s_encoding")) {
                1 => "utf8-12.1".into(),
                n => format!("UNKNOWN_ENCODING_{n}"),
            },
        );
    }
    if sb.has_compat(Compat::ORPHAN_FILE) {
        add(
            "Orphan file inode",
            g(sb!("s_orphan_file_inum")).to_string(),
        );
    }
    v
}
