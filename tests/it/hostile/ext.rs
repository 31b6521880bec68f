//! ext2/3/4 on hostile images: geometry no filesystem has, a file of 2^20
//! one-block extents, a hole of 2^63 bytes compared by `diff --full`.
use std::path::Path;

use super::{bounded, fails_with, run};
use crate::util::{debugfs_w, need, sh, thin_overlay};

/// A 4 KiB-block ext4 image without journal or checksums (so patched
/// fields are read as patched), made by mke2fs.
fn plain_ext4(dir: &Path, name: &str, size: &str, extra: &[&str]) {
    plain_ext4_in(dir, name, size, "4096", extra);
}

/// [`plain_ext4`] with blocks of `block_size` bytes.
fn plain_ext4_in(dir: &Path, name: &str, size: &str, block_size: &str, extra: &[&str]) {
    let mut args = vec![
        "mke2fs",
        "-q",
        "-t",
        "ext4",
        "-b",
        block_size,
        "-O",
        "^metadata_csum,^has_journal",
    ];
    args.extend_from_slice(extra);
    args.extend([name, size]);
    sh(dir, &args);
}

/// An 8 MiB [`plain_ext4`] `image` whose root holds one file, `name`.
fn ext4_holding(dir: &Path, image: &str, name: &str, content: &[u8]) {
    let src = dir.join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join(name), content).unwrap();
    plain_ext4(dir, image, "8M", &["-d", "src"]);
}

fn put_le32(path: &Path, at: u64, v: u32) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&v.to_le_bytes(), at).unwrap();
}

fn dumpe2fs_refuses(dir: &Path, image: &str) -> bool {
    !std::process::Command::new("dumpe2fs")
        .args(["-h", image])
        .current_dir(dir)
        .output()
        .unwrap()
        .status
        .success()
}

