//! `diff` of a mass create (issue 19): thousands of files created in the
//! top overlay, most in a new tree, some in existing directories. The
//! oracle is the list of paths given to debugfs, which made them: every
//! one is listed as added, and nothing else is. The names of new files
//! stream ([`layerscope::diff::quick::Part::Added`]), so the peak memory
//! of `diff --json` stays flat in the number of files created.
use std::collections::BTreeSet;
use std::path::Path;

use crate::diff::spilled_equals_unspilled;
use crate::util::*;

/// The directories and files a mass create of `n` files makes, in the
/// order debugfs makes them: `/new`, `/new/dNNNN` of 200 files each, and
/// every 100th file in an existing directory `/base/dK` instead (what
/// bench/bench.py's `mass_created` makes).
fn created(n: usize) -> (Vec<String>, Vec<String>) {
    let dirs = std::iter::once("/new".to_owned())
        .chain((0..n.div_ceil(200)).map(|k| format!("/new/d{k:04}")))
        .collect();
    let files = (0..n)
        .map(|i| {
            if i % 100 == 99 {
                format!("/base/d{}/m{i:06}", i % 10)
            } else {
                format!("/new/d{:04}/f{i:06}", i / 200)
            }
        })
        .collect();
    (dirs, files)
}

/// `mass.qcow2` over `base.qcow2` in `dir`: a base of 10 directories of 5
/// files, and an overlay where debugfs created `n` files (every 16th with
/// 3,000 bytes). Returns the created paths (directories first).
fn build(dir: &Path, n: usize) -> Vec<String> {
    let tree = dir.join("tree");
    for k in 0..10 {
        let d = tree.join("base").join(format!("d{k}"));
        std::fs::create_dir_all(&d).unwrap();
        for j in 0..5 {
            std::fs::write(d.join(format!("b{j}")), vec![b'a' + j as u8; 100 * j]).unwrap();
        }
    }
    let inodes = (n + 2000).to_string();
    sh(
        dir,
        &[
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext4",
            "-b",
            "4096",
            "-N",
            &inodes,
            "-d",
            "tree",
            "-E",
            "root_owner=0:0",
            "flat.raw",
            "256M",
        ],
    );
    sh(
        dir,
        &[
            "qemu-img",
            "convert",
            "-O",
            "qcow2",
            "flat.raw",
            "base.qcow2",
        ],
    );
    std::fs::write(dir.join("payload"), vec![7u8; 3000]).unwrap();
    let (dirs, files) = created(n);
    let mut cmds = String::new();
    for d in &dirs {
        cmds.push_str(&format!("mkdir {d}\n"));
    }
    for (i, f) in files.iter().enumerate() {
        let src = if i % 16 == 0 { "payload" } else { "/dev/null" };
        cmds.push_str(&format!("write {src} {f}\n"));
    }
    debugfs_w(dir, "flat.raw", &cmds);
    thin_overlay(
        dir,
        "mass.qcow2",
        "base.qcow2",
        "qcow2",
        &dir.join("flat.raw"),
        "",
        false,
    );
    dirs.into_iter().chain(files).collect()
}

/// Every created path is an added change, and nothing else changed
/// (the quick diff, the full walk, text and JSON, in memory and spilled
/// through temporary files).
#[test]
fn diff_names_every_file_created() {
    if !need("mke2fs") || !need("debugfs") || !need("qemu-img") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let made = build(dir, 3000);
    let want: BTreeSet<(char, String)> = made.iter().map(|p| ('A', p.clone())).collect();
    let quick = layerscope(dir, &["diff", "--json", "mass.qcow2"])
        .ok()
        .json();
    assert_eq!(crate::diff::changes(&quick), want);
    let list = quick["changes"].as_array().unwrap();
    assert_eq!(list.len(), made.len(), "each path once");
    assert!(list.iter().all(|c| c["hard_link"].is_null()));
    let full = layerscope(dir, &["diff", "--json", "--full", "mass.qcow2"])
        .ok()
        .json();
    assert_eq!(full["changes"], quick["changes"]);
    for args in [
        &["diff", "--json", "mass.qcow2"][..],
        &["diff", "mass.qcow2"],
    ] {
        spilled_equals_unspilled(dir, args);
    }
}

/// The peak memory of `diff --json` of 60,000 files created stays far
/// below what holding them costs (~70 MiB before the names streamed, at
/// this size; 206 MiB at 200,000 files), in a child process (GNU time's
/// peak), and every created path is in the output.
#[test]
fn diff_json_of_a_mass_create_keeps_memory_flat() {
    if !need("mke2fs") || !need("debugfs") || !need("qemu-img") {
        return;
    }
    const N: usize = 60_000;
    const MAX_KIB: u64 = 48 << 10;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let made = build(dir, N);
    let run = crate::hostile::run(dir, &["diff", "--json", "mass.qcow2"], b"\"added\"");
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.count, made.len() as u64, "added changes");
    eprintln!(
        "diff --json of {N} files created: peak RSS {} KiB",
        run.peak_kib
    );
    assert!(
        run.peak_kib < MAX_KIB,
        "peak RSS {} KiB at {N} files created (bound {MAX_KIB} KiB)",
        run.peak_kib
    );
}
