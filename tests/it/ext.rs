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

fn check_info(dir: &Path, image: &str, flat: &str, layer: Option<&str>) {
    check_info_with(dir, image, flat, layer, &[]);
}

fn check_info_with(dir: &Path, image: &str, flat: &str, layer: Option<&str>, extra: &[&str]) {
    let mut args = vec!["info", image];
    if let Some(l) = layer {
        args.extend(["--layer", l]);
    }
    args.extend_from_slice(extra);
    let mut ours = pairs(&layerscope(dir, &args).ok().text());
    // The partition table heading is ours alone.
    ours.retain(|k, _| !k.contains("partition table"));
    let out = std::process::Command::new("dumpe2fs")
        .args(["-h", flat])
        .current_dir(dir)
        .env("TZ", "UTC")
        .output()
        .unwrap();
    let theirs = pairs(&String::from_utf8_lossy(&out.stdout));
    assert!(theirs.len() > 20, "dumpe2fs printed too little for {flat}");
    for (k, v) in &theirs {
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
        // A .tar.bz2 holds several images (external journal tests): each
        // is exercised; the manifest describes single images only.
        let members: Vec<std::path::PathBuf> = if file.ends_with(".tar.bz2") {
            let into = tmp.path().join("tar");
            let _ = std::fs::remove_dir_all(&into);
            std::fs::create_dir_all(&into).unwrap();
            sh(&dir, &["tar", "-xjf", file, "-C", into.to_str().unwrap()]);
            let mut found = Vec::new();
            let mut todo = vec![into];
            while let Some(d) = todo.pop() {
                for e in std::fs::read_dir(d).unwrap().flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        todo.push(p);
                    } else {
                        found.push(p);
                    }
                }
            }
            found
        } else {
            let bytes = if file.ends_with(".bz2") {
                sh(&dir, &["bzip2", "-dc", file]).stdout
            } else {
                let mut gz =
                    flate2::read::GzDecoder::new(std::fs::File::open(dir.join(file)).unwrap());
                let mut bytes = Vec::new();
                gz.read_to_end(&mut bytes)
                    .unwrap_or_else(|e| panic!("{file}: {e}"));
                bytes
            };
            let path = tmp.path().join("image.raw");
            std::fs::write(&path, &bytes).unwrap();
            vec![path]
        };
        let single = !file.ends_with(".tar.bz2");
        for path in members {
            if std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) == 0 {
                continue;
            }
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
                    if single
                        && cols[col("dumpe2fs_magic")] == "ok"
                        && cols[col("dumpe2fs_rc")] == "0"
                    {
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
                    // Every reachable directory and file (ls -R, stat, cat),
                    // bounded: corrupt maps and entries are errors, never a
                    // panic, a hang or a huge allocation.
                    // The journal superblock (several images corrupt it).
                    if let Some(j) = fs.journal() {
                        let _ = j.lines(sb.block_size);
                    }
                    let mut stack = vec![2u64];
                    let mut seen = std::collections::HashSet::new();
                    let mut visited = 0;
                    while let Some(ino) = stack.pop() {
                        if !seen.insert(ino) || visited > 20_000 {
                            continue;
                        }
                        visited += 1;
                        assert!(
                            start.elapsed() < Duration::from_secs(30),
                            "{file}: walking took too long"
                        );
                        let Ok(node) = fs.inode(ino) else { continue };
                        if node.is_dir() {
                            if let Ok(entries) = fs.read_dir(&node, &mut Vec::new()) {
                                stack.extend(entries.iter().map(|e| u64::from(e.inode)));
                            }
                        } else if let Ok(runs) = fs.runs(&node) {
                            let mut buf = vec![0u8; node.size.min(1 << 20) as usize];
                            let _ = fs.read_file(&node, &runs, 0, &mut buf);
                        }
                    }
                }
                Err(FsError::NotExt { .. }) => {
                    not_ext += 1;
                    if single {
                        assert_ne!(
                            cols[col("raw_magic_at_1080")],
                            "ef53",
                            "{file}: has the magic but did not open"
                        );
                    }
                }
                Err(e) => {
                    // Corrupt geometry: must say which field.
                    let msg = e.to_string();
                    assert!(msg.contains("superblock"), "{file}: {msg}");
                }
            }
        }
    }
    assert!(total >= 236, "only {total} corpus images");
    assert!(opened >= 200, "only {opened} of {total} opened");
    eprintln!("corpus: {total} images, {opened} opened, {not_ext} not ext");
}