/// Geometry dumpe2fs refuses is refused, naming the field: fewer than 8
/// blocks per group, and 2^32 blocks in groups of 8 (2^29 groups whose
/// descriptors alone would be 16 GiB on an 8 MiB disk).
#[test]
fn absurd_group_geometry_is_refused_like_dumpe2fs() {
    if !need("mke2fs") || !need("dumpe2fs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    plain_ext4(dir, "four.img", "8M", &["-O", "^64bit"]);
    put_le32(&dir.join("four.img"), 1024 + 0x20, 4);
    put_le32(&dir.join("four.img"), 1024 + 0x24, 4);
    assert!(dumpe2fs_refuses(dir, "four.img"));
    for cmd in ["groups", "info", "ls"] {
        let r = run(dir, &[cmd, "four.img"], b"");
        fails_with(
            &r,
            cmd,
            &["four.img", "s_blocks_per_group", "4: expected 8 to"],
        );
    }
    plain_ext4(dir, "many.img", "8M", &["-O", "^64bit"]);
    let p = dir.join("many.img");
    put_le32(&p, 1024 + 0x4, u32::MAX);
    put_le32(&p, 1024 + 0x20, 8);
    put_le32(&p, 1024 + 0x24, 8);
    assert!(dumpe2fs_refuses(dir, "many.img"));
    for cmd in ["groups", "info"] {
        let r = run(dir, &[cmd, "many.img"], b"");
        fails_with(
            &r,
            cmd,
            &["many.img", "536870912 groups", "more than the disk"],
        );
    }
}

/// Cluster geometry dumpe2fs refuses (ext2fs_open2's rules) is refused,
/// naming the field: clusters per group that do not make the blocks per
/// group, and a cluster size other than the block size without bigalloc.
/// A fuzzer's bigalloc superblock with 1 TiB clusters and 2^31 blocks a
/// group made `check` compare a bitmap of 790 million bits (60 s).
#[test]
fn cluster_geometry_is_refused_like_dumpe2fs() {
    if !need("mke2fs") || !need("dumpe2fs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // (image, field offset, value, what the error names)
    let cases = [
        ("cpg.img", 0x24, 16384u32, "s_clusters_per_group"),
        ("log.img", 0x1c, 3u32, "s_log_cluster_size"),
    ];
    for (image, at, value, field) in cases {
        plain_ext4(dir, image, "8M", &[]);
        put_le32(&dir.join(image), 1024 + at, value);
        assert!(dumpe2fs_refuses(dir, image), "{image}");
        for cmd in ["info", "ls"] {
            let r = run(dir, &[cmd, image], b"");
            fails_with(&r, cmd, &[image, field, "corrupt superblock"]);
        }
        // check reports it as the filesystem's one problem.
        let r = run(dir, &["check", image], b"");
        bounded(&r, "check");
        let out = String::from_utf8_lossy(&r.stdout);
        assert_eq!(r.code, 1, "check: {out} {}", r.stderr);
        assert!(
            out.contains(field) && out.contains("corrupt superblock"),
            "check: {out}"
        );
    }
}

/// A superblock claiming 2^32 - 1 blocks in groups of 256 (16.8 million
/// groups, whose 512 MiB of descriptors fit the 1 GiB disk) while its
/// inode count is still the 1,024 groups' own: dumpe2fs refuses it as
/// corrupt, and so does `groups` (before, it printed 16.8 million rows,
/// 124 s on a fuzzer's image), naming the field. What the rest of the
/// filesystem shows stays: `ls -R` equals the unpatched image's.
#[test]
fn a_group_count_the_inode_count_denies_is_not_walked() {
    if !need("mke2fs") || !need("dumpe2fs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    plain_ext4(
        dir,
        "groups.img",
        "1G",
        &["-O", "^64bit,^flex_bg,^resize_inode", "-g", "256"],
    );
    let before = run(dir, &["ls", "-R", "groups.img"], b"");
    assert_eq!(before.code, 0, "{}", before.stderr);
    let r = run(dir, &["groups", "groups.img"], b"");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!dumpe2fs_refuses(dir, "groups.img"));
    let head = String::from_utf8(sh(dir, &["dumpe2fs", "-h", "groups.img"]).stdout).unwrap();
    let field = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_owned()
    };
    let (inodes, per_group) = (field("Inode count:"), field("Inodes per group:"));
    put_le32(&dir.join("groups.img"), 1024 + 0x4, u32::MAX);
    assert!(dumpe2fs_refuses(dir, "groups.img"));
    // One line: the error, naming structure, offset and field (a group
    // table's errors are rows of it, as for a bitmap that cannot be read).
    let r = run(dir, &["groups", "groups.img"], b"\n");
    bounded(&r, "groups");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.count, 1, "{}", String::from_utf8_lossy(&r.stdout));
    let line = String::from_utf8_lossy(&r.stdout);
    let said = format!("error: corrupt superblock at 0x400: s_inodes_count: {inodes} inodes");
    let groups = format!("16777216 groups of {per_group} inodes");
    for w in [said.as_str(), groups.as_str(), "dumpe2fs"] {
        assert!(line.contains(w), "{line:?} does not say {w:?}");
    }
    let after = run(dir, &["ls", "-R", "groups.img"], b"");
    bounded(&after, "ls -R");
    assert_eq!(after.code, 0, "{}", after.stderr);
    assert_eq!(after.stdout, before.stdout);
    // `check` says so and walks no group (it checked 20 million claimed
    // inodes of a 2.5 MB fuzz input in 44 s); e2fsck's ext2fs_open2 finds
    // the superblock corrupt too (it then tries the backups).
    let e2fsck = std::process::Command::new("e2fsck")
        .args(["-fn", "groups.img"])
        .current_dir(dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&e2fsck.stdout).into_owned()
        + &String::from_utf8_lossy(&e2fsck.stderr);
    assert!(said.contains("superblock is corrupt"), "{said}");
    let r = run(dir, &["check", "groups.img"], b"\n  error ");
    bounded(&r, "check");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.count, 1, "{}", r.text());
    assert!(
        r.text().contains("superblock-inode-count")
            && r.text().contains("the groups are not checked"),
        "{}",
        r.text()
    );
}

