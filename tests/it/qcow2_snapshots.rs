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
