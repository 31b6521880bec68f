//! `layerscope check` against its oracles: `e2fsck -fn` on ext4 images
//! damaged one structure at a time with `debugfs -w` and `dd` (the
//! problems named must be e2fsck's, and the layer named must be the
//! overlay holding the damaged bytes), `qemu-img check` on a qcow2 layer
//! with a leaked cluster, and the e2fsprogs corpus (clean where e2fsck
//! -fn says clean).
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::util::*;

/// A problem as (kind, number): the inode, group or directory e2fsck
/// names (0 for whole-filesystem findings).
type Finding = (String, u64);

/// The number after `prefix` in `line`.
fn num_after(line: &str, prefix: &str) -> Option<u64> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The number in the last parenthesis before `marker`: e2fsck's `in /a
/// (12) has`.
fn dir_before(line: &str, marker: &str) -> Option<u64> {
    let head = &line[..line.find(marker)?];
    let open = head.rfind('(')?;
    num_after(&head[open..], "(")
}

/// What `e2fsck -fn` found, in the check's kinds (only the messages the
/// check has a kind for; the rest are not compared).
fn e2fsck_findings(text: &str) -> BTreeSet<Finding> {
    let mut out = BTreeSet::new();
    let mut add = |k: &str, n: Option<u64>| {
        if let Some(n) = n {
            out.insert((k.to_owned(), n));
        }
    };
    for line in text.lines() {
        if line.contains(" ref count is ") {
            add("link-count", num_after(line, "Inode "));
        }
        if line.contains("passes checks, but checksum does not match inode") {
            add("inode-checksum", num_after(line, "Inode "));
        }
        if line.starts_with("Unattached ") {
            add("unattached-inode", num_after(line, "inode "));
        }
        if line.starts_with("Block bitmap differences:") {
            add("block-bitmap", Some(0));
        }
        if line.starts_with("Inode bitmap differences:") {
            add("inode-bitmap", Some(0));
        }
        if line.starts_with("Free blocks count wrong for group #") {
            add("group-free-blocks", num_after(line, "#"));
        }
        if line.starts_with("Free inodes count wrong for group #") {
            add("group-free-inodes", num_after(line, "#"));
        }
        if line.starts_with("Directories count wrong for group #") {
            add("group-directories", num_after(line, "#"));
        }
        if line.starts_with("Group descriptor ") && line.contains(" checksum is ") {
            add("group-descriptor-checksum", num_after(line, "descriptor "));
        }
        if line.contains("has deleted/unused inode") {
            add("entry-unused-inode", dir_before(line, " has deleted"));
        }
        if line.starts_with("Unconnected directory inode ") {
            add("unconnected-directory", num_after(line, "inode "));
        }
        if line.starts_with("Multiply-claimed block(s) in inode ") {
            add("multiply-claimed", num_after(line, "inode "));
        }
        if line.contains("directory passes checks but fails checksum") {
            add("directory-checksum", num_after(line, "Directory inode "));
        }
        if line.contains("is in use, but has dtime set") {
            add("in-use-inode-dtime", num_after(line, "Inode "));
        }
        if line.contains("has an incorrect filetype") && !line.contains("should be 0)") {
            add("entry-filetype", dir_before(line, " has an incorrect"));
        }
        if line.starts_with("Deleted inode ") && line.contains("has zero dtime") {
            add("deleted-inode-zero-dtime", num_after(line, "inode "));
        }
        if line.contains("was part of the orphaned inode list") {
            add("orphan-list-inode", num_after(line, "Inode "));
        }
        if line.starts_with("Orphan file (inode ") && line.contains("is not clean") {
            add("orphan-file-block", num_after(line, "inode "));
        }
        for (text, kind) in [
            ("Failed to initialize orphan file", "orphan-file-init"),
            (
                "orphan_present is set but orphan file is clean",
                "orphan-present",
            ),
        ] {
            if line.contains(text) {
                add(kind, Some(0));
            }
        }
        // The journal, as e2fsck loads it.
        if line.starts_with("Superblock has an invalid journal") {
            add("journal-invalid", num_after(line, "inode "));
        }
        for (text, kind) in [
            ("Journal superblock is corrupt", "journal-superblock"),
            ("Journal version not supported", "journal-version"),
            ("unknown incompatible feature flag set", "journal-incompat"),
            ("unknown read-only feature flag set", "journal-ro-compat"),
            (
                "Found invalid V2 journal superblock fields",
                "journal-v2-fields",
            ),
            ("has multiple filesystem users", "journal-users"),
            (
                "needs_recovery flag is clear, but journal has data",
                "journal-has-data",
            ),
            (
                "has_journal flag is clear, but a journal is present",
                "journal-flag-clear",
            ),
            ("lacks LARGE_DIR flag", "large-dir-feature"),
            // e2fsck names inode 0 in this one.
            ("root node is invalid", "htree-root-invalid"),
        ] {
            if line.contains(text) {
                add(kind, Some(0));
            }
        }
        // Directory indexes: "HTREE directory inode N ..." (pass 1),
        // "Problem in HTREE directory inode N: ..." (pass 2).
        if line.contains("HTREE directory inode") && !line.contains("root node is invalid") {
            let n = num_after(line, "HTREE directory inode ");
            for (text, kind) in [
                ("has an invalid root node", "htree-bad-root"),
                ("unsupported hash version", "htree-hash-version"),
                ("incompatible htree root node flag", "htree-incompat"),
                ("which is too big", "htree-depth"),
                ("root node fails checksum", "htree-root-checksum"),
                ("internal node fails checksum", "htree-node-checksum"),
                ("has invalid limit", "htree-limit"),
                ("has invalid count", "htree-count"),
                ("bad block number", "htree-bad-block"),
                ("unordered hash table", "htree-hash-order"),
                ("has bad min hash", "htree-min-hash"),
                ("has bad max hash", "htree-max-hash"),
                ("not referenced", "htree-not-referenced"),
                ("referenced twice", "htree-referenced-twice"),
                ("has invalid depth", "htree-bad-depth"),
            ] {
                if line.contains(text) {
                    add(kind, n);
                }
            }
            if line.starts_with("Invalid HTREE directory inode") {
                add("htree-invalid", n);
            }
        }
    }
    out
}

/// The kinds [`e2fsck_findings`] knows.
const COMPARED: &[&str] = &[
    "link-count",
    "inode-checksum",
    "unattached-inode",
    "block-bitmap",
    "inode-bitmap",
    "group-free-blocks",
    "group-free-inodes",
    "group-directories",
    "group-descriptor-checksum",
    "entry-unused-inode",
    "unconnected-directory",
    "multiply-claimed",
    "directory-checksum",
    "in-use-inode-dtime",
    "entry-filetype",
    "deleted-inode-zero-dtime",
    "orphan-list-inode",
    "orphan-file-block",
    "orphan-file-init",
    "orphan-present",
    "journal-invalid",
    "journal-superblock",
    "journal-version",
    "journal-incompat",
    "journal-ro-compat",
    "journal-v2-fields",
    "journal-users",
    "journal-has-data",
    "journal-flag-clear",
    "large-dir-feature",
    "htree-root-invalid",
    "htree-bad-root",
    "htree-hash-version",
    "htree-incompat",
    "htree-depth",
    "htree-root-checksum",
    "htree-node-checksum",
    "htree-limit",
    "htree-count",
    "htree-bad-block",
    "htree-hash-order",
    "htree-min-hash",
    "htree-max-hash",
    "htree-not-referenced",
    "htree-referenced-twice",
    "htree-bad-depth",
    "htree-invalid",
];

/// Kinds e2fsck reports for the whole filesystem (compared as number 0).
const WHOLE: &[&str] = &[
    "orphan-file-init",
    "orphan-present",
    "journal-superblock",
    "journal-version",
    "journal-incompat",
    "journal-ro-compat",
    "journal-v2-fields",
    "journal-users",
    "journal-has-data",
    "journal-flag-clear",
    "large-dir-feature",
    "htree-root-invalid",
];

/// The check's findings from its JSON, and the layer of each.
fn our_findings(j: &Value) -> (BTreeSet<Finding>, Vec<(String, Option<u64>)>) {
    let mut set = BTreeSet::new();
    let mut layers = Vec::new();
    for p in j["filesystem"]["problems"]["list"].as_array().unwrap() {
        let kind = p["kind"].as_str().unwrap().to_owned();
        layers.push((kind.clone(), p["layer"].as_u64()));
        if !COMPARED.contains(&kind.as_str()) {
            continue;
        }
        let s = p["structure"].as_str().unwrap();
        let n = if kind.ends_with("-bitmap") || WHOLE.contains(&kind.as_str()) {
            0
        } else {
            num_after(s, " ").unwrap_or(u64::MAX)
        };
        set.insert((kind, n));
    }
    (set, layers)
}

/// Exit code of `timeout` when e2fsck ran out of time.
const E2FSCK_HUNG: i32 = 124;

/// `e2fsck -fn`, given a minute: on some images (the corpus's
/// f_illitable_flexbg) e2fsck 1.47 with -n restarts from the beginning
/// forever, trying backup descriptors it may not write.
fn e2fsck_n(dir: &Path, image: &str) -> (i32, String) {
    e2fsck_n_within(dir, image, 60)
}

