//! `ls`, `stat`, `cat` and `blocks` against debugfs on filesystems made by
//! mke2fs and edited by debugfs: ext2/3/4, inline data, deep extent trees,
//! htree directories, extended attributes, damaged checksums, through
//! qcow2 overlays.
use std::path::Path;

use serde_json::Value;

use super::tools;
use crate::util::*;

/// A source tree with the cases `ls`, `cat` and `blocks` must get right.
fn rich_tree(root: &Path) {
    use std::os::unix::fs::symlink;
    make_tree(&root.join("data"), 24);
    // A directory big enough to be an htree.
    let big = root.join("big");
    std::fs::create_dir_all(&big).unwrap();
    for i in 0..3000 {
        std::fs::write(
            big.join(format!("entry-with-a-longish-name-{i:05}")),
            format!("{i}\n"),
        )
        .unwrap();
    }
    // Sparse: data, a 5 MiB hole, data.
    let f = std::fs::File::create(root.join("sparse.bin")).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"start", 0).unwrap();
    f.write_all_at(b"end", 5 << 20).unwrap();
    // Deep tree, big file (indirect maps need > 12 + 256 blocks on 1k).
    let deep = root.join("a/b/c/d/e/f/g/h");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("leaf.txt"), b"deep\n").unwrap();
    let body: Vec<u8> = (0..1_500_000u32).map(|i| (i * 13 % 251) as u8).collect();
    std::fs::write(root.join("large.bin"), body).unwrap();
    symlink("data/hello.txt", root.join("short-link")).unwrap();
    symlink(
        "a/b/c/d/e/f/g/h/leaf.txt/".repeat(4),
        root.join("long-link"),
    )
    .unwrap();
    std::fs::hard_link(
        root.join("a/b/c/d/e/f/g/h/leaf.txt"),
        root.join("hardlink.txt"),
    )
    .unwrap();
    std::fs::write(root.join("ünïcode name with spaces.txt"), b"unicode\n").unwrap();
    std::fs::write(root.join("ctl\x1b[31mname"), b"escape\n").unwrap();
    std::fs::write(root.join("tiny"), b"x").unwrap();
}

/// Runs a debugfs request on `image` (times in UTC, as layerscope prints
/// them).
pub(crate) fn debugfs(dir: &Path, image: &str, request: &str) -> String {
    String::from_utf8_lossy(&debugfs_bytes(dir, image, request)).into_owned()
}

/// As [`debugfs`], the output's raw bytes.
fn debugfs_bytes(dir: &Path, image: &str, request: &str) -> Vec<u8> {
    let out = std::process::Command::new("debugfs")
        .args(["-R", request, image])
        .current_dir(dir)
        .env("TZ", "GMT")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "debugfs -R {request:?} {image} failed"
    );
    out.stdout
}

/// debugfs's answers to a list of requests, in one process (`-f`; times
/// in UTC as for [`debugfs`]): the output of each, by request. One process
/// per image instead of one per request keeps the tests that compare
/// thousands of inodes quick.
pub(crate) fn debugfs_batch(
    dir: &Path,
    image: &str,
    requests: &[String],
) -> std::collections::BTreeMap<String, Vec<u8>> {
    let cmds = dir.join("debugfs-batch.cmds");
    std::fs::write(&cmds, requests.join("\n") + "\n").unwrap();
    let out = std::process::Command::new("debugfs")
        .arg("-f")
        .arg(&cmds)
        .arg(image)
        .current_dir(dir)
        .env("TZ", "GMT")
        .output()
        .unwrap();
    assert!(out.status.success(), "debugfs -f on {image} failed");
    let wanted: std::collections::HashSet<&str> = requests.iter().map(String::as_str).collect();
    let mut answers = std::collections::BTreeMap::new();
    let mut current: Option<(String, Vec<u8>)> = None;
    for line in out.stdout.split_inclusive(|&b| b == b'\n') {
        if let Some(req) = line.strip_prefix(b"debugfs: ") {
            let req = String::from_utf8_lossy(req).trim_end().to_owned();
            if wanted.contains(req.as_str()) {
                answers.extend(current.take());
                current = Some((req, Vec::new()));
                continue;
            }
        }
        if let Some((_, body)) = current.as_mut() {
            body.extend_from_slice(line);
        }
    }
    answers.extend(current);
    answers
}

