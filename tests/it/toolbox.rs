//! The CLI toolbox against its oracles: `path` vs `debugfs ncheck`,
//! `owner` vs `debugfs icheck` (and dumpe2fs for metadata blocks),
//! `timeline --body` vs `fls -r -m /` (and both through `mactime`),
//! `extract` vs `debugfs rdump` of the flattened image, and extract's
//! refusal to write outside DEST.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::util::*;

/// A 64 MiB ext4 image with a generated tree, a hard link, a symlink, a
/// sparse file, a FIFO and an attribute.
fn image(d: &Path, name: &str) {
    let tree = d.join(format!("{name}.tree"));
    make_tree(&tree, 40);
    std::fs::hard_link(tree.join("d1/s1/f1.bin"), tree.join("d2/hard.bin")).unwrap();
    std::os::unix::fs::symlink("../d1/s1/f1.bin", tree.join("d2/link")).unwrap();
    let sparse = std::fs::File::create(tree.join("sparse.bin")).unwrap();
    sparse.set_len(8 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"middle", 4 << 20).unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(tree.join("d3")).unwrap().permissions(),
        0o750,
    );
    sh(
        d,
        &[
            "mke2fs",
            "-q",
            "-t",
            "ext4",
            "-b",
            "4096",
            "-d",
            tree.to_str().unwrap(),
            &format!("{name}.raw"),
            "64M",
        ],
    );
    std::fs::remove_dir_all(tree).unwrap();
    debugfs_w(
        d,
        &format!("{name}.raw"),
        "mknod pipe p\nsif /d3 mode 040750\nea_set /hello.txt user.note layered\n",
    );
}

#[test]
fn path_and_owner_agree_with_ncheck_and_icheck() {
    if !need("mke2fs") || !need("debugfs") || !need("dumpe2fs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    image(d, "a");
    let inodes: Vec<String> = (2..=70).map(|i| i.to_string()).collect();
    let ncheck = sh(
        d,
        &[
            "debugfs",
            "-R",
            &format!("ncheck {}", inodes.join(" ")),
            "a.raw",
        ],
    );
    let theirs: BTreeSet<(u64, String)> = String::from_utf8_lossy(&ncheck.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (i, p) = l.split_once('\t')?;
            Some((i.parse().ok()?, p.replace("//", "/")))
        })
        .collect();
    assert!(theirs.len() > 40, "{theirs:?}");
    let mut args = vec!["path", "--json", "a.raw"];
    args.extend(inodes.iter().map(String::as_str));
    let ours = layerscope(d, &args).ok().json();
    let ours: BTreeSet<(u64, String)> = ours
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| {
            let i = e["inode"].as_u64().unwrap();
            e["paths"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |p| (i, p.as_str().unwrap().to_owned()))
        })
        .filter(|(i, _)| *i != 2)
        .collect();
    // ncheck names each inode once; `path` names every link.
    for t in &theirs {
        assert!(ours.contains(t), "ncheck's {t:?} is missing from {ours:?}");
    }
    let named: BTreeSet<u64> = theirs.iter().map(|t| t.0).collect();
    assert_eq!(
        named,
        ours.iter().map(|t| t.0).collect(),
        "the same inodes have paths"
    );
    let hard: Vec<_> = ours
        .iter()
        .filter(|(_, p)| p.ends_with("f1.bin") || p == "/d2/hard.bin")
        .collect();
    assert_eq!(
        hard.len(),
        2,
        "both links of the hard-linked file: {hard:?}"
    );
    // icheck, every 37th block, and the group 0 metadata dumpe2fs names.
    let blocks: Vec<String> = (0..16384).step_by(37).map(|b: u64| b.to_string()).collect();
    let icheck = sh(
        d,
        &[
            "debugfs",
            "-R",
            &format!("icheck {}", blocks.join(" ")),
            "a.raw",
        ],
    );
    let mut args = vec!["owner", "--json", "a.raw"];
    for b in &blocks {
        args.push("--block");
        args.push(b);
    }
    let ours = layerscope(d, &args).ok().json();
    let ours: HashMap<u64, serde_json::Value> = ours
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["block"].as_u64().unwrap(), e.clone()))
        .collect();
    let mut files = 0;
    for line in String::from_utf8_lossy(&icheck.stdout).lines().skip(1) {
        let (b, who) = line.split_once('\t').unwrap();
        let b: u64 = b.parse().unwrap();
        let o = &ours[&b];
        match who.parse::<u64>() {
            Ok(ino) => {
                files += 1;
                assert_eq!(o["node"].as_u64(), Some(ino), "block {b}: {o}");
            }
            Err(_) => assert!(
                o["node"].is_null(),
                "block {b}: icheck finds no inode, ours {o}"
            ),
        }
    }
    assert!(files > 10, "{files} file blocks sampled");
    let dump = String::from_utf8_lossy(&sh(d, &["dumpe2fs", "a.raw"]).stdout).into_owned();
    let after = |marker: &str| -> u64 {
        let rest = &dump[dump.find(marker).unwrap() + marker.len()..];
        rest.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    };
    let (bb, ib, it) = (
        after("Block bitmap at "),
        after("Inode bitmap at "),
        after("Inode table at "),
    );
    let o = layerscope(
        d,
        &[
            "owner",
            "--json",
            "a.raw",
            "--block",
            &bb.to_string(),
            "--block",
            &ib.to_string(),
            "--offset",
            &format!("{}", (it + 1) * 4096),
        ],
    )
    .ok()
    .json();
    assert_eq!(o[0]["structure"], "group 0 block bitmap");
    assert_eq!(o[1]["structure"], "group 0 inode bitmap");
    assert_eq!(o[2]["structure"], "group 0 inode table: inodes 17-32");
    let text = layerscope(d, &["owner", "a.raw", "--block", "1"])
        .ok()
        .text();
    assert!(
        text.contains("<block not found>") || text.contains("group 0"),
        "{text}"
    );
}

