//! The XFS decoder against xfsprogs (xfs_db, xfs_info, xfs_repair) on
//! filesystems made by `mkfs.xfs -p PROTOFILE` in the tests: v5 and v4,
//! 1K and 4K blocks, 256- and 512-byte inodes, every directory form,
//! extent and B+tree forks, local and remote symlinks, devices, reserved
//! (unwritten) files, and attributes set by `xfs_db -x attr_set` in a thin
//! qcow2 overlay.
//!
//! The images are built once per test run (they take seconds each) and
//! shared by the tests, which only read them.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use layerscope::block::chain::{open_chain, ChainOptions, FsOpener};
use layerscope::block::layered::LayeredReader;
use layerscope::block::BlockSource;
use layerscope::fs::Filesystem;

use crate::util::*;

mod cli;
mod damage;
mod files;
mod info;

/// One filesystem variant: how mkfs made it.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    pub name: &'static str,
    pub mkfs: &'static [&'static str],
    pub size: &'static str,
}

pub const VARIANTS: &[Variant] = &[
    Variant {
        name: "v5-4k",
        mkfs: &["-b", "size=4096", "-d", "agsize=16m"],
        size: "128M",
    },
    Variant {
        name: "v5-1k",
        mkfs: &["-b", "size=1024", "-i", "size=512", "-d", "agsize=16m"],
        size: "96M",
    },
    Variant {
        name: "v4-1k",
        mkfs: &["-m", "crc=0", "-b", "size=1024", "-d", "agsize=16m"],
        size: "96M",
    },
    Variant {
        name: "v4-4k-i512",
        mkfs: &["-m", "crc=0", "-i", "size=512", "-d", "agsize=16m"],
        size: "128M",
    },
];

/// A built variant: the flat images of both layers and the chain.
pub struct Image {
    pub variant: Variant,
    pub dir: PathBuf,
    /// Layer 0 (mkfs) and layer 1 (after the xfs_db edits), flat.
    pub base_raw: String,
    pub top_raw: String,
    /// The chain: base.qcow2 <- top.qcow2 (thin).
    pub top: String,
    /// What the protofile put where: path -> (kind, content or target).
    pub tree: BTreeMap<String, Entry>,
}

/// What a path of the protofile is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Dir,
    File(Vec<u8>),
    Reserved(u64),
    Symlink(Vec<u8>),
    Block(u32, u32),
    Char(u32, u32),
    Fifo,
}

/// The attributes layer 1 sets: (path, xfs_db flag, name, value length).
pub const ATTRS: &[(&str, &str, &str, usize)] = &[
    ("/files/f1", "-u", "one", 3),
    ("/files/f1", "-s", "selinux", 20),
    ("/files/f1", "-r", "trusted_thing", 1),
    ("/files/f2", "-u", "remote", 5000),
];
/// A file with attributes enough for a leaf, and one for a node.
pub const ATTR_LEAF: (&str, usize) = ("/files/f3", 40);
pub const ATTR_NODE: (&str, usize) = ("/files/f4", 400);

/// The value length layer 1 really sets: xfs_db 6.1 crashes setting a v4
/// remote value whose length is not a whole number of blocks, so v4 gets
/// 4096 bytes for the 5000-byte one.
pub fn remote_len(v: Variant, len: usize) -> usize {
    if v.name.starts_with("v4") && len > 4096 {
        4096
    } else {
        len
    }
}

fn content(i: usize, size: usize) -> Vec<u8> {
    (0..size)
        .map(|j| ((i * 31 + j * 7 + j / 4093) % 251) as u8)
        .collect()
}

