//! Chains that mix formats: a qcow2 overlay on a base of another format.
//! The filesystem commands, `diff` and `blame` must answer exactly as they
//! do on the same chain with a qcow2 base (itself checked against debugfs
//! in `diff.rs`), and the chain must agree with qemu.
use std::path::Path;

use super::*;

/// An ext4 image and a copy edited with debugfs: a file added, one
/// changed, one deleted.
fn ext4_pair(dir: &Path) {
    mkfs(dir, "flat0", "24M", 30);
    // The size a 24M VHD gets from its CHS geometry, so every format
    // holds the same disk.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("flat0.raw"))
        .unwrap();
    f.set_len(25_171_968).unwrap();
    std::fs::copy(dir.join("flat0.raw"), dir.join("flat1.raw")).unwrap();
    std::fs::write(dir.join("added.host"), b"added in the overlay\n").unwrap();
    std::fs::write(dir.join("hello.host"), b"changed in the overlay\n").unwrap();
    let cmds = format!(
        "write {} /added.txt\nrm /hello.txt\nwrite {} /hello.txt\nrm /d1/s1/f1.bin\n",
        dir.join("added.host").display(),
        dir.join("hello.host").display()
    );
    debugfs_w(dir, "flat1.raw", &cmds);
}

/// `base.FMT` from flat0.raw (with `opts`), and `top-FMT.qcow2` over it
/// holding what flat1.raw changed.
pub fn mixed_chain(dir: &Path, fmt: &str, opts: &[&str]) -> String {
    let base = format!("base.{fmt}");
    let mut args = vec!["qemu-img", "convert", "-O", fmt];
    args.extend(opts);
    args.extend(["flat0.raw", &base]);
    sh(dir, &args);
    let top = format!("top-{fmt}.qcow2");
    thin_overlay(dir, &top, &base, fmt, &dir.join("flat1.raw"), "", false);
    top
}

#[test]
fn diff_and_blame_across_formats_equal_the_qcow2_chain() {
    if !(need("qemu-img") && need("qemu-io") && need("mke2fs") && need("debugfs")) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    ext4_pair(dir);
    let reference = mixed_chain(dir, "qcow2", &[]);
    let want_diff = layerscope(dir, &["diff", "--json", &reference]).ok().json();
    let want_blame = layerscope(dir, &["blame", "--json", "-R", &reference])
        .ok()
        .json();
    let want_ls = layerscope(dir, &["ls", "-l", "-R", &reference]).ok().text();
    let paths: Vec<&str> = want_diff["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    for p in ["/added.txt", "/hello.txt", "/d1/s1/f1.bin"] {
        assert!(paths.contains(&p), "{p} not in {paths:?}");
    }
    for (fmt, opts) in formats_to_mix() {
        let top = mixed_chain(dir, fmt, opts);
        check(dir, &top, None);
        let what = format!("qcow2 over {fmt}");
        let diff = layerscope(dir, &["diff", "--json", &top]).ok().json();
        assert_eq!(diff["changes"], want_diff["changes"], "{what}: diff");
        let blame = layerscope(dir, &["blame", "--json", "-R", &top])
            .ok()
            .json();
        assert_eq!(blame, want_blame, "{what}: blame");
        let ls = layerscope(dir, &["ls", "-l", "-R", &top]).ok().text();
        assert_eq!(ls, want_ls, "{what}: ls -l -R");
        let cat = layerscope(dir, &["cat", &top, "/hello.txt", "--layer", "0"])
            .ok()
            .stdout;
        assert!(
            cat.starts_with(b"hello from the base layer"),
            "{what}: cat as of the base"
        );
    }
}

/// The bases to put under a qcow2 overlay, with `qemu-img convert -o`.
fn formats_to_mix() -> Vec<(&'static str, &'static [&'static str])> {
    vec![
        ("vmdk", &[][..]),
        ("vmdk", &["-o", "subformat=streamOptimized"][..]),
        ("vpc", &[][..]),
        ("vhdx", &["-o", "block_size=1M"][..]),
        ("vdi", &[][..]),
    ]
}