/// A first non-reserved inode past the inode count: e2fsck finds the
/// superblock corrupt (check_super_value: "Corruption found in superblock.
/// (first_ino = ...)"), and `check` says so and walks no group. Before,
/// every inode was taken as reserved and kept: a fuzz input claiming 16.7
/// million inodes with s_first_ino 1.7 billion cost `check` 57 s and
/// 2.4 GB. Both bounds of e2fsck's range are tried, and the value just
/// inside them checks as before.
#[test]
fn a_first_inode_past_the_inode_count_is_refused_like_e2fsck() {
    if !need("mke2fs") || !need("e2fsck") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    plain_ext4(dir, "fi.img", "8M", &[]);
    let head = String::from_utf8(sh(dir, &["dumpe2fs", "-h", "fi.img"]).stdout).unwrap();
    let inodes: u32 = head
        .lines()
        .find_map(|l| l.strip_prefix("Inode count:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for (first, refused) in [
        (4_000_000_000u32, true),
        (inodes + 1, true),
        (10, true),
        (inodes, false),
        (11, false),
    ] {
        put_le32(&dir.join("fi.img"), 1024 + 0x54, first);
        let e2fsck = std::process::Command::new("e2fsck")
            .args(["-fn", "fi.img"])
            .current_dir(dir)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&e2fsck.stdout).into_owned()
            + &String::from_utf8_lossy(&e2fsck.stderr);
        let corrupt = format!("Corruption found in superblock.  (first_ino = {first})");
        assert_eq!(
            said.contains(&corrupt),
            refused,
            "first_ino {first}: {said}"
        );
        let r = run(dir, &["check", "fi.img"], b"");
        bounded(&r, "check");
        let ours = r.text().contains("superblock-first-inode");
        assert_eq!(ours, refused, "first_ino {first}: {}", r.text());
        if refused {
            assert_eq!(r.code, 1, "{}", r.stderr);
            assert!(
                r.text().contains("the groups are not checked"),
                "{}",
                r.text()
            );
        }
    }
}