/// The source tree and the protofile for it.
fn protofile(dir: &Path, v5: bool) -> (PathBuf, BTreeMap<String, Entry>) {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut tree = BTreeMap::new();
    let mut p = String::from("/dev/null\n0 0\nd--755 0 0\n");
    let file = |p: &mut String,
                tree: &mut BTreeMap<String, Entry>,
                path: &str,
                name: &str,
                body: Vec<u8>,
                mode: &str| {
        let host = src.join(format!("f{}", tree.len()));
        std::fs::write(&host, &body).unwrap();
        p.push_str(&format!("{name} {mode} 1000 100 {}\n", host.display()));
        tree.insert(format!("{path}/{name}"), Entry::File(body));
    };
    // Files of every size class.
    tree.insert("/files".into(), Entry::Dir);
    p.push_str("files d--755 0 0\n");
    for (i, size) in [0usize, 1, 100, 4096, 5000, 70_000, 300_000, 1_048_579]
        .into_iter()
        .enumerate()
    {
        file(
            &mut p,
            &mut tree,
            "/files",
            &format!("f{i}"),
            content(i, size),
            "---644",
        );
    }
    file(
        &mut p,
        &mut tree,
        "/files",
        "setuid",
        b"#!/bin/sh\n".to_vec(),
        "-u-755",
    );
    file(
        &mut p,
        &mut tree,
        "/files",
        "ünïcode",
        b"unicode\n".to_vec(),
        "---600",
    );
    file(
        &mut p,
        &mut tree,
        "/files",
        "ctl\x1b[31mname",
        b"escape\n".to_vec(),
        "---644",
    );
    p.push_str("reserved r--644 0 0 20m\n");
    tree.insert("/files/reserved".into(), Entry::Reserved(20 << 20));
    p.push_str("$\n");
    // Special files and symlinks, in a short-form directory.
    tree.insert("/special".into(), Entry::Dir);
    p.push_str("special d--755 0 0\n");
    let mut links = vec![
        ("short", b"../files/f1".to_vec()),
        ("local", "c/".repeat(100).into_bytes()),
    ];
    // Targets too long for the inode: mkfs.xfs 6.1 writes them without
    // the v5 block header (xfs_repair flags them; `damage` tests that we
    // do too), so only v4 images get them here.
    if !v5 {
        links.push(("long", "a/long/target/".repeat(40).into_bytes()));
        links.push(("longest", "b/".repeat(500).into_bytes()));
    }
    for (name, target) in links {
        p.push_str(&format!(
            "{name} l--777 0 0 {}\n",
            String::from_utf8(target.clone()).unwrap()
        ));
        tree.insert(format!("/special/{name}"), Entry::Symlink(target));
    }
    p.push_str("disk b--660 0 6 8 1\ntty c--620 0 5 4 64\nfifo p--644 0 0\n");
    tree.insert("/special/disk".into(), Entry::Block(8, 1));
    tree.insert("/special/tty".into(), Entry::Char(4, 64));
    tree.insert("/special/fifo".into(), Entry::Fifo);
    p.push_str("$\n");
    // Directories of growing size: block, leaf, node forms, and one whose
    // blocks interleave with its files' data (a B+tree data fork).
    for (dname, count, with_data) in [
        ("block", 40, false),
        ("leaf", 300, false),
        ("node", 1500, false),
        ("btree", 2500, true),
    ] {
        tree.insert(format!("/{dname}"), Entry::Dir);
        p.push_str(&format!("{dname} d--755 0 0\n"));
        for i in 0..count {
            let name = format!("entry-{i:05}");
            if with_data {
                file(
                    &mut p,
                    &mut tree,
                    &format!("/{dname}"),
                    &name,
                    content(i, 100 + i % 3000),
                    "---644",
                );
            } else {
                p.push_str(&format!("{name} p--644 0 0\n"));
                tree.insert(format!("/{dname}/{name}"), Entry::Fifo);
            }
        }
        p.push_str("$\n");
    }
    // Deep nesting.
    let mut path = String::new();
    for d in ["a", "b", "c", "d", "e"] {
        path.push('/');
        path.push_str(d);
        tree.insert(path.clone(), Entry::Dir);
        p.push_str(&format!("{d} d--750 7 8\n"));
    }
    file(
        &mut p,
        &mut tree,
        &path,
        "leaf.txt",
        b"deep\n".to_vec(),
        "---644",
    );
    p.push_str(&"$\n".repeat(5));
    p.push_str("$\n");
    let proto = dir.join("proto");
    std::fs::write(&proto, p).unwrap();
    (proto, tree)
}

