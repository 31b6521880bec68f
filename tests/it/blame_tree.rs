//! `blame -R` (one walk of the tree) against `blame` of each file alone,
//! on a four-layer chain whose overlays qemu-io wrote cluster by cluster
//! from debugfs's edits: paths created, deleted, re-created, replaced,
//! moved, linked back, changed in place and chmodded in different layers,
//! and a directory of several blocks that loses names. The paths are
//! debugfs's (`rdump` of the top), and each file's shares add up to the
//! blocks debugfs lists for it.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::util::*;

/// flat0.raw .. flat3.raw (each the one before with debugfs's edits) and
/// base.qcow2 <- l1.qcow2 <- l2.qcow2 <- l3.qcow2 holding the clusters
/// where each differs from the one before (l3's compressed).
fn chain(dir: &Path) {
    mkfs(dir, "flat0", "64M", 60);
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
    let host = |name: &str, body: Vec<u8>| {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let small = host("small", b"one\n".to_vec());
    let other = host("other", vec![b'o'; 9000]);
    // Layer 1: new files and a directory of several blocks; a file
    // deleted, one moved, one changed in place, one chmodded.
    let mut l1 = format!("write {small} /new1.txt\nmkdir /big\n");
    for i in 0..150 {
        l1 += &format!("write {small} /big/an-entry-with-a-longer-name-{i:03}\n");
    }
    l1 += "rm /d5/s2/f5.bin\n";
    l1 += "sif /d1/s1/f1.bin mode 0100600\n";
    l1 += "ln /d2/s2/f2.bin /d2/moved.bin\nunlink /d2/s2/f2.bin\n";
    l1 += "zap_block -f /d4/s1/f4.bin -o 0 -l 1 -p 65 0\n";
    // Layer 2: a file replaced, a deleted path written again, names
    // removed from the big directory, a change in place, an owner, a new
    // directory, the moved file linked back at its old path.
    let mut l2 = format!("rm /new1.txt\nwrite {other} /new1.txt\nwrite {other} /d5/s2/f5.bin\n");
    for i in (0..150).step_by(7) {
        l2 += &format!("rm /big/an-entry-with-a-longer-name-{i:03}\n");
    }
    l2 += "zap_block -f /d3/s0/f3.bin -o 0 -l 1 -p 66 1\n";
    l2 += "sif /d1/s1/f1.bin uid 1000\n";
    l2 += &format!("mkdir /d6/new2\nwrite {small} /d6/new2/x\n");
    l2 += "ln /d2/moved.bin /d2/s2/f2.bin\nsif /d2/moved.bin links_count 2\n";
    // Layer 3: a chmod, written compressed.
    let l3 = "sif /hello.txt mode 0100640\n";
    let mut below = "base.qcow2".to_owned();
    for (n, cmds) in [(1, l1.as_str()), (2, l2.as_str()), (3, l3)] {
        let (from, to) = (format!("flat{}.raw", n - 1), format!("flat{n}.raw"));
        std::fs::copy(dir.join(&from), dir.join(&to)).unwrap();
        debugfs_w(dir, &to, cmds);
        let overlay = format!("l{n}.qcow2");
        let writes = Writes {
            compress: n == 3,
            zeros: false,
        };
        let written = thin_overlay_io(dir, &overlay, &below, "qcow2", &dir.join(&to), "", writes);
        assert!(written > 0, "{overlay}");
        below = overlay;
    }
}

/// The paths under `/` of a flat image, as debugfs's `rdump` writes them.
fn rdump_paths(dir: &Path, image: &str) -> BTreeSet<String> {
    crate::diff::dump(dir, image, &format!("{image}.d"))
        .into_keys()
        .collect()
}

/// How many blocks debugfs lists for each of `paths` (`blocks PATH`).
fn debugfs_blocks(dir: &Path, image: &str, paths: &[&str]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for p in paths {
        let text = sh(dir, &["debugfs", "-R", &format!("blocks {p}"), image]).stdout;
        let n = String::from_utf8_lossy(&text).split_whitespace().count() as u64;
        out.insert((*p).to_owned(), n);
    }
    out
}

#[test]
fn blame_r_equals_blame_of_each_file_on_a_four_layer_chain() {
    if !(need("qemu-img") && need("qemu-io") && need("mke2fs") && need("debugfs")) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    chain(dir);
    let all = layerscope(dir, &["blame", "-R", "--json", "l3.qcow2", "/"])
        .ok()
        .json();
    let all = all.as_array().unwrap();
    // Every path debugfs finds, once each, and the root.
    let paths: Vec<&str> = all.iter().map(|b| b["path"].as_str().unwrap()).collect();
    let unique: BTreeSet<String> = paths.iter().map(|p| (*p).to_owned()).collect();
    assert_eq!(unique.len(), paths.len(), "a path blamed twice");
    let mut want = rdump_paths(dir, "flat3.raw");
    want.insert("/".to_owned());
    assert_eq!(unique, want, "blame -R's paths vs rdump of the top");
    // Each entry is what blaming that path alone gives.
    for b in all {
        let p = b["path"].as_str().unwrap();
        let one = layerscope(dir, &["blame", "--json", "l3.qcow2", p])
            .ok()
            .json();
        assert_eq!(
            one.as_array().unwrap().as_slice(),
            std::slice::from_ref(b),
            "{p}"
        );
    }
    // And by node number: `blame -R <2>` against `blame <N>`.
    let nodes = layerscope(dir, &["blame", "-R", "--json", "l3.qcow2", "<2>"])
        .ok()
        .json();
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), all.len());
    for b in nodes {
        let n = format!("<{}>", b["inode"]);
        let one = layerscope(dir, &["blame", "--json", "l3.qcow2", &n])
            .ok()
            .json();
        let mut one = one.as_array().unwrap()[0].clone();
        one["path"] = b["path"].clone();
        assert_eq!(one, *b, "{n}");
    }
    // The shares add up to the blocks debugfs lists, for every file and
    // directory.
    let get = |p: &str| all.iter().find(|b| b["path"] == p).unwrap();
    let listed: Vec<&str> = paths
        .iter()
        .copied()
        .filter(|p| {
            let t = &get(p)["type"];
            *t == "regular" || *t == "directory"
        })
        .collect();
    for (p, n) in debugfs_blocks(dir, "flat3.raw", &listed) {
        let total: u64 = get(&p)["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["bytes"].as_u64().unwrap())
            .sum();
        assert_eq!(total, n * 4096, "{p}");
    }
    // What the edits make of some of them: (content, metadata, created).
    let layers = |p: &str| {
        let b = get(p);
        (
            b["content_layer"].as_u64().unwrap(),
            b["metadata_layer"].as_u64().unwrap(),
            b["created_layer"].as_u64().unwrap(),
        )
    };
    assert_eq!(layers("/d0/s0/f0.bin"), (0, 0, 0));
    assert_eq!(layers("/d4/s1/f4.bin").0, 1);
    assert_eq!(layers("/d3/s0/f3.bin").0, 2);
    assert_eq!(layers("/d1/s1/f1.bin").1, 2);
    assert_eq!(layers("/hello.txt"), (0, 3, 0));
    assert_eq!(layers("/big/an-entry-with-a-longer-name-001").2, 1);
    assert_eq!(layers("/d6/new2/x").2, 2);
    // Deleted in layer 1, written again in 2: the path is layer 2's.
    assert_eq!(layers("/d5/s2/f5.bin").2, 2);
    assert_eq!(layers("/big").0, 2, "names removed in layer 2");
}
