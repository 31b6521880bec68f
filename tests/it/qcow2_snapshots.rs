//! qcow2 internal snapshots (issue 17): `chain` lists them as `qemu-img
//! info` does, and `--snapshot ID|NAME` reads the disk as `qemu-img
//! convert -l` does, through the backing chain; damaged tables are named.
use std::path::Path;

use crate::util::*;

fn tools() -> bool {
    need("qemu-img") && need("qemu-io")
}

fn assert_same(ours: &[u8], theirs: &[u8], what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: length");
    if let Some(at) = ours.iter().zip(theirs).position(|(a, b)| a != b) {
        panic!("{what}: differs from qemu-img convert -l at byte {at:#x}");
    }
}

/// A base with data, an overlay written between two snapshots and after
/// them; `compat` 1.1 or 0.10 (v2 entries carry no extra data).
fn build(cwd: &Path, compat: &str) {
    sh(
        cwd,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &format!("compat={compat}"),
            "base.qcow2",
            "8M",
        ],
    );
    qemu_io(cwd, "base.qcow2", &["write -P 1 0 4M"]);
    sh(
        cwd,
        &[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &format!("compat={compat}"),
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            "top.qcow2",
        ],
    );
    qemu_io(cwd, "top.qcow2", &["write -P 2 1M 512k"]);
    sh(cwd, &["qemu-img", "snapshot", "-c", "s1", "top.qcow2"]);
    qemu_io(
        cwd,
        "top.qcow2",
        &[
            "write -P 3 0 64k",
            "write -P 3 3M 64k",
            "write -z 1536k 64k",
        ],
    );
    sh(
        cwd,
        &["qemu-img", "snapshot", "-c", "two words", "top.qcow2"],
    );
    qemu_io(cwd, "top.qcow2", &["write -P 4 2M 1M", "discard 0 64k"]);
}

