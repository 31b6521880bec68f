//! qcow2 persistent dirty bitmaps (issue 17): `chain` lists them as
//! `qemu-img info` does, and `map --bitmap NAME` equals `nbdinfo
//! --map=qemu:dirty-bitmap:NAME` through `qemu-nbd -B NAME`, read from the
//! file alone; inconsistent and in-use bitmaps are treated as qemu does.
use std::path::Path;

use serde_json::Value;

use crate::nbd::{serve, socket_ready};
use crate::util::*;

fn tools() -> bool {
    need("qemu-img") && need("qemu-io") && need("qemu-nbd") && need("nbdinfo")
}

/// nbdinfo's map of bitmap `name` of `image`, served by qemu-nbd.
fn nbdinfo_map(cwd: &Path, image: &str, name: &str) -> Value {
    let sock = cwd.join(format!("{name}.sock"));
    let _server = serve(
        cwd,
        &[
            "qemu-nbd",
            "--read-only",
            "--persistent",
            "-B",
            name,
            "--socket",
            sock.to_str().unwrap(),
            "-f",
            "qcow2",
            image,
        ],
        &socket_ready(sock.clone()),
    );
    let uri = format!("nbd+unix:///?socket={}", sock.display());
    let out = sh(
        cwd,
        &[
            "nbdinfo",
            "--json",
            &format!("--map=qemu:dirty-bitmap:{name}"),
            &uri,
        ],
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A base and an overlay with four bitmaps: 64 KiB and 1 MiB granularity
/// (one disabled before the last writes), one added late, and one of 512
/// bytes over 4 KiB clusters whose bits span several data clusters.
fn build(cwd: &Path) {
    sh(
        cwd,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "base.qcow2",
            "64M",
        ],
    );
    qemu_io(cwd, "base.qcow2", &["write -P 1 0 8M"]);
    sh(
        cwd,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=4096",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            "top.qcow2",
        ],
    );
    sh(
        cwd,
        &[
            "qemu-img",
            "bitmap",
            "--add",
            "-g",
            "65536",
            "top.qcow2",
            "b0",
        ],
    );
    sh(
        cwd,
        &["qemu-img", "bitmap", "--add", "-g", "1M", "top.qcow2", "b1"],
    );
    sh(
        cwd,
        &[
            "qemu-img",
            "bitmap",
            "--add",
            "-g",
            "512",
            "top.qcow2",
            "fine",
        ],
    );
    let mut writes = vec![
        "write -P 2 0 100k".to_owned(),
        "write 10M 1M".into(),
        "write 67108352 512".into(),
    ];
    // Scattered sectors: bytes of the fine bitmap that are neither 0 nor
    // 0xff, across its data clusters.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..200 {
        let sector = rng.below(131_072);
        writes.push(format!("write -P 3 {} 512", sector * 512));
    }
    let cmds: Vec<&str> = writes.iter().map(String::as_str).collect();
    qemu_io(cwd, "top.qcow2", &cmds);
    sh(cwd, &["qemu-img", "bitmap", "--add", "top.qcow2", "late"]);
    sh(cwd, &["qemu-img", "bitmap", "--disable", "top.qcow2", "b1"]);
    qemu_io(cwd, "top.qcow2", &["write 5M 64k", "write 40M 3k"]);
}