/// A FAT volume cut short before its FAT: `check` says the volume ends
/// before the boot sector's last sector and checks nothing more (a boot
/// sector claiming 32 million clusters on an 84-byte fuzz input cost 5 s
/// and 256 MB), as fsck.fat fails to read that sector and gives up.
#[test]
fn a_fat_volume_cut_short_is_not_checked() {
    if !need("mkfs.vfat") || !need("fsck.fat") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    sh(
        dir,
        &[
            "mkfs.vfat",
            "-C",
            "-F",
            "16",
            "-R",
            "64",
            "fat.img",
            "65536",
        ],
    );
    let whole = run(dir, &["check", "fat.img"], b"");
    assert_eq!(whole.code, 0, "{}{}", whole.text(), whole.stderr);
    // The boot sector and the reserved sectors only: the FAT starts at
    // sector 64.
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("fat.img"))
        .unwrap()
        .set_len(64 * 512)
        .unwrap();
    let fsck = std::process::Command::new("fsck.fat")
        .args(["-n", "fat.img"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(!fsck.status.success(), "fsck.fat read the cut volume");
    let said =
        String::from_utf8_lossy(&fsck.stdout).into_owned() + &String::from_utf8_lossy(&fsck.stderr);
    assert!(said.contains("Failed to read sector"), "{said}");
    let r = run(dir, &["check", "fat.img"], b"\n  error ");
    bounded(&r, "check");
    assert_eq!(r.code, 1, "{}{}", r.text(), r.stderr);
    assert!(
        r.text().contains("fat-volume-short") && r.text().contains("not checked"),
        "{}",
        r.text()
    );
}

/// An inode table on the disk but past the filesystem's end (a 16 MiB
/// ext4 on a 32 MiB file, group 1's descriptor pointing at block 20000):
/// libext2fs refuses the descriptor ("bad block for inode table"), and
/// `check` says so once for the group and checks none of its inodes.
/// Before, each of them was an error of its own: a fuzz input's table of
/// 16.7 million inodes past its filesystem's end took 17 s of CPU.
#[test]
fn an_inode_table_past_the_filesystem_is_reported_once() {
    if !need("mke2fs") || !need("debugfs") || !need("e2fsck") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    sh(dir, &["truncate", "-s", "32M", "a.img"]);
    sh(
        dir,
        &[
            "mke2fs", "-q", "-t", "ext4", "-b", "1024", "-g", "8192", "a.img", "16384",
        ],
    );
    let whole = run(dir, &["check", "a.img"], b"\n  error ");
    assert_eq!(whole.code, 0, "{}{}", whole.text(), whole.stderr);
    // The group's inodes in use as far as its descriptor says, so that
    // they are checked (mke2fs leaves group 1 INODE_UNINIT).
    debugfs_w(
        dir,
        "a.img",
        "set_bg 1 inode_table 20000\nset_bg 1 flags 0\nset_bg 1 itable_unused 0\nset_bg 1 checksum calc\n",
    );
    let e2fsck = std::process::Command::new("e2fsck")
        .args(["-fn", "a.img"])
        .current_dir(dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&e2fsck.stderr).into_owned()
        + &String::from_utf8_lossy(&e2fsck.stdout);
    assert!(said.contains("bad block for inode table"), "{said}");
    let r = run(dir, &["check", "a.img"], b"\n  error ");
    bounded(&r, "check");
    assert_eq!(r.code, 1, "{}{}", r.text(), r.stderr);
    let text = r.text();
    assert_eq!(
        text.matches("inode-table-outside-filesystem").count(),
        1,
        "{text}"
    );
    assert!(
        text.contains("group 1 inode table")
            && text.contains("blocks 20000-20511")
            && text.contains("not checked"),
        "{text}"
    );
    // No error names an inode of group 1 (2049-4096).
    assert!(!text.contains("inode 2049"), "{text}");
    assert!(r.count < 16, "{} errors: {text}", r.count);
}

/// Where a file's inode lies (a byte offset), from debugfs imap.
fn inode_location(dir: &Path, image: &str, ino: u64) -> u64 {
    inode_location_in(dir, image, ino, 4096)
}

/// [`inode_location`] on a filesystem of `block_size`-byte blocks.
fn inode_location_in(dir: &Path, image: &str, ino: u64, block_size: u64) -> u64 {
    let out = sh(dir, &["debugfs", "-R", &format!("imap <{ino}>"), image]);
    let text = String::from_utf8_lossy(&out.stdout);
    let block: u64 = text
        .split("located at block ")
        .nth(1)
        .and_then(|t| t.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("imap: {text}"));
    let offset = text
        .split("offset 0x")
        .nth(1)
        .and_then(|t| u64::from_str_radix(t.trim(), 16).ok())
        .unwrap_or_else(|| panic!("imap: {text}"));
    block * block_size + offset
}

/// An extent node: header and entries (12 bytes each).
fn node(depth: u16, max: u16, entries: &[[u8; 12]], size: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(size);
    for v in [0xf30a, entries.len() as u16, max, depth] {
        b.extend(v.to_le_bytes());
    }
    b.extend(0u32.to_le_bytes());
    for e in entries {
        b.extend(e);
    }
    b.resize(size, 0);
    b
}

fn leaf(logical: u32, physical: u32) -> [u8; 12] {
    extent(logical, 1, physical)
}

/// A leaf extent of `len` blocks.
fn extent(logical: u32, len: u16, physical: u32) -> [u8; 12] {
    let mut e = [0u8; 12];
    e[0..4].copy_from_slice(&logical.to_le_bytes());
    e[4..6].copy_from_slice(&len.to_le_bytes());
    e[8..12].copy_from_slice(&physical.to_le_bytes());
    e
}

fn index(logical: u32, child: u32) -> [u8; 12] {
    let mut e = [0u8; 12];
    e[0..4].copy_from_slice(&logical.to_le_bytes());
    e[4..8].copy_from_slice(&child.to_le_bytes());
    e
}

/// Gives inode `ino` of `image` an extent tree of `extents` one-block
/// extents (logical 2i, so no two merge) all on block `physical`, built
/// three levels deep from block `at` on; returns the map blocks used.
fn many_extents(dir: &Path, image: &str, ino: u64, extents: u32, physical: u32, at: u32) -> u32 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(image))
        .unwrap();
    let per = 340usize;
    let mut next = at;
    let mut put = |bytes: Vec<u8>| {
        f.write_all_at(&bytes, u64::from(next) * 4096).unwrap();
        next += 1;
        next - 1
    };
    let all: Vec<[u8; 12]> = (0..extents).map(|i| leaf(2 * i, physical)).collect();
    let mut level: Vec<[u8; 12]> = all
        .chunks(per)
        .map(|c| {
            let first = u32::from_le_bytes(c[0][0..4].try_into().unwrap());
            index(first, put(node(0, per as u16, c, 4096)))
        })
        .collect();
    let mut depth = 1;
    while level.len() > 4 {
        level = level
            .chunks(per)
            .map(|c| {
                let first = u32::from_le_bytes(c[0][0..4].try_into().unwrap());
                index(first, put(node(depth, per as u16, c, 4096)))
            })
            .collect();
        depth += 1;
    }
    let root = node(depth, 4, &level, 60);
    let at_inode = inode_location(dir, image, ino);
    f.write_all_at(&root, at_inode + 0x28).unwrap();
    let size = u64::from(extents) * 2 * 4096;
    f.write_all_at(&(size as u32).to_le_bytes(), at_inode + 0x4)
        .unwrap();
    f.write_all_at(&((size >> 32) as u32).to_le_bytes(), at_inode + 0x6c)
        .unwrap();
    f.write_all_at(&0x80000u32.to_le_bytes(), at_inode + 0x20)
        .unwrap();
    next - at
}