fn check(compat: &str) {
    let d = tempfile::tempdir().unwrap();
    let cwd = d.path();
    build(cwd, compat);
    // The list, key for key with qemu.
    let ours = layerscope(cwd, &["chain", "--json", "top.qcow2"])
        .ok()
        .json();
    let theirs = qemu_info_chain(cwd, "top.qcow2");
    assert_eq!(
        ours[0]["snapshots"], theirs[0]["snapshots"],
        "compat {compat}: snapshot list"
    );
    assert_eq!(ours[0]["snapshots"].as_array().unwrap().len(), 2);
    let text = layerscope(cwd, &["chain", "top.qcow2"]).ok().text();
    assert!(text.contains("two words"), "{text}");
    // Each snapshot, by ID and by name, read as qemu reads it.
    for (id, name) in [("1", "s1"), ("2", "two words")] {
        let theirs = qemu_raw(cwd, "top.qcow2", &["-l", &format!("snapshot.name={name}")]);
        for sel in [id, name] {
            let ours = layerscope(cwd, &["read", "--snapshot", sel, "top.qcow2"])
                .ok()
                .stdout;
            assert_same(&ours, &theirs, &format!("compat {compat}, snapshot {sel}"));
        }
        let json = layerscope(cwd, &["chain", "--json", "--snapshot", id, "top.qcow2"])
            .ok()
            .json();
        assert_eq!(json[0]["read-as-snapshot"]["name"], name);
    }
    // The current state is unchanged without --snapshot.
    let current = layerscope(cwd, &["read", "top.qcow2"]).ok().stdout;
    let flat = qemu_raw(cwd, "top.qcow2", &[]);
    std::fs::write(cwd.join("cur.raw"), &flat).unwrap();
    assert_same(&current, &flat, "current state");
    // A name that is not there lists the ones that are.
    let r = layerscope(cwd, &["read", "--snapshot", "nope", "top.qcow2"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("1 (s1)") && r.stderr.contains("2 (two words)"),
        "{}",
        r.stderr
    );
    // Snapshots are a qcow2 feature.
    let r = layerscope(cwd, &["read", "--snapshot", "1", "cur.raw"]);
    assert_ne!(r.code, 0);
}

#[test]
fn snapshots_v3_match_qemu() {
    if !tools() {
        return;
    }
    check("1.1");
}

#[test]
fn snapshots_v2_match_qemu() {
    if !tools() {
        return;
    }
    check("0.10");
}

/// Reads a big-endian u64/u32 of the file at `at`.
fn be(bytes: &[u8], at: usize, n: usize) -> u64 {
    bytes[at..at + n]
        .iter()
        .fold(0, |a, &b| (a << 8) | u64::from(b))
}

#[test]
fn damaged_snapshot_tables_are_named() {
    if !tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let cwd = d.path();
    build(cwd, "1.1");
    let good = std::fs::read(cwd.join("top.qcow2")).unwrap();
    let table = be(&good, 64, 8) as usize;
    let damage = |name: &str, at: usize, bytes: &[u8]| {
        let mut img = good.clone();
        img[at..at + bytes.len()].copy_from_slice(bytes);
        std::fs::write(cwd.join(name), img).unwrap();
    };
    // qcow2.txt: nb_snapshots at 60; an entry's l1_size at +8,
    // extra_data_size at +36.
    damage("many.qcow2", 60, &70_000u32.to_be_bytes());
    damage("l1.qcow2", table + 8, &u32::MAX.to_be_bytes());
    damage("extra.qcow2", table + 36, &4096u32.to_be_bytes());
    damage(
        "past.qcow2",
        64,
        &((good.len() as u64 + 65536) & !65535).to_be_bytes(),
    );
    // (file, what the error says, the table itself is unreadable)
    for (name, says, whole_table) in [
        ("many.qcow2", "70000 snapshots", true),
        ("l1.qcow2", "L1 table", false),
        ("extra.qcow2", "4096 bytes of extra data", true),
        ("past.qcow2", "passes the end of the file", true),
    ] {
        // The rest of the layer is still shown, with the problem named;
        // a bad L1 table is found when the snapshot is read (as in qemu).
        let c = layerscope(cwd, &["chain", "--json", name]).ok().json();
        let problems = c[0]["problems"].to_string();
        if whole_table {
            assert!(
                problems.contains("snapshot table") && problems.contains(says),
                "{name}: {problems}"
            );
        } else {
            assert_eq!(c[0]["problems"], serde_json::Value::Null, "{name}");
            assert_eq!(c[0]["snapshots"].as_array().unwrap().len(), 2, "{name}");
        }
        let r = layerscope(cwd, &["read", "--snapshot", "1", name]);
        assert_ne!(r.code, 0, "{name}");
        assert!(
            r.stderr.contains(name) && r.stderr.contains(says),
            "{name}: {}",
            r.stderr
        );
        // qemu cannot read snapshot 1 of these images either (the oracle
        // that they are damaged, not a shape we made up).
        let q = std::process::Command::new("qemu-img")
            .args(["convert", "-O", "raw", "-l", "snapshot.id=1", name, "q.raw"])
            .current_dir(cwd)
            .output()
            .unwrap();
        assert!(!q.status.success(), "qemu-img convert -l read {name}");
    }
}

/// Writes into `image` (qcow2) the 4 KiB blocks where `after` differs
/// from `before`, as a guest would: one qemu-io run.
fn write_changes(cwd: &Path, image: &str, before: &[u8], after: &[u8], tag: &str) {
    let mut cmds = Vec::new();
    for (i, (a, b)) in before.chunks(4096).zip(after.chunks(4096)).enumerate() {
        if a != b {
            let f = format!("{tag}-{i}.bin");
            std::fs::write(cwd.join(&f), b).unwrap();
            cmds.push(format!("write -s {f} {} 4096", i * 4096));
        }
    }
    assert!(!cmds.is_empty());
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io(cwd, image, &cmds);
}

/// `diff --from-snapshot A [--snapshot B]` (issue 17 item 2): what changed
/// in a qcow2 file since an internal snapshot, or between two, equals the
/// layer diff of a chain built from qemu's own flattening of the
/// snapshots (`qemu-img convert -l`), quick and full, and holds what
/// debugfs changed; it reads only the clusters whose L2 entries differ.
#[test]
fn diff_between_snapshots_equals_the_layer_diff() {
    if !tools() || !need("mke2fs") || !need("debugfs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let cwd = d.path();
    mkfs(cwd, "fs", "24M", 40);
    sh(
        cwd,
        &["qemu-img", "convert", "-O", "qcow2", "fs.raw", "top.qcow2"],
    );
    sh(cwd, &["qemu-img", "snapshot", "-c", "s1", "top.qcow2"]);
    std::fs::write(cwd.join("new.src"), vec![7u8; 9000]).unwrap();
    let v0 = std::fs::read(cwd.join("fs.raw")).unwrap();
    debugfs_w(
        cwd,
        "fs.raw",
        "zap_block -f /d1/s1/f1.bin -p 0x55 0\n\
         sif /d2/s2/f2.bin mtime 20200101\n\
         write new.src /d0/new.txt\n\
         rm /d3/s0/f3.bin\n",
    );
    let v1 = std::fs::read(cwd.join("fs.raw")).unwrap();
    write_changes(cwd, "top.qcow2", &v0, &v1, "a");
    sh(cwd, &["qemu-img", "snapshot", "-c", "s2", "top.qcow2"]);
    debugfs_w(
        cwd,
        "fs.raw",
        "mkdir /d5/fresh\nwrite new.src /d5/fresh/x.txt\nrm /d4/s1/f4.bin\n",
    );
    let v2 = std::fs::read(cwd.join("fs.raw")).unwrap();
    write_changes(cwd, "top.qcow2", &v1, &v2, "b");
    // The oracle's views: qemu's flattening of each snapshot, and thin
    // overlays over the older one holding what differs.
    for (name, extra) in [
        ("s1", vec!["-l", "snapshot.name=s1"]),
        ("s2", vec!["-l", "snapshot.name=s2"]),
        ("now", vec![]),
    ] {
        let bytes = qemu_raw(cwd, "top.qcow2", &extra);
        std::fs::write(cwd.join(format!("{name}.raw")), bytes).unwrap();
    }
    thin_overlay(
        cwd,
        "since.qcow2",
        "s1.raw",
        "raw",
        &cwd.join("now.raw"),
        "",
        false,
    );
    thin_overlay(
        cwd,
        "between.qcow2",
        "s1.raw",
        "raw",
        &cwd.join("s2.raw"),
        "",
        false,
    );
    let cases: [(&[&str], &str, &[&str]); 2] = [
        (
            &["--from-snapshot", "s1", "top.qcow2"],
            "since.qcow2",
            &[
                "/d0/new.txt",
                "/d3/s0/f3.bin",
                "/d1/s1/f1.bin",
                "/d2/s2/f2.bin",
                "/d5/fresh",
                "/d4/s1/f4.bin",
            ],
        ),
        (
            &["--from-snapshot", "1", "--snapshot", "s2", "top.qcow2"],
            "between.qcow2",
            &[
                "/d0/new.txt",
                "/d3/s0/f3.bin",
                "/d1/s1/f1.bin",
                "/d2/s2/f2.bin",
            ],
        ),
    ];
    for (args, oracle, expected) in cases {
        let theirs = layerscope(cwd, &["diff", "--json", oracle]).ok().json();
        let mut a = vec!["diff", "--json"];
        a.extend_from_slice(args);
        let ours = layerscope(cwd, &a).ok().json();
        assert_eq!(ours["changes"], theirs["changes"], "{args:?}");
        let paths: Vec<&str> = ours["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["path"].as_str().unwrap())
            .collect();
        for p in expected {
            assert!(paths.contains(p), "{args:?}: {p} missing from {paths:?}");
        }
        if args.len() == 3 {
            assert!(!paths.contains(&"/d5/fresh/x.txt") || paths.contains(&"/d5/fresh"));
        } else {
            assert!(
                !paths.iter().any(|p| p.starts_with("/d5/fresh")),
                "{paths:?}"
            );
        }
        assert_eq!(ours["from"], "snapshot 1 (s1)");
        // Only the clusters whose entries differ were compared.
        let held = ours["stats"]["held_bytes"].as_u64().unwrap();
        assert!(held > 0 && held < 8 << 20, "held {held}");
        let mut f = a.clone();
        f.push("--full");
        let full = layerscope(cwd, &f).ok().json();
        assert_eq!(full["changes"], theirs["changes"], "{args:?} --full");
    }
    let ours = layerscope(
        cwd,
        &["diff", "--json", "--from-snapshot", "s1", "top.qcow2"],
    )
    .ok()
    .json();
    assert_eq!(ours["to"], "now");
    let r = layerscope(cwd, &["diff", "--from-snapshot", "s9", "top.qcow2"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("s1") && r.stderr.contains("s2"),
        "{}",
        r.stderr
    );
    let r = layerscope(cwd, &["diff", "--from-snapshot", "s1", "now.raw"]);
    assert_ne!(r.code, 0);
}