/// [`e2fsck_n`] given `secs` seconds. e2fsck catches SIGTERM and, in that
/// loop, did not always stop for it (a CI run waited 12 minutes on
/// `timeout 20`): it is killed 5 s later, which `timeout` reports as
/// 137; both mean it ran out of time.
fn e2fsck_n_within(dir: &Path, image: &str, secs: u32) -> (i32, String) {
    let out = Command::new("timeout")
        .args(["-k", "5", &secs.to_string(), "e2fsck", "-fn", image])
        .current_dir(dir)
        .output()
        .unwrap();
    let code = match out.status.code() {
        Some(137) => E2FSCK_HUNG,
        code => code.unwrap_or(-1),
    };
    (
        code,
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// One damage: debugfs commands, or a byte poked into a directory block.
struct Damage {
    name: &'static str,
    debugfs: &'static str,
    /// Flip a byte of the first block of this directory (after debugfs).
    poke_dir: Option<&'static str>,
    /// Kinds whose damaged bytes the overlay holds (their layer must be
    /// 1).
    in_overlay: &'static [&'static str],
}

#[test]
fn check_names_what_e2fsck_finds_and_the_layer_holding_it() {
    for t in ["mke2fs", "debugfs", "e2fsck", "qemu-img", "qemu-io"] {
        if !need(t) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    mkfs(d, "clean", "64M", 60);
    // The base layer: the clean filesystem in a qcow2 file.
    sh(
        d,
        &[
            "qemu-img",
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "clean.raw",
            "base.qcow2",
        ],
    );
    let clean = layerscope(d, &["check", "--json", "base.qcow2"]);
    assert_eq!(clean.code, 0, "{}{}", clean.text(), clean.stderr);
    assert_eq!(clean.json()["clean"], true);
    assert_eq!(e2fsck_n(d, "clean.raw").0, 0);
    // What the damages point at.
    let stat = |path: &str| {
        let out = sh(d, &["debugfs", "-R", &format!("stat {path}"), "clean.raw"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let extents = stat("/d4/s1/f4.bin");
    let first_block: u64 = extents
        .lines()
        .skip_while(|l| !l.starts_with("EXTENTS"))
        .nth(1)
        .and_then(|l| l.split(':').nth(1))
        .and_then(|r| r.split('-').next())
        .and_then(|b| b.trim().parse().ok())
        .expect("f4's first block");
    let dup = format!("sif /d2/s2/f2.bin block[5] {first_block}\n");
    let damages = [
        Damage {
            name: "link count",
            debugfs: "sif /d0/s0/f0.bin links_count 3\n",
            poke_dir: None,
            in_overlay: &["link-count"],
        },
        Damage {
            name: "inode checksum",
            debugfs: "sif /d3/s0/f3.bin checksum 0x1234\n",
            poke_dir: None,
            in_overlay: &["inode-checksum"],
        },
        Damage {
            name: "unattached inode",
            debugfs: "unlink /d5/s2/f5.bin\n",
            poke_dir: None,
            in_overlay: &[],
        },
        Damage {
            name: "block bitmap",
            debugfs: "setb 12000\n",
            poke_dir: None,
            in_overlay: &["block-bitmap"],
        },
        Damage {
            name: "group free count and descriptor checksum",
            debugfs: "set_bg 0 free_blocks_count 7\n",
            poke_dir: None,
            in_overlay: &["group-free-blocks", "group-descriptor-checksum"],
        },
        Damage {
            name: "cleared inode",
            debugfs: "clri /d6/s0/f6.bin\n",
            poke_dir: None,
            in_overlay: &[],
        },
        Damage {
            name: "unconnected directory",
            debugfs: "unlink /d4/s1\n",
            poke_dir: None,
            in_overlay: &[],
        },
        Damage {
            name: "dtime on a live inode",
            debugfs: "sif /d1/s1/f1.bin dtime 1700000000\n",
            poke_dir: None,
            in_overlay: &["in-use-inode-dtime"],
        },
        Damage {
            name: "directory block checksum",
            debugfs: "",
            poke_dir: Some("/d2/s1"),
            in_overlay: &["directory-checksum"],
        },
        Damage {
            name: "doubly claimed block",
            debugfs: Box::leak(dup.into_boxed_str()),
            poke_dir: None,
            in_overlay: &[],
        },
    ];
    for (i, damage) in damages.iter().enumerate() {
        let raw = format!("d{i}.raw");
        std::fs::copy(d.join("clean.raw"), d.join(&raw)).unwrap();
        if !damage.debugfs.is_empty() {
            debugfs_w(d, &raw, damage.debugfs);
        }
        if let Some(path) = damage.poke_dir {
            let out = sh(d, &["debugfs", "-R", &format!("blocks {path}"), &raw]);
            let block: u64 = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap();
            // A byte of the first entry's name ('.'), inside the block:
            // the entries still parse, the checksum no longer matches.
            let at = block * 4096 + 8;
            let mut bytes = std::fs::read(d.join(&raw)).unwrap();
            bytes[at as usize] ^= 0x01;
            std::fs::write(d.join(&raw), bytes).unwrap();
        }
        let (code, text) = e2fsck_n(d, &raw);
        let theirs = e2fsck_findings(&text);
        assert!(
            code != 0 && !theirs.is_empty(),
            "{}: e2fsck saw nothing: {text}",
            damage.name
        );
        // The damaged bytes go into an overlay over the clean base.
        let top = format!("top{i}.qcow2");
        thin_overlay(d, &top, "base.qcow2", "qcow2", &d.join(&raw), "", false);
        let run = layerscope(d, &["check", "--json", &top]);
        assert_eq!(run.code, 1, "{}: {}{}", damage.name, run.text(), run.stderr);
        let j = run.json();
        assert_eq!(j["clean"], false);
        let (ours, layers) = our_findings(&j);
        assert_eq!(
            ours, theirs,
            "{}: ours {ours:?}, e2fsck's {theirs:?}\n{text}",
            damage.name
        );
        for kind in damage.in_overlay {
            let named: Vec<_> = layers.iter().filter(|(k, _)| k == kind).collect();
            assert!(!named.is_empty(), "{}: no {kind}", damage.name);
            for (_, layer) in named {
                assert_eq!(*layer, Some(1), "{}: {kind} is in the overlay", damage.name);
            }
        }
        // Text: one line per problem, the same count.
        let text_run = layerscope(d, &["check", &top]);
        assert_eq!(text_run.code, 1);
        assert!(
            text_run.text().contains("problem(s)"),
            "{}",
            text_run.text()
        );
    }
}

#[test]
fn check_counts_a_leaked_qcow2_cluster_as_qemu_img_check_does() {
    for t in ["qemu-img", "qemu-io"] {
        if !need(t) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        d,
        &["qemu-img", "create", "-q", "-f", "qcow2", "a.qcow2", "16M"],
    );
    qemu_io(d, "a.qcow2", &["write -P 7 0 1M"]);
    let ok = layerscope(d, &["check", "--image-only", "--json", "a.qcow2"]);
    assert_eq!(ok.code, 0, "{}{}", ok.text(), ok.stderr);
    // Grow the file by one cluster and give that cluster a refcount of 1:
    // a cluster nothing references (a leak).
    let mut bytes = std::fs::read(d.join("a.qcow2")).unwrap();
    let be64 = |b: &[u8], at: usize| u64::from_be_bytes(b[at..at + 8].try_into().unwrap());
    let cluster = 65536usize;
    let reftable = be64(&bytes, 48) as usize;
    let block = be64(&bytes, reftable) as usize;
    let leaked = bytes.len().div_ceil(cluster);
    bytes.resize((leaked + 1) * cluster, 0);
    bytes[block + 2 * leaked..block + 2 * leaked + 2].copy_from_slice(&1u16.to_be_bytes());
    std::fs::write(d.join("a.qcow2"), bytes).unwrap();
    let theirs = qemu_img_check_json(d, "a.qcow2");
    assert_eq!(theirs["leaks"], 1, "{theirs}");
    let run = layerscope(d, &["check", "--image-only", "--json", "a.qcow2"]);
    assert_eq!(run.code, 1, "{}{}", run.text(), run.stderr);
    let ours = &run.json()["layers"][0];
    assert_counts_equal(
        ours,
        &theirs,
        &[
            "leaks",
            "corruptions",
            "check-errors",
            "image-end-offset",
            "allocated-clusters",
            "total-clusters",
        ],
    );
    let p = &ours["problems"]["list"][0];
    assert_eq!(p["kind"], "leaked-cluster", "{p}");
    assert_eq!(p["layer"], 0);
}

/// `qemu-img check --output=json` of `file` in `d`.
fn qemu_img_check_json(d: &std::path::Path, file: &str) -> Value {
    let qemu = Command::new("qemu-img")
        .args(["check", "--output=json", file])
        .current_dir(d)
        .output()
        .unwrap();
    serde_json::from_slice(&qemu.stdout).unwrap()
}

/// Extends (sparsely) or cuts the file at `path` to `len` bytes.
fn set_file_len(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Our layer's counts equal qemu-img check's for `keys` (qemu leaves out
/// counts that are 0).
fn assert_counts_equal(ours: &Value, theirs: &Value, keys: &[&str]) {
    for key in keys {
        let n = |v: &Value| v[key].as_u64().unwrap_or(0);
        assert_eq!(n(ours), n(theirs), "{key}: ours {ours}, qemu's {theirs}");
    }
}

/// A refcount table whose entries are zero says every cluster they cover
/// has refcount 0: qemu-img check then names each referenced cluster
/// ("ERROR cluster N refcount=0 reference=1"). The check must name the
/// same clusters, and step over the absent blocks instead of looking up
/// every cluster of a file that claims terabytes (a fuzzer's sparse
/// qcow2 took 1.5 s that way); the hang guard is generous.
#[test]
fn check_steps_over_absent_refcount_blocks_as_qemu_img_check_counts() {
    for t in ["qemu-img", "qemu-io"] {
        if !need(t) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        d,
        &["qemu-img", "create", "-q", "-f", "qcow2", "a.qcow2", "64M"],
    );
    qemu_io(d, "a.qcow2", &["write -P 7 0 1M", "write -P 9 32M 192k"]);
    let mut bytes = std::fs::read(d.join("a.qcow2")).unwrap();
    let reftable = u64::from_be_bytes(bytes[48..56].try_into().unwrap()) as usize;
    assert_ne!(bytes[reftable..reftable + 8], [0u8; 8], "entry 0 is in use");
    bytes[reftable..reftable + 8].fill(0);
    // Guest cluster 0 moved to 2.5 TiB: past the first window of counts
    // (32 Mi clusters, 2 TiB here), so the check must walk the metadata
    // again for the second window and find the reference there.
    let be = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
    let l2 = (be(be(40) as usize) & 0x00ff_ffff_ffff_fe00) as usize;
    assert_ne!(be(l2), 0, "guest cluster 0 is allocated");
    let far = (1u64 << 63) | (5u64 << 39);
    bytes[l2..l2 + 8].copy_from_slice(&far.to_be_bytes());
    std::fs::write(d.join("a.qcow2"), bytes).unwrap();
    // A sparse tail: the file claims 3 TiB, nothing in it.
    set_file_len(&d.join("a.qcow2"), 3 << 40);
    let theirs = qemu_img_check_json(d, "a.qcow2");
    let human = Command::new("qemu-img")
        .args(["check", "a.qcow2"])
        .current_dir(d)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&human.stdout),
        String::from_utf8_lossy(&human.stderr)
    );
    let their_clusters: BTreeSet<u64> = text
        .lines()
        .filter(|l| l.contains("refcount=0 reference="))
        .filter_map(|l| num_after(l, "ERROR cluster "))
        .collect();
    assert!(
        their_clusters.len() >= 20,
        "qemu-img check names the referenced clusters: {text}"
    );
    assert!(
        their_clusters.contains(&((5u64 << 39) >> 16)),
        "qemu-img check names the moved cluster: {text}"
    );
    let started = std::time::Instant::now();
    let run = layerscope(d, &["check", "--image-only", "--json", "a.qcow2"]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "hang guard"
    );
    assert_eq!(run.code, 1, "{}{}", run.text(), run.stderr);
    let ours = &run.json()["layers"][0];
    assert_counts_equal(
        ours,
        &theirs,
        &[
            "leaks",
            "corruptions",
            "image-end-offset",
            "allocated-clusters",
            "total-clusters",
        ],
    );
    let our_clusters: BTreeSet<u64> = ours["problems"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "refcount-too-low")
        .filter_map(|p| num_after(p["structure"].as_str()?, "cluster "))
        .collect();
    assert_eq!(our_clusters, their_clusters);
}

/// A refcount block at an unaligned offset: qemu-img check counts one
/// check error per cluster the block covers (up to the file's end), and
/// the image's end does not move for them. The file claims 3 TiB, so
/// the block covers all its 32,768 clusters: the check must count them
/// as qemu does without a lookup each (a fuzzer's 2 TiB qcow2 took 2 s).
#[test]
fn check_counts_an_unreadable_refcount_block_as_qemu_img_check() {
    for t in ["qemu-img", "qemu-io"] {
        if !need(t) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (name, tail) in [("small.qcow2", None), ("tail.qcow2", Some(3u64 << 40))] {
        sh(d, &["qemu-img", "create", "-q", "-f", "qcow2", name, "64M"]);
        qemu_io(d, name, &["write -P 7 0 1M"]);
        let mut bytes = std::fs::read(d.join(name)).unwrap();
        let reftable = u64::from_be_bytes(bytes[48..56].try_into().unwrap()) as usize;
        let entry = u64::from_be_bytes(bytes[reftable..reftable + 8].try_into().unwrap());
        assert_ne!(entry, 0, "entry 0 is in use");
        bytes[reftable..reftable + 8].copy_from_slice(&(entry + 0x200).to_be_bytes());
        std::fs::write(d.join(name), bytes).unwrap();
        if let Some(len) = tail {
            set_file_len(&d.join(name), len);
        }
        let theirs = qemu_img_check_json(d, name);
        assert!(
            theirs["check-errors"].as_u64().unwrap_or(0) > 0,
            "{name}: qemu-img check counts errors: {theirs}"
        );
        let run = layerscope(d, &["check", "--image-only", "--json", name]);
        assert_eq!(run.code, 1, "{name}: {}{}", run.text(), run.stderr);
        assert_counts_equal(
            &run.json()["layers"][0],
            &theirs,
            &[
                "check-errors",
                "leaks",
                "corruptions",
                "image-end-offset",
                "allocated-clusters",
            ],
        );
    }
}

/// Images where the check and `e2fsck -fn`'s exit status part, and why.
const KNOWN: &[(&str, &str)] = &[
    // e2fsck names the bad descriptor checksum, then exits 0 under -n.
    (
        "f_bad_gdt_csum",
        "descriptor checksum reported, e2fsck -n exits 0",
    ),
    (
        "f_uninit_enable",
        "descriptor checksum reported, e2fsck -n exits 0",
    ),
    // e2fsck falls back to a backup superblock.
    (
        "f_zero_inode_size",
        "primary superblock unusable, e2fsck uses a backup",
    ),
    // Deeper than the kernel's limit of 5: e2fsck only offers to shorten.
    (
        "f_extent_too_deep",
        "extent tree depth 7 refused by the decoder",
    ),
];

#[test]
fn check_is_clean_on_the_corpus_where_e2fsck_is() {
    if !need("e2fsck") || !need("zcat") {
        return;
    }
    let Some(corpus) = corpus() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (mut agree, mut total, mut missed) = (0, 0, Vec::new());
    let mut names: Vec<_> = std::fs::read_dir(corpus.join("e2fsprogs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".img.gz"))
        .collect();
    names.sort();
    for gz in names {
        let name = gz
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".img.gz", "");
        let out = sh(d, &["zcat", gz.to_str().unwrap()]);
        std::fs::write(d.join("x.img"), &out.stdout).unwrap();
        let run = layerscope(d, &["check", "--fs-only", "-f", "raw", "x.img"]);
        assert!(
            [0, 1, 2].contains(&run.code) && !run.stderr.contains("panicked"),
            "{name}: exit {} {}",
            run.code,
            run.stderr
        );
        // The corpus images are small (e2fsck takes well under a second
        // each); the one that loops (f_illitable_flexbg) would cost the
        // whole minute.
        let (e2fsck, _) = e2fsck_n_within(d, "x.img", 20);
        if e2fsck == E2FSCK_HUNG {
            eprintln!("{name}: e2fsck -fn did not finish in 20 s: no oracle");
            continue;
        }
        total += 1;
        if (e2fsck == 0) == (run.code == 0) {
            agree += 1;
        } else if e2fsck == 0 {
            assert!(
                KNOWN.iter().any(|(n, _)| *n == name),
                "{name}: e2fsck -fn is clean, the check found: {}",
                run.text()
            );
        } else {
            missed.push(name);
        }
    }
    eprintln!(
        "check vs e2fsck -fn on the corpus: {agree}/{total} agree; problems e2fsck finds that the check does not: {}",
        missed.join(" ")
    );
    assert!(total > 100 && agree * 10 >= total * 7, "{agree}/{total}");
}

/// `check --fs-only` of a thin overlay holding `raw`'s damage over
/// `base` against `e2fsck -fn` of `raw`: the same findings, the same
/// verdict (clean or not: e2fsck exits 0 on what the check counts as
/// leaks), and the bytes of each finding in `in_overlay` in layer 1.
fn compare_with_e2fsck(d: &Path, base: &str, raw: &str, what: &str, in_overlay: &[&str]) {
    if let Err(e) = differs_from_e2fsck(d, base, raw, what, in_overlay) {
        panic!("{e}");
    }
}

/// As [`compare_with_e2fsck`], the difference as an error (so that a
/// test can list every damage that differs).
fn differs_from_e2fsck(
    d: &Path,
    base: &str,
    raw: &str,
    what: &str,
    in_overlay: &[&str],
) -> Result<(), String> {
    let (code, text) = e2fsck_n(d, raw);
    assert_ne!(code, E2FSCK_HUNG, "{what}: e2fsck did not finish");
    let theirs = e2fsck_findings(&text);
    assert!(!theirs.is_empty(), "{what}: e2fsck saw nothing: {text}");
    let top = format!("{raw}.qcow2");
    thin_overlay(d, &top, base, "qcow2", &d.join(raw), "", false);
    let run = layerscope(d, &["check", "--fs-only", "--json", &top]);
    assert!(
        [0, 1].contains(&run.code),
        "{what}: exit {} {}",
        run.code,
        run.stderr
    );
    let (ours, layers) = our_findings(&run.json());
    if ours != theirs || (run.code == 0) != (code == 0) {
        let text: String = text.lines().take(40).collect::<Vec<_>>().join("\n");
        return Err(format!(
            "{what}: check exit {}, e2fsck {code}; ours {ours:?}, e2fsck's {theirs:?}\n{text}",
            run.code
        ));
    }
    for kind in in_overlay {
        let named: Vec<_> = layers.iter().filter(|(k, _)| k == kind).collect();
        assert!(!named.is_empty(), "{what}: no {kind}");
        for (_, layer) in named {
            assert_eq!(*layer, Some(1), "{what}: {kind} is in the overlay");
        }
    }
    Ok(())
}

/// Patches `bytes` at `at` with `value` (big-endian words for the
/// journal, little-endian for the rest, as the caller says).
fn put(bytes: &mut [u8], at: u64, value: &[u8]) {
    let at = at as usize;
    bytes[at..at + value.len()].copy_from_slice(value);
}

#[test]
fn check_judges_the_journal_as_e2fsck_loads_it() {
    for t in ["mke2fs", "debugfs", "e2fsck", "qemu-img", "timeout"] {
        if !need(t) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    mkfs(d, "clean", "64M", 20);
    sh(
        d,
        &[
            "qemu-img",
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "clean.raw",
            "base.qcow2",
        ],
    );
    assert_eq!(e2fsck_n(d, "clean.raw").0, 0);
    let clean = layerscope(d, &["check", "--fs-only", "--json", "base.qcow2"]);
    assert_eq!(clean.code, 0, "{}{}", clean.text(), clean.stderr);
    // The journal superblock: the journal inode's first block.
    let out = sh(d, &["debugfs", "-R", "bmap <8> 0", "clean.raw"]);
    let jblock: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let j = jblock * 4096;
    let jlen = {
        let b = std::fs::read(d.join("clean.raw")).unwrap();
        u32::from_be_bytes(
            b[(j + 0x10) as usize..(j + 0x14) as usize]
                .try_into()
                .unwrap(),
        )
    };
    // A copy whose journal has checksum v3 (debugfs's journal writer sets
    // it and the superblock checksum).
    std::fs::copy(d.join("clean.raw"), d.join("csum.raw")).unwrap();
    debugfs_w(d, "csum.raw", "jo -c\njc\n");
    let with_csum = std::fs::read(d.join("csum.raw")).unwrap();
    assert_eq!(
        u32::from_be_bytes(
            with_csum[(j + 0x28) as usize..(j + 0x2c) as usize]
                .try_into()
                .unwrap()
        ) & 0x10,
        0x10,
        "debugfs jo -c set no checksum v3"
    );
    assert_eq!(e2fsck_n(d, "csum.raw").0, 0);
    type Patch = (&'static str, bool, u64, Vec<u8>, &'static [&'static str]);
    // (what, on the checksummed copy, offset in the journal superblock,
    // bytes, kinds whose bytes are in the overlay)
    let patches: Vec<Patch> = vec![
        (
            "no magic",
            false,
            0,
            vec![0; 4],
            &["journal-invalid", "journal-superblock"],
        ),
        (
            "a descriptor block type",
            false,
            4,
            1u32.to_be_bytes().to_vec(),
            &["journal-superblock"],
        ),
        (
            "an unknown version",
            false,
            4,
            9u32.to_be_bytes().to_vec(),
            &["journal-version"],
        ),
        (
            "another block size",
            false,
            0xc,
            1024u32.to_be_bytes().to_vec(),
            &["journal-superblock"],
        ),
        (
            "longer than its inode",
            false,
            0x10,
            (jlen * 2).to_be_bytes().to_vec(),
            &["journal-superblock"],
        ),
        (
            "an unknown incompat feature",
            false,
            0x28,
            0x100u32.to_be_bytes().to_vec(),
            &["journal-incompat"],
        ),
        (
            "an unknown ro_compat feature",
            false,
            0x2c,
            1u32.to_be_bytes().to_vec(),
            &["journal-ro-compat"],
        ),
        (
            "data but no needs_recovery",
            false,
            0x1c,
            5u32.to_be_bytes().to_vec(),
            &["journal-has-data"],
        ),
        (
            "two users",
            false,
            0x40,
            2u32.to_be_bytes().to_vec(),
            &["journal-users"],
        ),
        (
            "a bad checksum",
            true,
            0xfc,
            0x1234_5678u32.to_be_bytes().to_vec(),
            &["journal-superblock"],
        ),
        (
            "checksum v2 and v3",
            true,
            0x28,
            0x1au32.to_be_bytes().to_vec(),
            &["journal-superblock"],
        ),
        (
            "checksum type crc32",
            true,
            0x50,
            vec![1],
            &["journal-superblock"],
        ),
    ];
    for (i, (what, csum, at, value, in_overlay)) in patches.into_iter().enumerate() {
        let raw = format!("j{i}.raw");
        let mut bytes = if csum {
            with_csum.clone()
        } else {
            std::fs::read(d.join("clean.raw")).unwrap()
        };
        put(&mut bytes, j + at, &value);
        std::fs::write(d.join(&raw), bytes).unwrap();
        let base = if csum { "csum.qcow2" } else { "base.qcow2" };
        if csum && !d.join("csum.qcow2").exists() {
            sh(
                d,
                &[
                    "qemu-img",
                    "convert",
                    "-q",
                    "-f",
                    "raw",
                    "-O",
                    "qcow2",
                    "csum.raw",
                    "csum.qcow2",
                ],
            );
        }
        compare_with_e2fsck(d, base, &raw, what, in_overlay);
    }
    // The superblock's flags and journal inode, set with debugfs.
    for (i, (what, cmd, in_overlay)) in [
        (
            "has_journal clear",
            "feature -has_journal\n",
            &["journal-flag-clear"][..],
        ),
        (
            "no journal inode",
            "ssv journal_inum 0\n",
            &["journal-invalid"][..],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let raw = format!("f{i}.raw");
        std::fs::copy(d.join("clean.raw"), d.join(&raw)).unwrap();
        debugfs_w(d, &raw, cmd);
        compare_with_e2fsck(d, "base.qcow2", &raw, what, in_overlay);
    }
}

/// A directory of `n` long names in a 1 KiB-block filesystem, indexed by
/// `e2fsck -fyD` (two levels from about 2000 names).
fn indexed_dir(d: &Path, name: &str, n: usize) {
    let tree = d.join(format!("{name}.tree"));
    std::fs::create_dir_all(tree.join("big")).unwrap();
    for i in 0..n {
        std::fs::write(
            tree.join("big")
                .join(format!("a-rather-long-file-name-to-fill-blocks-{i:05}")),
            b"x",
        )
        .unwrap();
    }
    sh(
        d,
        &[
            "mke2fs",
            "-q",
            "-t",
            "ext4",
            "-b",
            "1024",
            "-d",
            tree.to_str().unwrap(),
            &format!("{name}.raw"),
            "32M",
        ],
    );
    // -D rebuilds every directory's index; exit 1: "modified".
    let out = Command::new("e2fsck")
        .args(["-fyD", &format!("{name}.raw")])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(out.status.code().unwrap_or(8) <= 1, "{out:?}");
    std::fs::remove_dir_all(tree).unwrap();
}

#[test]
fn check_judges_directory_indexes_as_e2fsck() {
    for t in ["mke2fs", "debugfs", "e2fsck", "qemu-img", "timeout"] {
        if !need(t) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    indexed_dir(d, "clean", 3000);
    assert_eq!(e2fsck_n(d, "clean.raw").0, 0);
    sh(
        d,
        &[
            "qemu-img",
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "clean.raw",
            "base.qcow2",
        ],
    );
    let clean = layerscope(d, &["check", "--fs-only", "--json", "base.qcow2"]);
    assert_eq!(clean.code, 0, "{}{}", clean.text(), clean.stderr);
    let htree = sh(d, &["debugfs", "-R", "htree /big", "clean.raw"]);
    let htree = String::from_utf8_lossy(&htree.stdout).into_owned();
    assert!(htree.contains("Indirect levels: 1"), "{htree}");
    let bmap = |logical: u32| -> u64 {
        let out = sh(
            d,
            &[
                "debugfs",
                "-R",
                &format!("bmap /big {logical}"),
                "clean.raw",
            ],
        );
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    let bytes = std::fs::read(d.join("clean.raw")).unwrap();
    let le32 =
        |at: u64| u32::from_le_bytes(bytes[at as usize..at as usize + 4].try_into().unwrap());
    let root = bmap(0) * 1024;
    // The root's entries (two here) name the inner nodes; the first
    // node's entries name leaves.
    let node = bmap(le32(root + 0x24)) * 1024;
    let node_count = u16::from_le_bytes(
        bytes[node as usize + 10..node as usize + 12]
            .try_into()
            .unwrap(),
    );
    assert!(node_count > 6, "{node_count}");
    let leaf = bmap(le32(node + 8 + 8 * 3 + 4)) * 1024;
    let hash = |at: u64, i: u64| le32(at + 8 * i);
    // Between two hashes of a node: its entry then starts above names
    // its block holds (bad min hash).
    let mid = |at: u64, i: u64| {
        (((hash(at, i) as u64 + hash(at, i + 1) as u64) / 2) as u32 & !1).to_le_bytes()
    };
    let damages: Vec<(&str, u64, Vec<u8>)> = vec![
        (
            "root count over the limit",
            root + 0x22,
            200u16.to_le_bytes().to_vec(),
        ),
        ("root limit", root + 0x20, 100u16.to_le_bytes().to_vec()),
        (
            "root block referenced twice",
            root + 0x24 + 8,
            le32(root + 0x24).to_le_bytes().to_vec(),
        ),
        (
            "root block out of the directory",
            root + 0x24 + 8,
            50_000u32.to_le_bytes().to_vec(),
        ),
        ("hash version", root + 0x1c, vec![9]),
        ("root info length", root + 0x1d, vec![4]),
        ("depth", root + 0x1e, vec![5]),
        ("incompat flag", root + 0x1f, vec![1]),
        (
            "root checksum",
            root + 0x20 + 8 * 123 + 4,
            0x1234u32.to_le_bytes().to_vec(),
        ),
        ("node limit", node + 8, 99u16.to_le_bytes().to_vec()),
        (
            "node hash above its names",
            node + 8 + 8 * 3,
            mid(node + 8, 3).to_vec(),
        ),
        (
            "node hash order",
            node + 8 + 8 * 2,
            0xffff_fff0u32.to_le_bytes().to_vec(),
        ),
        (
            "node checksum",
            node + 8 + 8 * 126 + 4,
            0x1234u32.to_le_bytes().to_vec(),
        ),
        // A name no longer hashing into its leaf's range.
        (
            "renamed entry in a leaf",
            leaf + 8,
            vec![bytes[leaf as usize + 8] ^ 0x01],
        ),
    ];
    let mut differ = Vec::new();
    for (i, (what, at, value)) in damages.into_iter().enumerate() {
        let raw = format!("h{i}.raw");
        let mut b = bytes.clone();
        put(&mut b, at, &value);
        std::fs::write(d.join(&raw), b).unwrap();
        if let Err(e) = differs_from_e2fsck(d, "base.qcow2", &raw, what, &[]) {
            differ.push(e);
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n\n"));
}

#[test]
fn check_finds_orphans_as_e2fsck() {
    for t in ["mke2fs", "debugfs", "e2fsck", "qemu-img", "timeout"] {
        if !need(t) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tree = d.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    for i in 1..=4 {
        std::fs::write(tree.join(format!("f{i}")), vec![i as u8; 20000]).unwrap();
    }
    // One filesystem with the orphan list only, one with an orphan file.
    for (name, opts) in [("list", "^orphan_file"), ("file", "orphan_file")] {
        sh(
            d,
            &[
                "mke2fs",
                "-q",
                "-t",
                "ext4",
                "-b",
                "4096",
                "-O",
                opts,
                "-d",
                "tree",
                &format!("{name}.raw"),
                "64M",
            ],
        );
        assert_eq!(e2fsck_n(d, &format!("{name}.raw")).0, 0);
        sh(
            d,
            &[
                "qemu-img",
                "convert",
                "-q",
                "-f",
                "raw",
                "-O",
                "qcow2",
                &format!("{name}.raw"),
                &format!("{name}.qcow2"),
            ],
        );
        let clean = layerscope(
            d,
            &["check", "--fs-only", "--json", &format!("{name}.qcow2")],
        );
        assert_eq!(clean.code, 0, "{name}: {}{}", clean.text(), clean.stderr);
    }
    let ino = |raw: &str, path: &str| -> u64 {
        let out = sh(d, &["debugfs", "-R", &format!("stat {path}"), raw]);
        num_after(&String::from_utf8_lossy(&out.stdout), "Inode: ").unwrap()
    };
    let (f1, f2, f3) = (
        ino("list.raw", "/f1"),
        ino("list.raw", "/f2"),
        ino("list.raw", "/f3"),
    );
    // An orphan list of two unlinked inodes (the first's dtime names the
    // second), a deleted inode without dtime, and a linked inode being
    // truncated (in use, its dtime a link).
    std::fs::copy(d.join("list.raw"), d.join("o0.raw")).unwrap();
    debugfs_w(
        d,
        "o0.raw",
        &format!(
            "unlink /f1\nunlink /f2\nsif <{f1}> links_count 0\nsif <{f1}> dtime {f2}\n\
             sif <{f2}> links_count 0\nsif <{f2}> dtime 0\nsif <{f3}> dtime {f1}\n\
             ssv last_orphan {f1}\n"
        ),
    );
    compare_with_e2fsck(
        d,
        "list.qcow2",
        "o0.raw",
        "orphan list",
        &["orphan-list-inode"],
    );
    // The orphan file: its first block's tail, its checksum, an orphan
    // left in it; and orphan_present set on a clean one.
    let oino = {
        let out = sh(d, &["dumpe2fs", "-h", "file.raw"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with("Orphan file inode:"))
            .and_then(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .expect("dumpe2fs names the orphan file inode")
    };
    let out = sh(
        d,
        &["debugfs", "-R", &format!("bmap <{oino}> 0"), "file.raw"],
    );
    let ob: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let at = ob * 4096;
    let clean = std::fs::read(d.join("file.raw")).unwrap();
    for (i, (what, off, value)) in [
        ("orphan block magic", at + 4096 - 8, 0u32),
        ("orphan block checksum", at + 4096 - 4, 0x1234),
        ("an orphan left in the file", at + 8, f3 as u32),
    ]
    .into_iter()
    .enumerate()
    {
        let raw = format!("of{i}.raw");
        let mut b = clean.clone();
        put(&mut b, off, &value.to_le_bytes());
        std::fs::write(d.join(&raw), b).unwrap();
        compare_with_e2fsck(d, "file.qcow2", &raw, what, &["orphan-file-block"]);
    }
    std::fs::copy(d.join("file.raw"), d.join("op.raw")).unwrap();
    debugfs_w(d, "op.raw", "feature orphan_present\n");
    compare_with_e2fsck(
        d,
        "file.qcow2",
        "op.raw",
        "orphan_present on a clean file",
        &["orphan-present"],
    );
}

/// What `fsck.fat -n` found, as (kind, path): the path is the file line
/// before the message (fsck.fat's short-name path), empty for the
/// findings about the whole filesystem.
fn fsck_fat_findings(text: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut path = String::new();
    for line in text.lines() {
        if line.starts_with('/') {
            path = line.trim_end_matches("  and").to_owned();
            continue;
        }
        let file_kinds = [
            ("Contains a free cluster", "fat-chain-free-cluster"),
            ("Contains a bad cluster", "fat-chain-free-cluster"),
            ("File size is", "fat-file-size"),
            ("share clusters", "fat-shared-clusters"),
            ("Start cluster beyond limit", "fat-start-beyond-limit"),
            ("Bad start cluster 1", "fat-bad-start"),
            ("Directory has non-zero size", "fat-directory-size"),
            ("does not point to parent", "fat-dot-start"),
            ("does not point to ..", "fat-dot-start"),
            ("Start does point to root directory", "fat-directory-start"),
        ];
        for (text, kind) in file_kinds {
            if line.contains(text) {
                out.insert((kind.to_owned(), path.clone()));
            }
        }
        let whole = [
            ("FATs differ", "fat-copies-differ"),
            ("Both FATs appear to be corrupt", "fat-copies-corrupt"),
            ("First FAT appears to be corrupt", "fat-copies-corrupt"),
            ("Failed to read sector", "fat-volume-short"),
            ("doesn't span an integral number", "fat-root-entries"),
            ("No root directory!", "fat-no-root"),
            ("FSINFO sector has bad magic", "fat-fsinfo-magic"),
            ("Reclaimed ", "fat-unused-clusters"),
            ("Free cluster summary wrong", "fat-free-count"),
            (
                "differences between boot sector and its backup",
                "fat-boot-backup",
            ),
            ("Dirty bit is set", "fat-dirty"),
            ("out of range", "fat-cluster-out-of-range"),
            ("Too many clusters", "fat-too-many-clusters"),
            ("but only space for", "fat-too-small"),
            ("only 1 or 2 FATs are supported", "fat-count"),
        ];
        for (text, kind) in whole {
            if line.contains(text) {
                out.insert((kind.to_owned(), String::new()));
            }
        }
    }
    out
}

/// The check's FAT findings in the same form, and the layer of each.
/// (kind, path) findings and (kind, layer) of each problem.
type FatFindings = (BTreeSet<(String, String)>, Vec<(String, Option<u64>)>);

fn our_fat_findings(j: &Value) -> FatFindings {
    let mut set = BTreeSet::new();
    let mut layers = Vec::new();
    for p in j["filesystem"]["problems"]["list"].as_array().unwrap() {
        let kind = p["kind"].as_str().unwrap().to_owned();
        let s = p["structure"].as_str().unwrap();
        layers.push((kind.clone(), p["layer"].as_u64()));
        let path = if s.starts_with('/') {
            s.to_owned()
        } else {
            String::new()
        };
        set.insert((kind, path));
    }
    (set, layers)
}

#[test]
fn check_finds_what_fsck_fat_finds() {
    for t in [
        "mkfs.vfat",
        "mcopy",
        "mmd",
        "mshowfat",
        "fsck.fat",
        "qemu-img",
    ] {
        if !need(t) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        d,
        &[
            "mkfs.vfat",
            "-C",
            "-F",
            "32",
            "-n",
            "CHECKME",
            "v.img",
            "65536",
        ],
    );
    for (i, name) in ["ALPHA.BIN", "BETA.BIN", "GAMMA.BIN", "DELTA.BIN"]
        .iter()
        .enumerate()
    {
        let body: Vec<u8> = (0..30_000u32).map(|j| (j * 7 + i as u32) as u8).collect();
        std::fs::write(d.join(name), body).unwrap();
    }
    sh(
        d,
        &[
            "mcopy",
            "-i",
            "v.img",
            "ALPHA.BIN",
            "BETA.BIN",
            "GAMMA.BIN",
            "::/",
        ],
    );
    sh(d, &["mmd", "-i", "v.img", "::/SUB"]);
    sh(d, &["mcopy", "-i", "v.img", "DELTA.BIN", "::/SUB/"]);
    let fsck = |img: &str| -> (i32, String) {
        let out = Command::new("fsck.fat")
            .args(["-n", img])
            .current_dir(d)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    assert_eq!(fsck("v.img").0, 0, "{}", fsck("v.img").1);
    sh(
        d,
        &[
            "qemu-img",
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "v.img",
            "base.qcow2",
        ],
    );
    let clean = layerscope(d, &["check", "--fs-only", "--json", "base.qcow2"]);
    assert_eq!(clean.code, 0, "{}{}", clean.text(), clean.stderr);
    assert_eq!(clean.json()["clean"], true);
    // Where things are: the FATs from the boot sector, chains from
    // mshowfat, entries by their 8.3 names.
    let bytes = std::fs::read(d.join("v.img")).unwrap();
    let le16 = |at: usize| u16::from_le_bytes(bytes[at..at + 2].try_into().unwrap()) as u64;
    let le32 = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as u64;
    let bps = le16(11);
    let fat1 = le16(14) * bps;
    let fat2 = fat1 + le32(36) * bps;
    let fsinfo = le16(48) * bps;
    let backup = le16(50) * bps;
    let chain = |path: &str| -> (u64, u64) {
        let out = sh(d, &["mshowfat", "-i", "v.img", path]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let inner = &text[text.find('<').unwrap() + 1..text.find('>').unwrap()];
        let (a, b) = inner.split_once('-').unwrap();
        (a.trim().parse().unwrap(), b.trim().parse().unwrap())
    };
    let (a0, a1) = chain("::/ALPHA.BIN");
    let (b0, _) = chain("::/BETA.BIN");
    let entry =
        |name: &[u8; 11]| -> u64 { bytes.windows(11).position(|w| w == name).unwrap() as u64 };
    let alpha = entry(b"ALPHA   BIN");
    let beta = entry(b"BETA    BIN");
    let gamma = entry(b"GAMMA   BIN");
    let eoc = 0x0fff_ffffu32.to_le_bytes().to_vec();
    let both = |c: u64, v: &[u8]| vec![(fat1 + 4 * c, v.to_vec()), (fat2 + 4 * c, v.to_vec())];
    let free_cluster = a1 + 1000;
    type Patches = Vec<(u64, Vec<u8>)>;
    let damages: Vec<(&str, Patches)> = vec![
        (
            "FAT copies differ",
            vec![(fat2 + 4 * free_cluster, eoc.clone())],
        ),
        ("a chain cut short", both(a0 + 4, &eoc)),
        ("a cluster nobody owns", both(free_cluster, &eoc)),
        (
            "FSInfo free count",
            vec![(fsinfo + 488, 5u32.to_le_bytes().to_vec())],
        ),
        (
            "boot sector backup",
            vec![(backup + 0x20, 5u32.to_le_bytes().to_vec())],
        ),
        (
            "size past the chain",
            vec![(alpha + 28, 40_000u32.to_le_bytes().to_vec())],
        ),
        (
            "a chain running into another file's",
            both(a1, &(b0 as u32).to_le_bytes()),
        ),
        (
            "two files starting on one cluster",
            vec![(beta + 26, (a0 as u16).to_le_bytes().to_vec())],
        ),
        (
            "a start past the volume",
            vec![(gamma + 20, 0x0fffu16.to_le_bytes().to_vec())],
        ),
        ("a free cluster in a chain", both(a0 + 2, &[0, 0, 0, 0])),
        // fsck.fat's choice of copy by their first entries (media byte,
        // all ones above it): the intact one is used.
        (
            "a second FAT whose first entry is damaged",
            vec![(fat2, vec![0, 0, 0, 0])],
        ),
        (
            "a first FAT whose first entry is damaged, a chain whole in the second only",
            vec![
                (fat1, vec![0, 0, 0, 0]),
                (fat1 + 4 * (a0 + 2), vec![0, 0, 0, 0]),
            ],
        ),
        (
            "both FATs' first entries damaged, differently",
            vec![(fat1, vec![0, 0, 0, 0]), (fat2, vec![1, 0, 0, 0])],
        ),
    ];
    for (i, (what, patches)) in damages.into_iter().enumerate() {
        let img = format!("v{i}.img");
        let mut b = bytes.clone();
        for (at, v) in &patches {
            put(&mut b, *at, v);
        }
        std::fs::write(d.join(&img), b).unwrap();
        let (code, text) = fsck(&img);
        let theirs = fsck_fat_findings(&text);
        assert!(!theirs.is_empty(), "{what}: fsck.fat saw nothing: {text}");
        let top = format!("v{i}.qcow2");
        thin_overlay(d, &top, "base.qcow2", "qcow2", &d.join(&img), "", false);
        let run = layerscope(d, &["check", "--fs-only", "--json", &top]);
        assert!(
            [0, 1].contains(&run.code),
            "{what}: {} {}",
            run.code,
            run.stderr
        );
        assert_eq!(
            run.code == 0,
            code == 0,
            "{what}: check exit {}, fsck.fat {code}: {}\n{text}",
            run.code,
            run.text()
        );
        let (ours, layers) = our_fat_findings(&run.json());
        assert_eq!(
            ours, theirs,
            "{what}: ours {ours:?}, fsck.fat's {theirs:?}\n{text}"
        );
        // The damaged bytes are the overlay's.
        let first = &layers[0];
        assert!(
            layers.iter().any(|(_, l)| *l == Some(1)),
            "{what}: no finding in the overlay: {layers:?} ({first:?})"
        );
    }
}

/// Boot sectors whose geometry gives more clusters than the FAT can
/// take: a FAT16 with more than 16-bit entries address ("Too many
/// clusters"), and a FAT32 whose FAT is half the size its data area
/// needs ("Filesystem has N clusters but only space for M FAT entries").
/// fsck.fat stops at either; the check reports the same finding with the
/// same count and checks only what the FAT describes (the fuzzers made
/// such volumes cost a second each: a FAT16 read as 16 million entries).
/// Likewise a boot sector claiming 3 FATs ("only 1 or 2 FATs are
/// supported"; a fuzzer's 114 FAT copies were compared for 1.4 s).
#[test]
fn check_judges_more_clusters_than_the_fat_takes_as_fsck_fat() {
    for t in ["mkfs.vfat", "fsck.fat"] {
        if !need(t) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // FAT16: two sectors a cluster, 256 FAT sectors, ~65,000 clusters;
    // one sector a cluster doubles the count the geometry gives.
    // FAT32: BPB_FATSz32 halved.
    type Patch = fn(&mut Vec<u8>);
    let cases: [(&str, &[&str], Patch, &str, &str); 3] = [
        (
            "fats",
            &["-F", "16"],
            |b| b[16] = 3,
            "supported, not ",
            " clusters): 1 problem",
        ),
        (
            "fat16",
            &["-F", "16", "-s", "2", "-S", "512"],
            |b| b[13] = 1,
            "Too many clusters (",
            "0/65524 clusters",
        ),
        (
            "fat32",
            &["-F", "32", "-s", "1", "-S", "512"],
            |b| {
                // In the backup boot sector too: fsck.fat compares them.
                let backup = u16::from_le_bytes([b[50], b[51]]) as usize * 512;
                let fat = u32::from_le_bytes(b[36..40].try_into().unwrap());
                for at in [36, backup + 36] {
                    b[at..at + 4].copy_from_slice(&(fat / 2).to_le_bytes());
                }
            },
            "Filesystem has ",
            " clusters): 1 problem",
        ),
    ];
    for (name, args, patch, theirs_count, summary) in cases {
        let img = format!("{name}.img");
        let mut mkfs = vec!["mkfs.vfat", "-C"];
        mkfs.extend_from_slice(args);
        mkfs.extend_from_slice(&[&img, "65536"]);
        sh(d, &mkfs);
        let mut bytes = std::fs::read(d.join(&img)).unwrap();
        patch(&mut bytes);
        std::fs::write(d.join(&img), &bytes).unwrap();
        let out = Command::new("fsck.fat")
            .args(["-n", &img])
            .current_dir(d)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{name}: {text}");
        let theirs = fsck_fat_findings(&text);
        let claimed: u64 = text
            .split(theirs_count)
            .nth(1)
            .and_then(|t| t.split([')', ' ', '.']).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{name}: no count in fsck.fat's output: {text}"));
        let run = layerscope(d, &["check", "--fs-only", "--json", &img]);
        assert_eq!(run.code, 1, "{name}: {}{}", run.text(), run.stderr);
        let j = run.json();
        let (ours, _) = our_fat_findings(&j);
        assert_eq!(ours, theirs, "{name}: fsck.fat: {text}");
        let detail = j["filesystem"]["problems"]["list"][0]["detail"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            detail.contains(&claimed.to_string()),
            "{name}: {detail} / {text}"
        );
        let human = layerscope(d, &["check", "--fs-only", &img]);
        assert!(human.text().contains(summary), "{name}: {}", human.text());
    }
}

/// What `xfs_repair -n` found, as (kind, allocation group; 0 for the
/// superblock's counters).
fn xfs_repair_findings(text: &str) -> BTreeSet<(String, u64)> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        for (prefix, kind) in [
            ("sb_icount ", "xfs-sb-icount"),
            ("sb_ifree ", "xfs-sb-ifree"),
            ("sb_fdblocks ", "xfs-sb-fdblocks"),
        ] {
            if line.starts_with(prefix) {
                out.insert((kind.to_owned(), 0));
            }
        }
        for (prefix, kind) in [
            ("agf_freeblks ", "xfs-agf-freeblks"),
            ("agi_count ", "xfs-agi-count"),
            ("agi_freecount ", "xfs-agi-freecount"),
        ] {
            if line.starts_with(prefix) {
                out.insert((kind.to_owned(), num_after(line, " in ag ").unwrap()));
            }
        }
        if line.starts_with("bad magic # ") {
            let kind = if line.contains(" for agf ") {
                "xfs-agf-magic"
            } else if line.contains(" for agi ") {
                "xfs-agi-magic"
            } else {
                continue;
            };
            let n = num_after(line, " for agf ").or_else(|| num_after(line, " for agi "));
            out.insert((kind.to_owned(), n.unwrap()));
        }
    }
    out
}

#[test]
fn check_counts_xfs_as_xfs_repair() {
    for t in ["mkfs.xfs", "xfs_db", "xfs_repair", "qemu-img"] {
        if !need(t) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A few files and a directory, from a protofile.
    let src = d.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut proto = String::from("/dev/null\n0 0\nd--755 0 0\n");
    for i in 0..20 {
        let f = src.join(format!("f{i}"));
        std::fs::write(&f, vec![i as u8; 1000 * (i + 1)]).unwrap();
        proto.push_str(&format!("f{i} ---644 0 0 {}\n", f.display()));
    }
    proto.push_str("sub d--755 0 0\n$\n$\n");
    std::fs::write(d.join("proto"), proto).unwrap();
    std::fs::File::create(d.join("x.img"))
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    sh(d, &["mkfs.xfs", "-q", "-f", "-p", "proto", "x.img"]);
    let repair = |img: &str| -> (i32, String) {
        let out = Command::new("xfs_repair")
            .args(["-n", img])
            .current_dir(d)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    assert_eq!(repair("x.img").0, 0, "{}", repair("x.img").1);
    sh(
        d,
        &[
            "qemu-img",
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "x.img",
            "base.qcow2",
        ],
    );
    let clean = layerscope(d, &["check", "--fs-only", "--json", "base.qcow2"]);
    assert_eq!(clean.code, 0, "{}{}", clean.text(), clean.stderr);
    let damages: &[(&str, &[&str])] = &[
        ("sb icount", &["sb 0", "write -d icount 320"]),
        ("sb ifree", &["sb 0", "write -d ifree 7"]),
        ("sb fdblocks", &["sb 0", "write -d fdblocks 100"]),
        ("agf freeblks", &["agf 1", "write -d freeblks 100"]),
        ("agi count", &["agi 1", "write -d count 128"]),
        ("agi freecount", &["agi 2", "write -d freecount 5"]),
        ("agf magic", &["agf 2", "write -d magicnum 0x12345678"]),
        ("agi magic", &["agi 3", "write -d magicnum 0x12345678"]),
    ];
    let mut differ = Vec::new();
    for (i, (what, cmds)) in damages.iter().enumerate() {
        let img = format!("x{i}.img");
        std::fs::copy(d.join("x.img"), d.join(&img)).unwrap();
        let mut args = vec!["xfs_db", "-x"];
        for c in *cmds {
            args.push("-c");
            args.push(c);
        }
        args.push(&img);
        sh(d, &args);
        let (code, text) = repair(&img);
        let theirs = xfs_repair_findings(&text);
        assert!(!theirs.is_empty(), "{what}: xfs_repair saw nothing: {text}");
        let top = format!("x{i}.qcow2");
        thin_overlay(d, &top, "base.qcow2", "qcow2", &d.join(&img), "", false);
        let run = layerscope(d, &["check", "--fs-only", "--json", &top]);
        assert!(
            [0, 1].contains(&run.code),
            "{what}: {} {}",
            run.code,
            run.stderr
        );
        let j = run.json();
        let ours: BTreeSet<(String, u64)> = j["filesystem"]["problems"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let s = p["structure"].as_str().unwrap();
                (
                    p["kind"].as_str().unwrap().to_owned(),
                    num_after(s, "ag ").unwrap_or(0),
                )
            })
            .collect();
        let layers: Vec<Option<u64>> = j["filesystem"]["problems"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["layer"].as_u64())
            .collect();
        if ours != theirs || (run.code == 0) != (code == 0) {
            differ.push(format!(
                "{what}: check exit {}, xfs_repair {code}; ours {ours:?}, theirs {theirs:?}\n{text}",
                run.code
            ));
        } else if !layers.contains(&Some(1)) {
            differ.push(format!("{what}: no finding in the overlay: {layers:?}"));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n\n"));
}

/// An inode never written (its first 128 bytes zeros) has no checksum to
/// match: libext2fs takes it as valid. Group 1's descriptor is told its
/// inode table is in use (no INODE_UNINIT, no unused tail), so both
/// checkers read its 2,048 zero inodes. e2fsck names none of them; the
/// previous check named every one an inode-checksum error (and a fuzz
/// input with 16 million such inodes took it 30 s).
#[test]
fn check_takes_never_written_inodes_as_e2fsck_does() {
    for t in ["mke2fs", "debugfs", "e2fsck", "dumpe2fs"] {
        if !need(t) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        d,
        &["mke2fs", "-q", "-t", "ext4", "-b", "1024", "z.raw", "64M"],
    );
    let script = d.join("bg.debugfs");
    std::fs::write(
        &script,
        "set_bg 1 itable_unused 0\nset_bg 1 flags 2\nset_bg 1 checksum calc\n",
    )
    .unwrap();
    // -n: the group's inode bitmap checksum no longer matches once its
    // INODE_UNINIT is gone; debugfs would refuse the second command.
    sh(
        d,
        &[
            "debugfs",
            "-w",
            "-n",
            "-f",
            script.to_str().unwrap(),
            "z.raw",
        ],
    );
    // dumpe2fs prints the groups and exits 1 (the bitmap checksum).
    let out = Command::new("dumpe2fs")
        .arg("z.raw")
        .current_dir(d)
        .output()
        .unwrap();
    let groups = String::from_utf8_lossy(&out.stdout);
    let group1 = groups.lines().find(|l| l.starts_with("Group 1:")).unwrap();
    assert!(!group1.contains("INODE_UNINIT"), "{group1}");
    let (code, text) = e2fsck_n(d, "z.raw");
    assert!(text.contains("Pass 1: Checking inodes"), "{code}: {text}");
    let theirs: BTreeSet<Finding> = e2fsck_findings(&text)
        .into_iter()
        .filter(|(k, _)| k == "inode-checksum")
        .collect();
    assert!(theirs.is_empty(), "{theirs:?}\n{text}");
    let run = layerscope(d, &["check", "--json", "z.raw"]);
    let j = run.json();
    let ours: Vec<&Value> = j["filesystem"]["problems"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "inode-checksum")
        .collect();
    assert!(
        ours.is_empty(),
        "{} inode-checksum problems: {:?}",
        ours.len(),
        ours.first()
    );
}

/// `N files, U/T clusters` as fsck.fat prints it and as the check's
/// summary says it.
fn fat_counts(text: &str) -> Option<(u64, u64, u64)> {
    let at = text.find(" files, ")?;
    let files = text[..at].rsplit([' ', '(']).next()?.parse().ok()?;
    let rest = &text[at + " files, ".len()..];
    let (used, rest) = rest.split_once('/')?;
    let total = rest.split(' ').next()?;
    Some((files, used.parse().ok()?, total.parse().ok()?))
}

/// The check's summary counts what `fsck.fat -n` counts: files (a volume
/// label among them; `.`, `..` and the FAT32 root not), clusters in use
/// and clusters, on FAT12, FAT16 and FAT32 volumes with labels, long
/// names and nested directories. The FAT32 volume has 8 M clusters of
/// 512 bytes and is read as qcow2, where its FATs (2 × 32 MiB of zeros
/// past the few entries in use) are clusters no layer holds: its check
/// reads what is stored, and its peak memory stays far below the 64 MiB
/// two words per cluster took (measured through GNU time).
#[test]
fn check_counts_files_and_clusters_as_fsck_fat() {
    for t in ["mkfs.vfat", "mcopy", "mmd", "fsck.fat", "qemu-img", "time"] {
        if !need(t) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("tree/Deep Dir/inner")).unwrap();
    for i in 0..40u32 {
        let body: Vec<u8> = (0..i * 700).map(|j| (j ^ i) as u8).collect();
        let sub = if i % 3 == 0 {
            "tree/Deep Dir/inner"
        } else {
            "tree"
        };
        std::fs::write(d.join(sub).join(format!("long file name {i}.bin")), body).unwrap();
    }
    for (img, size, args) in [
        ("f12.img", "8M", vec!["-F", "12", "-n", "TWELVE"]),
        ("f16.img", "64M", vec!["-F", "16"]),
        ("f32.img", "4G", vec!["-F", "32", "-s", "1", "-n", "BIG"]),
    ] {
        sh(d, &["truncate", "-s", size, img]);
        let mut mkfs = vec!["mkfs.vfat"];
        mkfs.extend(args);
        mkfs.push(img);
        sh(d, &mkfs);
        sh(d, &["mmd", "-i", img, "::/empty"]);
        sh(d, &["mcopy", "-s", "-i", img, "tree", "::/"]);
        let out = Command::new("fsck.fat")
            .args(["-n", img])
            .current_dir(d)
            .output()
            .unwrap();
        let theirs = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(0), "{img}: {theirs}");
        let want = fat_counts(&theirs).unwrap_or_else(|| panic!("{img}: {theirs}"));
        let qcow2 = img.replace(".img", ".qcow2");
        sh(
            d,
            &[
                "qemu-img", "convert", "-f", "raw", "-O", "qcow2", img, &qcow2,
            ],
        );
        for image in [img, qcow2.as_str()] {
            let run = layerscope(d, &["check", "--fs-only", image]);
            assert_eq!(run.code, 0, "{image}: {}{}", run.text(), run.stderr);
            assert_eq!(
                fat_counts(&run.text()),
                Some(want),
                "{image}: {}\nfsck.fat: {theirs}",
                run.text()
            );
        }
        std::fs::remove_file(d.join(img)).unwrap();
    }
    let out = Command::new("/usr/bin/time")
        .args(["-f", "peak %M KiB"])
        .arg(env!("CARGO_BIN_EXE_layerscope"))
        .args(["check", "--fs-only", "f32.qcow2"])
        .current_dir(d)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let peak: u64 = err
        .lines()
        .find_map(|l| l.strip_prefix("peak ")?.strip_suffix(" KiB")?.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        peak < 32 << 10,
        "check of an 8 M-cluster FAT32 took {peak} KiB"
    );
}

/// (kind, path) findings, as [`fsck_fat_findings`] gives them.
type Findings = BTreeSet<(String, String)>;

/// Changes a volume's bytes, given them, where the first FAT starts and
/// one FAT's length.
type FatDamage = fn(&mut Vec<u8>, usize, usize);

/// A volume made by `mkfs.vfat -C ARGS IMG KIB` in `d` and damaged, then
/// judged by `fsck.fat -n` and by `check --fs-only --json` (which must
/// find it damaged: exit 1): fsck.fat's output, its findings and ours.
fn damaged_fat(
    d: &Path,
    img: &str,
    args: &[&str],
    kib: &str,
    damage: FatDamage,
) -> (String, Findings, Findings) {
    let mut mkfs = vec!["mkfs.vfat", "-C"];
    mkfs.extend_from_slice(args);
    mkfs.extend_from_slice(&[img, kib]);
    sh(d, &mkfs);
    let mut b = std::fs::read(d.join(img)).unwrap();
    let le16 = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]) as usize;
    let fat = le16(14) * 512;
    let len = match le16(22) {
        0 => u32::from_le_bytes(b[36..40].try_into().unwrap()) as usize * 512,
        n => n * 512,
    };
    damage(&mut b, fat, len);
    std::fs::write(d.join(img), &b).unwrap();
    let out = Command::new("fsck.fat")
        .args(["-n", img])
        .current_dir(d)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{img}: fsck.fat: {text}");
    let run = layerscope(d, &["check", "--fs-only", "--json", "-f", "raw", img]);
    assert_eq!(run.code, 1, "{img}: {}{}", run.text(), run.stderr);
    let (ours, _) = our_fat_findings(&run.json());
    (text.clone(), fsck_fat_findings(&text), ours)
}

/// The boot area as fsck.fat's `read_boot` and `read_fat` judge it, each
/// case found by a differential sweep of the FAT fuzz corpus where the
/// check disagreed. Volumes it gives up on before it walks a file: one
/// shorter than its boot sector says ("Failed to read sector N": it reads
/// the last even sector first), a root directory whose entry count does
/// not fill whole sectors, two FAT copies whose first entries are damaged
/// alike ("Both FATs appear to be corrupt", whether or not the copies
/// differ), a single FAT whose first entry is damaged, a FAT32 without a
/// root ("No root directory!"), and a FAT32 whose FAT is too small for
/// its clusters while its backup boot sector differs (it compares the
/// backup first). And an FSInfo sector with a wrong signature, which it
/// re-creates without comparing its (wrong) free count. The check's
/// findings equal fsck.fat's, exit 1.
#[test]
fn check_reads_the_boot_area_as_fsck_fat() {
    for t in ["mkfs.vfat", "fsck.fat"] {
        if !need(t) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: [(&str, &[&str], FatDamage); 7] = [
        ("short volume", &["-F", "16"], |b, _, _| {
            b.truncate(b.len() / 2)
        }),
        ("root entries", &["-F", "16"], |b, _, _| {
            b[17..19].copy_from_slice(&111u16.to_le_bytes())
        }),
        ("both first entries", &["-F", "16"], |b, fat, len| {
            b[fat..fat + 2].copy_from_slice(&[0, 0]);
            b[fat + len..fat + len + 2].copy_from_slice(&[0, 0]);
        }),
        (
            "one FAT, its first entry",
            &["-F", "16", "-f", "1"],
            |b, fat, _| b[fat..fat + 2].copy_from_slice(&[0, 0]),
        ),
        // fsck.fat re-creates an FSInfo sector whose signature is wrong
        // and does not compare its free count (set wrong here too).
        ("FAT32 FSInfo signature", &["-F", "32"], |b, _, _| {
            let at = u16::from_le_bytes([b[48], b[49]]) as usize * 512;
            b[at..at + 4].copy_from_slice(&0x1234_5678u32.to_le_bytes());
            b[at + 488..at + 492].copy_from_slice(&5u32.to_le_bytes());
        }),
        ("FAT32 without a root", &["-F", "32"], |b, _, _| {
            b[0x2c..0x30].copy_from_slice(&[0; 4])
        }),
        // fsck.fat compares the backup before it judges the counts: two
        // findings.
        (
            "FAT32 FAT halved, not in the backup",
            &["-F", "32"],
            |b, _, _| {
                let n = u32::from_le_bytes(b[36..40].try_into().unwrap());
                b[36..40].copy_from_slice(&(n / 2).to_le_bytes());
            },
        ),
    ];
    for (i, (what, args, damage)) in cases.into_iter().enumerate() {
        let (text, theirs, ours) = damaged_fat(d, &format!("g{i}.img"), args, "32768", damage);
        assert!(!theirs.is_empty(), "{what}: {text}");
        assert_eq!(ours, theirs, "{what}: fsck.fat: {text}");
    }
}

/// The dirty state as fsck.fat's `check_dirty_bits` reads it: the boot
/// sector's flag on every type (FAT12 included), and on FAT16 and FAT32
/// the clean-shutdown bit of the FAT's second entry (in both copies, so
/// they do not differ). Each finding set equals fsck.fat's.
#[test]
fn check_reads_the_dirty_state_as_fsck_fat() {
    for t in ["mkfs.vfat", "fsck.fat"] {
        if !need(t) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: [(&str, &[&str], FatDamage); 4] = [
        ("FAT12 boot sector flag", &["-F", "12"], |b, _, _| {
            b[0x25] |= 1
        }),
        ("FAT16 boot sector flag", &["-F", "16"], |b, _, _| {
            b[0x25] |= 1
        }),
        ("FAT16 clean-shutdown bit", &["-F", "16"], |b, fat, len| {
            for at in [fat + 2, fat + len + 2] {
                b[at + 1] &= 0x7f;
            }
        }),
        ("FAT32 clean-shutdown bit", &["-F", "32"], |b, fat, len| {
            for at in [fat + 4, fat + len + 4] {
                b[at + 3] &= 0xf7;
            }
        }),
    ];
    for (i, (what, args, damage)) in cases.into_iter().enumerate() {
        let (text, theirs, ours) = damaged_fat(d, &format!("dirty{i}.img"), args, "65536", damage);
        assert!(
            theirs.contains(&("fat-dirty".to_owned(), String::new())),
            "{what}: {text}"
        );
        assert_eq!(ours, theirs, "{what}: fsck.fat: {text}");
    }
}