/// `blocks` and `stat --json` of a file of 2^20 one-block extents list
/// every run (debugfs's block list is the oracle for the data blocks)
/// in bounded memory: rows are written as they are found.
#[test]
fn a_million_extents_in_bounded_memory() {
    if !need("mke2fs") || !need("debugfs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    plain_ext4(dir, "frag.img", "64M", &[]);
    debugfs_w(dir, "frag.img", "write /dev/null frag\n");
    let extents = 1u32 << 20;
    let meta = many_extents(dir, "frag.img", 12, extents, 14000, 8000);
    // The oracle: debugfs lists the same data blocks.
    let out = sh(dir, &["debugfs", "-R", "blocks <12>", "frag.img"]);
    let theirs = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|w| *w == "14000")
        .count();
    assert_eq!(theirs, extents as usize);
    let r = run(
        dir,
        &["blocks", "--json", "frag.img", "<12>"],
        b"\"meta\": false",
    );
    bounded(&r, "blocks --json");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.count, u64::from(extents));
    let r = run(dir, &["stat", "--json", "frag.img", "<12>"], b"\"logical\"");
    bounded(&r, "stat --json");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.count, u64::from(extents + meta));
    let r = run(
        dir,
        &["blocks", "frag.img", "<12>"],
        b"14000       1  layer 0   data",
    );
    bounded(&r, "blocks");
    assert_eq!(r.count, u64::from(extents));
}