#[test]
fn bitmaps_list_and_map_like_qemu_nbd() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let cwd = d.path();
    build(cwd);
    let ours = layerscope(cwd, &["chain", "--json", "top.qcow2"])
        .ok()
        .json();
    let theirs = qemu_info_chain(cwd, "top.qcow2");
    let list = &theirs[0]["format-specific"]["data"]["bitmaps"];
    assert_eq!(list.as_array().unwrap().len(), 4, "{list}");
    assert_eq!(&ours[0]["format-specific"]["data"]["bitmaps"], list);
    assert!(ours[1]["format-specific"]["data"].get("bitmaps").is_none());
    for name in ["b0", "b1", "fine", "late"] {
        let theirs = nbdinfo_map(cwd, "top.qcow2", name);
        let ours = layerscope(cwd, &["map", "--bitmap", name, "--json", "top.qcow2"])
            .ok()
            .json();
        assert_eq!(ours, theirs, "bitmap {name}");
        // The text form holds the same runs.
        let text = layerscope(cwd, &["map", "--bitmap", name, "top.qcow2"])
            .ok()
            .text();
        let rows: Vec<Value> = text
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                serde_json::json!({"offset": f[0].parse::<u64>().unwrap(), "length": f[1].parse::<u64>().unwrap(),
                    "type": f[2].parse::<u64>().unwrap(), "description": f[3]})
            })
            .collect();
        assert_eq!(Value::Array(rows), theirs, "bitmap {name}, text");
    }
    let r = layerscope(cwd, &["map", "--bitmap", "nope", "top.qcow2"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("b0, b1, fine, late"), "{}", r.stderr);
    let r = layerscope(cwd, &["map", "--bitmap", "b0", "base.qcow2"]);
    assert_ne!(r.code, 0);
}

#[test]
fn inconsistent_and_in_use_bitmaps_as_qemu_treats_them() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let cwd = d.path();
    build(cwd);
    let good = std::fs::read(cwd.join("top.qcow2")).unwrap();
    // qcow2.txt: autoclear_features at 88 (bit 0: bitmaps consistent).
    let mut img = good.clone();
    img[95] &= !1;
    std::fs::write(cwd.join("stale.qcow2"), &img).unwrap();
    let ours = layerscope(cwd, &["chain", "--json", "stale.qcow2"])
        .ok()
        .json();
    let theirs = qemu_info_chain(cwd, "stale.qcow2");
    assert!(
        theirs[0]["format-specific"]["data"]
            .get("bitmaps")
            .is_none(),
        "{theirs}"
    );
    assert_eq!(ours[0]["format-specific"], theirs[0]["format-specific"]);
    // The first directory entry's flags (entry + 12) with in_use set: the
    // bitmaps extension (magic 0x23852875) says where the directory is.
    let ext = good
        .windows(4)
        .position(|w| w == [0x23, 0x85, 0x28, 0x75])
        .unwrap();
    let dir = u64::from_be_bytes(good[ext + 8 + 16..ext + 8 + 24].try_into().unwrap()) as usize;
    let mut img = good.clone();
    img[dir + 15] |= 1;
    std::fs::write(cwd.join("inuse.qcow2"), &img).unwrap();
    let ours = layerscope(cwd, &["chain", "--json", "inuse.qcow2"])
        .ok()
        .json();
    let theirs = qemu_info_chain(cwd, "inuse.qcow2");
    assert_eq!(
        theirs[0]["format-specific"]["data"]["bitmaps"][0]["flags"][0],
        "in-use"
    );
    assert_eq!(ours[0]["format-specific"], theirs[0]["format-specific"]);
    let r = layerscope(cwd, &["map", "--bitmap", "b0", "inuse.qcow2"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("in use"), "{}", r.stderr);
    // qemu-nbd refuses to export it too.
    let q = std::process::Command::new("qemu-nbd")
        .args([
            "--read-only",
            "-B",
            "b0",
            "--socket",
            "x.sock",
            "-f",
            "qcow2",
            "inuse.qcow2",
        ])
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(!q.status.success(), "qemu-nbd exported an in-use bitmap");
}

/// Two maps equal, or the first row where they differ.
fn same_rows(ours: &Value, theirs: &Value, what: &str) {
    let (a, b) = (ours.as_array().unwrap(), theirs.as_array().unwrap());
    if let Some(i) = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i)) {
        panic!(
            "{what}: row {i} of {}/{}: ours {:?}, theirs {:?}",
            a.len(),
            b.len(),
            a.get(i),
            b.get(i)
        );
    }
}

