//! Deep extent trees and damaged structures on real filesystems: checksum
//! mismatches are shown and never fatal; cycles, out-of-range pointers and
//! broken directory entries are named (structure, field, offset,
//! expectation) while the rest is still read.
use std::path::Path;

use serde_json::Value;

use super::files::{check_content, check_stat};
use super::tools;
use crate::util::*;

/// A file of 880 one-block fragments on a 1 KiB filesystem: an extent tree
/// of depth 2 (the root holds 4 entries, a node 84).
fn fragmented(dir: &Path) -> (String, Vec<u8>) {
    let raw = "frag.raw".to_owned();
    sh(
        dir,
        &[
            "mke2fs", "-q", "-F", "-t", "ext4", "-b", "1024", "-N", "4096", &raw, "8M",
        ],
    );
    let one = dir.join("one");
    std::fs::write(&one, b"x").unwrap();
    let body: Vec<u8> = (0..900_000u32).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(dir.join("body"), &body).unwrap();
    let mut script = String::new();
    for i in 0..2000 {
        script += &format!("write {} f{i:04}\n", one.display());
    }
    for i in (0..2000).step_by(2) {
        script += &format!("rm f{i:04}\n");
    }
    script += &format!("write {} frag\n", dir.join("body").display());
    debugfs_w(dir, &raw, &script);
    (raw, body)
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

/// The runs of a file (`stat --json`).
fn runs(dir: &Path, image: &str, path: &str) -> Vec<Value> {
    layerscope(dir, &["stat", "--json", image, path])
        .ok()
        .json()["runs"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn deep_extent_trees_and_damaged_maps() {
    if !tools() || !need("debugfs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (raw, body) = fragmented(dir);
    let ino: u64 = layerscope(dir, &["stat", "--json", &raw, "/frag"])
        .ok()
        .json()["inode"]
        .as_u64()
        .unwrap();
    check_stat(dir, &raw, &raw, ino);
    check_content(dir, &raw, &raw, ino, "frag");
    let r = runs(dir, &raw, "/frag");
    let level1: Vec<u64> = r
        .iter()
        .filter(|r| r["meta"] == true && r["level"] == 1)
        .map(|r| r["physical"].as_u64().unwrap())
        .collect();
    assert!(level1.len() > 4, "not a depth-2 tree: {r:?}");
    assert!(r.iter().filter(|r| r["meta"] == false).count() > 336);

    // A leaf's checksum damaged: shown, and the content is still all there.
    let leaf = level1[0];
    let bad = dir.join("bad-csum.raw");
    std::fs::copy(dir.join(&raw), &bad).unwrap();
    patch(&bad, leaf * 1024 + 12 + 84 * 12, &[0xde, 0xad]);
    let run = layerscope(dir, &["cat", "bad-csum.raw", "/frag"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout == body);
    assert!(
        run.stderr.contains("warning: corrupt extent node")
            && run.stderr.contains("et_checksum")
            && run.stderr.contains("does not match"),
        "{}",
        run.stderr
    );
    let s = layerscope(dir, &["stat", "bad-csum.raw", "/frag"])
        .ok()
        .text();
    assert!(s.contains("problem: corrupt extent node at 0x"), "{s}");

    // An index entry pointing to its own node: a cycle, reported, no hang;
    // the rest of the file is still written.
    let etb0 = r
        .iter()
        .find(|r| r["meta"] == true && r["level"] == 0)
        .unwrap()["physical"]
        .as_u64()
        .unwrap();
    let cyc = dir.join("cycle.raw");
    std::fs::copy(dir.join(&raw), &cyc).unwrap();
    patch(
        &cyc,
        etb0 * 1024 + 12 + 12 + 4,
        &(etb0 as u32).to_le_bytes(),
    );
    let run = layerscope(dir, &["cat", "cycle.raw", "/frag"]);
    assert_eq!(run.code, 1);
    assert_eq!(run.stdout.len(), body.len());
    assert!(
        run.stderr.contains("ei_leaf_lo") && run.stderr.contains("(a cycle)"),
        "{}",
        run.stderr
    );
    // A leaf extent pointing past the end of the filesystem.
    let far = dir.join("far.raw");
    std::fs::copy(dir.join(&raw), &far).unwrap();
    patch(&far, leaf * 1024 + 12 + 8, &0x7fff_0000u32.to_le_bytes());
    let run = layerscope(dir, &["blocks", "far.raw", "/frag"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("ee_start_lo") && run.stderr.contains("expected inside 1..8192"),
        "{}",
        run.stderr
    );
}

#[test]
fn warnings_are_shown_not_fatal() {
    if !tools() || !need("debugfs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let tree = dir.join("tree");
    make_tree(&tree, 30);
    let raw = "csum.raw";
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
            tree.to_str().unwrap(),
            raw,
            "32M",
        ],
    );
    // The inode checksum.
    debugfs_w(dir, raw, "sif /hello.txt checksum 0x1234\n");
    let s = layerscope(dir, &["stat", raw, "/hello.txt"]).ok().text();
    assert!(
        s.contains("problem: corrupt inode at 0x") && s.contains("i_checksum_lo: checksum 0x"),
        "{s}"
    );
    assert_eq!(
        layerscope(dir, &["cat", raw, "/hello.txt"]).ok().stdout,
        b"hello from the base layer\n"
    );
    // A directory block's tail checksum.
    let d0 = runs(dir, raw, "/d0");
    let block = d0[0]["physical"].as_u64().unwrap();
    patch(&dir.join(raw), block * 1024 + 1020, &[1, 2, 3, 4]);
    let ls = layerscope(dir, &["ls", raw, "/d0"]).ok().text();
    assert!(ls.lines().any(|l| l == "s0"), "{ls}");
    assert!(
        ls.contains(&format!(
            "error: corrupt directory block at {:#x}: det_checksum",
            block * 1024 + 1020
        )),
        "{ls}"
    );
    // A block bitmap.
    let groups = layerscope(dir, &["groups", "--json", raw]).ok().json();
    let bitmap = groups[0]["block_bitmap"].as_u64().unwrap();
    assert_eq!(groups[0]["block_bitmap_csum_ok"], true);
    patch(&dir.join(raw), bitmap * 1024 + 1000, &[0x55]);
    let groups = layerscope(dir, &["groups", "--json", raw]).ok().json();
    assert_eq!(groups[0]["block_bitmap_csum_ok"], false);
    let text = layerscope(dir, &["groups", raw]).ok().text();
    assert!(
        text.contains("block bitmap csum 0x") && text.contains("BAD"),
        "{text}"
    );
}

#[test]
fn damaged_directories_and_indirect_cycles() {
    if !tools() || !need("debugfs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let tree = dir.join("tree");
    make_tree(&tree, 12);
    let body: Vec<u8> = (0..400_000u32).map(|i| (i % 249) as u8).collect();
    std::fs::write(tree.join("big.bin"), &body).unwrap();
    let raw = "ext2.raw";
    sh(
        dir,
        &[
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext2",
            "-b",
            "1024",
            "-d",
            tree.to_str().unwrap(),
            raw,
            "16M",
        ],
    );
    // The double indirect block lists itself.
    let r = runs(dir, raw, "/big.bin");
    let dind = r.iter().find(|r| r["level"] == 2).unwrap()["physical"]
        .as_u64()
        .unwrap();
    patch(&dir.join(raw), dind * 1024, &(dind as u32).to_le_bytes());
    let run = layerscope(dir, &["cat", raw, "/big.bin"]);
    assert_eq!(run.code, 1);
    assert_eq!(run.stdout.len(), body.len());
    assert_eq!(run.stdout[..12 * 1024], body[..12 * 1024]);
    assert!(
        run.stderr
            .contains(&format!("corrupt block map at {:#x}", dind * 1024))
            && run.stderr.contains("(a cycle)"),
        "{}",
        run.stderr
    );
    // A zero record length in a directory block: the entries before it are
    // listed, the damage is named, listing goes on.
    let d0 = runs(dir, raw, "/d0");
    let block = d0[0]["physical"].as_u64().unwrap();
    patch(&dir.join(raw), block * 1024 + 24 + 4, &[0, 0]);
    let run = layerscope(dir, &["ls", "-R", raw, "/"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let text = run.text();
    assert!(
        text.contains(&format!(
            "error: corrupt directory entry at {:#x}: rec_len: rec_len 0",
            block * 1024 + 24
        )),
        "{text}"
    );
    assert!(text.contains("/d1/s1:"), "{text}");
}

/// `ls -R` past damaged directories: an entry typed as a directory whose
/// inode (changed by debugfs) is a regular file, and a directory whose
/// extent header is broken, are each reported with the inode debugfs
/// names, and every other directory is still listed as debugfs lists it.
#[test]
fn recursive_listing_goes_on_past_damaged_directories() {
    if !tools() || !need("debugfs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    mkfs(dir, "t", "32M", 24);
    let raw = "t.raw";
    debugfs_w(dir, raw, "sif /d1 mode 0100644\nsif /d3 block[0] 0\n");
    // debugfs's view: the entries and their inodes.
    let ino = |name: &str| -> String {
        super::files::debugfs(dir, raw, &format!("stat /{name}"))
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_owned()
    };
    let (d1, d3) = (ino("d1"), ino("d3"));
    let types = super::files::debugfs(dir, raw, "ls -l /");
    assert!(
        types
            .lines()
            .any(|l| l.contains(" 100644 (2)") && l.ends_with("d1")),
        "{types}"
    );
    let run = layerscope(dir, &["ls", "-R", raw, "/"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let text = run.text();
    assert!(
        text.contains(&format!(
            "error: /d1: the entry says directory, inode {d1} is a regular"
        )),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("error: /d3: ") && l.contains("extent")),
        "{text}"
    );
    assert!(!text.contains(&format!("inode {d3} is a")), "{text}");
    // Every other directory is listed, with debugfs's names.
    for sub in ["d0/s0", "d2/s1", "d4/s2", "d6/s0"] {
        let theirs: Vec<String> = super::files::debugfs(dir, raw, &format!("ls /{sub}"))
            .split_whitespace()
            .filter(|w| w.ends_with(".bin") || *w == "." || *w == "..")
            .map(str::to_owned)
            .collect();
        let header = format!("\n/{sub}:\n");
        let at = text
            .find(&header)
            .unwrap_or_else(|| panic!("no /{sub}: {text}"));
        let ours: Vec<String> = text[at + header.len()..]
            .lines()
            .take_while(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        assert!(!theirs.is_empty());
        assert_eq!(ours, theirs, "/{sub}");
    }
}

/// A directory loop (a second entry for a directory, below it, made with
/// debugfs `link`): `ls -R` lists each directory once, names the loop
/// with the inode debugfs reports, and ends; `--json` too.
#[test]
fn directory_loops_are_named_and_listing_ends() {
    if !tools() || !need("debugfs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    mkfs(dir, "t", "32M", 12);
    let raw = "t.raw";
    debugfs_w(dir, raw, "link /d0 /d0/s0/up\nlink / /d1/root\n");
    let ino = |path: &str| -> u64 {
        super::files::debugfs(dir, raw, &format!("stat {path}"))
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(ino("/d0/s0/up"), ino("/d0"));
    let run = layerscope(dir, &["ls", "-R", raw, "/"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let text = run.text();
    for (path, target) in [("/d0/s0/up", "/d0"), ("/d1/root", "/")] {
        assert!(
            text.contains(&format!(
                "error: {path}: directory inode {} already listed (a loop)",
                ino(target)
            )),
            "{text}"
        );
    }
    assert_eq!(text.matches("\n/d0/s1:\n").count(), 1, "{text}");
    let json = layerscope(dir, &["ls", "-R", "--json", raw, "/"])
        .ok()
        .json();
    let errors = json["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{errors:?}");
}

/// A directory whose map lists its blocks again and again (three extents
/// over the same blocks, written with debugfs; a small filesystem can make
/// a listing of millions of entries this way): `ls` lists each entry once,
/// names each repeated block, and (`ls -R --json` too) streams what it
/// reads instead of holding the directory.
#[test]
fn repeated_directory_blocks_are_listed_once() {
    if !tools() || !need("debugfs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("rep")).unwrap();
    std::fs::write(tree.join("one"), b"1").unwrap();
    let names: Vec<String> = (0..60)
        .map(|i| format!("{i:03}{}", "x".repeat(252)))
        .collect();
    for n in &names {
        std::fs::hard_link(tree.join("one"), tree.join("rep").join(n)).unwrap();
    }
    let raw = "rep.raw";
    sh(
        dir,
        &[
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext4",
            "-b",
            "4096",
            "-d",
            tree.to_str().unwrap(),
            raw,
            "64M",
        ],
    );
    let r = runs(dir, raw, "/rep");
    assert_eq!(r.len(), 1, "{r:?}");
    let (p, n) = (
        r[0]["physical"].as_u64().unwrap(),
        r[0]["len"].as_u64().unwrap(),
    );
    assert!(n >= 4, "{r:?}");
    // The root in i_block: a header (magic, 3 entries of 4, depth 0), then
    // three extents mapping logical k*n.. to the same n blocks (debugfs
    // names i_block's last three words IND, DIND, TIND: left alone).
    let mut cmds = format!(
        "sif /rep block[0] {:#x}\nsif /rep block[1] 4\nsif /rep block[2] 0\n",
        0xf30a | 3 << 16
    );
    for k in 0..3u64 {
        cmds += &format!(
            "sif /rep block[{}] {}\nsif /rep block[{}] {n}\nsif /rep block[{}] {p}\n",
            3 + 3 * k,
            k * n,
            4 + 3 * k,
            5 + 3 * k
        );
    }
    cmds += &format!("sif /rep size {}\n", 3 * n * 4096);
    debugfs_w(dir, raw, &cmds);
    let run = layerscope(dir, &["ls", raw, "/rep"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let text = run.text();
    let listed: Vec<&str> = text.lines().filter(|l| l.len() == 255).collect();
    let mut sorted = listed.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(listed.len(), names.len(), "{text}");
    assert_eq!(sorted.len(), names.len(), "{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("is mapped again"))
            .count() as u64,
        2 * n,
        "{text}"
    );
    let json = layerscope(dir, &["ls", "-R", "--json", raw, "/rep"])
        .ok()
        .json();
    let entries = json["entries"].as_array().unwrap();
    assert_eq!(
        entries
            .iter()
            .filter(|e| e["name"].as_str().unwrap().len() == 255)
            .count(),
        names.len()
    );
}