/// A file whose i_size is 2^63-1 (a hole but for its first block), the
/// same in both layers: `diff --full` steps over the hole in one go
/// instead of a megabyte at a time, and both diffs name only the file
/// the overlay changed.
#[test]
fn diff_full_steps_over_a_hole_of_2_63_bytes() {
    if !need("mke2fs") || !need("debugfs") || !need("qemu-img") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("huge"), vec![0x48u8; 4096]).unwrap();
    std::fs::write(tree.join("small.txt"), b"before\n").unwrap();
    sh(
        dir,
        &[
            "mke2fs",
            "-q",
            "-t",
            "ext4",
            "-b",
            "4096",
            "-d",
            tree.to_str().unwrap(),
            "base.raw",
            "16M",
        ],
    );
    debugfs_w(dir, "base.raw", "sif /huge size 0x7fffffffffffffff\n");
    std::fs::copy(dir.join("base.raw"), dir.join("flat.raw")).unwrap();
    std::fs::write(dir.join("after.txt"), b"after, longer\n").unwrap();
    debugfs_w(
        dir,
        "flat.raw",
        &format!(
            "rm /small.txt\nwrite {} /small.txt\n",
            dir.join("after.txt").display()
        ),
    );
    thin_overlay(
        dir,
        "top.qcow2",
        "base.raw",
        "raw",
        &dir.join("flat.raw"),
        "",
        false,
    );
    let out = sh(dir, &["debugfs", "-R", "stat /huge", "base.raw"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Size: 9223372036854775807"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for full in [true, false] {
        let mut args = vec!["diff", "--json", "top.qcow2"];
        if full {
            args.push("--full");
        }
        let r = run(dir, &args, b"");
        bounded(&r, "diff");
        assert_eq!(r.code, 0, "{}", r.stderr);
        let j: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
        let paths: Vec<&str> = j["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["path"].as_str().unwrap())
            .collect();
        assert!(
            paths.contains(&"/small.txt") && !paths.contains(&"/huge"),
            "full={full}: {paths:?}"
        );
    }
}

/// A file whose inode claims a terabyte and as many blocks (its map holds
/// one block): `grep -r` reads what the map holds, not the size the
/// inode claims (a fuzz input's damaged inodes made it run for hours).
/// Oracle for the claim: debugfs's stat of the patched inode.
#[test]
fn grep_reads_what_a_claimed_terabyte_maps() {
    if !need("mke2fs") || !need("debugfs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    ext4_holding(dir, "g.img", "big", b"needle\n");
    debugfs_w(
        dir,
        "g.img",
        "sif /big size 0x10000000000\nsif /big blocks 0xffffffff\n",
    );
    let stat = String::from_utf8(sh(dir, &["debugfs", "-R", "stat /big", "g.img"]).stdout).unwrap();
    assert!(stat.contains("Size: 1099511627776"), "{stat}");
    // The hole makes it binary: the first match ends its search.
    let r = run(dir, &["grep", "g.img", "needle", "/"], b"");
    bounded(&r, "grep");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("/big: binary file matches"),
        "{}",
        r.stderr
    );
    // No match: the whole file is searched, as far as its map goes (the
    // session's start binary was still reading zeros after 10 s).
    let r = run(dir, &["grep", "g.img", "nothere", "/"], b"");
    bounded(&r, "grep");
    assert_eq!(r.code, 1, "{}{}", r.text(), r.stderr);
}

/// `cat` of a file whose `i_size` is 2^63: the kernel's iget refuses such
/// an inode ("bad i_size value"), and reading it would write zeros as far
/// as the claim goes (a fuzz input's root inode claiming 2^64 - 1 bytes
/// had made the session's start binary write 22 GB in 15 s).
#[test]
fn cat_refuses_a_size_the_kernel_refuses() {
    if !need("mke2fs") || !need("debugfs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    ext4_holding(dir, "s.img", "f", b"hello\n");
    let r = run(dir, &["cat", "s.img", "/f"], b"");
    assert_eq!(
        (r.code, r.text()),
        (0, "hello\n".to_owned()),
        "{}",
        r.stderr
    );
    debugfs_w(dir, "s.img", "sif /f size 0x8000000000000000\n");
    let stat = String::from_utf8(sh(dir, &["debugfs", "-R", "stat /f", "s.img"]).stdout).unwrap();
    assert!(stat.contains("Size: 9223372036854775808"), "{stat}");
    let r = run(dir, &["cat", "s.img", "/f"], b"");
    fails_with(
        &r,
        "cat",
        &["i_size", "size 9223372036854775808", "refuses"],
    );
    assert!(r.text().is_empty(), "{} bytes written", r.text().len());
}

/// How far a read goes ([`Superblock::max_bytes`]) is the kernel's
/// `s_maxbytes`. The expected values are the largest size `truncate(2)`
/// reached on these geometries, loop-mounted under Linux 6.18 (a bisection
/// of EFBIG; recorded here, as CI mounts nothing): extents bound it at
/// 2^32 - 1 blocks, and without huge_file `i_blocks` in 512-byte sectors
/// bounds it at ~2 TiB.
///
/// [`Superblock::max_bytes`]: layerscope::fs::ext::superblock::Superblock::max_bytes
#[test]
fn the_read_limit_is_the_kernels_s_maxbytes() {
    use layerscope::block::chain::{open_chain, FsOpener};
    use layerscope::block::layered::LayeredReader;
    if !need("mke2fs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    for (bs, huge, want) in [
        ("4096", "huge_file", 17_592_186_040_320u64),
        ("4096", "^huge_file", 2_199_023_251_456),
        ("1024", "huge_file", 4_398_046_510_080),
        ("1024", "^huge_file", 2_199_023_254_528),
    ] {
        let name = format!("{bs}{huge}.img");
        sh(
            dir,
            &[
                "mke2fs", "-q", "-F", "-t", "ext4", "-b", bs, "-O", huge, &name, "8M",
            ],
        );
        let path = dir.join(&name);
        let chain = open_chain(path.to_str().unwrap(), Default::default(), &FsOpener).unwrap();
        let reader = std::sync::Arc::new(LayeredReader::new(&chain).unwrap());
        let fs = layerscope::fs::ext::Ext4::open(reader).unwrap();
        assert_eq!(fs.superblock().max_bytes(), want, "{bs} {huge}");
    }
}

/// An ext4 of `block_size`-byte blocks (no journal, no checksums) whose
/// directory /big of 400 names e2fsck -D made an indexed one; its last
/// block moved to logical block `last` (the extent list rewritten in the
/// inode). Returns /big's inode number.
fn htree_dir_moved(dir: &Path, image: &str, block_size: &str, last: u32) -> u64 {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("big")).unwrap();
    for i in 0..400 {
        std::fs::write(
            src.join("big")
                .join(format!("file-with-a-longish-name-{i}")),
            b"",
        )
        .unwrap();
    }
    plain_ext4_in(dir, image, "16M", block_size, &["-d", "src"]);
    let _ = std::process::Command::new("e2fsck")
        .args(["-fyD", image])
        .current_dir(dir)
        .output()
        .unwrap();
    let stat = String::from_utf8(sh(dir, &["debugfs", "-R", "stat /big", image]).stdout).unwrap();
    let ino: u64 = stat
        .split("Inode: ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stat}"));
    assert!(stat.contains("Flags: 0x81000"), "indexed, extents: {stat}");
    // One extent (0-n):p-(p+n) → (0-(n-1)) and (last):(p+n).
    let (n, p) = {
        let e = stat
            .split("EXTENTS:\n")
            .nth(1)
            .unwrap_or_else(|| panic!("{stat}"));
        let e = e.trim().trim_start_matches('(');
        let (range, phys) = e.split_once("):").unwrap();
        let hi: u32 = range.split('-').nth(1).unwrap().parse().unwrap();
        let lo: u32 = phys.split('-').next().unwrap().trim().parse().unwrap();
        (hi + 1, lo)
    };
    assert!(n >= 3, "{stat}");
    let at = inode_location_in(dir, image, ino, block_size.parse().unwrap()) + 0x28;
    let root = node(
        0,
        4,
        &[extent(0, (n - 1) as u16, p), extent(last, 1, p + n - 1)],
        60,
    );
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(image))
        .unwrap();
    f.write_all_at(&root, at).unwrap();
    ino
}