#[test]
fn partitioned_disks_mbr_and_gpt() {
    if !tools() || !need("sfdisk") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // MBR: an ext4 and an ext2 partition, made inside the disk image.
    std::fs::File::create(dir.join("mbr.raw"))
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let mut sfdisk = std::process::Command::new("sfdisk")
        .args(["-q", "mbr.raw"])
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nstart=2048, size=40960, type=83\nstart=43008, type=83\n")
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    sh(
        dir,
        &[
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext4",
            "-L",
            "one",
            "-E",
            &format!("offset={}", 2048 * 512),
            "mbr.raw",
            "20M",
        ],
    );
    sh(
        dir,
        &[
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext2",
            "-L",
            "two",
            "-E",
            &format!("offset={}", 43008 * 512),
            "mbr.raw",
            "44032k",
        ],
    );
    // The table equals sfdisk's.
    let theirs: Value =
        serde_json::from_slice(&sh(dir, &["sfdisk", "--json", "mbr.raw"]).stdout).unwrap();
    let ours = layerscope(dir, &["info", "--json", "mbr.raw", "--partition", "1"])
        .ok()
        .json();
    let table = &ours["partition_table"];
    assert_eq!(table["label"], theirs["partitiontable"]["label"]);
    let parts = table["partitions"].as_array().unwrap();
    let their_parts = theirs["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), their_parts.len());
    for (o, t) in parts.iter().zip(their_parts) {
        assert_eq!(
            o["start"].as_u64().unwrap(),
            t["start"].as_u64().unwrap() * 512
        );
        assert_eq!(
            o["len"].as_u64().unwrap(),
            t["size"].as_u64().unwrap() * 512
        );
        assert_eq!(o["kind"].as_str().unwrap(), t["type"].as_str().unwrap());
    }
    // Each partition's filesystem equals dumpe2fs of the partition alone.
    let disk = std::fs::read(dir.join("mbr.raw")).unwrap();
    for (n, start, len) in [
        ("1", 2048 * 512, 40960 * 512),
        ("2", 43008 * 512, 88064 * 512),
    ] {
        let part = format!("part{n}.raw");
        std::fs::write(dir.join(&part), &disk[start..start + len]).unwrap();
        check_info_with(dir, "mbr.raw", &part, None, &["--partition", n]);
    }
    // Two filesystems: the user must choose.
    let run = layerscope(dir, &["ls", "mbr.raw"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("--partition") && run.stderr.contains("2 (type 83"),
        "{}",
        run.stderr
    );
    let run = layerscope(dir, &["ls", "mbr.raw", "--partition", "7"]);
    assert!(
        run.code == 1 && run.stderr.contains("no partition 7"),
        "{}",
        run.stderr
    );
    // The same disk as a qcow2 image.
    sh(
        dir,
        &["qemu-img", "convert", "-O", "qcow2", "mbr.raw", "mbr.qcow2"],
    );
    check_info_with(dir, "mbr.qcow2", "part2.raw", None, &["--partition", "2"]);

    // GPT with one named partition: found without being asked.
    std::fs::File::create(dir.join("gpt.raw"))
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let mut sfdisk = std::process::Command::new("sfdisk")
        .args(["-q", "gpt.raw"])
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    sfdisk.stdin.take().unwrap().write_all(b"label: gpt\nstart=2048, size=40960, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"root fs\"\n").unwrap();
    assert!(sfdisk.wait().unwrap().success());
    sh(
        dir,
        &[
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext4",
            "-E",
            &format!("offset={}", 2048 * 512),
            "gpt.raw",
            "20M",
        ],
    );
    let theirs: Value =
        serde_json::from_slice(&sh(dir, &["sfdisk", "--json", "gpt.raw"]).stdout).unwrap();
    let ours = layerscope(dir, &["info", "--json", "gpt.raw"]).ok().json();
    assert_eq!(ours["partition"], 1);
    let (o, t) = (
        &ours["partition_table"]["partitions"][0],
        &theirs["partitiontable"]["partitions"][0],
    );
    assert_eq!(
        o["start"].as_u64().unwrap(),
        t["start"].as_u64().unwrap() * 512
    );
    assert_eq!(o["kind"], t["type"]);
    assert_eq!(o["name"], t["name"]);
    let disk = std::fs::read(dir.join("gpt.raw")).unwrap();
    std::fs::write(
        dir.join("gpart.raw"),
        &disk[2048 * 512..(2048 + 40960) * 512],
    )
    .unwrap();
    check_info(dir, "gpt.raw", "gpart.raw", None);
    let ls = layerscope(dir, &["ls", "gpt.raw"]).ok().text();
    assert!(ls.contains("lost+found"), "{ls}");
}

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

/// debugfs `ls -l <ino>` rows: inode -> (mode, type, uid, gid, size).
fn debugfs_ls(dir: &Path, image: &str, ino: u64) -> BTreeMap<u64, (u64, u64, u64, u64, u64)> {
    let out = sh(dir, &["debugfs", "-R", &format!("ls -l <{ino}>"), image]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            if t.len() < 8 || !t[2].starts_with('(') {
                return None;
            }
            let n = |s: &str| s.trim_matches(|c| c == '(' || c == ')').parse::<u64>().ok();
            Some((
                n(t[0])?,
                (
                    u64::from_str_radix(t[1], 8).ok()?,
                    n(t[2])?,
                    n(t[3])?,
                    n(t[4])?,
                    n(t[5])?,
                ),
            ))
        })
        .collect()
}

fn check_files(dir: &Path, image: &str, flat: &str) {
    let listing = layerscope(dir, &["ls", "-R", "--json", image]).ok().json();
    assert_eq!(
        listing["errors"].as_array().unwrap().len(),
        0,
        "{image}: {}",
        listing["errors"]
    );
    let entries = listing["entries"].as_array().unwrap();
    // Per directory: our rows equal debugfs's.
    let mut dirs: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for e in entries {
        dirs.entry(e["dir"].as_str().unwrap().to_owned())
            .or_default()
            .push(e);
    }
    for (d, rows) in &dirs {
        let dir_ino = rows
            .iter()
            .find(|r| r["name"] == ".")
            .map(|r| r["inode"].as_u64().unwrap())
            .unwrap();
        let theirs = debugfs_ls(dir, flat, dir_ino);
        let ours: BTreeMap<u64, (u64, u64, u64, u64, u64)> = rows
            .iter()
            .map(|r| {
                (
                    r["inode"].as_u64().unwrap(),
                    (
                        r["mode"].as_u64().unwrap(),
                        r["file_type"].as_u64().unwrap(),
                        r["uid"].as_u64().unwrap(),
                        r["gid"].as_u64().unwrap(),
                        r["size"].as_u64().unwrap(),
                    ),
                )
            })
            .collect();
        assert_eq!(ours, theirs, "{image}: ls -l of {d}");
    }
    // Contents and block lists of regular files (a sample of the big dir).
    let mut checked = 0;
    for e in entries.iter().filter(|e| e["file_type"] == 1) {
        let dname = e["dir"].as_str().unwrap();
        if dname == "/big" && !e["name"].as_str().unwrap().ends_with('7') {
            continue;
        }
        let ino = e["inode"].as_u64().unwrap();
        let out = dir.join("dump.out");
        let _ = std::fs::remove_file(&out);
        sh(
            dir,
            &[
                "debugfs",
                "-R",
                &format!("dump <{ino}> {}", out.display()),
                flat,
            ],
        );
        let theirs = std::fs::read(&out).unwrap();
        let ours = layerscope(dir, &["cat", image, &format!("<{ino}>")])
            .ok()
            .stdout;
        assert!(
            ours == theirs,
            "{image}: content of inode {ino} ({}) differs from debugfs dump ({} vs {} bytes)",
            e["name"],
            ours.len(),
            theirs.len()
        );
        let theirs: Vec<u64> = String::from_utf8_lossy(
            &sh(dir, &["debugfs", "-R", &format!("blocks <{ino}>"), flat]).stdout,
        )
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
        assert_eq!(ours, theirs, "{image}: blocks of inode {ino}");
        check_stat(dir, image, flat, ino);
        checked += 1;
    }
    assert!(checked > 30, "{image}: only {checked} files checked");
}

/// `stat --json` against `debugfs stat`: mode, flags, owner, size, links,
/// block count.
fn check_stat(dir: &Path, image: &str, flat: &str, ino: u64) {
    let ours = layerscope(dir, &["stat", "--json", image, &format!("<{ino}>")])
        .ok()
        .json();
    let text = String::from_utf8_lossy(
        &sh(dir, &["debugfs", "-R", &format!("stat <{ino}>"), flat]).stdout,
    )
    .into_owned();
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
        ours["size"].to_string(),
        word_after("Size:"),
        "{what}: size"
    );
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
}

#[test]
fn ls_cat_blocks_equal_debugfs() {
    if !tools() || !need("debugfs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let tree = dir.join("tree");
    rich_tree(&tree);
    for (name, opts) in [
        ("ext4", vec!["-t", "ext4"]),
        ("ext2-1k", vec!["-t", "ext2", "-b", "1024"]),
        ("ext3", vec!["-t", "ext3"]),
    ] {
        let raw = format!("{name}.raw");
        let mut args = vec!["mke2fs", "-q", "-F"];
        args.extend(opts);
        args.extend(["-d", tree.to_str().unwrap(), &raw, "64M"]);
        sh(dir, &args);
        check_files(dir, &raw, &raw);
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
    check_files(dir, "top.qcow2", "edit.raw");
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