/// debugfs's name escapes (`\xNN` for bytes below 32, from 127, and the
/// backslash) turned into layerscope's (`printable`).
fn debugfs_name(name: &str) -> String {
    let (mut bytes, raw) = (Vec::new(), name.as_bytes());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && raw.get(i + 1) == Some(&b'x') {
            if let Some(b) = name
                .get(i + 2..i + 4)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                bytes.push(b);
                i += 4;
                continue;
            }
        }
        bytes.push(raw[i]);
        i += 1;
    }
    layerscope::escape::printable(&String::from_utf8_lossy(&bytes))
}

/// `ls -l` of directory `ino`: our text equals debugfs's, line by line
/// (debugfs also lists unused entries as inode 0; names compared
/// unescaped).
fn check_ls(dir: &Path, image: &str, flat: &str, ino: u64) {
    check_ls_against(
        dir,
        image,
        ino,
        &debugfs(dir, flat, &format!("ls -l <{ino}>")),
    );
}

/// `ls -l` of directory `ino` against debugfs's `ls -l` text.
fn check_ls_against(dir: &Path, image: &str, ino: u64, debugfs_ls: &str) {
    let norm = |line: &str, theirs: bool| -> Option<String> {
        let first = line.split_whitespace().next()?;
        if first == "0" {
            return None;
        }
        // The name starts after the date (`25-Nov-2026 05:44 `).
        let at = line.find(':')? + 4;
        let (head, name) = line.split_at(at.min(line.len()));
        Some(format!(
            "{head}{}",
            if theirs {
                debugfs_name(name)
            } else {
                name.to_owned()
            }
        ))
    };
    let theirs: Vec<String> = debugfs_ls.lines().filter_map(|l| norm(l, true)).collect();
    let ours: Vec<String> = layerscope(dir, &["ls", "-l", image, &format!("<{ino}>")])
        .ok()
        .text()
        .lines()
        .filter_map(|l| norm(l, false))
        .collect();
    assert_eq!(ours, theirs, "{image}: ls -l of directory inode {ino}");
}

/// `stat` of `ino` starts with exactly what `debugfs stat` prints;
/// `stat --json` agrees with it and finds no problem.
pub(crate) fn check_stat(dir: &Path, image: &str, flat: &str, ino: u64) {
    let raw = debugfs_bytes(dir, flat, &format!("stat <{ino}>"));
    check_stat_against(dir, image, ino, &raw);
}

