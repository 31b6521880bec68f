//! Layer diff and blame on chains whose overlays make known edits with
//! debugfs. Three oracles: the edits the test made, `diff --full` (both
//! trees walked and compared), and debugfs itself (`rdump` of each flat
//! layer, compared path by path: added, deleted, content, mode).
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

/// The base tree: one file or directory per kind of edit.
pub(crate) fn base_tree(root: &Path) {
    let w = |p: &str, body: &[u8]| {
        let path = root.join(p.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    };
    let pattern = |n: usize, seed: usize| -> Vec<u8> {
        (0..n).map(|j| ((j * 7 + seed * 13) % 251) as u8).collect()
    };
    w("/etc/hosts", b"127.0.0.1 localhost\n");
    w("/etc/keep.conf", b"never touched\n");
    w("/etc/mode.conf", b"chmod only\n");
    w("/data/big.bin", &pattern(300_000, 1));
    w("/data/append.log", &pattern(5000, 2));
    w("/data/trunc.bin", &pattern(70_000, 3));
    w("/data/whole.bin", &pattern(20_000, 4));
    w("/docs/old-name.txt", b"renamed, same inode\n");
    w("/docs/shared.txt", b"gets a second name\n");
    std::fs::create_dir_all(root.join("docs/archive")).unwrap();
    w("/gone/a.txt", b"a");
    w("/gone/sub/b.txt", b"b");
    w("/gone/sub/c.txt", b"c");
    w("/tmp/delete-me.txt", b"bye\n");
    std::fs::create_dir_all(root.join("links")).unwrap();
    std::os::unix::fs::symlink("../etc/hosts", root.join("links/short")).unwrap();
    std::os::unix::fs::symlink("x".repeat(100), root.join("links/long")).unwrap();
    for i in 0..40 {
        w(&format!("/bulk/f{i:03}"), &pattern(3000 + i * 100, i));
    }
}

/// The edits of overlay 1, and what they must show as: (letter, path).
pub(crate) fn edits(dir: &Path) -> (String, BTreeSet<(char, String)>) {
    let host = |name: &str, body: Vec<u8>| {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let mut cmds = String::new();
    let mut expect = BTreeSet::new();
    let mut e = |c: char, p: &str| {
        expect.insert((c, p.to_owned()));
    };
    // Added first, so no freed inode is reused by a new name.
    cmds += &format!("write {} /added.txt\n", host("added", b"new\n".to_vec()));
    e('A', "/added.txt");
    cmds += "mkdir /many\n";
    e('A', "/many");
    let one = host("many", vec![b'm'; 1500]);
    for i in 0..120 {
        cmds += &format!("write {one} /many/n{i:03}\n");
        e('A', &format!("/many/n{i:03}"));
    }
    // Overwrite whole, and append: the file is replaced by a new version
    // in the same inode (the freed inode is the lowest free one).
    cmds += "rm /data/whole.bin\n";
    cmds += &format!(
        "write {} /data/whole.bin\n",
        host("whole", vec![b'w'; 20_000])
    );
    e('M', "/data/whole.bin");
    let mut longer: Vec<u8> = (0..5000).map(|j| ((j * 7 + 2 * 13) % 251) as u8).collect();
    longer.extend_from_slice(&[b'+'; 3000]);
    cmds += "rm /data/append.log\n";
    cmds += &format!("write {} /data/append.log\n", host("append", longer));
    e('M', "/data/append.log");
    // One byte, in place: the inode does not change.
    cmds += "zap_block -f /data/big.bin -o 100 -l 1 -p 65 3\n";
    e('M', "/data/big.bin");
    // Truncate.
    cmds += "punch /data/trunc.bin 1\nsif /data/trunc.bin size 4096\n";
    e('M', "/data/trunc.bin");
    // chmod only.
    cmds += "sif /etc/mode.conf mode 0100600\n";
    e('M', "/etc/mode.conf");
    // Rename (same inode, new path).
    cmds += "ln /docs/old-name.txt /docs/archive/new-name.txt\nunlink /docs/old-name.txt\n";
    e('R', "/docs/archive/new-name.txt");
    // Hard link: a new name, and the link count of the file.
    cmds += "ln /docs/shared.txt /etc/shared-link\nsif /docs/shared.txt links_count 2\n";
    e('A', "/etc/shared-link");
    e('M', "/docs/shared.txt");
    // Deleted file and deleted tree.
    cmds += "rm /tmp/delete-me.txt\n";
    e('D', "/tmp/delete-me.txt");
    cmds +=
        "rm /gone/sub/b.txt\nrm /gone/sub/c.txt\nrmdir /gone/sub\nrm /gone/a.txt\nrmdir /gone\n";
    for p in [
        "/gone",
        "/gone/a.txt",
        "/gone/sub",
        "/gone/sub/b.txt",
        "/gone/sub/c.txt",
    ] {
        e('D', p);
    }
    (cmds, expect)
}

/// base.qcow2 <- l1.qcow2 (the edits) <- l2.qcow2 (copy-up only: clusters
/// rewritten with the bytes they had). Returns the expected changes of l1.
pub(crate) fn build(dir: &Path) -> BTreeSet<(char, String)> {
    build_with(dir, &["-t", "ext4", "-b", "4096"])
}

fn build_with(dir: &Path, mkfs: &[&str]) -> BTreeSet<(char, String)> {
    let tree = dir.join("tree");
    base_tree(&tree);
    let mut args = vec!["mke2fs", "-q"];
    args.extend(mkfs);
    args.extend([
        "-E",
        "root_owner=0:0",
        "-d",
        tree.to_str().unwrap(),
        "flat0.raw",
        "32M",
    ]);
    sh(dir, &args);
    sh(
        dir,
        &[
            "qemu-img",
            "convert",
            "-O",
            "qcow2",
            "flat0.raw",
            "base.qcow2",
        ],
    );
    std::fs::copy(dir.join("flat0.raw"), dir.join("flat1.raw")).unwrap();
    let (cmds, expect) = edits(dir);
    debugfs_w(dir, "flat1.raw", &cmds);
    thin_overlay(
        dir,
        "l1.qcow2",
        "base.qcow2",
        "qcow2",
        &dir.join("flat1.raw"),
        "",
        false,
    );
    sh(
        dir,
        &[
            "qemu-img", "create", "-q", "-f", "qcow2", "-b", "l1.qcow2", "-F", "qcow2", "l2.qcow2",
        ],
    );
    let flat1 = std::fs::read(dir.join("flat1.raw")).unwrap();
    let mut writes = Vec::new();
    for (k, off) in [0u64, 1 << 20, 3 << 20, 5 << 20, 9 << 20]
        .iter()
        .enumerate()
    {
        let piece = dir.join(format!("same{k}"));
        std::fs::write(&piece, &flat1[*off as usize..*off as usize + 65536]).unwrap();
        writes.push(format!(
            "write -q -s {} {off} 65536",
            piece.to_str().unwrap()
        ));
    }
    let writes: Vec<&str> = writes.iter().map(String::as_str).collect();
    qemu_io(dir, "l2.qcow2", &writes);
    expect
}

pub(crate) fn changes(v: &Value) -> BTreeSet<(char, String)> {
    v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let letter = match c["change"].as_str().unwrap() {
                "added" => 'A',
                "deleted" => 'D',
                "modified" => 'M',
                "moved" => 'R',
                other => panic!("change {other}"),
            };
            (letter, c["path"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// What debugfs shows changed between two flat images: `rdump` both, then
/// compare paths, bytes, symlink targets and modes.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    added: BTreeSet<String>,
    deleted: BTreeSet<String>,
    content: BTreeSet<String>,
    mode: BTreeSet<String>,
}

pub(crate) fn dump(dir: &Path, image: &str, into: &str) -> BTreeMap<String, (u32, Vec<u8>)> {
    let out = dir.join(into);
    std::fs::create_dir_all(&out).unwrap();
    sh(
        dir,
        &[
            "debugfs",
            "-R",
            &format!("rdump / {}", out.to_str().unwrap()),
            image,
        ],
    );
    let mut files = BTreeMap::new();
    let mut todo = vec![out.clone()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = format!("/{}", p.strip_prefix(&out).unwrap().to_str().unwrap());
            let m = std::fs::symlink_metadata(&p).unwrap();
            let body = if m.file_type().is_symlink() {
                std::fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else if m.is_dir() {
                todo.push(p.clone());
                Vec::new()
            } else {
                std::fs::read(&p).unwrap()
            };
            files.insert(rel, (m.permissions().mode() & 0o7777, body));
        }
    }
    files
}

pub(crate) fn debugfs_seen(dir: &Path, old: &str, new: &str) -> Seen {
    let (a, b) = (
        dump(dir, old, &format!("{old}.d")),
        dump(dir, new, &format!("{new}.d")),
    );
    let mut s = Seen::default();
    for (p, (mode, body)) in &b {
        match a.get(p) {
            None => {
                s.added.insert(p.clone());
            }
            Some((m, old)) => {
                if old != body {
                    s.content.insert(p.clone());
                }
                if m != mode && !p.starts_with("/lost+found") {
                    s.mode.insert(p.clone());
                }
            }
        }
    }
    s.deleted = a.keys().filter(|p| !b.contains_key(*p)).cloned().collect();
    s
}

/// layerscope's diff in debugfs's terms: a move is a deletion and an
/// addition of a path.
pub(crate) fn as_seen(v: &Value) -> Seen {
    let mut s = Seen::default();
    for c in v["changes"].as_array().unwrap() {
        let path = c["path"].as_str().unwrap().to_owned();
        match c["change"].as_str().unwrap() {
            "added" => {
                s.added.insert(path.clone());
            }
            "deleted" => {
                s.deleted.insert(path.clone());
            }
            "moved" => {
                s.added.insert(path.clone());
                s.deleted.insert(c["from"].as_str().unwrap().to_owned());
            }
            _ => {}
        }
        if c["content"] == true && c["change"] != "moved" {
            s.content.insert(path.clone());
        }
        if c["metadata"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "mode")
        {
            s.mode.insert(path);
        }
    }
    s
}

#[test]
fn diff_reports_the_edits_made_and_equals_full_and_debugfs() {
    if !(need("qemu-img") && need("qemu-io") && need("mke2fs") && need("debugfs")) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    check_edits(tmp.path(), build(tmp.path()));
}

/// The same edits on ext2 with 1 KiB blocks (indirect maps, no flex_bg,
/// no extents) and ext3 with 2 KiB blocks and 128-byte inodes.
#[test]
fn diff_on_ext2_and_ext3() {
    if !(need("qemu-img") && need("qemu-io") && need("mke2fs") && need("debugfs")) {
        return;
    }
    for mkfs in [
        &["-t", "ext2", "-b", "1024"][..],
        &["-t", "ext3", "-b", "2048", "-I", "128"][..],
    ] {
        let tmp = tempfile::tempdir().unwrap();
        check_edits(tmp.path(), build_with(tmp.path(), mkfs));
    }
}

fn check_edits(dir: &Path, expect: BTreeSet<(char, String)>) {
    let quick = layerscope(
        dir,
        &["diff", "--json", "--from", "0", "--to", "1", "l2.qcow2"],
    )
    .ok();
    let full = layerscope(
        dir,
        &[
            "diff", "--json", "--full", "--from", "0", "--to", "1", "l2.qcow2",
        ],
    )
    .ok();
    let (q, f) = (quick.json(), full.json());
    assert_eq!(changes(&q), expect, "quick diff vs the edits made");
    assert_eq!(q["changes"], f["changes"], "quick diff vs --full");
    for mode in [&[][..], &["--no-expand"], &["--by-inode"]] {
        for json in [&["--json"][..], &[]] {
            let mut args = vec!["diff", "--from", "0", "--to", "1", "l2.qcow2"];
            args.extend(mode);
            args.extend(json);
            spilled_equals_unspilled(dir, &args);
        }
    }
    // The filesystem-independent path (what filesystems without a quick
    // diff get) finds the same, reading only what the overlay holds, and
    // says it compared trees.
    let trees = layerscope(
        dir,
        &[
            "diff", "--json", "--trees", "--from", "0", "--to", "1", "l2.qcow2",
        ],
    )
    .ok()
    .json();
    assert_eq!(trees["method"], "trees");
    assert_eq!(trees["stats"]["trees_compared"], true);
    assert_eq!(q["changes"], trees["changes"], "quick diff vs --trees");
    let text = layerscope(
        dir,
        &[
            "diff", "--trees", "--full", "--from", "0", "--to", "1", "l2.qcow2",
        ],
    )
    .ok()
    .text();
    assert!(text.contains("; trees compared (--trees): "), "{text}");
    // Content and metadata in detail.
    let by_path = |p: &str| -> Value {
        q["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["path"] == p)
            .cloned()
            .unwrap_or_else(|| panic!("{p} not in {q}"))
    };
    for p in [
        "/data/big.bin",
        "/data/whole.bin",
        "/data/append.log",
        "/data/trunc.bin",
    ] {
        assert_eq!(by_path(p)["content"], true, "{p}");
    }
    assert_eq!(by_path("/etc/mode.conf")["content"], false);
    assert_eq!(
        by_path("/etc/mode.conf")["metadata"],
        serde_json::json!(["mode"])
    );
    assert_eq!(
        by_path("/docs/shared.txt")["metadata"],
        serde_json::json!(["links"])
    );
    let moved = by_path("/docs/archive/new-name.txt");
    assert_eq!(moved["from"], "/docs/old-name.txt");
    assert_eq!(
        (moved["content"].clone(), moved["metadata"].clone()),
        (false.into(), serde_json::json!([]))
    );
    // It followed the overlay: the one-byte edit was found through the
    // inode tables, and far fewer inodes were compared than exist.
    assert!(q["stats"]["changed_blocks"].as_u64().unwrap() > 0);
    assert!(
        q["stats"]["inodes_compared"].as_u64().unwrap()
            < f["stats"]["inodes_compared"].as_u64().unwrap()
    );
    // debugfs's view of the two flat layers.
    let seen = debugfs_seen(dir, "flat0.raw", "flat1.raw");
    assert_eq!(as_seen(&q), seen, "quick diff vs rdump of both layers");
    // The text form says the same.
    let text = layerscope(dir, &["diff", "--from", "0", "--to", "1", "l2.qcow2"])
        .ok()
        .text();
    assert!(
        text.contains("R  regular    /docs/old-name.txt -> /docs/archive/new-name.txt"),
        "{text}"
    );
    assert!(
        text.contains("M  regular    /etc/mode.conf  (mode)"),
        "{text}"
    );
}

/// `layerscope ARGS` (a quick diff) with three inodes per batch and every
/// change in a run of its own, merged two at a time, prints byte for
/// byte what it prints in one piece; the temporary file is gone after.
pub(crate) fn spilled_equals_unspilled(dir: &Path, args: &[&str]) {
    let whole = layerscope(dir, args).ok();
    let tmp = tempfile::tempdir().unwrap();
    let spill = std::path::PathBuf::from("3,1,2");
    let spilled = layerscope_env(
        dir,
        args,
        &[("LAYERSCOPE_DIFF_SPILL", &spill), ("TMPDIR", tmp.path())],
    )
    .ok();
    assert_eq!(
        String::from_utf8_lossy(&spilled.stdout),
        String::from_utf8_lossy(&whole.stdout),
        "{args:?}: spilled vs whole"
    );
    // It did spill (a run per change at least).
    let told = spilled
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("layerscope: spill: "))
        .unwrap_or_else(|| panic!("{args:?}: no spill line in {}", spilled.stderr));
    let runs: usize = told
        .split(", ")
        .nth(1)
        .and_then(|r| r.strip_suffix(" run(s)"))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("{told}"));
    let changes = if args.contains(&"--json") {
        whole.json()["changes"].as_array().unwrap().len()
    } else {
        let text = whole.text();
        let last = text.lines().last().unwrap_or_default().to_owned();
        last.split(' ').next().unwrap().parse().unwrap()
    };
    assert!(runs >= changes, "{args:?}: {told}, {changes} change(s)");
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "{args:?}: the temporary file is left"
    );
}

#[test]
fn copy_up_is_not_change_and_layers_compose() {
    if !(need("qemu-img") && need("qemu-io") && need("mke2fs") && need("debugfs")) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let expect = build(dir);
    // l2 rewrote clusters with their own bytes: nothing changed.
    let top = layerscope(dir, &["diff", "--json", "l2.qcow2"]).ok().json();
    assert_eq!(top["from"], 1);
    assert_eq!(top["changes"], serde_json::json!([]));
    assert_eq!(top["stats"]["changed_blocks"], 0);
    assert!(
        top["stats"]["copied_up_blocks"].as_u64().unwrap() >= 5 * 16,
        "{top}"
    );
    assert_eq!(
        top["stats"]["held_bytes"].as_u64().unwrap(),
        qemu_map(dir, "l2.qcow2")
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["depth"] == 0 && e["present"] == true)
            .map(|e| e["length"].as_u64().unwrap())
            .sum::<u64>()
    );
    // 0 -> 2 is 0 -> 1.
    let all = layerscope(dir, &["diff", "--json", "--from", "0", "l2.qcow2"])
        .ok()
        .json();
    assert_eq!(changes(&all), expect);
    // Identical layers, the other way round, and bad arguments.
    let bad = layerscope(dir, &["diff", "--from", "2", "--to", "1", "l2.qcow2"]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("--from 2 --to 1"), "{}", bad.stderr);
    let bad = layerscope(dir, &["diff", "--to", "7", "l2.qcow2"]);
    assert!(bad.stderr.contains("layers 0 to 2"), "{}", bad.stderr);
}

#[test]
fn blame_names_the_layer_of_each_change() {
    if !(need("qemu-img") && need("qemu-io") && need("mke2fs") && need("debugfs")) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    build(dir);
    let run = layerscope(dir, &["blame", "-R", "--json", "l2.qcow2", "/"]).ok();
    let all = run.json();
    let get = |p: &str| -> Value {
        all.as_array()
            .unwrap()
            .iter()
            .find(|b| b["path"] == p)
            .cloned()
            .unwrap_or_else(|| panic!("{p} not blamed"))
    };
    let layers = |b: &Value| {
        (
            b["content_layer"].as_u64().unwrap(),
            b["metadata_layer"].as_u64().unwrap(),
        )
    };
    assert_eq!(layers(&get("/etc/keep.conf")), (0, 0));
    assert_eq!(get("/etc/keep.conf")["created_layer"], 0);
    assert_eq!(layers(&get("/data/big.bin")), (1, 0));
    assert_eq!(layers(&get("/etc/mode.conf")), (0, 1));
    assert_eq!(layers(&get("/added.txt")), (1, 1));
    assert_eq!(get("/many/n007")["created_layer"], 1);
    // A directory's content is its entries.
    assert_eq!(layers(&get("/etc")).0, 1);
    assert_eq!(layers(&get("/data")).0, 0, "same names, same inodes");
    assert_eq!(layers(&get("/links")), (0, 0));
    // The shares add up to the file's blocks as debugfs lists them.
    for p in [
        "/data/big.bin",
        "/data/trunc.bin",
        "/bulk/f003",
        "/many/n001",
    ] {
        let blocks = sh(dir, &["debugfs", "-R", &format!("blocks {p}"), "flat1.raw"]).stdout;
        let n = String::from_utf8_lossy(&blocks).split_whitespace().count() as u64;
        let total: u64 = get(p)["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["bytes"].as_u64().unwrap())
            .sum();
        assert_eq!(total, n * 4096, "{p}");
    }
    // The one-byte edit: the overlay holds the whole cluster with that
    // block, so part of big.bin is served by layer 1, the rest by 0.
    let shares: Vec<u64> = get("/data/big.bin")["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["layer"].as_u64().unwrap())
        .collect();
    assert!(shares.contains(&1) && shares.contains(&0), "{shares:?}");
    // Every blamed layer agrees with the diffs of consecutive layers.
    let d01 = layerscope(
        dir,
        &["diff", "--json", "--from", "0", "--to", "1", "l2.qcow2"],
    )
    .ok()
    .json();
    for b in all.as_array().unwrap() {
        let p = b["path"].as_str().unwrap();
        let changed_in_1 = d01["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["path"] == p && (c["change"] == "added" || c["content"] == true));
        if b["type"] == "regular" && p != "/etc/shared-link" {
            assert_eq!(b["content_layer"] == 1, changed_in_1, "{p}: {b} vs {d01}");
        }
    }
    // The text form.
    let text = layerscope(dir, &["blame", "l2.qcow2", "/etc/mode.conf"])
        .ok()
        .text();
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .take(3)
            .eq(["0", "1", "base"]),
        "{text}"
    );
}

/// Damaged filesystems from the e2fsprogs corpus, each compared with a
/// copy that has garbage in a few places: the quick and full diffs end,
/// without a panic, within a time limit.
#[test]
fn corpus_bases_with_garbage_overlays() {
    use layerscope::block::raw::RawFile;
    use layerscope::block::storage::MemStorage;
    use layerscope::block::BlockSource;
    use layerscope::fs::ext::Ext4;
    let Some(corpus) = corpus() else { return };
    let dir = corpus.join("e2fsprogs");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.ends_with(".img.gz"))
        .collect();
    files.sort();
    let mut ran = 0;
    for file in files {
        let mut bytes = Vec::new();
        let gz = flate2::read::GzDecoder::new(std::fs::File::open(dir.join(&file)).unwrap());
        if gz.take(64 << 20).read_to_end(&mut bytes).is_err() || bytes.len() < 4096 {
            continue;
        }
        let mut changed = bytes.clone();
        let mut held = Vec::new();
        let mut x = bytes.len() as u64 ^ 0x9e37_79b9;
        for k in 0..12u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = 4096u64.min(bytes.len() as u64);
            // A few in the first 64 KiB (superblock, descriptors, early
            // inode tables), the rest anywhere.
            let span = if k < 4 { 65536 } else { bytes.len() as u64 };
            let at = (x % span.saturating_sub(len).max(1)) & !511;
            for b in &mut changed[at as usize..(at + len) as usize] {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                *b = (x >> 56) as u8;
            }
            held.push((at, len));
        }
        held.sort_unstable();
        let open = |b: Vec<u8>| -> Option<Ext4> {
            let src: Arc<dyn BlockSource> =
                Arc::new(RawFile::new(&file, Arc::new(MemStorage::new(b))));
            Ext4::open(src).ok()
        };
        let (Some(old), Some(new)) = (open(bytes), open(changed)) else {
            continue;
        };
        let (tx, rx) = mpsc::channel();
        let name = file.clone();
        std::thread::spawn(move || {
            let q = layerscope::diff::diff(&old, &new, &held, &layerscope::diff::Quiet);
            let f = layerscope::diff::diff_full(&old, &new, &layerscope::diff::Quiet);
            let t = layerscope::diff::tree::diff_trees(
                &old,
                &new,
                Some(&held),
                &layerscope::diff::Quiet,
            );
            let _ = tx.send((q.is_ok(), f.is_ok(), t.is_ok()));
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(_) => ran += 1,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("{name}: diff did not end in 60 s"),
            Err(e) => panic!("{name}: diff panicked ({e})"),
        }
    }
    assert!(ran >= 150, "only {ran} corpus images diffed");
}

/// The same chain inside a GPT partition: `diff --partition 1` reports
/// what the unpartitioned chain reports, and `blame` finds the file.
#[test]
fn diff_inside_a_partition() {
    if !(need("qemu-img") && need("qemu-io") && need("mke2fs") && need("debugfs") && need("sfdisk"))
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    build(dir);
    for (flat, disk) in [("flat0.raw", "disk0.raw"), ("flat1.raw", "disk1.raw")] {
        let mut bytes = vec![0u8; 1 << 20];
        bytes.extend(std::fs::read(dir.join(flat)).unwrap());
        bytes.resize(bytes.len() + (1 << 20), 0);
        std::fs::write(dir.join(disk), &bytes).unwrap();
        let mut sfdisk = std::process::Command::new("sfdisk")
            .args(["-q", disk])
            .current_dir(dir)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        sfdisk
            .stdin
            .take()
            .unwrap()
            .write_all(b"label: gpt\nunit: sectors\nstart=2048, size=65536, type=linux\n")
            .unwrap();
        assert!(sfdisk.wait().unwrap().success());
    }
    sh(
        dir,
        &[
            "qemu-img",
            "convert",
            "-O",
            "qcow2",
            "disk0.raw",
            "pbase.qcow2",
        ],
    );
    thin_overlay(
        dir,
        "ptop.qcow2",
        "pbase.qcow2",
        "qcow2",
        &dir.join("disk1.raw"),
        "",
        false,
    );
    let plain = layerscope(
        dir,
        &["diff", "--json", "--from", "0", "--to", "1", "l2.qcow2"],
    )
    .ok()
    .json();
    let part = layerscope(dir, &["diff", "--json", "--partition", "1", "ptop.qcow2"])
        .ok()
        .json();
    assert_eq!(part["changes"], plain["changes"]);
    // Without --partition the only ext4 partition is found.
    let found = layerscope(dir, &["diff", "--json", "ptop.qcow2"])
        .ok()
        .json();
    assert_eq!(found["changes"], plain["changes"]);
    let trees = layerscope(
        dir,
        &[
            "diff",
            "--json",
            "--trees",
            "--partition",
            "1",
            "ptop.qcow2",
        ],
    )
    .ok()
    .json();
    assert_eq!(trees["changes"], plain["changes"]);
    let b = layerscope(dir, &["blame", "--json", "ptop.qcow2", "/data/big.bin"])
        .ok()
        .json();
    assert_eq!(b[0]["content_layer"], 1);
}
