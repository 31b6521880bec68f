//! `find` and `grep` against find(1) and grep(1) run on the tree
//! `debugfs rdump` (ext) or `mcopy -s` (FAT) takes out of the flat image
//! of the same layer; the layer of each grep hit against `debugfs blocks`
//! and `qemu-img map`; `--written-in` against the edits debugfs made in
//! that layer; `--all-layers` against find/grep on each layer's tree.
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::util::*;

/// `debugfs -R "rdump / OUT"` of a flat image into `dir/OUT`.
fn rdump(dir: &Path, image: &str, out: &str) {
    std::fs::create_dir_all(dir.join(out)).unwrap();
    sh(dir, &["debugfs", "-R", &format!("rdump / {out}"), image]);
}

/// `find ROOT ARGS…` (run in ROOT, so paths come out as `./a/b`), as
/// image paths (`/a/b`), sorted.
fn find(root: &Path, args: &[&str]) -> BTreeSet<String> {
    let out = Command::new("find")
        .arg(".")
        .args(["-mindepth", "1"])
        .args(args)
        .current_dir(root)
        .output()
        .unwrap();
    assert!(out.status.success(), "find {args:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim_start_matches('.').to_owned())
        .filter(|p| p != "/lost+found" && !p.starts_with("/lost+found/"))
        .collect()
}

/// `LC_ALL=C grep -r ARGS… .` in ROOT: stdout lines with `./` made `/`.
fn grep(root: &Path, args: &[&str]) -> Vec<String> {
    let out = Command::new("grep")
        .env("LC_ALL", "C")
        .arg("-r")
        .args(args)
        .arg(".")
        .current_dir(root)
        .output()
        .unwrap();
    assert!(out.status.code() != Some(2), "grep {args:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.strip_prefix('.').unwrap_or(l).to_owned())
        .collect()
}

/// `layerscope find … --json` as paths.
fn ours_find(dir: &Path, args: &[&str]) -> BTreeSet<String> {
    let mut a = vec!["find", "--json"];
    a.extend(args);
    layerscope(dir, &a)
        .ok()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_owned())
        .filter(|p| p != "/lost+found" && !p.starts_with("/lost+found/"))
        .collect()
}

/// The ext chain of the diff tests (base <- l1 edits <- l2 copy-up) and
/// each layer's tree as rdump takes it out of the flat image.
fn chain(dir: &Path) -> BTreeSet<(char, String)> {
    let expect = crate::diff::build(dir);
    rdump(dir, "flat0.raw", "t0");
    rdump(dir, "flat1.raw", "t1");
    expect
}

#[test]
fn find_equals_find_on_the_rdumped_tree() {
    if !need("mke2fs") || !need("debugfs") || !need("qemu-img") || !need("find") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    chain(dir);
    let t1 = dir.join("t1");
    let cases: &[(&[&str], &[&str])] = &[
        (&[], &[]),
        (&["--name", "*.txt"], &["-name", "*.txt"]),
        (&["--iname", "F0[0-2]?"], &["-iname", "F0[0-2]?"]),
        (&["--name", "n[!0-8]*"], &["-name", "n[!0-8]*"]),
        (&["--type", "d"], &["-type", "d"]),
        (&["--type", "l,d"], &["-type", "l,d"]),
        (
            &["--type", "f", "--size", "+2k"],
            &["-type", "f", "-size", "+2k"],
        ),
        (
            &["--type", "f", "--size", "-5k"],
            &["-type", "f", "-size", "-5k"],
        ),
        (
            &["--type", "f", "--size", "8"],
            &["-type", "f", "-size", "8"],
        ),
        (
            &["--type", "f", "--size", "20000c"],
            &["-type", "f", "-size", "20000c"],
        ),
        (&["--path", "*/bulk/f01*"], &["-path", "*/bulk/f01*"]),
        (
            &["--regex", ".*/n0[0-4][0-9]"],
            &["-regextype", "posix-extended", "-regex", ".*/n0[0-4][0-9]"],
        ),
        (&["--maxdepth", "1"], &["-maxdepth", "1"]),
        (&["--mindepth", "3"], &["-mindepth", "3"]),
    ];
    for (ours, theirs) in cases {
        let mut a = vec!["l2.qcow2"];
        a.extend(*ours);
        let o = ours_find(dir, &a);
        let t = find(&t1, theirs);
        assert!(!t.is_empty(), "{theirs:?} found nothing: a useless case");
        assert_eq!(o, t, "find {ours:?} vs find(1) {theirs:?}");
    }
    // A start below the root, and the text output.
    let text = layerscope(dir, &["find", "l2.qcow2", "/data/", "--type", "f"])
        .ok()
        .text();
    let o: BTreeSet<String> = text.lines().map(str::to_owned).collect();
    let t: BTreeSet<String> = find(&t1.join("data"), &["-type", "f"])
        .into_iter()
        .map(|p| format!("/data{p}"))
        .collect();
    assert_eq!(o, t);
    // As of layer 0: the base's tree.
    assert_eq!(
        ours_find(dir, &["l2.qcow2", "--layer", "0", "--name", "*.txt"]),
        find(&dir.join("t0"), &["-name", "*.txt"])
    );
}

#[test]
fn find_by_time_equals_find_newermt_and_mtime() {
    if !need("mke2fs") || !need("debugfs") || !need("find") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    let now = std::time::SystemTime::now();
    let day = std::time::Duration::from_secs(86_400);
    for (i, age_days) in [0u32, 1, 3, 10, 40, 400, 4000].iter().enumerate() {
        let p = tree
            .join(if i % 2 == 0 { "sub" } else { "." })
            .join(format!("f{i}"));
        std::fs::write(&p, b"x").unwrap();
        // Half a day off whole days, so no file sits on a boundary.
        let t = now - day * *age_days - day / 2;
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
    sh(
        dir,
        &[
            "mke2fs",
            "-q",
            "-t",
            "ext4",
            "-d",
            tree.to_str().unwrap(),
            "t.raw",
            "8M",
        ],
    );
    rdump(dir, "t.raw", "out");
    let out = dir.join("out");
    for (ours, theirs) in [
        (vec!["--mtime", "+5"], vec!["-mtime", "+5"]),
        (vec!["--mtime", "-2"], vec!["-mtime", "-2"]),
        (vec!["--mtime", "3"], vec!["-mtime", "3"]),
        (vec!["--mmin", "+3000"], vec!["-mmin", "+3000"]),
        (
            vec!["--newer", "2020-01-01"],
            vec!["-newermt", "2020-01-01 UTC"],
        ),
        (
            vec!["--older", "2024-06-01T12:00"],
            vec!["!", "-newermt", "2024-06-01 12:00 UTC"],
        ),
    ] {
        let mut a = vec!["t.raw", "--type", "f"];
        a.extend(&ours);
        let mut b = vec!["-type", "f"];
        b.extend(&theirs);
        let t = find(&out, &b);
        assert!(!t.is_empty() && t.len() < 7, "{theirs:?}: {t:?}");
        assert_eq!(ours_find(dir, &a), t, "{ours:?}");
    }
}

#[test]
fn find_written_in_names_the_files_that_layer_changed() {
    if !need("mke2fs") || !need("debugfs") || !need("qemu-img") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let edits = chain(dir);
    // Regular files debugfs wrote or changed in layer 1 (a rename leaves
    // the inode as it was; /many is a directory).
    let want: BTreeSet<String> = edits
        .iter()
        .filter(|(c, p)| matches!(c, 'A' | 'M') && p != "/many")
        .map(|(_, p)| p.clone())
        .collect();
    let got = ours_find(dir, &["l2.qcow2", "--type", "f", "--written-in", "1"]);
    assert_eq!(got, want);
    // Layer 2 only copied clusters up: nothing written there.
    assert_eq!(
        ours_find(dir, &["l2.qcow2", "--type", "f", "--written-in", "2"]),
        BTreeSet::new()
    );
    // Layer 0 wrote everything else.
    let all = find(&dir.join("t1"), &["-type", "f"]);
    let old = ours_find(dir, &["l2.qcow2", "--type", "f", "--written-in", "0"]);
    assert_eq!(old, all.difference(&want).cloned().collect());
}

#[test]
fn find_all_layers_says_where_each_match_exists() {
    if !need("mke2fs") || !need("debugfs") || !need("qemu-img") || !need("find") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    chain(dir);
    let t0 = find(&dir.join("t0"), &["-name", "*.txt"]);
    let t1 = find(&dir.join("t1"), &["-name", "*.txt"]);
    let mut want: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for p in &t0 {
        want.entry(p.clone()).or_default().push(0);
    }
    for p in &t1 {
        // Layer 2 holds what layer 1 holds.
        want.entry(p.clone()).or_default().extend([1, 2]);
    }
    let v = layerscope(
        dir,
        &[
            "find",
            "--json",
            "--all-layers",
            "l2.qcow2",
            "--name",
            "*.txt",
        ],
    )
    .ok()
    .json();
    let got: BTreeMap<String, Vec<u64>> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_owned(),
                e["layers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l.as_u64().unwrap())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert!(want.values().any(|l| l == &[0]) && want.values().any(|l| l == &[1, 2]));
}

/// (path, line, text) of `grep -rn` output lines (`/p:12:text`).
fn grep_lines(lines: &[String]) -> BTreeSet<(String, u64, String)> {
    lines
        .iter()
        .map(|l| {
            let (p, rest) = l.split_once(':').unwrap();
            let (n, text) = rest.split_once(':').unwrap();
            (p.to_owned(), n.parse().unwrap(), text.to_owned())
        })
        .collect()
}

/// The disk offsets of a file's blocks in a flat ext image, from
/// `debugfs blocks`.
fn file_blocks(dir: &Path, image: &str, path: &str) -> Vec<u64> {
    let out = sh(dir, &["debugfs", "-R", &format!("blocks {path}"), image]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|b| b.parse::<u64>().unwrap() * 4096)
        .collect()
}

/// The layer `qemu-img map` says serves disk byte `off` of a chain whose
/// top is `top_index`.
fn map_layer(map: &Value, off: u64, top_index: u64) -> Option<u64> {
    let e = map.as_array().unwrap().iter().find(|e| {
        let s = e["start"].as_u64().unwrap();
        s <= off && off < s + e["length"].as_u64().unwrap()
    })?;
    (e["data"].as_bool().unwrap() || e["zero"].as_bool().unwrap() && e.get("offset").is_some())
        .then(|| top_index - e["depth"].as_u64().unwrap())
}

#[test]
fn grep_equals_grep_r_and_names_the_layer_of_each_line() {
    if !need("mke2fs") || !need("debugfs") || !need("qemu-img") || !need("grep") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    chain(dir);
    let t1 = dir.join("t1");
    // Files with a match: grep -rl (binary files included).
    for (ours, theirs) in [
        (vec!["-l", "l2.qcow2", "new"], vec!["-l", "new"]),
        (
            vec!["-l", "-i", "l2.qcow2", "HELLO|LOCAL"],
            vec!["-l", "-i", "-E", "HELLO|LOCAL"],
        ),
        (
            vec!["-l", "l2.qcow2", "\\x01\\x08"],
            vec!["-l", "-P", "\\x01\\x08"],
        ),
        (
            vec!["-l", "--fixed-strings", "l2.qcow2", "0.0.1"],
            vec!["-l", "-F", "0.0.1"],
        ),
    ] {
        let mut a = vec!["grep"];
        a.extend(&ours);
        let got: BTreeSet<String> = layerscope(dir, &a)
            .ok()
            .text()
            .lines()
            .map(str::to_owned)
            .collect();
        let want: BTreeSet<String> = grep(&t1, &theirs).into_iter().collect();
        assert!(!want.is_empty(), "{theirs:?}");
        assert_eq!(got, want, "grep {ours:?}");
    }
    // Lines: grep -rn (text files; binary ones are on stderr in both).
    let map = qemu_map(dir, "l2.qcow2");
    let mut layers_checked = BTreeSet::new();
    for pat in ["e", "^[a-z]+ ", "(st|de)$"] {
        let want = grep_lines(&grep(&t1, &["-n", "-E", pat]));
        assert!(!want.is_empty(), "{pat}");
        let v = layerscope(dir, &["grep", "--json", "l2.qcow2", pat])
            .ok()
            .json();
        let mut got = BTreeSet::new();
        for h in v.as_array().unwrap() {
            if h.get("binary").is_some() {
                continue;
            }
            let path = h["path"].as_str().unwrap();
            let line = h["line"].as_u64().unwrap();
            got.insert((
                path.to_owned(),
                line,
                h["text"].as_str().unwrap().to_owned(),
            ));
            // The layer holding the line's first byte, by debugfs and qemu-img.
            let off = h["offset"].as_u64().unwrap();
            let blocks = file_blocks(dir, "flat1.raw", path);
            let layer = blocks
                .get((off / 4096) as usize)
                .and_then(|b| map_layer(&map, b + off % 4096, 2));
            if !blocks.is_empty() {
                assert_eq!(h["layer"].as_u64(), layer, "{h}");
                layers_checked.insert(layer);
            }
        }
        assert_eq!(got, want, "grep -rn {pat}");
    }
    // (The small base files share their 64 KiB clusters with the edits,
    // so layer 1 serves them all here.)
    assert!(layers_checked.contains(&Some(1)), "{layers_checked:?}");
    // Text form: path:line:layer:text.
    let text = layerscope(dir, &["grep", "l2.qcow2", "^new$"]).ok().text();
    assert_eq!(text, "/added.txt:1:1:new\n");
    // Nothing found: exit 1, no message.
    let r = layerscope(dir, &["grep", "l2.qcow2", "no such text anywhere"]);
    assert_eq!((r.code, r.stderr.as_str(), r.stdout.len()), (1, "", 0));
}

#[test]
fn grep_all_layers_says_in_which_layers_each_line_is() {
    if !need("mke2fs") || !need("debugfs") || !need("qemu-img") || !need("grep") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    chain(dir);
    let pat = "[a-z]";
    let mut want: BTreeMap<(String, u64, String), Vec<u64>> = BTreeMap::new();
    for (t, layers) in [("t0", vec![0]), ("t1", vec![1, 2])] {
        for k in grep_lines(&grep(&dir.join(t), &["-n", pat])) {
            want.entry(k).or_default().extend(&layers);
        }
    }
    let v = layerscope(dir, &["grep", "--json", "--all-layers", "l2.qcow2", pat])
        .ok()
        .json();
    let got: BTreeMap<(String, u64, String), Vec<u64>> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h.get("binary").is_none())
        .map(|h| {
            (
                (
                    h["path"].as_str().unwrap().to_owned(),
                    h["line"].as_u64().unwrap(),
                    h["text"].as_str().unwrap().to_owned(),
                ),
                h["layers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l.as_u64().unwrap())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert!(want.values().any(|l| l == &[0]) && want.values().any(|l| l == &[1, 2]));
}

/// layerscope with arguments that need not be UTF-8.
fn run_os(dir: &Path, args: &[&OsStr]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_layerscope"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn names_that_are_not_utf8_as_arguments_and_in_json() {
    if !need("mke2fs") || !need("debugfs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let tree = dir.join("tree");
    let bad = OsStr::from_bytes(b"bad\xffname");
    std::fs::create_dir_all(tree.join(bad)).unwrap();
    std::fs::write(tree.join(bad).join("in\u{e9}.txt"), b"inside\n").unwrap();
    std::fs::write(tree.join(OsStr::from_bytes(b"t\x1bx")), b"escape\n").unwrap();
    // Lines across the 1 MiB chunks grep reads.
    let big: String = (0..300_000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(tree.join("big.txt"), big).unwrap();
    sh(
        dir,
        &[
            "mke2fs",
            "-q",
            "-t",
            "ext4",
            "-d",
            tree.to_str().unwrap(),
            "n.raw",
            "16M",
        ],
    );
    // debugfs's view of the names, as the oracle.
    let listed = sh(dir, &["debugfs", "-R", "ls -p /", "n.raw"]).stdout;
    assert!(listed.windows(8).any(|w| w == b"bad\xffname"));
    // ls prints the escaped form; it is accepted back, and the raw bytes too.
    let ls = layerscope(dir, &["ls", "n.raw", "/"]).ok().text();
    assert!(ls.lines().any(|l| l == "bad\\xffname"), "{ls}");
    assert!(ls.lines().any(|l| l == "t\\x1bx"), "{ls}");
    for arg in [
        &b"/bad\\xffname/in\xc3\xa9.txt"[..],
        b"/bad\xffname/in\xc3\xa9.txt",
    ] {
        let r = run_os(
            dir,
            &[
                OsStr::new("cat"),
                OsStr::new("n.raw"),
                OsStr::from_bytes(arg),
            ],
        )
        .ok();
        assert_eq!(r.stdout, b"inside\n");
    }
    let r = run_os(
        dir,
        &[
            OsStr::new("cat"),
            OsStr::new("n.raw"),
            OsStr::new("/t\\x1bx"),
        ],
    )
    .ok();
    assert_eq!(r.stdout, b"escape\n");
    // JSON: the escaped text and the raw bytes in hex, for find and grep.
    let v = layerscope(dir, &["find", "--json", "n.raw", "--name", "bad*"])
        .ok()
        .json();
    assert_eq!(v[0]["path"], "/bad\\xffname");
    assert_eq!(v[0]["path_bytes"], "2f626164ff6e616d65");
    let v = run_os(
        dir,
        &[
            OsStr::new("grep"),
            OsStr::new("--json"),
            OsStr::new("n.raw"),
            OsStr::new("inside"),
            OsStr::from_bytes(b"/bad\xffname"),
        ],
    )
    .ok()
    .json();
    assert_eq!(v[0]["path"], "/bad\\xffname/in\u{e9}.txt");
    assert!(v[0]["path_bytes"].as_str().unwrap().contains("ff"));
    // grep -rn over the big file equals grep's, line numbers included.
    rdump(dir, "n.raw", "out");
    let want = grep_lines(&grep(
        &dir.join("out"),
        &["-n", "-E", "^line [0-9]*(99999|0000)$"],
    ));
    assert!(want.len() > 30);
    let got: Vec<String> = layerscope(
        dir,
        &["grep", "n.raw", "^line [0-9]*(99999|0000)$", "/big.txt"],
    )
    .ok()
    .text()
    .lines()
    .map(|l| {
        let mut f = l.splitn(4, ':');
        let (p, n, _, t) = (
            f.next().unwrap(),
            f.next().unwrap(),
            f.next().unwrap(),
            f.next().unwrap(),
        );
        format!("{p}:{n}:{t}")
    })
    .collect();
    assert_eq!(grep_lines(&got), want);
}

#[test]
fn find_and_grep_on_fat_in_a_partition() {
    if !need("mkfs.fat") || !need("mcopy") || !need("sfdisk") || !need("find") || !need("grep") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("EFI/BOOT")).unwrap();
    std::fs::create_dir_all(tree.join("docs/more")).unwrap();
    for i in 0..30 {
        let sub = ["EFI/BOOT", "docs", "docs/more"][i % 3];
        let body = format!("line one of {i}\nsecond line {}\n", "z".repeat(i * 50));
        std::fs::write(tree.join(sub).join(format!("File{i}.txt")), body).unwrap();
    }
    std::fs::write(tree.join("bin.dat"), b"zzz\0binary").unwrap();
    sh(dir, &["mkfs.fat", "-C", "-F", "16", "fat.img", "20000"]);
    let env_mtools = |args: &[&str]| {
        let out = Command::new(args[0])
            .args(&args[1..])
            .env("MTOOLS_SKIP_CHECK", "1")
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for e in std::fs::read_dir(&tree).unwrap() {
        let p = e.unwrap().path();
        env_mtools(&["mcopy", "-s", "-i", "fat.img", p.to_str().unwrap(), "::/"]);
    }
    // Out again with mtools: the oracle's tree.
    std::fs::create_dir_all(dir.join("out")).unwrap();
    env_mtools(&["mcopy", "-s", "-n", "-i", "fat.img", "::/*", "out/"]);
    // The FAT in partition 2 of a disk, behind an ext-less partition 1.
    crate::volumes::sparse(dir, "disk.raw", 40 << 20);
    crate::volumes::sfdisk(dir, "disk.raw", "label: gpt\nstart=2048, size=4096\nstart=8192, size=40000, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n");
    crate::volumes::put(dir, "fat.img", "disk.raw", 8192 * 512);
    let out = dir.join("out");
    for (ours, theirs) in [
        (vec!["--name", "*1?.txt"], vec!["-name", "*1?.txt"]),
        (vec!["--iname", "*1?.txt"], vec!["-iname", "*1?.txt"]),
        (vec!["--type", "d"], vec!["-type", "d"]),
        (
            vec!["--type", "f", "--size", "+1k"],
            vec!["-type", "f", "-size", "+1k"],
        ),
    ] {
        let mut a = vec!["disk.raw", "--volume", "p2"];
        a.extend(&ours);
        let theirs_set: BTreeSet<String> = find(&out, &theirs)
            .iter()
            .map(|p| p.to_lowercase())
            .collect();
        let ours_set: BTreeSet<String> = ours_find(dir, &a)
            .iter()
            .map(|p| p.to_lowercase())
            .collect();
        assert!(!theirs_set.is_empty(), "{theirs:?}");
        assert_eq!(ours_set, theirs_set, "{ours:?}");
    }
    let got: BTreeSet<String> =
        layerscope(dir, &["grep", "-l", "disk.raw", "--volume", "p2", "z{100}"])
            .ok()
            .text()
            .lines()
            .map(str::to_lowercase)
            .collect();
    let want: BTreeSet<String> = grep(&out, &["-l", "-E", "z{100}"])
        .iter()
        .map(|p| p.to_lowercase())
        .collect();
    assert!(want.len() > 5);
    assert_eq!(got, want);
    let got = grep_lines(
        &layerscope(dir, &["grep", "disk.raw", "--volume", "p2", "one of 2"])
            .ok()
            .text()
            .lines()
            .map(|l| {
                // path:line:layer:text -> path:line:text
                let mut f = l.splitn(4, ':');
                let (p, n, _, t) = (
                    f.next().unwrap(),
                    f.next().unwrap(),
                    f.next().unwrap(),
                    f.next().unwrap(),
                );
                format!("{}:{n}:{t}", p.to_lowercase())
            })
            .collect::<Vec<_>>(),
    );
    let want = grep_lines(
        &grep(&out, &["-n", "one of 2"])
            .iter()
            .map(|l| l.to_lowercase())
            .collect::<Vec<_>>(),
    );
    assert_eq!(got, want);
}

/// Splits NUL-terminated output into its names.
fn nul_split(bytes: &[u8]) -> BTreeSet<Vec<u8>> {
    bytes
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// Sparse files (a hole first, a hole between matches, a hole at the
/// end), a line longer than the search's 1 MiB line limit, lines across
/// its 1 MiB read boundaries, and a name that is not UTF-8: `grep -l`,
/// `grep -a -n` and `-Z` equal GNU grep's on the tree mke2fs -d copied
/// in (sparse, as mke2fs keeps holes); `find --print0` equals `find
/// -print0`.
#[test]
fn grep_skips_holes_long_lines_and_print0_as_grep_and_find() {
    if !need("mke2fs") || !need("grep") || !need("find") || !need("debugfs") {
        return;
    }
    use std::io::{Seek, SeekFrom, Write};
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    let sparse = |name: &str, size: u64, parts: &[(u64, &[u8])]| {
        let mut f = std::fs::File::create(tree.join(name)).unwrap();
        f.set_len(size).unwrap();
        for (at, bytes) in parts {
            f.seek(SeekFrom::Start(*at)).unwrap();
            f.write_all(bytes).unwrap();
        }
    };
    sparse(
        "hole-first",
        5 << 20,
        &[(4 << 20, b"a needle after a hole\n")],
    );
    sparse(
        "hole-between",
        9 << 20,
        &[
            (0, b"one needle\nplain\n"),
            (6 << 20, b"\nsecond needle here\n"),
        ],
    );
    sparse(
        "hole-end",
        3 << 20,
        &[(0, b"plain text\nneedle at the start\n")],
    );
    sparse("all-hole", 2 << 20, &[]);
    // A 2.5 MiB line, then lines; and 3 MiB of short lines with a few
    // matches across the 1 MiB reads.
    let mut long = vec![b'x'; 5 << 19];
    long.extend_from_slice(b"needle at the end of a long line\nnext\nneedle\n");
    std::fs::write(tree.join("sub/long-line"), long).unwrap();
    let mut many = Vec::new();
    for i in 0..200_000u32 {
        if i % 37_001 == 0 {
            many.extend_from_slice(format!("{i} needle\n").as_bytes());
        } else {
            many.extend_from_slice(format!("line {i} of text\n").as_bytes());
        }
    }
    std::fs::write(tree.join("sub/many-lines"), many).unwrap();
    let odd = OsStr::from_bytes(b"sub/caf\xe9-needle");
    std::fs::write(tree.join(odd), b"needle in a latin-1 name\n").unwrap();
    std::fs::write(tree.join("no-match"), b"nothing here\n").unwrap();
    sh(
        dir,
        &[
            "mke2fs", "-q", "-t", "ext4", "-b", "4096", "-d", "tree", "fs.raw", "64M",
        ],
    );
    // mke2fs kept the holes (else this test tests nothing about them).
    let stat = sh(dir, &["debugfs", "-R", "stat /hole-between", "fs.raw"]);
    let stat = String::from_utf8_lossy(&stat.stdout);
    let sectors: u64 = stat
        .split("Blockcount: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("debugfs stat's Blockcount");
    assert!(sectors * 512 < 1 << 20, "{stat}");
    let rgrep = |args: &[&str]| -> Vec<u8> {
        let out = Command::new("grep")
            .env("LC_ALL", "C")
            .arg("-r")
            .args(args)
            .arg(".")
            .current_dir(&tree)
            .output()
            .unwrap();
        assert!(out.status.code() != Some(2), "grep {args:?}");
        out.stdout
    };
    let as_image_paths = |names: BTreeSet<Vec<u8>>| -> BTreeSet<Vec<u8>> {
        names
            .into_iter()
            .map(|n| n.strip_prefix(b".").unwrap_or(&n).to_vec())
            .filter(|n| !n.starts_with(b"/lost+found"))
            .collect()
    };
    for pat in ["needle", "^needle", "needle$", "x+needle", "plain|second"] {
        // -l -Z: the files, raw names.
        let ours = layerscope(dir, &["grep", "-l", "-Z", "-f", "raw", "fs.raw", pat]).ok();
        let want = as_image_paths(nul_split(&rgrep(&["-lZ", "-E", pat])));
        assert!(!want.is_empty(), "{pat}");
        assert_eq!(nul_split(&ours.stdout), want, "grep -lZ {pat}");
        // -a -n: each matching line's number, binary files as text.
        let ours = layerscope(dir, &["grep", "-a", "--json", "-f", "raw", "fs.raw", pat])
            .ok()
            .json();
        let got: BTreeSet<(Vec<u8>, u64)> = ours
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                let path = match h.get("path_bytes") {
                    Some(b) => (0..b.as_str().unwrap().len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(&b.as_str().unwrap()[i..i + 2], 16).unwrap())
                        .collect(),
                    None => h["path"].as_str().unwrap().as_bytes().to_vec(),
                };
                (path, h["line"].as_u64().unwrap())
            })
            .collect();
        let theirs = rgrep(&["-a", "-n", "-Z", "-E", pat]);
        // Each line: NAME NUL NUMBER ':' text (text may hold NULs).
        let mut want = BTreeSet::new();
        for line in theirs.split(|&b| b == b'\n') {
            let Some(nul) = line.iter().position(|&b| b == 0) else {
                continue;
            };
            let name = line[..nul].strip_prefix(b".").unwrap().to_vec();
            let rest = &line[nul + 1..];
            let Some(colon) = rest.iter().position(|&b| b == b':') else {
                continue;
            };
            if let Ok(n) = std::str::from_utf8(&rest[..colon])
                .unwrap_or("")
                .parse::<u64>()
            {
                want.insert((name, n));
            }
        }
        assert!(!want.is_empty(), "{pat}");
        assert_eq!(got, want, "grep -a -n {pat}");
    }
    // find -print0: raw names, NUL-terminated.
    let ours = layerscope(
        dir,
        &[
            "find", "--print0", "-f", "raw", "fs.raw", "--name", "*needle*",
        ],
    )
    .ok();
    let out = Command::new("find")
        .args([".", "-name", "*needle*", "-print0"])
        .current_dir(&tree)
        .output()
        .unwrap();
    let want = as_image_paths(nul_split(&out.stdout));
    assert_eq!(want.len(), 1);
    assert_eq!(nul_split(&ours.stdout), want);
}