#[test]
fn timeline_bodyfile_is_fls_and_reads_the_same_in_mactime() {
    for t in ["mke2fs", "debugfs", "fls", "mactime"] {
        if !need(t) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    image(d, "t");
    let fls = sh(d, &["fls", "-r", "-m", "/", "t.raw"]);
    let theirs: BTreeSet<String> = String::from_utf8_lossy(&fls.stdout)
        .lines()
        .filter(|l| !l.contains("$OrphanFiles") && !l.contains("(deleted"))
        .map(str::to_owned)
        .collect();
    let body = layerscope(d, &["timeline", "--body", "t.raw"]).ok();
    let ours: BTreeSet<String> = body.text().lines().map(str::to_owned).collect();
    assert_eq!(ours, theirs, "bodyfiles differ");
    // Both through mactime: the same timeline.
    std::fs::write(d.join("ours.body"), body.stdout).unwrap();
    std::fs::write(
        d.join("theirs.body"),
        theirs.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    let m = |f: &str| {
        String::from_utf8_lossy(&sh(d, &["mactime", "-b", f, "-d", "-y"]).stdout).into_owned()
    };
    let (a, b) = (m("ours.body"), m("theirs.body"));
    assert!(a.lines().count() > 40);
    assert_eq!(a, b);
    // The sorted view has one row per (time, file), like mactime's.
    let view = layerscope(d, &["timeline", "--json", "t.raw"]).ok().json();
    let rows: BTreeSet<(String, String, String)> = view
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["date"].as_str().unwrap().to_owned(),
                r["macb"].as_str().unwrap().to_owned(),
                r["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let theirs: BTreeSet<(String, String, String)> = b
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.splitn(8, ',').collect();
            let name = f.get(7)?.trim_matches('"');
            let name = name.split(" -> ").next()?.to_owned();
            Some((f[0].to_owned(), f[2].to_owned(), name))
        })
        .collect();
    assert_eq!(rows, theirs);
    assert!(view[0]["layer"] == 0, "{}", view[0]);
}

/// Everything `extract` and rdump must agree on, per relative path.
fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut groups: HashMap<u64, Vec<String>> = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let what = if ft.is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if ft.is_dir() {
                stack.push(p.clone());
                format!("dir {:o} mtime {}", m.mode(), m.mtime())
            } else if ft.is_file() {
                groups.entry(m.ino()).or_default().push(rel.clone());
                format!(
                    "file {:o} {} bytes mtime {} sha {}",
                    m.mode(),
                    m.len(),
                    m.mtime(),
                    sha256(&p)
                )
            } else {
                format!("special {:o}", m.mode())
            };
            out.insert(rel, what);
        }
    }
    for (_, mut g) in groups {
        g.sort();
        if g.len() > 1 {
            out.insert(format!("links of {}", g[0]), g.join(" "));
        }
    }
    out
}

