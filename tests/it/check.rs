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
        let n = if kind.ends_with("-bitmap") {
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
    let out = Command::new("timeout")
        .args(["60", "e2fsck", "-fn", image])
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
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
    let qemu = Command::new("qemu-img")
        .args(["check", "--output=json", "a.qcow2"])
        .current_dir(d)
        .output()
        .unwrap();
    let theirs: Value = serde_json::from_slice(&qemu.stdout).unwrap();
    assert_eq!(theirs["leaks"], 1, "{theirs}");
    let run = layerscope(d, &["check", "--image-only", "--json", "a.qcow2"]);
    assert_eq!(run.code, 1, "{}{}", run.text(), run.stderr);
    let ours = &run.json()["layers"][0];
    for key in [
        "leaks",
        "corruptions",
        "check-errors",
        "image-end-offset",
        "allocated-clusters",
        "total-clusters",
    ] {
        // qemu leaves out counts that are 0.
        let n = |v: &Value| v[key].as_u64().unwrap_or(0);
        assert_eq!(n(ours), n(&theirs), "{key}: ours {ours}, qemu's {theirs}");
    }
    let p = &ours["problems"]["list"][0];
    assert_eq!(p["kind"], "leaked-cluster", "{p}");
    assert_eq!(p["layer"], 0);
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
        let (e2fsck, _) = e2fsck_n(d, "x.img");
        if e2fsck == E2FSCK_HUNG {
            eprintln!("{name}: e2fsck -fn did not finish in 60 s: no oracle");
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