/// Runs `xfs_db -x` with `commands` (one per line, on stdin) on `image`.
pub fn xfs_db_write(dir: &Path, image: &str, commands: &str) {
    use std::io::Write;
    let mut child = Command::new("xfs_db")
        .args(["-x", image])
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(commands.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !said.contains("failed"),
        "xfs_db -x {image}: {:?}: {said}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `xfs_db -r` with each of `commands` (`-c`), stdout (times in UTC).
pub fn xfs_db(dir: &Path, image: &str, commands: &[&str]) -> String {
    let mut args = vec!["-r".to_owned()];
    for c in commands {
        args.push("-c".into());
        args.push((*c).to_owned());
    }
    args.push(image.to_owned());
    let out = Command::new("xfs_db")
        .args(&args)
        .current_dir(dir)
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "xfs_db {commands:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `name = value` lines of xfs_db's `print`.
pub fn db_pairs(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn build(v: Variant, dir: PathBuf) -> Image {
    std::fs::create_dir_all(&dir).unwrap();
    let (proto, tree) = protofile(&dir, v.name.starts_with("v5"));
    let base = format!("{}.base.raw", v.name);
    sh(&dir, &["truncate", "-s", v.size, &base]);
    let mut args = vec![
        "mkfs.xfs",
        "-q",
        "-L",
        "layer0",
        "-p",
        proto.to_str().unwrap(),
    ];
    args.extend_from_slice(v.mkfs);
    args.push(&base);
    // Small test filesystems are allowed only with these set (xfsprogs'
    // own escape for fstests).
    let out = Command::new(args[0])
        .args(&args[1..])
        .current_dir(&dir)
        .env("TEST_DIR", "1")
        .env("TEST_DEV", "1")
        .env("QA_CHECK_FS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mkfs.xfs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Layer 1: a new label, attributes in every form, a changed mode.
    let top_raw = format!("{}.top.raw", v.name);
    std::fs::copy(dir.join(&base), dir.join(&top_raw)).unwrap();
    let mut cmds = String::new();
    for (path, ns, name, len) in ATTRS {
        let len = remote_len(v, *len);
        cmds.push_str(&format!("path {path}\nattr_set {ns} -v {len} {name}\n"));
    }
    for (path, n) in [ATTR_LEAF, ATTR_NODE] {
        cmds.push_str(&format!("path {path}\n"));
        for i in 0..n {
            cmds.push_str(&format!("attr_set -u -v 30 attribute-number-{i:04}\n"));
        }
    }
    cmds.push_str("path /files/f2\nwrite core.mode 0100600\n");
    xfs_db_write(&dir, &top_raw, &cmds);
    // Its own run: attr_set writes the in-core superblock back to sector 0,
    // which would undo a label set in the same session.
    xfs_db_write(&dir, &top_raw, "label layer1\n");
    sh(
        &dir,
        &[
            "qemu-img",
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "qcow2",
            &base,
            "base.qcow2",
        ],
    );
    thin_overlay(
        &dir,
        "top.qcow2",
        "base.qcow2",
        "qcow2",
        &dir.join(&top_raw),
        "",
        false,
    );
    Image {
        variant: v,
        base_raw: base,
        top_raw,
        top: "top.qcow2".into(),
        tree,
        dir,
    }
}

/// True when the tools the XFS tests need are here.
pub fn tools() -> bool {
    need("mkfs.xfs") && need("xfs_db") && need("xfs_info") && need("xfs_repair") && need("qemu-img")
}

/// The images, built once (in parallel, one thread per variant).
pub fn images() -> &'static [Image] {
    static IMAGES: OnceLock<Vec<Image>> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let root = crate::util::process_dir("layerscope-xfs");
        let handles: Vec<_> = VARIANTS
            .iter()
            .map(|&v| {
                let dir = root.join(v.name);
                std::thread::spawn(move || build(v, dir))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The filesystem of `image` as of `layer` (None: the top), through the
/// qcow2 chain.
pub fn open(image: &Image, layer: Option<usize>) -> Arc<dyn Filesystem> {
    let path = image.dir.join(&image.top);
    let chain = open_chain(path.to_str().unwrap(), ChainOptions::default(), &FsOpener).unwrap();
    let chain = match layer {
        Some(l) => chain.cut(l),
        None => chain,
    };
    let reader: Arc<dyn BlockSource> = Arc::new(LayeredReader::new(&chain).unwrap());
    layerscope::fs::open(reader).unwrap()
}

/// The flat image of a layer.
pub fn flat(image: &Image, layer: usize) -> &str {
    if layer == 0 {
        &image.base_raw
    } else {
        &image.top_raw
    }
}

#[test]
fn repair_finds_every_image_clean() {
    if !tools() {
        return;
    }
    for img in images() {
        for layer in 0..2 {
            let out = Command::new("xfs_repair")
                .args(["-n", flat(img, layer)])
                .current_dir(&img.dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{} layer {layer}: xfs_repair -n: {}{}",
                img.variant.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
