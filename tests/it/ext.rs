//! The ext2/3/4 decoder against dumpe2fs, on filesystems made by mke2fs in
//! each test (ext2/3/4, block sizes 1k/2k/4k, 64bit on and off, meta_bg,
//! flex_bg, crc16 and crc32c descriptor checksums), through qcow2 chains
//! (`--layer`), and over the e2fsprogs test corpus.
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

/// `Name: value` lines, whitespace collapsed.
fn pairs(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| {
            (
                k.trim().to_owned(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect()
}

/// dumpe2fs's lines that come from the journal superblock (not decoded yet).
fn journal_line(k: &str) -> bool {
    k.starts_with("Journal ") && k != "Journal inode" && k != "Journal backup"
        || [
            "Total journal size",
            "Total journal blocks",
            "Max transaction length",
            "Fast commit length",
        ]
        .contains(&k)
}

fn check_info(dir: &Path, image: &str, flat: &str, layer: Option<&str>) {
    let mut args = vec!["info", image];
    if let Some(l) = layer {
        args.extend(["--layer", l]);
    }
    let ours = pairs(&layerscope(dir, &args).ok().text());
    let out = std::process::Command::new("dumpe2fs")
        .args(["-h", flat])
        .current_dir(dir)
        .env("TZ", "UTC")
        .output()
        .unwrap();
    let theirs = pairs(&String::from_utf8_lossy(&out.stdout));
    assert!(theirs.len() > 20, "dumpe2fs printed too little for {flat}");
    for (k, v) in &theirs {
        if journal_line(k) {
            continue;
        }
        assert_eq!(
            ours.get(k),
            Some(v),
            "{image}: {k:?} differs from dumpe2fs (ours: {:?})",
            ours.get(k)
        );
    }
    for k in ours.keys() {
        assert!(
            theirs.contains_key(k),
            "{image}: we print {k:?}, dumpe2fs does not"
        );
    }
}

/// dumpe2fs's group list: group -> its facts.
fn dumpe2fs_groups(dir: &Path, flat: &str) -> Vec<BTreeMap<&'static str, String>> {
    let out = sh(dir, &["dumpe2fs", flat]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut groups: Vec<BTreeMap<&'static str, String>> = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if let Some(rest) = l
            .strip_prefix("Group ")
            .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        {
            let mut g = BTreeMap::new();
            let (_, blocks) = rest.split_once("(Blocks ").unwrap();
            let (range, tail) = blocks.split_once(')').unwrap();
            let (a, b) = range.split_once('-').unwrap();
            g.insert("first_block", a.to_owned());
            g.insert("last_block", b.to_owned());
            if let Some(c) = tail.split_whitespace().skip_while(|w| *w != "csum").nth(1) {
                g.insert(
                    "checksum",
                    u64::from_str_radix(c.trim_start_matches("0x"), 16)
                        .unwrap()
                        .to_string(),
                );
            }
            let flags = tail
                .split_once('[')
                .map(|(_, f)| f.trim_end_matches(']').replace(", ", ","))
                .unwrap_or_default();
            g.insert("flags", flags);
            groups.push(g);
        } else if let Some(g) = groups.last_mut() {
            let num = |s: &str| {
                s.split(|c: char| !c.is_ascii_digit())
                    .next()
                    .unwrap_or("")
                    .to_owned()
            };
            if let Some(r) = l.strip_prefix("Block bitmap at ") {
                g.insert("block_bitmap", num(r));
            } else if let Some(r) = l.strip_prefix("Inode bitmap at ") {
                g.insert("inode_bitmap", num(r));
            } else if let Some(r) = l.strip_prefix("Inode table at ") {
                let (a, b) = r.split_once('-').unwrap();
                g.insert("inode_table", a.to_owned());
                g.insert("inode_table_last", num(b));
            } else if l.contains("free blocks,") {
                let nums: Vec<String> = l.split(", ").map(num).collect();
                g.insert("free_blocks", nums[0].clone());
                g.insert("free_inodes", nums[1].clone());
                g.insert("directories", nums[2].clone());
                if let Some(u) = nums.get(3) {
                    g.insert("unused_inodes", u.clone());
                }
            }
        }
    }
    groups
}

fn check_groups(dir: &Path, image: &str, flat: &str) {
    let ours = layerscope(dir, &["groups", "--json", image]).ok().json();
    let theirs = dumpe2fs_groups(dir, flat);
    let ours = ours.as_array().unwrap();
    assert_eq!(ours.len(), theirs.len(), "{image}: group count");
    for (o, t) in ours.iter().zip(&theirs) {
        for (k, v) in t {
            let mine = match &o[*k] {
                Value::Array(a) => a
                    .iter()
                    .map(|f| f.as_str().unwrap())
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            assert_eq!(&mine, v, "{image}: group {} {k}", o["group"]);
        }
        if !t.contains_key("checksum") {
            assert_eq!(
                o["checksum_ok"],
                Value::Null,
                "{image}: no checksum expected"
            );
        } else {
            assert_eq!(
                o["checksum_ok"], true,
                "{image}: group {} checksum",
                o["group"]
            );
        }
    }
}

fn tools() -> bool {
    need("mke2fs") && need("dumpe2fs") && need("qemu-img")
}

#[test]
fn info_and_groups_equal_dumpe2fs_across_layouts() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let tree = dir.join("tree");
    make_tree(&tree, 30);
    let cases: &[(&str, &[&str], &str)] = &[
        ("ext2-1k", &["-t", "ext2", "-b", "1024"], "24M"),
        ("ext3-2k", &["-t", "ext3", "-b", "2048"], "40M"),
        ("ext4", &["-t", "ext4"], "64M"),
        ("ext4-32bit", &["-t", "ext4", "-O", "^64bit"], "64M"),
        (
            "ext4-1k-many-groups",
            &["-t", "ext4", "-b", "1024", "-O", "^resize_inode"],
            "80M",
        ),
        (
            "ext4-meta-bg",
            &["-t", "ext4", "-b", "1024", "-O", "meta_bg,^resize_inode"],
            "64M",
        ),
        (
            "ext4-crc16",
            &["-t", "ext4", "-O", "^metadata_csum,uninit_bg"],
            "48M",
        ),
        (
            "ext4-bigalloc",
            &["-t", "ext4", "-O", "bigalloc", "-C", "16384"],
            "64M",
        ),
        (
            "ext4-labelled",
            &[
                "-t",
                "ext4",
                "-L",
                "my disk",
                "-M",
                "/mnt/data",
                "-i",
                "8192",
            ],
            "32M",
        ),
    ];
    for (name, opts, size) in cases {
        let raw = format!("{name}.raw");
        let mut args = vec!["mke2fs", "-q", "-F"];
        args.extend_from_slice(opts);
        args.extend(["-d", tree.to_str().unwrap(), &raw, size]);
        sh(dir, &args);
        check_info(dir, &raw, &raw, None);
        check_groups(dir, &raw, &raw);
        // The same filesystem through qcow2.
        let q = format!("{name}.qcow2");
        sh(dir, &["qemu-img", "convert", "-O", "qcow2", &raw, &q]);
        check_info(dir, &q, &raw, None);
    }
}

#[test]
fn layer_option_shows_the_filesystem_as_of_each_layer() {
    if !tools() || !need("debugfs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    mkfs(dir, "base", "32M", 20);
    sh(
        dir,
        &[
            "qemu-img",
            "convert",
            "-O",
            "qcow2",
            "base.raw",
            "base.qcow2",
        ],
    );
    std::fs::copy(dir.join("base.raw"), dir.join("edit.raw")).unwrap();
    let payload = dir.join("payload");
    std::fs::write(&payload, vec![7u8; 300_000]).unwrap();
    debugfs_w(
        dir,
        "edit.raw",
        &format!(
            "mkdir /new\nwrite {} /new/big\nrm /hello.txt\n",
            payload.display()
        ),
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
    check_info(dir, "top.qcow2", "edit.raw", None);
    check_info(dir, "top.qcow2", "base.raw", Some("0"));
    check_info(dir, "top.qcow2", "edit.raw", Some("1"));
    check_groups(dir, "top.qcow2", "edit.raw");
    let run = layerscope(dir, &["info", "top.qcow2", "--layer", "5"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("--layer 5"), "{}", run.stderr);
}

#[test]
fn not_a_filesystem_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("zeros.raw"), vec![0u8; 1 << 20]).unwrap();
    std::fs::write(d.path().join("tiny.raw"), vec![0u8; 100]).unwrap();
    for f in ["zeros.raw", "tiny.raw"] {
        let run = layerscope(d.path(), &["info", f]);
        assert_eq!(run.code, 1, "{f}");
        assert!(
            run.stderr.contains("no ext2/3/4 filesystem found") && run.stderr.contains(f),
            "{}",
            run.stderr
        );
        assert_eq!(run.stderr.lines().count(), 1);
    }
}

/// Every image of the e2fsprogs test suite, many of them corrupt: info and
/// groups never panic or hang; where dumpe2fs read the superblock, our
/// features, sizes and counts agree with the manifest's.
#[test]
fn e2fsprogs_corpus() {
    let Some(corpus) = corpus() else { return };
    use layerscope::block::chain::{open_chain, ChainOptions, FsOpener};
    use layerscope::block::layered::LayeredReader;
    use layerscope::block::probe::Format;
    use layerscope::fs::ext::{Ext4, FsError};

    let dir = corpus.join("e2fsprogs");
    let manifest = std::fs::read_to_string(dir.join("MANIFEST.tsv")).unwrap();
    let mut lines = manifest.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (mut opened, mut not_ext, mut total) = (0, 0, 0);
    for line in lines {
        let cols: Vec<&str> = line.split('\t').collect();
        let file = cols[col("file")];
        let mut gz = flate2::read::GzDecoder::new(std::fs::File::open(dir.join(file)).unwrap());
        let mut bytes = Vec::new();
        if gz.read_to_end(&mut bytes).is_err() {
            continue;
        }
        let path = tmp.path().join("image.raw");
        std::fs::write(&path, &bytes).unwrap();
        drop(bytes);
        total += 1;
        let start = Instant::now();
        let opts = ChainOptions {
            format: Some(Format::Raw),
            backing_format: None,
        };
        let chain = open_chain(path.to_str().unwrap(), opts, &FsOpener).unwrap();
        let reader = Arc::new(LayeredReader::new(&chain).unwrap());
        match Ext4::open(reader) {
            Ok(fs) => {
                opened += 1;
                let sb = fs.superblock();
                if cols[col("dumpe2fs_magic")] == "ok" && cols[col("dumpe2fs_rc")] == "0" {
                    let mut features = layerscope::fs::ext::superblock::feature_names(
                        sb.feature_compat,
                        sb.feature_incompat,
                        sb.feature_ro_compat,
                    )
                    .join(" ");
                    if features.is_empty() {
                        features = "(none)".into();
                    }
                    assert_eq!(features, cols[col("fs_features")], "{file}: features");
                    assert_eq!(
                        sb.block_size.to_string(),
                        cols[col("block_size")],
                        "{file}: block size"
                    );
                    assert_eq!(
                        sb.blocks_count.to_string(),
                        cols[col("block_count")],
                        "{file}: block count"
                    );
                    assert_eq!(
                        sb.inodes_count.to_string(),
                        cols[col("inode_count")],
                        "{file}: inode count"
                    );
                }
                // Every group, bounded: errors are fine, panics and hangs
                // are not.
                for g in 0..sb.group_count().min(1 << 16) {
                    let _ = fs.group(g);
                    assert!(
                        start.elapsed() < Duration::from_secs(20),
                        "{file}: too slow"
                    );
                }
            }
            Err(FsError::NotExt { .. }) => {
                not_ext += 1;
                assert_ne!(
                    cols[col("raw_magic_at_1080")],
                    "ef53",
                    "{file}: has the magic but did not open"
                );
            }
            Err(e) => {
                // Corrupt geometry: must say which field.
                let msg = e.to_string();
                assert!(msg.contains("superblock"), "{file}: {msg}");
            }
        }
    }
    assert!(total >= 200, "only {total} corpus images");
    assert!(opened >= 200, "only {opened} of {total} opened");
    eprintln!("corpus: {total} images, {opened} opened, {not_ext} not ext");
}
