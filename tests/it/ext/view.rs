//! The `ext4-view` crate as a second, independent oracle: on filesystems
//! made by `mke2fs -d` from a tree built here, every path, file type,
//! permission bits, owner, size, modification time (with nanoseconds and
//! epoch bits), symlink target and file content that layerscope's library
//! reads equals what ext4-view reads, also through a qcow2 overlay (and the overlay's base, `--layer
//! 0`, against the image before the edit).
//!
//! ext4-view refuses some features: it requires `filetype` and refuses
//! `meta_bg`, `inline_data`, `large_dir`, `ea_inode`, `mmp`, `compression`
//! and external journals, so those are left out of the layouts here (the
//! debugfs tests in `files` cover them). Its timestamps take the 32-bit
//! seconds word as signed and refuse it from 2^31 on (1901-1969 and
//! 2038-2106 dates), so the tree's dates avoid those ranges; a date past
//! 2106 still exercises the epoch bits. In block-mapped files it reads a
//! hole that spans a whole indirect block as block 0 and fails, so the
//! sparse files here keep their holes inside mapped indirect blocks (the
//! debugfs tests in `files` have the larger holes).
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use layerscope::block::chain::{open_chain, ChainOptions, FsOpener};
use layerscope::block::layered::LayeredReader;
use layerscope::fs::ext::Ext4;
use sha2::{Digest, Sha256};

use super::tools;
use crate::util::*;

/// What both readers must agree on for one path.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Node {
    kind: &'static str,
    /// Permission bits (`mode & 0o7777`).
    mode: u16,
    uid: u32,
    gid: u32,
    size: u64,
    /// Modification time: seconds, nanoseconds.
    mtime: (i64, u32),
    /// Symlink target, or the SHA-256 of a regular file's content.
    data: String,
}

pub(super) type Tree = BTreeMap<Vec<u8>, Node>;

fn hex_sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The source tree: nested directories, an htree-sized directory, a
/// sparse file, a file of many extents (an extent tree of depth 1, double
/// indirect maps on 1 KiB blocks), short and long symlinks, hard links,
/// a FIFO, unicode, spaces, control characters and a 255-byte name, odd
/// permission bits, nanosecond and post-2106 modification times.
pub(super) fn source_tree(root: &Path) {
    use std::os::unix::fs::{symlink, FileExt, PermissionsExt};
    use std::time::{Duration, UNIX_EPOCH};
    make_tree(&root.join("data"), 18);
    let big = root.join("big");
    std::fs::create_dir_all(&big).unwrap();
    for i in 0..2000 {
        std::fs::write(
            big.join(format!("entry-{i:05}-of-the-big-directory")),
            format!("{i}\n"),
        )
        .unwrap();
    }
    let deep = root.join("n/e/s/t/e/d/d/i/r");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("leaf"), b"deep leaf\n").unwrap();
    std::fs::create_dir(root.join("empty")).unwrap();
    let f = std::fs::File::create(root.join("sparse")).unwrap();
    f.write_all_at(b"head", 0).unwrap();
    f.write_all_at(b"tail", 100 << 10).unwrap();
    // 60 separate 1 KiB chunks 6 KiB apart: 60 extents.
    let f = std::fs::File::create(root.join("fragmented")).unwrap();
    for i in 0..60u64 {
        let chunk: Vec<u8> = (0..1024).map(|j| (i * 7 + j) as u8).collect();
        f.write_all_at(&chunk, i * 7168).unwrap();
    }
    symlink("data/hello.txt", root.join("short-link")).unwrap();
    symlink("n/e/s/t/e/d/d/i/r/leaf/".repeat(5), root.join("long-link")).unwrap();
    symlink("does/not/exist", root.join("dangling")).unwrap();
    std::fs::hard_link(deep.join("leaf"), root.join("hard-link")).unwrap();
    std::fs::write(root.join("ünïcode näme with spaces"), b"unicode\n").unwrap();
    std::fs::write(root.join("ctl\x1b[1mname\x7f"), b"escape\n").unwrap();
    std::fs::write(root.join("x".repeat(255)), b"long name\n").unwrap();
    std::fs::write(root.join("empty-file"), b"").unwrap();
    sh(root, &["mkfifo", "fifo"]);
    let odd = root.join("setuid-sticky");
    std::fs::write(&odd, b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&odd, std::fs::Permissions::from_mode(0o5751)).unwrap();
    let f = std::fs::File::options().write(true).open(&odd).unwrap();
    f.set_modified(UNIX_EPOCH + Duration::from_secs(1_234_567_890))
        .unwrap();
}

/// Times mke2fs -d cannot write (it keeps 32-bit seconds only), set with
/// debugfs where inodes have room for them: nanoseconds, and a date past
/// 2106 (epoch bits 1, the low word below 2^31).
fn set_extra_times(dir: &Path, image: &str) {
    let extra = (123_456_789u32 << 2) | 1;
    debugfs_w(
        dir,
        image,
        &format!("sif /empty-file mtime @1000000000\nsif /empty-file mtime_extra {extra:#x}\nsif /setuid-sticky mtime_extra {:#x}\n", 987_654_321u32 << 2),
    );
}