#[test]
fn extract_equals_debugfs_rdump_of_the_flattened_chain() {
    for t in ["mke2fs", "debugfs", "qemu-img"] {
        if !need(t) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    image(d, "e");
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
            "e.raw",
            "base.qcow2",
        ],
    );
    // The top layer: a changed file, a new one, a removed one.
    std::fs::copy(d.join("e.raw"), d.join("flat.raw")).unwrap();
    std::fs::write(d.join("new.txt"), b"written in the overlay\n").unwrap();
    debugfs_w(
        d,
        "flat.raw",
        "rm /d0/s0/f0.bin\nwrite new.txt /d4/new.txt\nsif /hello.txt mtime 200001010000\n",
    );
    thin_overlay(
        d,
        "top.qcow2",
        "base.qcow2",
        "qcow2",
        &d.join("flat.raw"),
        "",
        false,
    );
    std::fs::create_dir(d.join("rdump")).unwrap();
    sh(d, &["debugfs", "-R", "rdump / rdump", "flat.raw"]);
    let run = layerscope(d, &["extract", "top.qcow2", "/", "ours"]);
    assert_eq!(run.code, 0, "{}{}", run.text(), run.stderr);
    let mut theirs = describe(&d.join("rdump"));
    let mut ours = describe(&d.join("ours"));
    // Where rdump does less: it skips FIFOs, and writes each hard link
    // as a file of its own (extract links them).
    let pipe = ours.remove("pipe");
    theirs.remove("pipe");
    let links = ours.remove("links of d1/s1/f1.bin");
    assert_eq!(ours, theirs);
    assert!(
        pipe.is_some_and(|p| p.starts_with("special 10")),
        "the FIFO is made"
    );
    assert_eq!(links.as_deref(), Some("d1/s1/f1.bin d2/hard.bin"));
    // The sparse file is as sparse as in the image (rdump writes it
    // dense): its allocation equals the inode's block count.
    let stat =
        String::from_utf8_lossy(&sh(d, &["debugfs", "-R", "stat /sparse.bin", "flat.raw"]).stdout)
            .into_owned();
    let sectors: u64 = stat
        .split("Blockcount: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("Blockcount");
    let ours_sectors = std::fs::metadata(d.join("ours/sparse.bin"))
        .unwrap()
        .blocks();
    assert_eq!(
        ours_sectors, sectors,
        "allocation of the sparse file (512-byte sectors)"
    );
    assert!(
        std::fs::metadata(d.join("rdump/sparse.bin"))
            .unwrap()
            .blocks()
            >= ours_sectors
    );
    // DEST not empty: refused without --force.
    let again = layerscope(d, &["extract", "top.qcow2", "/", "ours"]);
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("not empty"), "{}", again.stderr);
    // One file, into a directory.
    std::fs::create_dir(d.join("one")).unwrap();
    layerscope(d, &["extract", "top.qcow2", "/d4/new.txt", "one"]).ok();
    assert_eq!(
        std::fs::read(d.join("one/new.txt")).unwrap(),
        b"written in the overlay\n"
    );
    // The base layer still has the removed file.
    layerscope(
        d,
        &["extract", "--layer", "0", "top.qcow2", "/d0/s0", "base"],
    )
    .ok();
    assert!(d.join("base/f0.bin").exists());
}

#[test]
fn extract_never_writes_outside_dest() {
    if !need("mke2fs") || !need("debugfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let outside = d.join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::create_dir_all(d.join("tree/x/sub")).unwrap();
    std::fs::write(d.join("tree/x/sub/payload"), b"must stay inside").unwrap();
    sh(
        d,
        &[
            "mke2fs",
            "-q",
            "-t",
            "ext4",
            "-O",
            "^metadata_csum",
            "-d",
            "tree",
            "x.raw",
            "16M",
        ],
    );
    // A symlink to the outside, then a directory renamed to the same name
    // (a damaged directory with a duplicate name) holding a file, and an
    // entry renamed to "..".
    let outside_s = outside.to_str().unwrap().to_owned();
    debugfs_w(d, "x.raw", &format!("symlink /x/evil {outside_s}\nmkdir /x/evix\nwrite /dev/null /x/evix/inner\nwrite /dev/null /x/zz\n"));
    let blocks = sh(d, &["debugfs", "-R", "blocks /x", "x.raw"]);
    let block: usize = String::from_utf8_lossy(&blocks.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut bytes = std::fs::read(d.join("x.raw")).unwrap();
    let dirblock = &mut bytes[block * 1024..(block + 1) * 1024];
    // name_len 2, type 1 (regular), "zz".
    let at = dirblock
        .windows(4)
        .position(|w| w == [2, 1, b'z', b'z'])
        .expect("zz entry")
        + 2;
    dirblock[at] = b'.';
    dirblock[at + 1] = b'.';
    // name_len 4, type 2 (directory), "evix" -> "evil".
    let at = dirblock
        .windows(6)
        .position(|w| w == [4, 2, b'e', b'v', b'i', b'x'])
        .expect("evix entry")
        + 5;
    dirblock[at] = b'l';
    std::fs::write(d.join("x.raw"), bytes).unwrap();
    let run = layerscope(d, &["extract", "x.raw", "/", "dest"]);
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "wrote outside DEST: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("skipped") || run.stderr.contains("exists"),
        "{}",
        run.stderr
    );
    assert!(d.join("dest/x/sub/payload").exists());
    assert!(std::fs::symlink_metadata(d.join("dest/x/evil"))
        .unwrap()
        .file_type()
        .is_symlink());
}