/// An indexed directory whose last block an extent puts at logical block
/// 2^21 - 8 of a 1 KiB-block filesystem: the hole before it is blocks no
/// index entry references. e2fsck (its table of the directory's blocks
/// dense) reports each; the check says so once for the run, its memory
/// following the blocks mapped, not the hole (the dense table took
/// 111 MB for a fuzzer's 2M-block hole). The e2fsck oracle runs on a
/// hole of 3,000 blocks (e2fsck prints a line per block).
#[test]
fn a_hole_in_an_indexed_directory_costs_what_is_mapped() {
    if !(need("mke2fs") && need("e2fsck") && need("debugfs")) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let ino = htree_dir_moved(dir, "small.img", "1024", 3000);
    let e2fsck = std::process::Command::new("e2fsck")
        .args(["-fn", "small.img"])
        .current_dir(dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&e2fsck.stdout);
    let lines = said
        .lines()
        .filter(|l| {
            l.contains(&format!("HTREE directory inode {ino}")) && l.contains("not referenced")
        })
        .count();
    assert!(lines > 2900, "e2fsck, per block: {lines} lines: {said}");
    let r = run(dir, &["check", "--json", "small.img"], b"");
    bounded(&r, "check");
    let j: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let holes: Vec<&serde_json::Value> = j["filesystem"]["problems"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "htree-not-referenced" && p["structure"] == format!("inode {ino}"))
        .collect();
    // The hole as one finding, the moved block (which the index names at
    // its old number) as another: as many blocks as e2fsck's lines.
    let covered: usize = holes
        .iter()
        .map(|p| {
            let d = p["detail"].as_str().unwrap();
            d.split("a hole of ")
                .nth(1)
                .and_then(|t| t.split(' ').next())
                .map_or(1, |n| n.parse().unwrap())
        })
        .sum();
    assert_eq!(holes.len(), 2, "{holes:?}");
    assert_eq!(covered, lines, "{holes:?}");

    let ino = htree_dir_moved(&dir.join("big"), "big.img", "1024", (1 << 21) - 8);
    let r = run(&dir.join("big"), &["check", "--json", "big.img"], b"");
    bounded(&r, "check");
    assert!(
        r.peak_kib < 32 << 10,
        "peak {} KiB for a hole of 2M blocks",
        r.peak_kib
    );
    let text = r.text();
    assert!(
        text.contains(&format!("HTREE directory inode {ino}: blocks #"))
            && text.contains("not referenced (a hole of"),
        "{}",
        &text[..text.len().min(4000)]
    );
}