/// The tree as ext4-view reads the image file `image`.
pub(super) fn view_tree(image: &Path) -> Tree {
    use ext4_view::{Ext4, FileType, Metadata};
    let fs = Ext4::load_from_path(image).unwrap_or_else(|e| panic!("ext4-view: {image:?}: {e}"));
    let mut out = Tree::new();
    let mut stack = vec![b"/".to_vec()];
    while let Some(dir) = stack.pop() {
        let entries = fs
            .read_dir(dir.as_slice())
            .unwrap_or_else(|e| panic!("ext4-view: read_dir {dir:?}: {e}"));
        for entry in entries {
            let entry = entry.unwrap();
            let name = entry.file_name().as_ref().to_vec();
            if name == b"." || name == b".." {
                continue;
            }
            let path = entry.path().as_ref().to_vec();
            let meta: Metadata = entry.metadata().unwrap();
            let kind = match meta.file_type() {
                FileType::Directory => "directory",
                FileType::Regular => "regular",
                FileType::Symlink => "symlink",
                FileType::BlockDevice => "block special",
                FileType::CharacterDevice => "character special",
                FileType::Fifo => "FIFO",
                FileType::Socket => "socket",
            };
            let data = match meta.file_type() {
                FileType::Regular => hex_sha(&fs.read(path.as_slice()).unwrap_or_else(|e| {
                    panic!(
                        "ext4-view: {image:?}: {}: {e}",
                        String::from_utf8_lossy(&path)
                    )
                })),
                FileType::Symlink => {
                    let t = fs.read_link(path.as_slice()).unwrap();
                    String::from_utf8_lossy(t.as_ref()).into_owned()
                }
                FileType::Directory => {
                    stack.push(path.clone());
                    String::new()
                }
                _ => String::new(),
            };
            let m = meta.modified();
            out.insert(
                path,
                Node {
                    kind,
                    mode: meta.mode(),
                    uid: meta.uid(),
                    gid: meta.gid(),
                    size: meta.len(),
                    mtime: (m.seconds(), m.nanoseconds()),
                    data,
                },
            );
        }
    }
    out
}

/// The tree as layerscope's library reads `image` (any chain), cut at
/// `layer` when given; every directory listed without a problem.
pub(super) fn our_tree(dir: &Path, image: &str, layer: Option<usize>) -> Tree {
    let chain = open_chain(
        dir.join(image).to_str().unwrap(),
        ChainOptions::default(),
        &FsOpener,
    )
    .unwrap();
    let chain = match layer {
        Some(n) => chain.cut(n),
        None => chain,
    };
    let fs = Ext4::open(Arc::new(LayeredReader::new(&chain).unwrap())).unwrap();
    let mut out = Tree::new();
    let mut stack = vec![(b"/".to_vec(), 2u64)];
    while let Some((path, ino)) = stack.pop() {
        let node = fs.inode(ino).unwrap();
        let listing = fs.list_dir(&node).unwrap();
        assert!(
            listing.problems.is_empty(),
            "{image}: {path:?}: {:?}",
            listing.problems
        );
        for e in listing.entries.iter().filter(|e| !e.is_dot_or_dotdot()) {
            let mut p = path.clone();
            if p.len() > 1 {
                p.push(b'/');
            }
            p.extend_from_slice(&e.name);
            let inode = fs.inode(u64::from(e.inode)).unwrap();
            assert!(
                inode.problems.is_empty(),
                "{image}: {p:?}: {:?}",
                inode.problems
            );
            let data = if inode.is_reg() {
                hex_sha(&fs.read_all(&inode, u64::MAX).unwrap())
            } else if inode.is_symlink() {
                String::from_utf8_lossy(&fs.symlink_target(&inode).unwrap()).into_owned()
            } else {
                if inode.is_dir() {
                    stack.push((p.clone(), inode.ino));
                }
                String::new()
            };
            out.insert(
                p,
                Node {
                    kind: inode.type_name(),
                    mode: inode.mode & 0o7777,
                    uid: inode.uid,
                    gid: inode.gid,
                    size: inode.size,
                    mtime: (inode.mtime.secs, inode.mtime.nsec),
                    data,
                },
            );
        }
    }
    out
}

/// Equal trees, the first difference named.
pub(super) fn assert_same(ours: &Tree, theirs: &Tree, what: &str) {
    for (path, node) in theirs {
        assert_eq!(
            ours.get(path),
            Some(node),
            "{what}: {} differs (left layerscope, right ext4-view)",
            String::from_utf8_lossy(path)
        );
    }
    let extra: Vec<_> = ours.keys().filter(|p| !theirs.contains_key(*p)).collect();
    assert!(extra.is_empty(), "{what}: only layerscope lists {extra:?}");
}

