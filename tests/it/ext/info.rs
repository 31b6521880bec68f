//! `info` and `groups` against dumpe2fs: ext2/3/4, block sizes 1k/2k/4k,
//! 64bit on and off, meta_bg, flex_bg, bigalloc, crc16 and crc32c
//! descriptor checksums, partitions, and through qcow2 chains (`--layer`).
use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::{pairs, tools};
use crate::util::*;

pub(super) fn check_info(dir: &Path, image: &str, flat: &str, layer: Option<&str>) {
    check_info_with(dir, image, flat, layer, &[]);
}

pub(crate) fn check_info_with(
    dir: &Path,
    image: &str,
    flat: &str,
    layer: Option<&str>,
    extra: &[&str],
) {
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
pub(super) fn dumpe2fs_groups(dir: &Path, flat: &str) -> Vec<BTreeMap<&'static str, String>> {
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
                // `csum 0x1234 (EXPECTED 0x5678)`: a bad checksum.
                g.insert("checksum_ok", (!tail.contains("EXPECTED")).to_string());
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
            let csum = |r: &str| {
                r.split_once("csum 0x")
                    .map(|(_, c)| u64::from_str_radix(c.trim(), 16).unwrap().to_string())
            };
            if l.starts_with("Primary superblock at ")
                || l.starts_with("Backup superblock at ")
                || l.starts_with("Group descriptor")
            {
                for part in l.split(", ") {
                    let value = part.rsplit(' ').next().unwrap();
                    let range = |v: &str| match v.split_once('-') {
                        Some((a, b)) => format!("[{a},{b}]"),
                        None => format!("[{v},{v}]"),
                    };
                    if part.contains("superblock at") {
                        g.insert("superblock", value.to_owned());
                    } else if part.starts_with("Group descriptors at") {
                        g.insert("descriptors", range(value));
                    } else if part.starts_with("Group descriptor at") {
                        g.insert("meta_descriptor", value.to_owned());
                    }
                }
            } else if let Some(r) = l.strip_prefix("Reserved GDT blocks at ") {
                let (a, b) = r.split_once('-').unwrap();
                g.insert("reserved_gdt", format!("[{a},{b}]"));
            } else if let Some(r) = l.strip_prefix("Block bitmap at ") {
                g.insert("block_bitmap", num(r));
                if let Some(c) = csum(r) {
                    g.insert("block_bitmap_csum", c);
                }
            } else if let Some(r) = l.strip_prefix("Inode bitmap at ") {
                g.insert("inode_bitmap", num(r));
                if let Some(c) = csum(r) {
                    g.insert("inode_bitmap_csum", c);
                }
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

pub(super) fn check_groups(dir: &Path, image: &str, flat: &str) {
    check_groups_with(dir, image, flat, true)
}

/// `groups --json` against dumpe2fs's group list; `clean` filesystems
/// also have matching bitmap checksums.
pub(super) fn check_groups_with(dir: &Path, image: &str, flat: &str, clean: bool) {
    check_groups_args(dir, image, flat, clean, &[]);
}

/// As [`check_groups_with`], with more arguments for `groups`.
pub(super) fn check_groups_args(dir: &Path, image: &str, flat: &str, clean: bool, extra: &[&str]) {
    let mut args = vec!["groups", "--json", image];
    args.extend_from_slice(extra);
    let ours = layerscope(dir, &args).ok().json();
    let theirs = dumpe2fs_groups(dir, flat);
    let ours = ours.as_array().unwrap();
    assert_eq!(ours.len(), theirs.len(), "{image}: group count");
    for (o, t) in ours.iter().zip(&theirs) {
        for (k, v) in t {
            let mine = match &o[*k] {
                Value::Array(a) if *k == "flags" => a
                    .iter()
                    .map(|f| f.as_str().unwrap())
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            assert_eq!(&mine, v, "{image}: group {} {k}", o["group"]);
        }
        // Placement dumpe2fs does not print is absent.
        for k in [
            "superblock",
            "descriptors",
            "reserved_gdt",
            "meta_descriptor",
        ] {
            if !t.contains_key(k) {
                assert_eq!(o[k], Value::Null, "{image}: group {} {k}", o["group"]);
            }
        }
        // Initialized bitmaps carry a matching checksum (metadata_csum).
        for (k, flag) in [
            ("block_bitmap", "BLOCK_UNINIT"),
            ("inode_bitmap", "INODE_UNINIT"),
        ] {
            if !clean {
                break;
            }
            let ok = &o[format!("{k}_csum_ok").as_str()];
            if t.contains_key(format!("{k}_csum").as_str()) && !t["flags"].contains(flag) {
                assert_eq!(ok, true, "{image}: group {} {k} checksum", o["group"]);
            } else {
                assert_eq!(
                    ok,
                    &Value::Null,
                    "{image}: group {} {k} checksum",
                    o["group"]
                );
            }
        }
        if !t.contains_key("checksum") {
            assert_eq!(
                o["checksum_ok"],
                Value::Null,
                "{image}: no checksum expected"
            );
        }
    }
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
        ("ext2-rev0", &["-t", "ext2", "-r", "0"], "16M"),
        (
            "ext4-casefold-orphan-quota",
            &[
                "-t",
                "ext4",
                "-O",
                "casefold,orphan_file,quota,project,encrypt,metadata_csum_seed",
            ],
            "64M",
        ),
        (
            "ext4-raid-sparse2-fc",
            &[
                "-t",
                "ext4",
                "-E",
                "stride=8,stripe_width=32",
                "-O",
                "sparse_super2,fast_commit,large_dir,ea_inode",
            ],
            "64M",
        ),
        (
            "ext4-huge-inodes-small-groups",
            &[
                "-t", "ext4", "-I", "1024", "-g", "4096", "-G", "4", "-b", "1024",
            ],
            "32M",
        ),
        (
            "ext4-nojournal-nohash",
            &["-t", "ext4", "-O", "^has_journal,^dir_index"],
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
        // `info --groups` (dumpe2fs in one run) is `info`, a blank line
        // and `groups`, both checked against dumpe2fs above.
        let both = layerscope(dir, &["info", "--groups", &q]).ok().text();
        let info = layerscope(dir, &["info", &q]).ok().text();
        let groups = layerscope(dir, &["groups", &q]).ok().text();
        assert_eq!(both, format!("{info}\n{groups}"), "{name}");
        let both = layerscope(dir, &["info", "--groups", "--json", &q])
            .ok()
            .json();
        let groups = layerscope(dir, &["groups", "--json", &q]).ok().json();
        assert_eq!(both["groups"], groups, "{name}");
        assert!(both["fields"].is_array(), "{name}");
    }
}

/// Superblock fields only tune2fs and debugfs set: errors behaviour,
/// check interval, reserved uid/gid, mount options, error records,
/// snapshot fields, orphan list head, lifetime writes.
#[test]
fn info_equals_dumpe2fs_after_tune2fs_and_debugfs() {
    if !tools() || !need("tune2fs") || !need("debugfs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    mkfs(dir, "t", "32M", 5);
    sh(
        dir,
        &[
            "tune2fs",
            "-e",
            "panic",
            "-c",
            "20",
            "-i",
            "1d",
            "-r",
            "1000",
            "-u",
            "1",
            "-g",
            "1",
            "-E",
            "mount_opts=nodelalloc",
            "-o",
            "acl,user_xattr,journal_data",
            "t.raw",
        ],
    );
    debugfs_w(
        dir,
        "t.raw",
        "ssv error_count 3\nssv first_error_time 20200102030405\n\
         ssv first_error_func ext4_lookup\nssv first_error_line 42\n\
         ssv first_error_ino 12\nssv first_error_block 99\n\
         ssv last_error_time 20210102030405\nssv last_error_func ext4_readdir\n\
         ssv last_error_line 7\nssv last_orphan 13\nssv kbytes_written 123456789\n\
         ssv overhead_clusters 77\nssv state 3\nssv snapshot_inum 5\n\
         ssv snapshot_id 2\nssv snapshot_list 6\n\
         ssv encrypt_pw_salt 01020304-0506-0708-090a-0b0c0d0e0f10\nssv mtime 0\n",
    );
    check_info(dir, "t.raw", "t.raw", None);
    let text = layerscope(dir, &["info", "t.raw"]).ok().text();
    assert!(
        text.contains("ext4_lookup") && text.contains("clean with errors"),
        "{text}"
    );
    // The field table decodes the default mount options in dumpe2fs's
    // words, so `info --json` and the TUI's Superblock pane show them.
    let oracle = String::from_utf8(sh(dir, &["dumpe2fs", "-h", "t.raw"]).stdout).unwrap();
    let want = oracle
        .lines()
        .find_map(|l| l.strip_prefix("Default mount options:"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(want.contains("journal_data"), "{want}");
    let json = layerscope(dir, &["info", "--json", "t.raw"]).ok().json();
    fn find<'a>(v: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
        match v {
            serde_json::Value::Object(m)
                if m.get("name").and_then(|n| n.as_str()) == Some(name) =>
            {
                Some(v)
            }
            serde_json::Value::Object(m) => m.values().find_map(|x| find(x, name)),
            serde_json::Value::Array(a) => a.iter().find_map(|x| find(x, name)),
            _ => None,
        }
    }
    let field = find(&json, "s_default_mount_opts").expect("s_default_mount_opts in info --json");
    assert_eq!(field["shown"], want.as_str(), "{field}");
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
        run.stderr.contains("--volume") && run.stderr.contains("p2 (ext2"),
        "{}",
        run.stderr
    );
    let run = layerscope(dir, &["ls", "mbr.raw", "--partition", "7"]);
    assert!(
        run.code == 1 && run.stderr.contains("no volume \"p7\""),
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