/// [`check_stat`] against debugfs's `stat` output `raw`; returns
/// layerscope's `stat --json`.
pub(crate) fn check_stat_against(dir: &Path, image: &str, ino: u64, raw: &[u8]) -> Value {
    // debugfs prints a symlink's target raw; layerscope escapes it.
    let text: String = raw
        .split(|&b| b == b'\n')
        .map(|l| match l.strip_prefix(b"Fast link dest: \"") {
            Some(t) => format!(
                "Fast link dest: \"{}\"",
                layerscope::escape::printable_bytes(t.strip_suffix(b"\"").unwrap_or(t))
            ),
            None => String::from_utf8_lossy(l).into_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let json = check_stat_json(image, &text, dir, ino);
    let theirs = text;
    let ours = layerscope(dir, &["stat", image, &format!("<{ino}>")])
        .ok()
        .text();
    let theirs = theirs.trim_end();
    assert!(
        ours.starts_with(theirs) && ours[theirs.len()..].starts_with('\n'),
        "{image}: stat of inode {ino} differs from debugfs stat:\n--- debugfs\n{theirs}\n--- layerscope\n{ours}"
    );
    json
}

/// debugfs `dump` of `ino`.
pub(crate) fn debugfs_dump(dir: &Path, flat: &str, ino: u64) -> Vec<u8> {
    let out = dir.join("dump.out");
    let _ = std::fs::remove_file(&out);
    debugfs(dir, flat, &format!("dump <{ino}> {}", out.display()));
    std::fs::read(&out).unwrap()
}

/// `cat` and `blocks` of `ino` equal debugfs `dump` and `blocks`.
pub(crate) fn check_content(dir: &Path, image: &str, flat: &str, ino: u64, what: &str) {
    let dump = debugfs_dump(dir, flat, ino);
    let blocks = debugfs(dir, flat, &format!("blocks <{ino}>"));
    let stat = layerscope(dir, &["stat", "--json", image, &format!("<{ino}>")])
        .ok()
        .json();
    check_content_against(dir, image, ino, what, dump, &blocks, &stat);
}

/// [`check_content`] against debugfs's `dump` bytes and `blocks` text,
/// with layerscope's `stat --json` of the inode.
pub(crate) fn check_content_against(
    dir: &Path,
    image: &str,
    ino: u64,
    what: &str,
    mut theirs: Vec<u8>,
    debugfs_blocks: &str,
    s: &Value,
) {
    // debugfs 1.47.0 dumps all 60 bytes of i_block for inline files
    // shorter than that (it reads the inline data's size, not i_size); the
    // file is i_size bytes, as the kernel reads it.
    let size = s["size"].as_u64().unwrap() as usize;
    if s["inline_data_size"].as_u64() == Some(60) && size < 60 && theirs.len() == 60 {
        theirs.truncate(size);
    }
    let ours = layerscope(dir, &["cat", image, &format!("<{ino}>")])
        .ok()
        .stdout;
    assert!(
        ours == theirs,
        "{image}: content of inode {ino} ({what}) differs from debugfs dump ({} vs {} bytes)",
        ours.len(),
        theirs.len()
    );
    let theirs: Vec<u64> = debugfs_blocks
        .split_whitespace()
        .map(|b| b.parse().unwrap())
        .collect();
    let ours: Vec<u64> = layerscope(dir, &["blocks", "--json", image, &format!("<{ino}>")])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            let p = r["physical"].as_u64().unwrap();
            p..p + r["count"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(ours, theirs, "{image}: blocks of inode {ino} ({what})");
}

/// Every directory listed like debugfs, every inode's `stat` like
/// debugfs's, regular files' and long symlinks' content and blocks like
/// debugfs's `dump` and `blocks` (a sample of the big directories), and
/// no problem reported anywhere. Returns how many inodes were checked.
pub(crate) fn check_files(dir: &Path, image: &str, flat: &str) -> usize {
    let listing = layerscope(dir, &["ls", "-R", "--json", image]).ok().json();
    assert_eq!(
        listing["errors"].as_array().unwrap().len(),
        0,
        "{image}: {}",
        listing["errors"]
    );
    let entries = listing["entries"].as_array().unwrap();
    let mut seen = std::collections::HashSet::new();
    // (inode, is a directory, content to compare, name)
    let mut picked = Vec::new();
    for e in entries {
        let ino = e["inode"].as_u64().unwrap();
        let name = e["name"].as_str().unwrap();
        let sampled = e["dir"].as_str().unwrap().ends_with("big") && !name.ends_with('7');
        if !seen.insert(ino) || sampled {
            continue;
        }
        let slow_link = e["file_type"] == 7 && e["size"].as_u64().unwrap() >= 60;
        let content = e["file_type"] == 1 || slow_link;
        picked.push((ino, e["file_type"] == 2, content, name.to_owned()));
    }
    // All of debugfs's answers from one process.
    let dump_of = |ino: u64| dir.join(format!("dump-{ino}.out"));
    let (ls, stat, blocks) = (
        |ino: u64| format!("ls -l <{ino}>"),
        |ino: u64| format!("stat <{ino}>"),
        |ino: u64| format!("blocks <{ino}>"),
    );
    let dump = |ino: u64| format!("dump <{ino}> {}", dump_of(ino).display());
    let mut requests = Vec::new();
    for &(ino, is_dir, content, _) in &picked {
        if is_dir {
            requests.push(ls(ino));
        }
        requests.push(stat(ino));
        if content {
            let _ = std::fs::remove_file(dump_of(ino));
            requests.extend([dump(ino), blocks(ino)]);
        }
    }
    let answers = debugfs_batch(dir, flat, &requests);
    let answer = |r: &String| -> &[u8] {
        answers
            .get(r)
            .unwrap_or_else(|| panic!("{flat}: debugfs did not answer {r:?}"))
    };
    for (ino, is_dir, content, name) in &picked {
        let ino = *ino;
        if *is_dir {
            check_ls_against(dir, image, ino, &String::from_utf8_lossy(answer(&ls(ino))));
        }
        let json = check_stat_against(dir, image, ino, answer(&stat(ino)));
        if *content {
            let dumped = std::fs::read(dump_of(ino)).unwrap();
            let _ = std::fs::remove_file(dump_of(ino));
            let blocks = String::from_utf8_lossy(answer(&blocks(ino))).into_owned();
            check_content_against(dir, image, ino, name, dumped, &blocks, &json);
        }
    }
    picked.len()
}

/// `stat --json` against `debugfs stat` (`text`): mode, flags, owner,
/// links, block count; and no problem found.
fn check_stat_json(image: &str, text: &str, dir: &Path, ino: u64) -> Value {
    let ours = layerscope(dir, &["stat", "--json", image, &format!("<{ino}>")])
        .ok()
        .json();
    let word_after = |key: &str| -> String {
        let i = text
            .find(key)
            .unwrap_or_else(|| panic!("debugfs stat has no {key:?}:\n{text}"));
        text[i + key.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let what = format!("{image}: stat of inode {ino}");
    assert_eq!(
        ours["mode"].as_u64().unwrap() & 0o7777,
        u64::from_str_radix(&word_after("Mode:"), 8).unwrap(),
        "{what}: mode"
    );
    assert_eq!(
        ours["flags"].as_u64().unwrap(),
        u64::from_str_radix(word_after("Flags:").trim_start_matches("0x"), 16).unwrap(),
        "{what}: flags"
    );
    assert_eq!(ours["uid"].to_string(), word_after("User:"), "{what}: uid");
    assert_eq!(ours["gid"].to_string(), word_after("Group:"), "{what}: gid");
    assert_eq!(
        ours["links"].to_string(),
        word_after("Links:"),
        "{what}: links"
    );
    assert_eq!(
        ours["blocks"].to_string(),
        word_after("Blockcount:"),
        "{what}: block count"
    );
    assert_eq!(
        ours["problems"],
        Value::Array(Vec::new()),
        "{what}: problems"
    );
    ours
}

/// debugfs edits no source tree can express: devices and a FIFO, extended
/// attributes in the inode and in a block, nanosecond and post-2038
/// times, a deletion time on a live inode.
fn edit_rich(dir: &Path, image: &str) {
    let value = dir.join("xattr-value");
    std::fs::write(&value, "v".repeat(300)).unwrap();
    debugfs_w(
        dir,
        image,
        &format!(
            "mknod cdev c 4 5\nmknod bdev b 8 1\nmknod /fifo p\n\
             ea_set /data/hello.txt user.colour red\n\
             ea_set /data/hello.txt trusted.bin \"\\001\\002\\003\"\n\
             ea_set -f {} /tiny user.big\n\
             sif /tiny mtime_extra 0xeee6b281\nsif /tiny atime 0x80000000\n\
             sif /short-link dtime 0x12345678\n",
            value.display()
        ),
    );
}

#[test]
fn ls_stat_cat_blocks_equal_debugfs() {
    if !tools() || !need("debugfs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let tree = dir.join("tree");
    rich_tree(&tree);
    for (name, opts) in [
        ("ext4", vec!["-t", "ext4"]),
        (
            "ext4-4k-32bit",
            vec!["-t", "ext4", "-b", "4096", "-O", "^64bit"],
        ),
        (
            "ext4-meta-bg",
            vec!["-t", "ext4", "-b", "1024", "-O", "meta_bg,^resize_inode"],
        ),
        ("ext2-1k", vec!["-t", "ext2", "-b", "1024"]),
        ("ext3-4k", vec!["-t", "ext3", "-b", "4096"]),
        ("ext2-128", vec!["-t", "ext2", "-I", "128"]),
    ] {
        let raw = format!("{name}.raw");
        let mut args = vec!["mke2fs", "-q", "-F"];
        args.extend(opts);
        args.extend(["-d", tree.to_str().unwrap(), &raw, "64M"]);
        sh(dir, &args);
        edit_rich(dir, &raw);
        let checked = check_files(dir, &raw, &raw);
        assert!(checked > 60, "{raw}: only {checked} inodes checked");
        assert!(super::trait_walk::check(dir, &raw, &raw) > 60, "{raw}");
    }
    // Through a thin overlay: the overlay's edits, and --layer 0 the base.
    sh(
        dir,
        &[
            "qemu-img",
            "convert",
            "-O",
            "qcow2",
            "ext4.raw",
            "base.qcow2",
        ],
    );
    std::fs::copy(dir.join("ext4.raw"), dir.join("edit.raw")).unwrap();
    debugfs_w(
        dir,
        "edit.raw",
        "rm /tiny\nmkdir /added\nwrite /etc/hostname /added/hostname\n",
    );
    thin_overlay(
        dir,
        "top.qcow2",
        "base.qcow2",
        "qcow2",
        &dir.join("edit.raw"),
        "",
        false,
    );
    assert!(check_files(dir, "top.qcow2", "edit.raw") > 60);
    let base_ls = layerscope(dir, &["ls", "top.qcow2", "--layer", "0"])
        .ok()
        .text();
    assert!(
        base_ls.lines().any(|l| l == "tiny") && !base_ls.lines().any(|l| l == "added"),
        "{base_ls}"
    );
    let top_ls = layerscope(dir, &["ls", "top.qcow2"]).ok().text();
    assert!(
        !top_ls.lines().any(|l| l == "tiny") && top_ls.lines().any(|l| l == "added"),
        "{top_ls}"
    );
    // Terminal safety: the control character in a name is escaped.
    assert!(
        top_ls.contains("ctl\\x1b[31mname") && !top_ls.contains('\x1b'),
        "{top_ls}"
    );
}

#[test]
fn inline_data_files_directories_and_symlinks_equal_debugfs() {
    if !tools() || !need("debugfs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let tree = dir.join("tree");
    // Sizes around the 60 bytes of i_block and the room left in the inode.
    for (i, size) in (0..=200).step_by(7).chain([59, 60, 61, 3000]).enumerate() {
        let body: Vec<u8> = (0..size).map(|j| (i * 7 + j * 13) as u8).collect();
        let sub = tree.join(format!("d{}", i % 3));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("f{i}-{size}")), body).unwrap();
    }
    // Directories whose entries fit in i_block, and spill into system.data.
    for n in [1, 3, 5, 8] {
        let sub = tree.join(format!("dir{n}"));
        std::fs::create_dir_all(&sub).unwrap();
        for i in 0..n {
            std::fs::write(sub.join(format!("name-{i}")), b"").unwrap();
        }
    }
    std::os::unix::fs::symlink("d0/f0-0", tree.join("short")).unwrap();
    std::os::unix::fs::symlink("x".repeat(90), tree.join("long")).unwrap();
    let raw = "inline.raw";
    sh(
        dir,
        &[
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext4",
            "-O",
            "inline_data",
            "-d",
            tree.to_str().unwrap(),
            raw,
            "16M",
        ],
    );
    let checked = check_files(dir, raw, raw);
    assert!(checked > 40, "only {checked} inodes checked");
    assert!(super::trait_walk::check(dir, raw, raw) > 40);
    // And each file equals its source.
    for sub in ["d0", "d1", "d2"] {
        for e in std::fs::read_dir(tree.join(sub)).unwrap() {
            let e = e.unwrap();
            let path = format!("/{sub}/{}", e.file_name().to_str().unwrap());
            let ours = layerscope(dir, &["cat", raw, &path]).ok().stdout;
            assert!(ours == std::fs::read(e.path()).unwrap(), "{path}");
        }
    }
    // They really are inline (mke2fs moves a directory to a block once
    // i_block is full; kernel-made ones spilling into system.data are in
    // the corpus test below).
    for path in ["/dir3", "/d0/f3-21", "/d1/f13-91"] {
        let s = layerscope(dir, &["stat", "--json", raw, path]).ok().json();
        assert!(
            s["flag_names"]
                .as_array()
                .unwrap()
                .contains(&"inline_data".into()),
            "{path}: {s}"
        );
    }
}

#[test]
fn htree_directory_of_two_levels() {
    if !tools() || !need("debugfs") || !need("e2fsck") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let big = dir.join("tree/big");
    std::fs::create_dir_all(&big).unwrap();
    // 2,001 names of 136 bytes fill over 123 leaves of 1 KiB, more than
    // the root holds: e2fsck -D builds an index of two levels. (10,001
    // short names made the same shape, but mke2fs -d inserts into a
    // linear directory in quadratic time: 23 s of the test's CPU.)
    let long = "n".repeat(110);
    for i in 0..2_001 {
        std::fs::write(big.join(format!("file-with-a-{long}-{i:06}")), b"").unwrap();
    }
    let raw = "htree.raw";
    sh(
        dir,
        &[
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext4",
            "-b",
            "1024",
            "-d",
            dir.join("tree").to_str().unwrap(),
            raw,
            "64M",
        ],
    );
    // mke2fs -d writes linear directories; e2fsck -D indexes them.
    let out = std::process::Command::new("e2fsck")
        .args(["-fyD", raw])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.code().unwrap() <= 1, "e2fsck failed");
    let s = layerscope(dir, &["stat", "--json", raw, "/big"])
        .ok()
        .json();
    let ino = s["inode"].as_u64().unwrap();
    assert!(s["flag_names"]
        .as_array()
        .unwrap()
        .contains(&"index".into()));
    assert_eq!(s["problems"], Value::Array(Vec::new()));
    check_ls(dir, raw, raw, ino);
    check_stat(dir, raw, raw, ino);
    // The index equals debugfs htree's: the counts, (hash, block) entries
    // and index checksums of the root and every inner node.
    let text = debugfs(dir, raw, "htree /big");
    let mut counts: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("Number of entries (count): "))
        .map(|n| n.trim().parse().unwrap())
        .collect();
    let mut theirs: Vec<(u64, u64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("Entry #"))
        .map(|l| {
            let (_, rest) = l.split_once("Hash 0x").unwrap();
            let (hash, block) = rest.split_once(", block ").unwrap();
            (
                u64::from_str_radix(&hash[..8], 16).unwrap(),
                block.trim().parse().unwrap(),
            )
        })
        .collect();
    theirs.sort_unstable();
    theirs.dedup();
    let mut csums: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("Checksum: "))
        .map(|c| c.trim().to_owned())
        .collect();
    let h = &s["htree"];
    let nodes: Vec<&Value> = std::iter::once(&h["root"])
        .chain(h["nodes"].as_array().unwrap().iter().map(|n| &n[1]))
        .collect();
    assert!(h["root"]["indirect_levels"].as_u64().unwrap() >= 1, "{h}");
    let mut our_counts: Vec<u64> = nodes.iter().map(|n| n["count"].as_u64().unwrap()).collect();
    let mut ours: Vec<(u64, u64)> = nodes
        .iter()
        .flat_map(|n| n["entries"].as_array().unwrap().iter())
        .map(|e| (e[0].as_u64().unwrap(), e[1].as_u64().unwrap()))
        .collect();
    ours.sort_unstable();
    ours.dedup();
    let mut our_csums: Vec<String> = nodes
        .iter()
        .map(|n| {
            assert_eq!(n["checksum"]["stored"], n["checksum"]["computed"]);
            format!("{:#010x}", n["checksum"]["stored"].as_u64().unwrap())
        })
        .collect();
    for v in [&mut counts, &mut our_counts] {
        v.sort_unstable();
    }
    csums.sort();
    our_csums.sort();
    assert_eq!(our_counts, counts);
    assert_eq!(ours, theirs);
    assert_eq!(our_csums, csums);
    // Every name is listed once, and found by lookup.
    let listing = layerscope(dir, &["ls", raw, "/big"]).ok().text();
    assert_eq!(listing.lines().count(), 2_003);
    let c = layerscope(
        dir,
        &[
            "stat",
            "--json",
            raw,
            &format!("/big/file-with-a-{long}-001000"),
        ],
    )
    .ok()
    .json();
    assert_eq!(c["size"], 0);
}

/// Inline data the kernel wrote (e2fsprogs' d_inline_dump image): a
/// directory and a symlink continued in the system.data attribute.
#[test]
fn kernel_made_inline_data_equals_debugfs() {
    let Some(corpus) = corpus() else { return };
    if !need("debugfs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let mut gz = flate2::read::GzDecoder::new(
        std::fs::File::open(corpus.join("e2fsprogs/d_inline_dump.img.gz")).unwrap(),
    );
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut gz, &mut bytes).unwrap();
    std::fs::write(dir.join("inline.img"), bytes).unwrap();
    let checked = check_files(dir, "inline.img", "inline.img");
    assert!(checked >= 8, "only {checked} inodes checked");
    let s = layerscope(dir, &["stat", "--json", "inline.img", "/dir"])
        .ok()
        .json();
    assert_eq!(s["inline_data_size"], 132);
    let ls = layerscope(dir, &["ls", "inline.img", "/dir"]).ok().text();
    assert!(ls.contains("zzzzzzzzzzzzzzzzzzzz"), "{ls}");
}
