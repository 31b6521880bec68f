//! Layouts the other modules leave out: 64 KiB blocks (mke2fs allows them
//! with -F; Linux on 4 KiB pages cannot mount them, but images exist),
//! an external journal device shared by two filesystems, and a
//! filesystem whose journal is on another device.
use std::path::Path;

use super::files::check_files;
use super::info::{check_groups, check_info};
use super::tools;
use super::view::{assert_same, index_dirs, our_tree, source_tree, view_tree};
use crate::util::*;

/// 64 KiB blocks: info and groups equal dumpe2fs; every directory, inode,
/// content and block list equals debugfs; the tree equals ext4-view's;
/// also through qcow2.
#[test]
fn blocks_of_64k_equal_dumpe2fs_debugfs_and_ext4_view() {
    if !tools() || !need("debugfs") || !need("e2fsck") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let src = dir.join("src");
    source_tree(&src);
    let raw = "b64k.raw";
    sh(
        dir,
        &[
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext4",
            "-b",
            "65536",
            "-E",
            "root_owner=0:0",
            "-d",
            src.to_str().unwrap(),
            raw,
            "256M",
        ],
    );
    index_dirs(dir, raw);
    let info = layerscope(dir, &["info", raw]).ok().text();
    assert!(
        info.lines()
            .any(|l| l.starts_with("Block size:") && l.ends_with(" 65536")),
        "{info}"
    );
    check_info(dir, raw, raw, None);
    check_groups(dir, raw, raw);
    assert!(check_files(dir, raw, raw) > 40);
    assert_same(&our_tree(dir, raw, None), &view_tree(&dir.join(raw)), raw);
    sh(
        dir,
        &["qemu-img", "convert", "-O", "qcow2", raw, "b64k.qcow2"],
    );
    check_info(dir, "b64k.qcow2", raw, None);
    assert_same(
        &our_tree(dir, "b64k.qcow2", None),
        &view_tree(&dir.join(raw)),
        "b64k.qcow2",
    );
}

/// A journal device (mke2fs -O journal_dev) listing two users (written
/// into its journal superblock here, as attaching filesystems would), and
/// a filesystem whose journal is on a device (UUID and device number set
/// with debugfs): `info` equals `dumpe2fs -h`, users included, and says
/// nothing on stderr.
#[test]
fn external_journal_and_its_users_equal_dumpe2fs() {
    if !tools() || !need("debugfs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    sh(
        dir,
        &[
            "mke2fs",
            "-q",
            "-F",
            "-O",
            "journal_dev",
            "-b",
            "4096",
            "j.raw",
            "8M",
        ],
    );
    // s_nr_users (big-endian) at 0x40, s_users at 0x100 of the journal
    // superblock, in the block after the filesystem superblock's.
    let mut users = Vec::new();
    users.extend((1..=16u8).collect::<Vec<_>>());
    users.extend((0xa1..=0xb0u8).collect::<Vec<_>>());
    patch(&dir.join("j.raw"), 4096 + 0x40, &2u32.to_be_bytes());
    patch(&dir.join("j.raw"), 4096 + 0x100, &users);
    let run = layerscope(dir, &["info", "j.raw"]).ok();
    assert_eq!(run.stderr, "");
    check_info(dir, "j.raw", "j.raw", None);
    // The second user is on a line of its own (no `name:` to compare).
    let tail = |text: &str| -> Vec<String> {
        text.lines()
            .skip_while(|l| !l.starts_with("Journal users:"))
            .take(2)
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    let theirs = tail(&String::from_utf8_lossy(
        &sh(dir, &["dumpe2fs", "-h", "j.raw"]).stdout,
    ));
    assert_eq!(theirs.len(), 2, "{theirs:?}");
    assert_eq!(tail(&run.text()), theirs);

    sh(
        dir,
        &[
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext4",
            "-O",
            "^has_journal",
            "fs.raw",
            "32M",
        ],
    );
    let uuid = String::from_utf8_lossy(&sh(dir, &["dumpe2fs", "-h", "j.raw"]).stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Filesystem UUID:"))
        .unwrap()
        .trim()
        .to_owned();
    debugfs_w(
        dir,
        "fs.raw",
        &format!("ssv journal_uuid {uuid}\nssv journal_dev 0x0801\nfeature has_journal\n"),
    );
    let run = layerscope(dir, &["info", "fs.raw"]).ok();
    assert_eq!(run.stderr, "");
    assert!(run.text().contains(&uuid), "{}", run.text());
    check_info(dir, "fs.raw", "fs.raw", None);
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}