/// `e2fsck -fyD`: mke2fs -d writes every directory linearly; this
/// rebuilds those of more than one block as htrees (exit status 1: the
/// filesystem was changed, as asked).
pub(super) fn index_dirs(dir: &Path, image: &str) {
    let out = std::process::Command::new("e2fsck")
        .args(["-fyD", image])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "e2fsck -fyD {image}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Layouts ext4-view accepts, each with what it exercises.
const LAYOUTS: &[(&str, &[&str])] = &[
    // mke2fs.conf's ext4: extents, 64bit, flex_bg, metadata_csum, journal.
    ("ext4-4k", &["-t", "ext4", "-b", "4096"]),
    // 32-bit descriptors with crc16 checksums, extent trees on 1 KiB blocks.
    (
        "ext4-1k-32bit",
        &[
            "-t",
            "ext4",
            "-b",
            "1024",
            "-O",
            "^64bit,^metadata_csum,uninit_bg",
        ],
    ),
    // Clusters of 16 blocks.
    (
        "ext4-bigalloc",
        &["-t", "ext4", "-b", "1024", "-O", "bigalloc", "-C", "16384"],
    ),
    // Block maps (single indirect), a journal.
    ("ext3-2k", &["-t", "ext3", "-b", "2048"]),
    // Block maps (double indirect: `fragmented` ends past block 268),
    // 128-byte inodes (times without nanoseconds).
    ("ext2-1k-128", &["-t", "ext2", "-b", "1024", "-I", "128"]),
];

/// Every layout: the whole tree equals ext4-view's; the big directory is
/// an htree (debugfs `htree_dump` says so), so both read one.
#[test]
fn tree_equals_ext4_view() {
    if !tools() || !need("debugfs") || !need("e2fsck") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let src = dir.join("src");
    source_tree(&src);
    for (name, opts) in LAYOUTS {
        let image = format!("{name}.raw");
        let mut args = vec!["mke2fs", "-q", "-F", "-E", "root_owner=0:0"];
        args.extend_from_slice(opts);
        args.extend(["-d", src.to_str().unwrap(), &image, "48M"]);
        sh(dir, &args);
        index_dirs(dir, &image);
        if !opts.contains(&"128") {
            set_extra_times(dir, &image);
        }
        let theirs = view_tree(&dir.join(&image));
        assert!(
            theirs.len() > 2000,
            "{name}: ext4-view saw {} paths",
            theirs.len()
        );
        if !opts.contains(&"128") {
            // The times debugfs set (not mke2fs's) are what is compared.
            let t = theirs[b"/empty-file".as_slice()].mtime;
            assert_eq!(t, ((1 << 32) + 1_000_000_000, 123_456_789), "{name}");
        }
        let ours = our_tree(dir, &image, None);
        assert_same(&ours, &theirs, name);
        // The same tree through the filesystem trait equals debugfs's.
        assert!(
            super::trait_walk::check(dir, &image, &image) > 2000,
            "{name}"
        );
        // The big directory is indexed where the layout has dir_index.
        let fs_check = super::files::debugfs(dir, &image, "htree_dump /big");
        assert!(
            fs_check.contains("Root node dump"),
            "{name}: /big is not an htree: {fs_check}"
        );
        std::fs::remove_file(dir.join(&image)).unwrap();
    }
}

/// Through a qcow2 overlay: the edited image (files removed, written,
/// renamed, a directory added, by debugfs) read through the chain equals
/// ext4-view on the edited raw image, and layer 0 equals ext4-view on the
/// original.
#[test]
fn overlay_equals_ext4_view() {
    if !tools() || !need("debugfs") || !need("e2fsck") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let src = dir.join("src");
    source_tree(&src);
    sh(
        dir,
        &[
            "mke2fs",
            "-q",
            "-t",
            "ext4",
            "-E",
            "root_owner=0:0",
            "-d",
            src.to_str().unwrap(),
            "base.raw",
            "48M",
        ],
    );
    index_dirs(dir, "base.raw");
    set_extra_times(dir, "base.raw");
    sh(
        dir,
        &[
            "qemu-img",
            "convert",
            "-q",
            "-O",
            "qcow2",
            "base.raw",
            "base.qcow2",
        ],
    );
    std::fs::copy(dir.join("base.raw"), dir.join("edited.raw")).unwrap();
    std::fs::write(dir.join("new.bin"), vec![0x5a; 100_000]).unwrap();
    debugfs_w(
        dir,
        "edited.raw",
        "rm /data/hello.txt\nwrite new.bin /data/new.bin\nmkdir /added\nsymlink /added/link /big\nlink /sparse /added/sparse\nunlink /sparse\nrm /big/entry-01000-of-the-big-directory\n",
    );
    thin_overlay(
        dir,
        "top.qcow2",
        "base.qcow2",
        "qcow2",
        &dir.join("edited.raw"),
        "",
        false,
    );
    let edited = view_tree(&dir.join("edited.raw"));
    assert!(edited.contains_key(b"/data/new.bin".as_slice()));
    assert!(!edited.contains_key(b"/data/hello.txt".as_slice()));
    assert_same(&our_tree(dir, "top.qcow2", None), &edited, "top.qcow2");
    let base = view_tree(&dir.join("base.raw"));
    assert_ne!(base, edited);
    assert_same(
        &our_tree(dir, "top.qcow2", Some(0)),
        &base,
        "top.qcow2 layer 0",
    );
}
