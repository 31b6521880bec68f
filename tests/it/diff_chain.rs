//! The quick diff across several overlays (`diff --from 0 --to 3`), on a
//! small disk and on a 1 TiB one: it equals `diff --full` and debugfs's
//! view of the two flat layers (`rdump` of each, compared path by path).
//! The overlays are made sparse (only the clusters where the flat layers
//! differ are written), so a 1 TiB disk costs what its data costs.
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::diff::{as_seen, base_tree, changes, debugfs_seen, edits};
use crate::util::*;

/// The data ranges `(start, end)` of a sparse raw file, as qemu sees them.
fn data_ranges(dir: &Path, raw: &str) -> Vec<(u64, u64)> {
    let out = sh(dir, &["qemu-img", "map", "--output=json", "-f", "raw", raw]);
    let map: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    map.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"] == true)
        .map(|e| {
            let s = e["start"].as_u64().unwrap();
            (s, s + e["length"].as_u64().unwrap())
        })
        .collect()
}

/// OVERLAY over BACKING (qcow2) holding the 64 KiB clusters where flat raw
/// files OLD and NEW differ; only their data ranges are read.
fn sparse_overlay(dir: &Path, overlay: &str, backing: &str, old: &str, new: &str) {
    sh(
        dir,
        &[
            "qemu-img", "create", "-q", "-f", "qcow2", "-b", backing, "-F", "qcow2", overlay,
        ],
    );
    const CLUSTER: u64 = 65536;
    let mut clusters: Vec<u64> = data_ranges(dir, old)
        .into_iter()
        .chain(data_ranges(dir, new))
        .flat_map(|(s, e)| (s / CLUSTER..e.div_ceil(CLUSTER)).map(|c| c * CLUSTER))
        .collect();
    clusters.sort_unstable();
    clusters.dedup();
    let (fo, fnew) = (
        std::fs::File::open(dir.join(old)).unwrap(),
        std::fs::File::open(dir.join(new)).unwrap(),
    );
    let (mut a, mut b) = (vec![0u8; CLUSTER as usize], vec![0u8; CLUSTER as usize]);
    let mut cmds = Vec::new();
    for c in clusters {
        fo.read_exact_at(&mut a, c).unwrap();
        fnew.read_exact_at(&mut b, c).unwrap();
        if a != b {
            let piece = dir.join(format!("{overlay}.{c}"));
            std::fs::write(&piece, &b).unwrap();
            cmds.push(format!("write -q -s {} {c} {CLUSTER}", piece.display()));
        }
    }
    assert!(!cmds.is_empty(), "{overlay}: no cluster differs");
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io(dir, overlay, &cmds);
}

/// base.qcow2 <- l1 <- l2 <- l3 over an ext4 of `size`, each overlay
/// made of debugfs edits: l1 the edits of the diff tests (rename, hard
/// link, chmod, truncation, a deleted tree, 120 new files), l2 a new
/// directory, deletions and a chmod, l3 bytes changed in place, a new
/// subdirectory, a rename and a deletion. Leaves flat0..flat3.raw.
fn build_chain(dir: &Path, size: &str) {
    let tree = dir.join("tree");
    base_tree(&tree);
    sh(
        dir,
        &[
            "mke2fs",
            "-q",
            "-t",
            "ext4",
            "-b",
            "4096",
            "-E",
            "root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1",
            "-d",
            tree.to_str().unwrap(),
            "flat0.raw",
            size,
        ],
    );
    sh(
        dir,
        &[
            "qemu-img",
            "convert",
            "-O",
            "qcow2",
            "flat0.raw",
            "base.qcow2",
        ],
    );
    let payload = dir.join("payload");
    std::fs::write(
        &payload,
        (0..70_000u32)
            .map(|i| (i * 31 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let p = payload.to_str().unwrap();
    let (l1, _) = edits(dir);
    let mut l2 = String::from("mkdir /more\n");
    for i in 0..30 {
        l2 += &format!("write {p} /more/m{i:02}\n");
    }
    for i in 0..5 {
        l2 += &format!("rm /bulk/f{i:03}\n");
    }
    l2 += "sif /bulk/f020 mode 0100640\n";
    let mut l3 = String::from("mkdir /more/sub\n");
    // Bytes changed in place (a file removed and written again at its
    // path would take the lowest free inode: one l2 freed elsewhere).
    for i in 10..15 {
        l3 += &format!("zap_block -f /bulk/f{i:03} -o {i} -l 20 -p {} 0\n", 60 + i);
    }
    l3 += &format!("write {p} /more/sub/deep\n");
    l3 += "ln /more/m03 /more/sub/m03-moved\nunlink /more/m03\n";
    l3 += "rm /more/m04\n";
    let mut backing = "base.qcow2".to_owned();
    for (k, cmds) in [(1, l1), (2, l2), (3, l3)] {
        let (old, new) = (format!("flat{}.raw", k - 1), format!("flat{k}.raw"));
        sh(dir, &["cp", "--sparse=always", &old, &new]);
        debugfs_w(dir, &new, &cmds);
        let overlay = format!("l{k}.qcow2");
        sparse_overlay(dir, &overlay, &backing, &old, &new);
        backing = overlay;
    }
}

/// For layer pairs across one and several overlays: the quick diff equals
/// `--full`, and (in debugfs's terms) the rdump trees of the flat layers.
fn check_chain(dir: &Path) {
    for (from, to) in [(0, 3), (1, 3), (0, 2), (2, 3)] {
        let (f, t) = (from.to_string(), to.to_string());
        let args = ["diff", "--json", "--from", &f, "--to", &t, "l3.qcow2"];
        let quick = layerscope(dir, &args).ok().json();
        let mut full_args = args.to_vec();
        full_args.insert(2, "--full");
        let full = layerscope(dir, &full_args).ok().json();
        assert!(
            !changes(&quick).is_empty(),
            "{from} -> {to}: nothing changed"
        );
        assert_eq!(
            quick["changes"], full["changes"],
            "{from} -> {to}: quick diff vs --full"
        );
        assert_eq!(quick["method"], "clusters");
        let seen = debugfs_seen(dir, &format!("flat{from}.raw"), &format!("flat{to}.raw"));
        assert_eq!(
            as_seen(&quick),
            seen,
            "{from} -> {to}: quick diff vs rdump of both layers"
        );
        for d in [format!("flat{from}.raw.d"), format!("flat{to}.raw.d")] {
            let _ = std::fs::remove_dir_all(dir.join(d));
        }
    }
}

#[test]
fn quick_diff_across_overlays_equals_full_and_debugfs() {
    if !(need("qemu-img") && need("qemu-io") && need("mke2fs") && need("debugfs")) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    build_chain(tmp.path(), "64M");
    check_chain(tmp.path());
}

/// The same chain on a 1 TiB disk (8192 block groups, a few MiB of data).
#[test]
fn quick_diff_across_overlays_of_a_1_tib_disk() {
    if !(need("qemu-img") && need("qemu-io") && need("mke2fs") && need("debugfs")) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    build_chain(tmp.path(), "1T");
    let info = qemu_info_chain(tmp.path(), "l3.qcow2");
    assert_eq!(info[0]["virtual-size"], 1u64 << 40);
    check_chain(tmp.path());
}