/// The rows of `nbdinfo --map` text output, as JSON values.
fn text_rows(text: &str) -> Value {
    Value::Array(
        text.lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                serde_json::json!({"offset": f[0].parse::<u64>().unwrap(),
                    "length": f[1].parse::<u64>().unwrap(),
                    "type": f[2].parse::<u64>().unwrap(),
                    "description": f[3..].join(" ")})
            })
            .collect(),
    )
}

/// Over NBD (issue 17 item 4): `nbd-info` lists the server's metadata
/// contexts, dirty bitmaps among them, as nbdinfo does; `map --context`
/// prints any of them as `nbdinfo --map=CONTEXT` does; `map --bitmap NAME`
/// on an NBD URI reads the server's bitmap context.
#[test]
fn nbd_contexts_list_and_map_like_nbdinfo() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let cwd = d.path();
    build(cwd);
    let sock = cwd.join("ctx.sock");
    let s = sock.to_str().unwrap();
    let _server = serve(
        cwd,
        &[
            "qemu-nbd",
            "--read-only",
            "--persistent",
            "-A",
            "-B",
            "b0",
            "-B",
            "fine",
            "--socket",
            s,
            "-f",
            "qcow2",
            "top.qcow2",
        ],
        &socket_ready(sock.clone()),
    );
    let uri = format!("nbd+unix:///?socket={s}");
    let theirs: Value =
        serde_json::from_slice(&sh(cwd, &["nbdinfo", "--json", &uri]).stdout).unwrap();
    let mut want: Vec<String> = theirs["exports"][0]["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    want.sort();
    assert!(
        want.contains(&"qemu:dirty-bitmap:fine".to_owned()),
        "{want:?}"
    );
    let ours = layerscope(cwd, &["nbd-info", "--json", &uri]).ok().json();
    let mut got: Vec<String> = ours["contexts"]
        .as_array()
        .unwrap_or_else(|| panic!("{ours}"))
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    got.sort();
    assert_eq!(got, want);
    let text = layerscope(cwd, &["nbd-info", &uri]).ok().text();
    assert!(
        text.lines()
            .any(|l| l.starts_with("contexts:") && l.contains("qemu:dirty-bitmap:b0")),
        "{text}"
    );
    for ctx in [
        "base:allocation",
        "qemu:allocation-depth",
        "qemu:dirty-bitmap:b0",
        "qemu:dirty-bitmap:fine",
    ] {
        let map = format!("--map={ctx}");
        let theirs: Value =
            serde_json::from_slice(&sh(cwd, &["nbdinfo", "--json", &map, &uri]).stdout).unwrap();
        assert!(theirs.as_array().unwrap().len() > 1, "{ctx}: {theirs}");
        let ours = layerscope(cwd, &["map", "--context", ctx, "--json", &uri])
            .ok()
            .json();
        same_rows(&ours, &theirs, ctx);
        let theirs_text = String::from_utf8(sh(cwd, &["nbdinfo", &map, &uri]).stdout).unwrap();
        let ours_text = layerscope(cwd, &["map", "--context", ctx, &uri])
            .ok()
            .text();
        same_rows(&text_rows(&ours_text), &text_rows(&theirs_text), ctx);
        same_rows(&text_rows(&ours_text), &theirs, ctx);
    }
    // --bitmap on an NBD URI is the server's bitmap context; the file's
    // own bitmap agrees.
    let ours = layerscope(cwd, &["map", "--bitmap", "fine", "--json", &uri])
        .ok()
        .json();
    let file = layerscope(cwd, &["map", "--bitmap", "fine", "--json", "top.qcow2"])
        .ok()
        .json();
    assert_eq!(ours, file);
    // A bitmap the server does not export is named, with what it offers.
    let r = layerscope(cwd, &["map", "--context", "qemu:dirty-bitmap:late", &uri]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("qemu:dirty-bitmap:late") && r.stderr.contains("base:allocation"),
        "{}",
        r.stderr
    );
    // --context is an NBD notion.
    let r = layerscope(cwd, &["map", "--context", "base:allocation", "top.qcow2"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("--bitmap"), "{}", r.stderr);
}

/// `diff --bitmap NAME` (issue 17 item 2): the files an incremental backup
/// from a bitmap carries. An ext4 filesystem in a GPT partition at 1 MiB
/// is changed by debugfs (file blocks overwritten, an inode's mtime set,
/// a file written, one removed) and the changed 4 KiB blocks are written
/// into the qcow2 through qemu-io while bitmap b0
/// records them (4 KiB granularity). The oracle: nbdinfo's map of the bitmap through qemu-nbd,
/// against debugfs's `blocks` and `imap` of every path.
#[test]
fn diff_bitmap_lists_the_files_a_backup_carries() {
    if !tools() || !need("mke2fs") || !need("debugfs") || !need("sfdisk") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let cwd = d.path();
    const PART: u64 = 1 << 20;
    mkfs(cwd, "fs", "24M", 40);
    let before = std::fs::read(cwd.join("fs.raw")).unwrap();
    let mut disk = vec![0u8; 26 << 20];
    disk[PART as usize..PART as usize + before.len()].copy_from_slice(&before);
    std::fs::write(cwd.join("disk.raw"), &disk).unwrap();
    let table = "label: gpt\nstart=2048, size=49152, type=linux\n";
    let mut child = std::process::Command::new("sfdisk")
        .args(["-q", "disk.raw"])
        .current_dir(cwd)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), table.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    sh(
        cwd,
        &[
            "qemu-img",
            "convert",
            "-O",
            "qcow2",
            "disk.raw",
            "top.qcow2",
        ],
    );
    // 4 KiB granularity: at 64 KiB one chunk of the inode table holds
    // every file's inode here, and every file would be marked.
    sh(
        cwd,
        &[
            "qemu-img",
            "bitmap",
            "--add",
            "-g",
            "4096",
            "top.qcow2",
            "b0",
        ],
    );
    std::fs::write(cwd.join("new.src"), vec![7u8; 9000]).unwrap();
    debugfs_w(
        cwd,
        "fs.raw",
        "zap_block -f /d1/s1/f1.bin -p 0x55 0\n\
         zap_block -f /d4/s1/f4.bin -p 0x66 5\n\
         sif /d2/s2/f2.bin mtime 20200101\n\
         write new.src /d0/new.txt\n\
         rm /d3/s0/f3.bin\n",
    );
    let after = std::fs::read(cwd.join("fs.raw")).unwrap();
    // The changed blocks, written into the qcow2 (the bitmap records it).
    let mut cmds = Vec::new();
    for (i, (a, b)) in before.chunks(4096).zip(after.chunks(4096)).enumerate() {
        if a != b {
            let f = format!("chunk{i}.bin");
            std::fs::write(cwd.join(&f), b).unwrap();
            cmds.push(format!("write -s {f} {} 4096", PART + i as u64 * 4096));
        }
    }
    assert!(cmds.len() > 4, "{cmds:?}");
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io(cwd, "top.qcow2", &cmds);
    let now = qemu_raw(cwd, "top.qcow2", &[]);
    assert!(now[PART as usize..PART as usize + after.len()] == after[..]);
    // The oracle's dirty ranges, filesystem-relative.
    let map = nbdinfo_map(cwd, "top.qcow2", "b0");
    let dirty: Vec<(u64, u64)> = map
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == 1)
        .map(|e| {
            let (o, l) = (e["offset"].as_u64().unwrap(), e["length"].as_u64().unwrap());
            (o.saturating_sub(PART), (o + l).saturating_sub(PART))
        })
        .filter(|(s, e)| e > s)
        .collect();
    let is_dirty = |at: u64| dirty.iter().any(|&(s, e)| at >= s && at < e);
    let debugfs = |cmd: String| -> String {
        String::from_utf8(sh(cwd, &["debugfs", "-R", &cmd, "fs.raw"]).stdout).unwrap()
    };
    let mut paths: Vec<String> = vec!["/".into(), "/hello.txt".into(), "/d0/new.txt".into()];
    for i in 0..40 {
        if i != 3 {
            paths.push(format!("/d{}/s{}/f{i}.bin", i % 7, i % 3));
        }
        paths.push(format!("/d{}", i % 7));
        paths.push(format!("/d{}/s{}", i % 7, i % 3));
    }
    paths.sort();
    paths.dedup();
    let mut want = std::collections::BTreeMap::new();
    for p in &paths {
        let blocks: u64 = debugfs(format!("blocks {p}"))
            .split_whitespace()
            .map(|b| b.parse::<u64>().unwrap())
            .filter(|&b| is_dirty(b * 4096))
            .count() as u64;
        let imap = debugfs(format!("imap {p}"));
        let (blk, off) = imap
            .split("located at block ")
            .nth(1)
            .and_then(|r| r.split_once(", offset "))
            .unwrap_or_else(|| panic!("{p}: {imap}"));
        let at = blk.trim().parse::<u64>().unwrap() * 4096
            + u64::from_str_radix(off.trim().trim_start_matches("0x"), 16).unwrap();
        if blocks > 0 || is_dirty(at) {
            want.insert(p.clone(), (blocks * 4096, is_dirty(at)));
        }
    }
    for p in [
        "/d1/s1/f1.bin",
        "/d4/s1/f4.bin",
        "/d2/s2/f2.bin",
        "/d0/new.txt",
        "/d3/s0",
    ] {
        assert!(
            want.contains_key(p),
            "{p} not dirty by the oracle: {want:?}"
        );
    }
    assert!(want.len() < paths.len(), "everything is dirty: {want:?}");
    let ours = layerscope(cwd, &["diff", "--bitmap", "b0", "--json", "top.qcow2"])
        .ok()
        .json();
    let got: std::collections::BTreeMap<String, (u64, bool)> = ours["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["path"] != "/lost+found")
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                (f["dirty_bytes"].as_u64().unwrap(), f["node_dirty"] == true),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(ours["volume"], "p1", "{ours}");
    assert_eq!(ours["granularity"], 4096);
    // The volume's dirty bytes: the oracle's ranges inside the partition.
    let inside: u64 = dirty
        .iter()
        .map(|&(s, e)| e.min(24 << 20) - s.min(24 << 20))
        .sum();
    assert_eq!(ours["dirty_bytes"], inside);
    let text = layerscope(cwd, &["diff", "--bitmap", "b0", "top.qcow2"])
        .ok()
        .text();
    assert!(
        text.lines()
            .any(|l| l.starts_with("dirty  regular") && l.contains("/d4/s1/f4.bin")),
        "{text}"
    );
    // Served by qemu-nbd -B, the server's bitmap gives the same files.
    let sock = cwd.join("diff.sock");
    let s = sock.to_str().unwrap();
    let _server = serve(
        cwd,
        &[
            "qemu-nbd",
            "--read-only",
            "--persistent",
            "-B",
            "b0",
            "--socket",
            s,
            "-f",
            "qcow2",
            "top.qcow2",
        ],
        &socket_ready(sock.clone()),
    );
    let uri = format!("nbd+unix:///?socket={s}");
    let remote = layerscope(cwd, &["diff", "--bitmap", "b0", "--json", &uri])
        .ok()
        .json();
    assert_eq!(remote["files"], ours["files"]);
    // No such bitmap: named, with those there are.
    let r = layerscope(cwd, &["diff", "--bitmap", "nope", "top.qcow2"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("b0"), "{}", r.stderr);
}