/// The same directory with its last block past 2 GiB of a 4 KiB-block
/// filesystem (2^19 blocks) without large_dir: e2fsck leaves that extent
/// out ("causes directory to be too big"), so the index entry naming the
/// block names one past the directory's end ("bad block number"), and no
/// block is unreferenced; so does the check, and in pass 5 the block is
/// in the bitmap but nobody's.
#[test]
fn an_indexed_directory_past_2_gib_ends_where_e2fsck_ends_it() {
    if !(need("mke2fs") && need("e2fsck") && need("debugfs")) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let ino = htree_dir_moved(dir, "h.img", "4096", (1 << 22) - 4);
    let e2fsck = std::process::Command::new("e2fsck")
        .args(["-fn", "h.img"])
        .current_dir(dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&e2fsck.stdout);
    assert!(said.contains("causes directory to be too big"), "{said}");
    assert!(
        said.contains(&format!(
            "HTREE directory inode {ino} (/big): bad block number"
        )),
        "{said}"
    );
    assert!(!said.contains("not referenced"), "{said}");
    let r = run(dir, &["check", "--json", "h.img"], b"");
    bounded(&r, "check");
    let j: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let kinds: Vec<&str> = j["filesystem"]["problems"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["structure"] == format!("inode {ino}"))
        .filter_map(|p| p["kind"].as_str())
        .filter(|k| k.starts_with("htree"))
        .collect();
    assert_eq!(kinds, ["htree-bad-block"], "{}", j["filesystem"]);
    // Nor is the block its own in pass 5: in the bitmap, used by no one.
    let theirs = said
        .split("Block bitmap differences:")
        .nth(1)
        .and_then(|t| t.lines().next())
        .map(str::trim)
        .unwrap_or_else(|| panic!("{said}"));
    let bitmap = j["filesystem"]["problems"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "block-bitmap")
        .unwrap_or_else(|| panic!("{}", j["filesystem"]));
    assert!(
        bitmap["detail"].as_str().unwrap().ends_with(theirs),
        "{bitmap} vs e2fsck's {theirs}"
    );
}
